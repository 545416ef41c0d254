"""Outbound: TCP mappings and the HTTP proxy through a real inbound sidecar; secure naming; SNI."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct

import pytest

from meshsec.proxy.http1 import MAX_PIPELINED
from meshsec.proxy.inbound import PortMode
from meshsec.proxy.metrics import ProxyMetrics
from meshsec.proxy.outbound import HttpProxyListener, ProxyHttpSession, TcpOutboundListener
from meshsec.proxy.pump import Link
from meshsec.proxy.tls import build_server_context
from meshsec.proxy.upstream import (
    ClientTlsMode,
    ClientTlsSettings,
    Endpoint,
    Upstream,
    istio_sni,
)
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
from tests.fakes.transport import FakeTransport

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


_UC_BODY = (
    b"upstream connect error or disconnect/reset before headers."
    b" reset reason: connection termination"
)


async def _raw_upstream(reply: bytes, *, reset: bool = False) -> tuple[FakeResolver, list[bytes]]:
    """A plaintext server that reads one request head, writes ``reply`` and then closes its
    connection (a TCP reset instead of a FIN with ``reset``); "raw" resolves to it."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        if reply:
            writer.write(reply)
            await writer.drain()
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    server = track(await asyncio.start_server(serve, "127.0.0.1", 0))
    resolver = FakeResolver()
    resolver.add("raw", 80, Endpoint("127.0.0.1", server.sockets[0].getsockname()[1], ()))
    return resolver, heads


async def _proxy_to_raw(ids: Identities, resolver: FakeResolver) -> HttpProxyListener:
    policy = FakeClientTlsPolicy(default=ClientTlsSettings(ClientTlsMode.DISABLE))
    proxy = HttpProxyListener(
        "127.0.0.1",
        0,
        outbound_connector(tls_contexts(ids.client, ids.ca.bundle), resolver, policy),
        ProxyMetrics(),
    )
    await proxy.start()
    track(proxy)
    return proxy


async def _answer_until_close(port: int, request: bytes) -> bytes:
    reader, writer = await open_plain(port)
    track(writer)
    writer.write(request)
    await writer.drain()
    return await asyncio.wait_for(reader.read(), 5)  # everything up to the proxy's close


_GET_RAW = b"GET http://raw/x HTTP/1.1\r\nhost: raw\r\n\r\n"


@pytest.mark.parametrize(
    ("reply", "reset", "before"),
    [
        (b"", False, b""),
        (b"", True, b""),
        (b"HTTP/1.1 200 OK\r\ncontent-len", False, b""),
        (b"HTTP/1.1 100 Continue\r\n\r\n", False, b"HTTP/1.1 100 Continue\r\n\r\n"),
    ],
    ids=["closed-after-request", "reset-after-request", "partial-head", "after-100-continue"],
)
async def test_http_proxy_answers_503_when_upstream_ends_before_a_response_head(
    ids: Identities, reply: bytes, reset: bool, before: bytes
) -> None:
    resolver, heads = await _raw_upstream(reply, reset=reset)
    proxy = await _proxy_to_raw(ids, resolver)
    answer = await _answer_until_close(proxy.bound_port, _GET_RAW)
    assert len(heads) == 1
    assert heads[0].startswith(b"GET /x HTTP/1.1\r\n")  # the request went upstream
    assert answer.startswith(before + b"HTTP/1.1 503 Service Unavailable\r\n")
    head, _, body = answer[len(before) :].partition(b"\r\n\r\n")
    assert f"content-length: {len(_UC_BODY)}".encode() in head.split(b"\r\n")
    assert body == _UC_BODY  # one answer, then the connection closed
    labels = {"destination_service": "raw", "response_code": "503"}
    assert proxy.metrics.sample("istio_requests_total", labels | {"response_flags": "UC"}) == 1
    assert proxy.metrics.sample("istio_requests_total", labels) == 1  # no other 503 counted


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n\r\nthe body ends with the connection",
    ],
    ids=["truncated-body", "complete-then-close", "body-until-close"],
)
async def test_http_proxy_passes_on_an_upstream_end_after_a_response_head(
    ids: Identities, reply: bytes
) -> None:
    # the head was forwarded: what the upstream sent is all the client gets (a truncated
    # response stays truncated), then the connection closes; no 503 after it
    resolver, _ = await _raw_upstream(reply)
    proxy = await _proxy_to_raw(ids, resolver)
    assert await _answer_until_close(proxy.bound_port, _GET_RAW) == reply
    labels = {"destination_service": "raw"}
    assert proxy.metrics.sample("istio_requests_total", labels | {"response_code": "200"}) == 1
    assert proxy.metrics.sample("istio_requests_total", labels | {"response_code": "503"}) == 0


class _InMemoryUpstream:
    """Stands in for the connector's connect: every destination is one in-memory connection."""

    def __init__(self) -> None:
        self.app = FakeTransport()  # the latest connection's
        self.connected = asyncio.Event()

    async def connect(self, link: Link, host: str, port: int) -> Upstream:
        self.app = FakeTransport()
        link.new_upstream().connection_made(self.app)
        self.connected.set()
        return Upstream(f"{host}:{port}", "", False)


