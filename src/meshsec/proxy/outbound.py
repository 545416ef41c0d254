"""Outbound: applications reach services by name through the sidecar.

Two listener kinds:

* :class:`TcpOutboundListener` — an explicit port mapping ``listen port → host:port``;
* :class:`HttpProxyListener` — an HTTP/1.1 forward proxy (``HTTP_PROXY``): absolute-form
  requests (``GET http://reviews.default.svc:9080/x``) are forwarded in origin-form, ``CONNECT
  host:port`` opens a tunnel; origin-form requests go to their ``Host``.

Both hand each destination to the :class:`~meshsec.proxy.upstream.UpstreamConnector`, which
resolves it and applies its client TLS and secure naming (:mod:`meshsec.proxy.upstream`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from urllib.parse import urlsplit

from meshsec.proxy.errors import (
    HttpError,
    PeerRejected,
    TlsMaterialError,
    UpstreamUnavailable,
)
from meshsec.proxy.http1 import (
    MAX_PIPELINED,
    BodyFramer,
    Framing,
    MessageReader,
    ReaderState,
    build_response,
    request_framing,
    response_framing,
)
from meshsec.proxy.http1_head import (
    parse_request_head,
    parse_response_head,
)
from meshsec.proxy.listener import Acceptor
from meshsec.proxy.metrics import UPSTREAM_CONNECTION_TERMINATION, ConnectionLabels, ProxyMetrics
from meshsec.proxy.pump import ConnectionTracker, Link, WriteBatch, log_task_failure
from meshsec.proxy.upstream import (
    Upstream,
    UpstreamConnector,
)

log = logging.getLogger("meshsec.proxy.outbound")

_PROXY_HEADERS = (b"proxy-connection", b"proxy-authorization")
# Envoy's local reply when the upstream connection ends before a response head (flag UC)
RESET_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers"
TERMINATED_BEFORE_HEADERS = f"{RESET_BEFORE_HEADERS}. reset reason: connection termination"


class _OutboundBase:
    kind = "outbound"

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        connector: UpstreamConnector,
        metrics: ProxyMetrics | None,
    ) -> None:
        self.connector = connector
        self.options = connector.options
        self.metrics = metrics or ProxyMetrics()
        self.connections = ConnectionTracker()
        self._acceptor = Acceptor(
            listen_host,
            listen_port,
            self._on_socket,
            backlog=self.options.backlog,
            reuse_port=self.options.reuse_port,
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._acceptor.start()

    @property
    def bound_port(self) -> int:
        return self._acceptor.bound_port

    async def drain(self, grace: float) -> int:
        self._acceptor.stop()
        aborted = await self.connections.drain(grace)
        for task in list(self._tasks):
            task.cancel()
        return aborted

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_task_failure)

    def _on_socket(self, conn: socket.socket, address: str) -> None:
        self._spawn(self._serve(conn, address))

    def _new_link(self) -> Link:
        """The link of an accepted connection, counted in the worker's load until it ends."""
        link = Link(self.options.limits)
        self._acceptor.release_when_done(link.done)
        return link

    async def _serve(self, conn: socket.socket, address: str) -> None:
        raise NotImplementedError

    def _labels(self, upstream: Upstream | None, destination: str) -> ConnectionLabels:
        own = str(self.connector.tls.current.svid.spiffe_id) if self.connector.tls.ready else ""
        return ConnectionLabels(
            "source",
            own,
            upstream.principal if upstream else "",
            destination,
            "mutual_tls" if upstream is not None and upstream.principal else "none",
        )

    def _track(self, link: Link, labels: ConnectionLabels) -> None:
        self.metrics.connection_opened(labels)
        link.done.add_done_callback(
            lambda _f: self.metrics.connection_closed(
                labels, link.down.bytes_in, link.up.bytes_in if link.up else 0
            )
        )


class TcpOutboundListener(_OutboundBase):
    """``listen_port`` → ``host:port`` through the mesh."""

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        host: str,
        port: int,
        connector: UpstreamConnector,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        super().__init__(listen_host, listen_port, connector, metrics)
        self.host = host
        self.port = port

    def describe(self) -> dict[str, object]:
        return {
            "name": f"outbound|{self.port}||{self.host}",
            "address": f"{self._acceptor.host}:{self.bound_port}",
            "destination": f"{self.host}:{self.port}",
            "open_connections": len(self.connections),
        }

    async def _serve(self, conn: socket.socket, address: str) -> None:
        loop = asyncio.get_running_loop()
        link = self._new_link()
        try:
            await loop.connect_accepted_socket(lambda: link.down, conn)
        except OSError:
            link.abort()
            return
        self.connections.add(link)
        try:
            upstream = await self.connector.connect(link, self.host, self.port)
        except (UpstreamUnavailable, PeerRejected, TlsMaterialError) as exc:
            log.warning("outbound tcp %s:%s from %s: %s", self.host, self.port, address, exc)
            self.metrics.rejected("outbound", type(exc).__name__)
            link.abort()
            return
        if link.closed:
            link.close()
            return
        self._track(link, self._labels(upstream, self.host))
        link.start()


