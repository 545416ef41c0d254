"""Inbound listener: STRICT / PERMISSIVE / DISABLE, peer identity checks, authorization (TCP)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from meshsec.proxy.inbound import PortMode, detect_tls
from meshsec.proxy.metrics import ProxyMetrics
from meshsec.proxy.pump import PumpLimits
from tests.component.proxy.apps import LineApp
from tests.component.proxy.harness import (
    CLIENT_ID,
    SERVER_ID,
    Identities,
    client_context,
    close,
    exchange,
    open_plain,
    open_tls,
    start_inbound,
    tls_contexts,
)
from tests.fakes.authz import FakeAuthorizer
from tests.testca import TestCA


@pytest.mark.parametrize(
    ("peeked", "tls"),
    [
        (b"\x16\x03\x01", True),
        (b"\x16", True),
        (b"\x16\x03", True),
        (b"GET", False),
        (b"\x16A", False),
        (b"\x00\x00\x00", False),
    ],
    ids=["client-hello", "one-byte-0x16", "two-bytes", "http", "0x16-not-tls", "zeros"],
)
def test_detect_tls(peeked: bytes, tls: bool) -> None:
    assert detect_tls(peeked) is tls


async def test_strict_accepts_mesh_client_and_forwards(ids: Identities) -> None:
    app = await LineApp().start()
    metrics = ProxyMetrics()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT, metrics=metrics
    )
    reader, writer = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    assert await exchange(reader, writer, b"hi\n") == b"echo:hi\n"
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object.selected_alpn_protocol() == "istio-peer-exchange"
    await close(writer)
    await listener.drain(5)
    labels = {
        "reporter": "destination",
        "source_principal": CLIENT_ID,
        "destination_principal": SERVER_ID,
        "destination_service": f"inbound|{app.port}",
        "connection_security_policy": "mutual_tls",
    }
    assert metrics.sample("istio_tcp_connections_opened_total", labels) == 1
    assert metrics.sample("istio_tcp_connections_closed_total", labels) == 1
    assert metrics.sample("istio_tcp_sent_bytes_total", labels) == 3
    await app.stop()


async def test_strict_rejects_plaintext(ids: Identities) -> None:
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    reader, writer = await open_plain(listener.bound_port)
    assert await exchange(reader, writer, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n") == b""
    await close(writer)
    assert app.connections == 0
    await listener.drain(5)
    await app.stop()


async def test_strict_rejects_client_without_certificate(ids: Identities) -> None:
    app = await LineApp().start()
    metrics = ProxyMetrics()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT, metrics=metrics
    )
    try:
        reader, writer = await open_tls(listener.bound_port, client_context(None, ids.ca.bundle))
    except (ConnectionError, OSError):
        pass  # TLS 1.2-style failure inside the handshake is fine too
    else:
        assert await exchange(reader, writer, b"hi\n") == b""
        await close(writer)
    assert app.connections == 0
    assert (
        metrics.sample(
            "meshsec_proxy_connections_rejected_total",
            {"direction": "inbound", "reason": "handshake"},
        )
        == 1
    )
    await listener.drain(5)
    await app.stop()


@pytest.mark.parametrize("kind", ["other-root", "other-trust-domain", "expired"])
async def test_strict_rejects_bad_client_certificates(ids: Identities, kind: str) -> None:
    if kind == "other-root":
        client = TestCA("cluster.local").issue_svid(CLIENT_ID)
    elif kind == "other-trust-domain":
        client = ids.ca.issue_svid("spiffe://evil.example/ns/frontend/sa/client")
    else:
        past = datetime.now(UTC) - timedelta(days=2)
        client = ids.ca.issue_svid(CLIENT_ID, now=past, ttl=timedelta(hours=1))
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    try:
        reader, writer = await open_tls(listener.bound_port, client_context(client, ids.ca.bundle))
    except (ConnectionError, OSError):
        pass
    else:
        assert await exchange(reader, writer, b"hi\n") == b""
        await close(writer)
    assert app.connections == 0
    await listener.drain(5)
    await app.stop()


async def test_trust_domain_alias_is_accepted(ids: Identities) -> None:
    client = ids.ca.issue_svid("spiffe://old.example/ns/frontend/sa/client")
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    reader, writer = await open_tls(listener.bound_port, client_context(client, ids.ca.bundle))
    assert await exchange(reader, writer, b"alias\n") == b"echo:alias\n"
    await close(writer)
    await listener.drain(5)
    await app.stop()


async def test_permissive_serves_plaintext_and_mtls(ids: Identities) -> None:
    app = await LineApp().start()
    authz = FakeAuthorizer()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.PERMISSIVE, authorizer=authz
    )
    r1, w1 = await open_plain(listener.bound_port)
    assert await exchange(r1, w1, b"plain\n") == b"echo:plain\n"
    r2, w2 = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    assert await exchange(r2, w2, b"tls\n") == b"echo:tls\n"
    await close(w1)
    await close(w2)
    principals = [peer.principal for peer, _, _ in authz.calls]
    assert principals == ["", CLIENT_ID]
    await listener.drain(5)
    await app.stop()


async def test_permissive_still_rejects_bad_tls(ids: Identities) -> None:
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.PERMISSIVE
    )
    stranger = TestCA("cluster.local").issue_svid(CLIENT_ID)
    try:
        reader, writer = await open_tls(
            listener.bound_port, client_context(stranger, ids.ca.bundle)
        )
    except (ConnectionError, OSError):
        pass
    else:
        assert await exchange(reader, writer, b"hi\n") == b""
        await close(writer)
    assert app.connections == 0
    await listener.drain(5)
    await app.stop()


async def test_permissive_server_first_client_falls_back_to_plaintext(ids: Identities) -> None:
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app.port,
        PortMode.PERMISSIVE,
        sniff_timeout=0.01,
    )
    reader, writer = await open_plain(listener.bound_port)
    # Say nothing until the proxy has connected us through as plaintext.
    await asyncio.wait_for(app.connected.wait(), 5)
    assert await exchange(reader, writer, b"late\n") == b"echo:late\n"
    await close(writer)
    await listener.drain(5)
    await app.stop()


async def test_disable_is_plain_passthrough(ids: Identities) -> None:
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.DISABLE
    )
    reader, writer = await open_plain(listener.bound_port)
    assert await exchange(reader, writer, b"x\n") == b"echo:x\n"
    await close(writer)
    await listener.drain(5)
    await app.stop()


async def test_authorizer_allows_and_denies_principals_over_real_connections(
    ids: Identities,
) -> None:
    denied = ids.ca.issue_svid("spiffe://cluster.local/ns/frontend/sa/intruder")
    other_ns = ids.ca.issue_svid("spiffe://cluster.local/ns/blocked/sa/client")
    authz = FakeAuthorizer(
        deny_principals={"spiffe://cluster.local/ns/frontend/sa/intruder"},
        deny_namespaces={"blocked"},
    )
    app = await LineApp().start()
    metrics = ProxyMetrics()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app.port,
        PortMode.STRICT,
        authorizer=authz,
        metrics=metrics,
    )
    r, w = await open_tls(listener.bound_port, client_context(ids.client, ids.ca.bundle))
    assert await exchange(r, w, b"ok\n") == b"echo:ok\n"
    await close(w)
    for svid in (denied, other_ns):
        r, w = await open_tls(listener.bound_port, client_context(svid, ids.ca.bundle))
        assert await exchange(r, w, b"no\n") == b""
        await close(w)
    assert app.lines == [b"ok\n"]
    assert [(p.principal, p.namespace, p.service_account) for p, _, _ in authz.calls] == [
        (CLIENT_ID, "frontend", "client"),
        ("spiffe://cluster.local/ns/frontend/sa/intruder", "frontend", "intruder"),
        ("spiffe://cluster.local/ns/blocked/sa/client", "blocked", "client"),
    ]
    assert all(port == app.port for _, port, _ in authz.calls)
    assert (
        metrics.sample(
            "meshsec_proxy_connections_rejected_total",
            {"direction": "inbound", "reason": "rbac_denied"},
        )
        == 2
    )
    await listener.drain(5)
    await app.stop()


async def test_handshake_timeout_closes_silent_tls_client(ids: Identities) -> None:
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT, handshake_timeout=0.05
    )
    reader, writer = await open_plain(listener.bound_port)
    writer.write(b"\x16\x03\x01")  # a ClientHello that never completes
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await close(writer)
    assert app.connections == 0
    await listener.drain(5)
    await app.stop()


async def test_idle_timeout_closes_both_sides(ids: Identities) -> None:
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app.port,
        PortMode.DISABLE,
        limits=PumpLimits(idle_timeout=0.05),
    )
    reader, writer = await open_plain(listener.bound_port)
    assert await exchange(reader, writer, b"a\n") == b"echo:a\n"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the idle timer
    await close(writer)
    await listener.drain(5)
    await app.stop()


async def test_half_close_plaintext_delivers_reply(ids: Identities) -> None:
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.DISABLE
    )
    reader, writer = await open_plain(listener.bound_port)
    writer.write(b"last\n")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b"echo:last\n"
    await close(writer)
    await listener.drain(5)
    await app.stop()


async def test_drain_aborts_connections_left_after_grace(ids: Identities) -> None:
    app = await LineApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.DISABLE
    )
    port = listener.bound_port
    reader, writer = await open_plain(port)
    assert await exchange(reader, writer, b"a\n") == b"echo:a\n"
    assert await listener.drain(0.01) == 1
    assert await asyncio.wait_for(reader.read(), 5) == b""
    with pytest.raises(ConnectionRefusedError):
        await open_plain(port)
    await close(writer)
    await app.stop()
