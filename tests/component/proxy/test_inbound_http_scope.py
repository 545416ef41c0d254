"""The inbound HTTP hot path: per-connection authorization reuse, XFCC splicing, batched writes."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization

from meshsec.proxy.authz import ConnectionScopedAuthorizer, Decision, PeerInfo
from meshsec.proxy.inbound import PortMode
from tests.component.proxy.apps import HttpApp, parse_echo_fields
from tests.component.proxy.harness import (
    CLIENT_ID,
    SERVER_ID,
    Identities,
    client_context,
    close,
    http_request,
    open_tls,
    start_inbound,
    tls_contexts,
    track,
)
from tests.fakes.authz import FakeAuthorizer

GET = b"GET /a HTTP/1.1\r\nhost: backend\r\n\r\n"


@dataclass
class ScopedAuthorizer(FakeAuthorizer):
    """FakeAuthorizer that can also decide a whole connection (``scoped=None``: it cannot)."""

    version: object = 1
    scoped: Decision | None = field(default_factory=lambda: Decision(True, "connection"))
    scope_calls: list[tuple[PeerInfo, int]] = field(default_factory=list)

    def connection_decision(self, peer: PeerInfo, port: int) -> Decision | None:
        self.scope_calls.append((peer, port))
        return self.scoped


async def test_connection_decision_is_reused_until_the_policy_version_changes(
    ids: Identities,
) -> None:
    assert isinstance(ScopedAuthorizer(), ConnectionScopedAuthorizer)
    app = await HttpApp().start()
    authz = ScopedAuthorizer()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app.port,
        PortMode.STRICT,
        http=True,
        authorizer=authz,
    )
    reader, writer = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    for _ in range(3):
        status, body = await http_request(reader, writer, GET)
        assert status == 200
    assert len(authz.scope_calls) == 1  # asked once for the connection
    assert authz.scope_calls[0][0].principal == CLIENT_ID
    assert not [c for c in authz.calls if c[2] is not None]  # no per-request evaluation
    # XFCC spliced into a head that carried none
    der = ids.client.leaf.public_bytes(serialization.Encoding.DER)
    expected = f"By={SERVER_ID};Hash={hashlib.sha256(der).hexdigest()};URI={CLIENT_ID}"
    assert parse_echo_fields(body)["xfcc"] == expected
    assert parse_echo_fields(body)["xfcc_count"] == "1"
    # a new policy version that denies the connection applies to the very next request
    authz.version = 2
    authz.scoped = Decision(False, "denied by new policy")
    status, body = await http_request(reader, writer, GET)
    assert status == 403
    assert body == b"RBAC: access denied"
    assert len(authz.scope_calls) == 2
    assert len(app.requests) == 3
    await close(writer)
    await listener.drain(5)
    await app.stop()


async def test_request_level_policies_are_evaluated_per_request(ids: Identities) -> None:
    app = await HttpApp().start()
    authz = ScopedAuthorizer(scoped=None, deny_paths={"/secret"})
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app.port,
        PortMode.STRICT,
        http=True,
        authorizer=authz,
    )
    reader, writer = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    status, _ = await http_request(reader, writer, GET)
    assert status == 200
    status, _ = await http_request(reader, writer, b"GET /secret HTTP/1.1\r\nhost: backend\r\n\r\n")
    assert status == 403
    assert [c[2].path for c in authz.calls if c[2] is not None] == ["/a", "/secret"]
    assert [r[1] for r in app.requests] == ["/a"]
    await close(writer)
    await listener.drain(5)
    await app.stop()


async def _upgrade_app() -> tuple[asyncio.Server, int]:
    """Answers an Upgrade with 101, then echoes raw bytes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n"
        )
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    track(server)
    return server, server.sockets[0].getsockname()[1]


async def test_bytes_sent_with_the_upgrade_request_reach_the_app_after_101(
    ids: Identities,
) -> None:
    server, port = await _upgrade_app()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), port, PortMode.STRICT, http=True
    )
    reader, writer = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    writer.write(
        b"GET /ws HTTP/1.1\r\nhost: backend\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nEARLY"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"EARLY"
    writer.write(b"later")
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"later"
    await close(writer)
    await listener.drain(5)
    server.close()