class HttpProxyListener(_OutboundBase):
    """An HTTP/1.1 forward proxy for the application (absolute-form and CONNECT)."""

    def describe(self) -> dict[str, object]:
        return {
            "name": "outbound|http-proxy",
            "address": f"{self._acceptor.host}:{self.bound_port}",
            "open_connections": len(self.connections),
        }

    async def _serve(self, conn: socket.socket, address: str) -> None:
        loop = asyncio.get_running_loop()
        link = self._new_link()
        # The session takes the client's bytes from the first one: uvloop may deliver data
        # before connect_accepted_socket returns here, and nothing would read it later.
        ProxyHttpSession(self, link, address)
        try:
            await loop.connect_accepted_socket(lambda: link.down, conn)
        except OSError:
            link.abort()
            return
        self.connections.add(link)


class ProxyHttpSession:
    """One client connection of the HTTP proxy: requests may go to different destinations."""

    def __init__(self, listener: HttpProxyListener, link: Link, address: str) -> None:
        self.listener = listener
        self.link = link
        self.address = address
        self.authority: tuple[str, int] | None = None
        self.upstream: Upstream | None = None
        self.labels: ConnectionLabels | None = None
        self.outstanding: deque[bytes] = deque()
        self.waiting: tuple[bytes, BodyFramer, str, int] | None = None
        self.at_limit = False  # a head beyond MAX_PIPELINED is unread: reading is held
        self.refusal: tuple[int, str] | None = None  # a bad request's answer, after the others
        self.requests = MessageReader(self._request_head, self._request_body, _nothing)
        self.responses: MessageReader | None = None
        self._informational = False
        self._to_client = WriteBatch(link.down)  # a response head and its body: one write
        link.down.on_data = self._from_client

    # client → upstream ------------------------------------------------------------------------
    def _from_client(self, data: bytes) -> None:
        if self.refusal is not None:
            return  # the connection ends with the refusal: nothing after the bad request
        try:
            self.requests.feed(data)
        except (HttpError, ValueError) as exc:
            self._request_failed(exc)
            return
        if self.requests.buffered > self.requests.max_head:
            self.link.down.pause()

    def _request_failed(self, exc: HttpError | ValueError) -> None:
        if isinstance(exc, HttpError):
            status, reason = exc.status, exc.reason
        else:  # urlsplit: bad port or IPv6 literal in the request target
            status, reason = 400, f"malformed request target: {exc}"
        if self.requests.state is ReaderState.BODY and self.outstanding:
            # the body of the last request sent upstream broke off: its answer will not come
            # (the ones before it are answered first)
            self.outstanding.pop()
        if not self.outstanding:
            self._fail(status, reason)
            return
        # pipelined: the requests before it are answered first, then this, then the end
        self.refusal = (status, reason)
        self.link.down.pause()

    def _request_head(self, raw: bytes) -> BodyFramer | None:
        if len(self.outstanding) >= MAX_PIPELINED:
            # hold it, and everything after it, until a response completes (backpressure)
            self.requests.unread(raw)
            self.at_limit = True
            self.link.down.hold()
            return None
        head = parse_request_head(raw)
        if head.method == b"CONNECT":
            host, port = _split_authority(head.target.decode("latin-1"), None)
            self._spawn(self._open_tunnel(host, port))
            return None
        target = head.target.decode("latin-1")
        if target.startswith("http://"):
            url = urlsplit(target)
            if not url.hostname:
                raise HttpError(400, "absolute-form request without a host")
            host, port = url.hostname, url.port or 80
            head.target = (url.path or "/").encode("latin-1") + (
                b"?" + url.query.encode("latin-1") if url.query else b""
            )
            if head.get(b"host") is None:
                head.headers.append((b"host", url.netloc.encode("latin-1")))
        elif target.startswith("/"):
            host_header = head.get(b"host")
            if host_header is None:
                raise HttpError(400, "no host to forward to")
            host, port = _split_authority(host_header.decode("latin-1"), 80)
        else:
            raise HttpError(400, f"unsupported request target {target[:60]!r}")
        head.headers = [
            (n, v)
            for n, v in head.headers
            if n not in (b"proxy-connection", b"proxy-authorization")
        ]
        framer = request_framing(head)
        raw_out = head.encode()
        if self.authority == (host, port) and self.link.up is not None and not self.waiting:
            self._send_request(raw_out, head.method)
            return framer
        self.waiting = (raw_out, framer, host, port)
        self.link.down.pause()
        if not self.outstanding:
            self._spawn(self._switch())
        return None

    def _send_request(self, raw: bytes, method: bytes) -> None:
        assert self.link.up is not None
        self.link.up.write(raw)
        self.outstanding.append(method)

    def _request_body(self, chunk: bytes | memoryview) -> None:
        if self.link.up is not None:
            self.link.up.write(chunk)

    def _spawn(self, coro: object) -> None:
        self.listener._spawn(coro)

    async def _connect(self, host: str, port: int) -> bool:
        if self.link.up is not None:
            self.link.detach_upstream()
        self.responses = None
        try:
            upstream = await self.listener.connector.connect(self.link, host, port)
        except (UpstreamUnavailable, PeerRejected, TlsMaterialError) as exc:
            log.warning("outbound http %s:%s from %s: %s", host, port, self.address, exc)
            self.listener.metrics.rejected("outbound", type(exc).__name__)
            self.link.up = None
            status = 503
            labels = self.listener._labels(None, host)
            self.listener.metrics.request(labels, status)
            self._fail(status, RESET_BEFORE_HEADERS)
            return False
        self.authority = (host, port)
        self.upstream = upstream
        metrics = self.listener.metrics
        if self.labels is None:
            self.link.done.add_done_callback(self._closed)
        else:
            metrics.connection_closed(self.labels, 0, 0)  # the previous destination
        self.labels = self.listener._labels(upstream, host)
        metrics.connection_opened(self.labels)
        return True

    def _closed(self, _f: object) -> None:
        if self.labels is not None:
            up = self.link.up
            self.listener.metrics.connection_closed(
                self.labels, self.link.down.bytes_in, up.bytes_in if up else 0
            )

    async def _switch(self) -> None:
        waiting = self.waiting
        if waiting is None:
            return
        raw, framer, host, port = waiting
        if not await self._connect(host, port):
            return
        assert self.link.up is not None
        self.responses = MessageReader(self._response_head, self._response_body, self._end)
        self.link.up.on_data = self._from_upstream
        self.link.up.on_end = self._upstream_ended
        self.waiting = None
        self._send_request(raw, raw.split(b" ", 1)[0])
        self.link.start()
        self.link.down.resume()
        try:
            self.requests.release(framer)
        except (HttpError, ValueError) as exc:
            self._request_failed(exc)

    async def _open_tunnel(self, host: str, port: int) -> None:
        if not await self._connect(host, port):
            return
        self.link.down.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.link.down.on_data = None
        self.requests.on_body = lambda chunk: self.link.up.write(chunk)  # type: ignore[union-attr]
        self.requests.tunnel()
        self.link.down.on_data = None
        self.link.start()

    # upstream → client ------------------------------------------------------------------------
    def _from_upstream(self, data: bytes) -> None:
        assert self.responses is not None
        try:
            self.responses.feed(data)
        except HttpError as exc:
            self._to_client.flush()
            log.warning("outbound http: bad response from %s: %s", self.authority, exc.reason)
            self.link.close()
            return
        self._to_client.flush()

    def _response_head(self, raw: bytes) -> BodyFramer | None:
        head = parse_response_head(raw)
        method = self.outstanding[0] if self.outstanding else None
        self._to_client.add(raw)
        self._informational = 100 <= head.status < 200 and head.status != 101
        if self._informational:
            return BodyFramer(Framing.NONE)
        if self.labels is not None:
            self.listener.metrics.request(self.labels, head.status)
        if head.status == 101:
            assert self.responses is not None
            self.responses.tunnel()
            self.requests.tunnel()
        return response_framing(head, method)

    def _response_body(self, chunk: bytes | memoryview) -> None:
        self._to_client.add(chunk)

    def _end(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.outstanding:
            self.outstanding.popleft()
        if self.at_limit:
            self._below_limit()
        if self.refusal is not None and not self.outstanding:
            self._fail(*self.refusal)
        elif self.waiting is not None and not self.outstanding:
            self._spawn(self._switch())

    def _below_limit(self) -> None:
        """A response completed: the unread head goes on, then what followed it."""
        self.at_limit = False
        self.link.down.release()
        try:
            self.requests.resume()
        except (HttpError, ValueError) as exc:
            self._request_failed(exc)

    def _upstream_ended(self) -> bool:
        """The upstream sent EOF or its connection was lost. A request still waits for its
        response head (none, or only part of one, has arrived): answer 503 like Envoy (flag UC)
        and close. Otherwise the link passes the end on to the client as before: after an idle
        upstream's EOF, or inside a forwarded response (which ends there, truncated)."""
        link, up, responses = self.link, self.link.up, self.responses
        if link.closed or up is None or responses is None or not self.outstanding:
            return False
        if up.closed and up.eof:
            return False  # the EOF came with nothing outstanding and was passed to the client
        if responses.state is not ReaderState.HEAD:
            return False  # a response head went to the client: it is truncated
        log.warning(
            "outbound http %s:%s from %s: upstream connection ended before a response head",
            *(self.authority or ("?", 0)),
            self.address,
        )
        if self.labels is not None:
            self.listener.metrics.request(self.labels, 503, UPSTREAM_CONNECTION_TERMINATION)
        self._fail(503, TERMINATED_BEFORE_HEADERS)
        return True

    def _fail(self, status: int, reason: str) -> None:
        self._to_client.add(build_response(status, reason.encode()))  # after responses batched
        self._to_client.flush()
        self.link.close()


def _split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    host, sep, port_text = authority.rpartition(":")
    if not sep or "]" in port_text:
        if default_port is None:
            raise HttpError(400, f"authority {authority[:60]!r} has no port")
        return authority.strip("[]"), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HttpError(400, f"bad port in authority {authority[:60]!r}")
    return host.strip("[]"), int(port_text)


def _nothing() -> None:
    return None
