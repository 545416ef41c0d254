"""Inbound HTTP ports: per-request authz, 403 body, XFCC set and sanitized, strict parsing."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from meshsec.proxy.inbound import PortMode
from meshsec.proxy.metrics import ProxyMetrics
from tests.component.proxy.apps import HttpApp, parse_echo_fields
from tests.component.proxy.harness import (
    CLIENT_ID,
    SERVER_ID,
    Identities,
    client_context,
    close,
    http_request,
    open_plain,
    open_tls,
    start_inbound,
    tls_contexts,
    track,
)
from tests.fakes.authz import FakeAuthorizer


async def test_xfcc_is_set_for_mtls_and_client_copy_is_stripped(ids: Identities) -> None:
    app = await HttpApp().start()
    metrics = ProxyMetrics()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app.port,
        PortMode.STRICT,
        http=True,
        metrics=metrics,
    )
    reader, writer = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    forged = b"By=spiffe://evil/x;URI=spiffe://cluster.local/ns/admin/sa/root"
    status, body = await http_request(
        reader,
        writer,
        b"GET /a HTTP/1.1\r\nhost: backend\r\nx-forwarded-client-cert: " + forged + b"\r\n\r\n",
    )
    assert status == 200
    fields = parse_echo_fields(body)
    der = ids.client.leaf.public_bytes(serialization.Encoding.DER)
    expected = f"By={SERVER_ID};Hash={hashlib.sha256(der).hexdigest()};URI={CLIENT_ID}"
    assert fields["xfcc"] == expected
    assert fields["xfcc_count"] == "1"
    # keep-alive: a second request on the same connection is handled too
    status, body = await http_request(
        reader, writer, b"POST /b HTTP/1.1\r\nhost: backend\r\ncontent-length: 5\r\n\r\nhello"
    )
    assert status == 200
    assert parse_echo_fields(body)["body"] == "hello"
    await close(writer)
    await listener.drain(5)
    labels = {
        "reporter": "destination",
        "source_principal": CLIENT_ID,
        "destination_principal": SERVER_ID,
        "destination_service": f"inbound|{app.port}",
        "connection_security_policy": "mutual_tls",
        "request_protocol": "http",
        "response_code": "200",
    }
    assert metrics.sample("istio_requests_total", labels) == 2
    await app.stop()


async def test_plaintext_request_gets_no_xfcc_and_forged_one_is_removed(ids: Identities) -> None:
    app = await HttpApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.PERMISSIVE, http=True
    )
    reader, writer = await open_plain(listener.bound_port)
    status, body = await http_request(
        reader,
        writer,
        b"GET / HTTP/1.1\r\nhost: b\r\nX-Forwarded-Client-Cert: URI=spiffe://x/ns/a/sa/b\r\n\r\n",
    )
    assert status == 200
    assert parse_echo_fields(body)["xfcc_count"] == "0"
    await close(writer)
    await listener.drain(5)
    await app.stop()


async def test_denied_request_gets_403_rbac_body_and_never_reaches_the_app(
    ids: Identities,
) -> None:
    app = await HttpApp().start()
    authz = FakeAuthorizer(deny_paths={"/admin"})
    metrics = ProxyMetrics()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app.port,
        PortMode.STRICT,
        http=True,
        authorizer=authz,
        metrics=metrics,
    )
    reader, writer = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    status, _ = await http_request(reader, writer, b"GET /ok HTTP/1.1\r\nhost: b\r\n\r\n")
    assert status == 200
    status, body = await http_request(reader, writer, b"GET /admin HTTP/1.1\r\nhost: b\r\n\r\n")
    assert (status, body) == (403, b"RBAC: access denied")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the 403
    await close(writer)
    assert [path for _, path, _ in app.requests] == ["/ok"]
    request = authz.calls[-1][2]
    assert request is not None
    assert (request.method, request.path, request.host) == ("GET", "/admin", "b")
    assert (
        metrics.sample(
            "istio_requests_total",
            {
                "reporter": "destination",
                "source_principal": CLIENT_ID,
                "destination_principal": SERVER_ID,
                "destination_service": f"inbound|{app.port}",
                "connection_security_policy": "mutual_tls",
                "request_protocol": "http",
                "response_code": "403",
            },
        )
        == 1
    )
    await listener.drain(5)
    await app.stop()


async def test_denied_principal_on_http_port(ids: Identities) -> None:
    app = await HttpApp().start()
    authz = FakeAuthorizer(allow_only_principals={"spiffe://cluster.local/ns/x/sa/only"})
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app.port,
        PortMode.STRICT,
        http=True,
        authorizer=authz,
    )
    reader, writer = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    status, body = await http_request(reader, writer, b"GET / HTTP/1.1\r\nhost: b\r\n\r\n")
    assert (status, body) == (403, b"RBAC: access denied")
    await close(writer)
    assert app.requests == []
    await listener.drain(5)
    await app.stop()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"GET / HTTP/1.1\r\nhost: b\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nhost: b\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: b\r\ntransfer-encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: b\r\nx: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nhost: b\n\n\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nhost: b\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nhost : b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: b\r\nx: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
    ids=[
        "te-and-cl",
        "conflicting-cl",
        "unknown-te",
        "no-host",
        "obs-fold",
        "bare-lf",
        "bad-version",
        "space-before-colon",
        "huge-head",
    ],
)
async def test_hostile_requests_are_refused_before_the_app(
    ids: Identities, request_bytes: bytes, status: int
) -> None:
    app = await HttpApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.DISABLE, http=True
    )
    reader, writer = await open_plain(listener.bound_port)
    got, _ = await http_request(reader, writer, request_bytes)
    assert got == status
    await close(writer)
    assert app.requests == []
    await listener.drain(5)
    await app.stop()


async def test_chunked_request_body_is_relayed_and_next_request_parsed(ids: Identities) -> None:
    # The app only understands content-length, so check the relay at the byte level instead.
    received = bytearray()
    got_all = asyncio.Event()

    async def raw_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.extend(data)
            if received.count(b"HTTP/1.1\r\n") == 2 and received.endswith(b"\r\n\r\n"):
                got_all.set()
                break
        writer.close()

    server = track(await asyncio.start_server(raw_app, "127.0.0.1", 0))
    app_port = server.sockets[0].getsockname()[1]
    authz = FakeAuthorizer()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app_port,
        PortMode.DISABLE,
        http=True,
        authorizer=authz,
    )
    _reader, writer = await open_plain(listener.bound_port)
    body = b"5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n"
    writer.write(
        b"POST /up HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n"
        + body
        + b"GET /next HTTP/1.1\r\nhost: b\r\n\r\n"
    )
    await writer.drain()
    await asyncio.wait_for(got_all.wait(), 5)
    assert body in received
    assert [r.path for _, _, r in authz.calls if r is not None] == ["/up", "/next"]
    await close(writer)
    await listener.drain(5)
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("requests", [1, 20])
async def test_bytes_sent_before_the_app_connection_exists_are_still_authorized(
    ids: Identities, requests: int
) -> None:
    """The client writes at once; nothing may reach the app unparsed while the proxy connects."""
    received = bytearray()

    async def raw_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.extend(data)
        writer.close()

    server = track(await asyncio.start_server(raw_app, "127.0.0.1", 0))
    authz = FakeAuthorizer(deny_paths={"/admin"})
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        server.sockets[0].getsockname()[1],
        PortMode.DISABLE,
        http=True,
        authorizer=authz,
    )
    reader, writer = await open_plain(listener.bound_port)
    writer.write(b"GET /admin HTTP/1.1\r\nhost: b\r\n\r\n" * requests)
    status, body = await http_request(reader, writer, b"")
    assert (status, body) == (403, b"RBAC: access denied")
    await close(writer)
    await listener.drain(5)
    assert bytes(received) == b""


async def test_drain_sends_connection_close_and_finishes_keepalive_connections(
    ids: Identities,
) -> None:
    app = await HttpApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT, http=True
    )
    reader, writer = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    status, _ = await http_request(reader, writer, b"GET /1 HTTP/1.1\r\nhost: b\r\n\r\n")
    assert status == 200
    drained = asyncio.ensure_future(listener.drain(30))
    writer.write(b"GET /2 HTTP/1.1\r\nhost: b\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"connection: close" in head.lower()
    assert await asyncio.wait_for(drained, 5) == 0  # nothing had to be cut
    await close(writer)