async def _session(
    ids: Identities, requests: list[bytes]
) -> tuple[Link, FakeTransport, _InMemoryUpstream]:
    """An HTTP proxy session given ``requests`` in one chunk: (link, client, upstream)."""
    connector = outbound_connector(
        tls_contexts(ids.client, ids.ca.bundle), FakeResolver(), FakeClientTlsPolicy()
    )
    upstream = _InMemoryUpstream()
    connector.connect = upstream.connect  # type: ignore[method-assign]
    proxy = HttpProxyListener("127.0.0.1", 0, connector, ProxyMetrics())
    link = Link(connector.options.limits)
    client = FakeTransport()
    link.down.connection_made(client)
    ProxyHttpSession(proxy, link, "127.0.0.1")
    link.down.data_received(b"".join(requests))
    await asyncio.wait_for(upstream.connected.wait(), 5)
    return link, client, upstream


async def _pipelined(
    ids: Identities, requests: list[bytes]
) -> tuple[Link, FakeTransport, FakeTransport]:
    """:func:`_session`, with the upstream connection's transport."""
    link, client, upstream = await _session(ids, requests)
    return link, client, upstream.app


def _get(n: int) -> bytes:
    return b"GET http://raw/%d HTTP/1.1\r\nhost: raw\r\n\r\n" % n


def _forwarded(data: bytes) -> list[int]:
    """The numbers of the GET requests that reached the upstream, in order."""
    return [int(line.split(b" ")[1][1:]) for line in data.split(b"\r\n") if line.startswith(b"GET")]


_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_http_proxy_pipelining_beyond_the_limit_waits_for_a_response(
    ids: Identities,
) -> None:
    # the local app pipelines against a slow upstream: at most MAX_PIPELINED requests await
    # responses, the rest stay unread until one completes; nothing is refused or lost
    count = MAX_PIPELINED + 3
    link, client, app = await _pipelined(ids, [_get(n) for n in range(count)])
    assert _forwarded(bytes(app.written)) == list(range(MAX_PIPELINED))
    assert not client.reading
    assert link.up is not None
    for answered in range(1, count + 1):
        link.up.data_received(_OK)
        assert _forwarded(bytes(app.written)) == list(range(min(MAX_PIPELINED + answered, count)))
        assert bytes(client.written) == _OK * answered
    assert client.reading
    assert not link.closed


@pytest.mark.parametrize(
    "bad",
    [b"GET :x\r\n\r\n", b"GET http://raw:99999/ HTTP/1.1\r\nhost: raw\r\n\r\n"],
    ids=["malformed-head", "port-out-of-range"],
)
@pytest.mark.parametrize("before", [1, MAX_PIPELINED + 2], ids=["after-one", "beyond-the-limit"])
async def test_http_proxy_answers_a_bad_pipelined_request_in_its_turn(
    ids: Identities, before: int, bad: bytes
) -> None:
    # the responses to the requests before it first, then 400, then the connection closes;
    # nothing after the bad request reaches the upstream
    link, client, app = await _pipelined(ids, [_get(n) for n in range(before)] + [bad, _get(0)])
    assert link.up is not None
    for answered in range(1, before + 1):
        assert client.written == _OK * (answered - 1)
        link.up.data_received(_OK)
    assert _forwarded(bytes(app.written)) == list(range(before))
    assert bytes(client.written).startswith(_OK * before + b"HTTP/1.1 400 Bad Request\r\n")
    assert link.closed


@pytest.mark.parametrize("before", [0, 1])
async def test_http_proxy_answers_a_broken_body_after_the_requests_before_it(
    ids: Identities, before: int
) -> None:
    # the upstream has the head and part of the body: it will not answer that request, so
    # only the responses to the requests before it are waited for, and ours never lands in one
    bad = (
        b"POST http://raw/ HTTP/1.1\r\nhost: raw\r\ntransfer-encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n"
    )
    link, client, _ = await _pipelined(ids, [_get(0)] * before + [bad])
    if before:
        assert link.up is not None
        assert bytes(client.written) == b""
        link.up.data_received(_OK[:-1])
        assert bytes(client.written) == _OK[:-1]
        assert not link.closed
        link.up.data_received(_OK[-1:])
    assert bytes(client.written).startswith(_OK * before + b"HTTP/1.1 400 Bad Request\r\n")
    assert link.closed


async def test_http_proxy_new_upstream_waits_while_the_client_cannot_take_more(
    ids: Identities,
) -> None:
    # the client's write buffer is full when a request for another host switches upstreams:
    # the new upstream is not read until the client drains (no further pause_writing comes)
    link, _, upstream = await _session(ids, [_get(0)])
    assert link.up is not None
    link.up.data_received(_OK)
    link.down.pause_writing()
    first = upstream.app
    upstream.connected.clear()
    link.down.data_received(b"GET http://other/1 HTTP/1.1\r\nhost: other\r\n\r\n")
    await asyncio.wait_for(upstream.connected.wait(), 5)
    assert upstream.app is not first
    assert _forwarded(bytes(upstream.app.written)) == [1]
    assert not upstream.app.reading
    link.down.resume_writing()
    assert upstream.app.reading


async def test_http_proxy_upstream_draining_its_writes_does_not_resume_a_held_client(
    ids: Identities,
) -> None:
    link, client, app = await _pipelined(ids, [_get(n) for n in range(MAX_PIPELINED + 1)])
    assert link.up is not None
    link.up.pause_writing()
    link.up.resume_writing()  # the upstream's buffer drained: the held requests still wait
    assert not client.reading
    link.up.pause_writing()
    link.up.data_received(_OK)  # below the limit, but the upstream is not reading
    assert _forwarded(bytes(app.written)) == list(range(MAX_PIPELINED + 1))  # the held one
    assert not client.reading
    link.up.resume_writing()
    assert client.reading
