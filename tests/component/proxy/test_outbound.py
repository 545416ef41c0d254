"""Outbound: TCP mappings and the HTTP proxy through a real inbound sidecar; secure naming; SNI."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from meshsec.proxy.inbound import PortMode
from meshsec.proxy.metrics import ProxyMetrics
from meshsec.proxy.outbound import HttpProxyListener, TcpOutboundListener
from meshsec.proxy.tls import build_server_context
from meshsec.proxy.upstream import ClientTlsMode, ClientTlsSettings, Endpoint, istio_sni
from tests.component.proxy.apps import HttpApp, LineApp
from tests.component.proxy.harness import (
    CLIENT_ID,
    SERVER_ID,
    Identities,
    close,
    exchange,
    http_request,
    open_plain,
    outbound_connector,
    start_inbound,
    tls_contexts,
    track,
)
from tests.fakes.authz import FakeAuthorizer
from tests.fakes.mesh_registry import FakeClientTlsPolicy, FakeResolver

HOST = "backend.backend.svc.cluster.local"


async def _mesh(
    ids: Identities, app_port: int, *, http: bool = False, sas: tuple[str, ...] = (SERVER_ID,)
) -> tuple[object, FakeResolver, FakeAuthorizer]:
    authz = FakeAuthorizer()
    inbound = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle),
        app_port,
        PortMode.STRICT,
        http=http,
        authorizer=authz,
    )
    resolver = FakeResolver()
    resolver.add(HOST, 80, Endpoint("127.0.0.1", inbound.bound_port, sas))
    return inbound, resolver, authz


async def test_tcp_mapping_istio_mutual_end_to_end(ids: Identities) -> None:
    app = await LineApp().start()
    inbound, resolver, authz = await _mesh(ids, app.port)
    metrics = ProxyMetrics()
    out = TcpOutboundListener(
        "127.0.0.1",
        0,
        HOST,
        80,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle), resolver, FakeClientTlsPolicy()
        ),
        metrics,
    )
    await out.start()
    track(out)
    reader, writer = await open_plain(out.bound_port)
    assert await exchange(reader, writer, b"through\n") == b"echo:through\n"
    await close(writer)
    assert authz.calls[0][0].principal == CLIENT_ID  # the server side saw our mesh identity
    await out.drain(5)
    assert (
        metrics.sample(
            "istio_tcp_connections_opened_total",
            {
                "reporter": "source",
                "source_principal": CLIENT_ID,
                "destination_principal": SERVER_ID,
                "destination_service": HOST,
                "connection_security_policy": "mutual_tls",
            },
        )
        == 1
    )
    await inbound.drain(5)  # type: ignore[attr-defined]
    await app.stop()


async def test_secure_naming_refuses_server_with_wrong_service_account(
    ids: Identities, caplog: pytest.LogCaptureFixture
) -> None:
    expected = "spiffe://cluster.local/ns/backend/sa/reviews"
    app = await LineApp().start()
    inbound, resolver, _ = await _mesh(ids, app.port, sas=(expected,))
    out = TcpOutboundListener(
        "127.0.0.1",
        0,
        HOST,
        80,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle), resolver, FakeClientTlsPolicy()
        ),
    )
    await out.start()
    track(out)
    with caplog.at_level(logging.WARNING, logger="meshsec.proxy.outbound"):
        reader, writer = await open_plain(out.bound_port)
        assert await exchange(reader, writer, b"secret\n") == b""
        await close(writer)
    assert app.lines == []
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "secure naming failed" in messages
    assert SERVER_ID in messages  # presented
    assert expected in messages  # expected (and its alias expansion)
    assert "spiffe://old.example/ns/backend/sa/reviews" in messages
    await out.drain(5)
    await inbound.drain(5)  # type: ignore[attr-defined]
    await app.stop()


async def test_secure_naming_accepts_alias_trust_domain_san(ids: Identities) -> None:
    app = await LineApp().start()
    inbound, resolver, _ = await _mesh(
        ids, app.port, sas=("spiffe://old.example/ns/backend/sa/server",)
    )
    out = TcpOutboundListener(
        "127.0.0.1",
        0,
        HOST,
        80,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle), resolver, FakeClientTlsPolicy()
        ),
    )
    await out.start()
    track(out)
    reader, writer = await open_plain(out.bound_port)
    assert await exchange(reader, writer, b"alias\n") == b"echo:alias\n"
    await close(writer)
    await out.drain(5)
    await inbound.drain(5)  # type: ignore[attr-defined]
    await app.stop()


async def test_istio_mutual_sends_istio_sni_and_alpn(ids: Identities) -> None:
    seen: list[str | None] = []
    alpn: list[str | None] = []
    ctx = build_server_context(ids.server, ids.ca.bundle)

    def record(obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(name)

    ctx.sni_callback = record  # type: ignore[assignment]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = track(await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx))
    resolver = FakeResolver()
    resolver.add(
        HOST, 9080, Endpoint("127.0.0.1", server.sockets[0].getsockname()[1], (SERVER_ID,))
    )
    out = TcpOutboundListener(
        "127.0.0.1",
        0,
        HOST,
        9080,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle), resolver, FakeClientTlsPolicy()
        ),
    )
    await out.start()
    track(out)
    reader, writer = await open_plain(out.bound_port)
    assert await exchange(reader, writer, b"sni\n") == b"sni\n"
    await close(writer)
    assert seen == [istio_sni(HOST, 9080)] == [f"outbound_.9080_._.{HOST}"]
    assert alpn == ["istio-peer-exchange"]
    await out.drain(5)
    server.close()
    await server.wait_closed()


async def test_disable_mode_and_auto_mtls_to_non_mesh_endpoint_are_plaintext(
    ids: Identities,
) -> None:
    app = await LineApp().start()
    resolver = FakeResolver()
    resolver.add("legacy", 80, Endpoint("127.0.0.1", app.port, (), mesh=False))
    resolver.add("plain", 80, Endpoint("127.0.0.1", app.port, ()))
    policy = FakeClientTlsPolicy(per_host={"plain": ClientTlsSettings(ClientTlsMode.DISABLE)})
    connector = outbound_connector(tls_contexts(ids.client, ids.ca.bundle), resolver, policy)
    for host in ("legacy", "plain"):
        out = TcpOutboundListener("127.0.0.1", 0, host, 80, connector)
        await out.start()
        track(out)
        reader, writer = await open_plain(out.bound_port)
        assert (
            await exchange(reader, writer, host.encode() + b"\n")
            == b"echo:" + host.encode() + b"\n"
        )
        await close(writer)
        await out.drain(5)
    await app.stop()


async def test_unknown_service_closes_tcp_and_answers_503_over_http_proxy(
    ids: Identities,
) -> None:
    connector = outbound_connector(
        tls_contexts(ids.client, ids.ca.bundle), FakeResolver(), FakeClientTlsPolicy()
    )
    proxy = HttpProxyListener("127.0.0.1", 0, connector, None)
    await proxy.start()
    track(proxy)
    reader, writer = await open_plain(proxy.bound_port)
    status, _ = await http_request(
        reader, writer, b"GET http://nowhere.svc/ HTTP/1.1\r\nhost: nowhere.svc\r\n\r\n"
    )
    assert status == 503
    await close(writer)
    await proxy.drain(5)


async def test_http_proxy_absolute_form_reaches_app_with_xfcc(ids: Identities) -> None:
    app = await HttpApp().start()
    inbound, resolver, _ = await _mesh(ids, app.port, http=True)
    metrics = ProxyMetrics()
    proxy = HttpProxyListener(
        "127.0.0.1",
        0,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle), resolver, FakeClientTlsPolicy()
        ),
        metrics,
    )
    await proxy.start()
    track(proxy)
    reader, writer = await open_plain(proxy.bound_port)
    status, body = await http_request(
        reader,
        writer,
        f"GET http://{HOST}/hello?x=1 HTTP/1.1\r\nhost: {HOST}\r\n".encode()
        + b"proxy-connection: keep-alive\r\n\r\n",
    )
    assert status == 200
    assert b"path=/hello?x=1" in body
    assert f"URI={CLIENT_ID}".encode() in body
    status, body = await http_request(
        reader,
        writer,
        f"POST http://{HOST}/again HTTP/1.1\r\nhost: {HOST}\r\n".encode()
        + b"content-length: 2\r\n\r\nhi",
    )
    assert (status, b"body=hi" in body) == (200, True)
    await close(writer)
    assert "proxy-connection" not in app.requests[0][2]
    assert app.connections == 1  # keep-alive reused the upstream connection
    await proxy.drain(5)
    assert (
        metrics.sample(
            "istio_requests_total",
            {
                "reporter": "source",
                "source_principal": CLIENT_ID,
                "destination_principal": SERVER_ID,
                "destination_service": HOST,
                "connection_security_policy": "mutual_tls",
                "request_protocol": "http",
                "response_code": "200",
            },
        )
        == 2
    )
    await inbound.drain(5)  # type: ignore[attr-defined]
    await app.stop()


async def test_http_proxy_switches_destination_between_requests(ids: Identities) -> None:
    app1 = await HttpApp().start()
    app2 = await HttpApp().start()
    resolver = FakeResolver()
    resolver.add("one", 80, Endpoint("127.0.0.1", app1.port, ()))
    resolver.add("two", 80, Endpoint("127.0.0.1", app2.port, ()))
    policy = FakeClientTlsPolicy(default=ClientTlsSettings(ClientTlsMode.DISABLE))
    proxy = HttpProxyListener(
        "127.0.0.1",
        0,
        outbound_connector(tls_contexts(ids.client, ids.ca.bundle), resolver, policy),
        None,
    )
    await proxy.start()
    track(proxy)
    reader, writer = await open_plain(proxy.bound_port)
    for host, path in (("one", "/a"), ("two", "/b"), ("one", "/c")):
        status, body = await http_request(
            reader, writer, f"GET http://{host}{path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
        )
        assert status == 200
        assert f"path={path}".encode() in body
    await close(writer)
    assert [p for _, p, _ in app1.requests] == ["/a", "/c"]
    assert [p for _, p, _ in app2.requests] == ["/b"]
    await proxy.drain(5)
    await app1.stop()
    await app2.stop()


async def test_http_proxy_connect_tunnel(ids: Identities) -> None:
    app = await LineApp().start()
    inbound, resolver, _ = await _mesh(ids, app.port)
    proxy = HttpProxyListener(
        "127.0.0.1",
        0,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle), resolver, FakeClientTlsPolicy()
        ),
        None,
    )
    await proxy.start()
    track(proxy)
    reader, writer = await open_plain(proxy.bound_port)
    writer.write(f"CONNECT {HOST}:80 HTTP/1.1\r\nhost: {HOST}:80\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    assert await exchange(reader, writer, b"tunnel\n") == b"echo:tunnel\n"
    await close(writer)
    await proxy.drain(5)
    await inbound.drain(5)  # type: ignore[attr-defined]
    await app.stop()


async def test_simple_tls_with_file_ca_verifies_server_name(ids: Identities, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server_svid = ids.ca.issue_svid(SERVER_ID, dns_names=("api.example.com",))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp_path / "s.pem").write_bytes(server_svid.private_key_pem() + server_svid.cert_chain_pem())
    ctx.load_cert_chain(str(tmp_path / "s.pem"))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = track(await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx))
    port = server.sockets[0].getsockname()[1]
    (tmp_path / "ca.pem").write_bytes(ids.ca.bundle.to_pem())
    resolver = FakeResolver()
    resolver.add("api.example.com", 443, Endpoint("127.0.0.1", port))
    resolver.add("wrong.example.com", 443, Endpoint("127.0.0.1", port))
    simple = ClientTlsSettings(ClientTlsMode.SIMPLE, ca_certificates=tmp_path / "ca.pem")
    policy = FakeClientTlsPolicy(per_host={"api.example.com": simple, "wrong.example.com": simple})
    connector = outbound_connector(tls_contexts(ids.client, ids.ca.bundle), resolver, policy)
    results = {}
    for host in ("api.example.com", "wrong.example.com"):
        out = TcpOutboundListener("127.0.0.1", 0, host, 443, connector)
        await out.start()
        track(out)
        reader, writer = await open_plain(out.bound_port)
        results[host] = await exchange(reader, writer, b"x\n")
        await close(writer)
        await out.drain(5)
    assert results == {"api.example.com": b"x\n", "wrong.example.com": b""}
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET http://svc:99999/ HTTP/1.1",
        b"GET https://svc/ HTTP/1.1",
        b"CONNECT svc HTTP/1.1",
        b"GET * HTTP/1.1",
    ],
    ids=["port-out-of-range", "https-absolute-form", "connect-without-port", "asterisk"],
)
async def test_http_proxy_refuses_malformed_targets(ids: Identities, request_line: bytes) -> None:
    proxy = HttpProxyListener(
        "127.0.0.1",
        0,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle), FakeResolver(), FakeClientTlsPolicy()
        ),
        None,
    )
    await proxy.start()
    track(proxy)
    reader, writer = await open_plain(proxy.bound_port)
    status, _ = await http_request(reader, writer, request_line + b"\r\nhost: svc\r\n\r\n")
    assert status == 400
    await close(writer)


@pytest.mark.parametrize(
    ("sans", "reaches"),
    [((SERVER_ID,), True), (("spiffe://cluster.local/ns/backend/sa/other",), False), ((), False)],
    ids=["san-matches", "san-differs", "hostname-check-fails"],
)
async def test_mutual_with_file_certificates(
    ids: Identities,
    tmp_path,
    sans: tuple[str, ...],
    reaches: bool,  # type: ignore[no-untyped-def]
) -> None:
    """DestinationRule MUTUAL: file client cert + CA; subjectAltNames replace the host check."""
    app = await LineApp().start()
    _inbound, resolver, authz = await _mesh(ids, app.port)
    (tmp_path / "cert.pem").write_bytes(ids.client.cert_chain_pem())
    (tmp_path / "key.pem").write_bytes(ids.client.private_key_pem())
    (tmp_path / "ca.pem").write_bytes(ids.ca.bundle.to_pem())
    mutual = ClientTlsSettings(
        ClientTlsMode.MUTUAL,
        client_certificate=tmp_path / "cert.pem",
        private_key=tmp_path / "key.pem",
        ca_certificates=tmp_path / "ca.pem",
        subject_alt_names=sans,
    )
    out = TcpOutboundListener(
        "127.0.0.1",
        0,
        HOST,
        80,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle),
            resolver,
            FakeClientTlsPolicy(per_host={HOST: mutual}),
        ),
    )
    await out.start()
    track(out)
    reader, writer = await open_plain(out.bound_port)
    reply = await exchange(reader, writer, b"m\n")
    await close(writer)
    assert (reply == b"echo:m\n") is reaches
    assert (app.lines == [b"m\n"]) is reaches
    if reaches:
        assert authz.calls[0][0].principal == CLIENT_ID  # the file cert was presented


def _send_at_once_and_read(port: int, request: bytes) -> bytes:
    """A client that writes its request the moment it connects (before the proxy can have set
    up anything for the connection) and reads the whole answer; a hang is a 5 s timeout."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # nothing more: the proxy answers and closes
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


async def test_http_proxy_handles_bytes_that_arrive_with_the_connection(ids: Identities) -> None:
    # uvloop may deliver the first bytes while the accept coroutine is still resuming: they must
    # be processed, not held in the link's pending buffer forever (the client then hung)
    connector = outbound_connector(
        tls_contexts(ids.client, ids.ca.bundle), FakeResolver(), FakeClientTlsPolicy()
    )
    proxy = HttpProxyListener("127.0.0.1", 0, connector, None)
    await proxy.start()
    track(proxy)
    request = b"GET http://nowhere.svc/ HTTP/1.1\r\nhost: nowhere.svc\r\n\r\n"
    answers = await asyncio.gather(
        *(asyncio.to_thread(_send_at_once_and_read, proxy.bound_port, request) for _ in range(20))
    )
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 503 Service Unavailable"] * 20
    await proxy.drain(5)
