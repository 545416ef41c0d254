"""Outbound: applications reach services by name through the sidecar.

Two listener kinds:

* :class:`TcpOutboundListener` — an explicit port mapping ``listen port → host:port``;
* :class:`HttpProxyListener` — an HTTP/1.1 forward proxy (``HTTP_PROXY``): absolute-form
  requests (``GET http://reviews.default.svc:9080/x``) are forwarded in origin-form, ``CONNECT
  host:port`` opens a tunnel; origin-form requests go to their ``Host``.

Each destination is resolved by a :class:`ServiceResolver` (host, port → endpoints with their
service accounts) and gets its client TLS from a :class:`ClientTlsPolicy` (the resolved
DestinationRule / auto mTLS, istio-contracts §5.2–5.3):

* ``ISTIO_MUTUAL`` — the mesh SVID, the mesh bundle, SNI ``outbound_.<port>_._.<host>`` (or the
  rule's ``sni``), ALPN ``istio-peer-exchange, istio``; **secure naming**: the server's SPIFFE ID
  must be one of the rule's ``subjectAltNames``, else the endpoints' service accounts expanded to
  every trust-domain alias (§5.4). A mismatch fails the connection with a log line naming the
  expected and the presented identities. Auto-detected ISTIO_MUTUAL goes plaintext to endpoints
  not marked as mesh endpoints (``security.istio.io/tlsMode=istio``).
* ``SIMPLE`` / ``MUTUAL`` — file certificates; server verification by ``caCertificates`` (host
  name check against the SNI, or the rule's ``subjectAltNames``); none without a CA or with
  ``insecureSkipVerify`` (logged once per destination).
* ``DISABLE`` — plaintext.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from cryptography import x509

from meshsec.core.identity import SpiffeId, TrustDomainSet
from meshsec.core.identity.errors import IdentityError
from meshsec.proxy.errors import (
    HttpError,
    PeerRejected,
    SecureNamingError,
    TlsMaterialError,
    UpstreamUnavailable,
)
from meshsec.proxy.http1 import (
    BodyFramer,
    Framing,
    MessageReader,
    build_response,
    parse_request_head,
    parse_response_head,
    request_framing,
    response_framing,
)
from meshsec.proxy.listener import Acceptor
from meshsec.proxy.metrics import ConnectionLabels, ProxyMetrics
from meshsec.proxy.pump import ConnectionTracker, Link, PumpLimits, log_task_failure
from meshsec.proxy.tls import (
    TlsContexts,
    build_file_client_context,
    parse_peer_identity,
    verify_secure_naming,
)

log = logging.getLogger("meshsec.proxy.outbound")

_PROXY_HEADERS = (b"proxy-connection", b"proxy-authorization")


class ClientTlsMode(enum.Enum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    service_accounts: tuple[str, ...] = ()  # SPIFFE IDs the workload runs as
    mesh: bool = True  # carries security.istio.io/tlsMode=istio (auto mTLS may use TLS)


@dataclass(frozen=True)
class ClientTlsSettings:
    mode: ClientTlsMode
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    client_certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None
    insecure_skip_verify: bool = False
    auto: bool = False  # decided by auto mTLS, not written in a DestinationRule


class ServiceResolver(Protocol):
    def resolve(self, host: str, port: int) -> Sequence[Endpoint]:
        """Endpoints of ``host:port`` (empty if the service is unknown or has none)."""
        ...


class ClientTlsPolicy(Protocol):
    def client_tls(self, host: str, port: int) -> ClientTlsSettings:
        """The effective client TLS settings towards ``host:port``."""
        ...


@dataclass(frozen=True)
class OutboundOptions:
    trust_domains: TrustDomainSet | None
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    limits: PumpLimits = field(default_factory=PumpLimits)
    backlog: int = 1024


@dataclass(frozen=True)
class Upstream:
    """What was connected: for metrics and logs."""

    destination: str
    principal: str
    mtls: bool


def verify_subject_alt_names(der: bytes | None, allowed: Sequence[str], destination: str) -> None:
    """SIMPLE/MUTUAL with ``subjectAltNames``: one DNS or URI SAN must equal an allowed value."""
    if not der:
        raise PeerRejected("server presented no certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [
            *san.get_values_for_type(x509.DNSName),
            *san.get_values_for_type(x509.UniformResourceIdentifier),
        ]
    except (ValueError, x509.ExtensionNotFound):
        names = []
    if not any(name in allowed for name in names):
        raise SecureNamingError(destination, allowed, ", ".join(names) or "(no SAN)")


def istio_sni(host: str, port: int, subset: str = "") -> str:
    """Envoy's cluster SNI for ISTIO_MUTUAL: ``outbound_.<port>_.<subset>_.<host>``."""
    return f"outbound_.{port}_.{subset}_.{host}"


def expand_sans(sans: Sequence[str], trust_domains: TrustDomainSet | None) -> tuple[str, ...]:
    """Every SAN in every equivalent trust domain (Istio ``ExpandWithTrustDomains``)."""
    out: list[str] = []
    for san in sans:
        variants: tuple[str, ...] = (san,)
        if trust_domains is not None:
            try:
                variants = tuple(str(i) for i in trust_domains.expand(SpiffeId.parse(san)))
            except IdentityError:
                variants = (san,)
        for v in variants:
            if v not in out:
                out.append(v)
    return tuple(out)


class UpstreamConnector:
    """Resolve, pick an endpoint, connect with the right client TLS, enforce secure naming."""

    def __init__(
        self,
        resolver: ServiceResolver,
        policy: ClientTlsPolicy,
        tls: TlsContexts,
        options: OutboundOptions,
    ) -> None:
        self.resolver = resolver
        self.policy = policy
        self.tls = tls
        self.options = options
        self._rr = itertools.count()
        self._file_contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
        self._warned: set[str] = set()

    async def connect(self, link: Link, host: str, port: int) -> Upstream:
        destination = f"{host}:{port}"
        endpoints = self.resolver.resolve(host, port)
        if not endpoints:
            raise UpstreamUnavailable(destination, "no endpoints (unknown service?)")
        endpoint = endpoints[next(self._rr) % len(endpoints)]
        settings = self.policy.client_tls(host, port)
        ctx, sni, sans = self._client_tls(settings, endpoint, host, port)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    link.new_upstream,
                    endpoint.address,
                    endpoint.port,
                    ssl=ctx,
                    server_hostname=sni if ctx is not None else None,
                    ssl_handshake_timeout=self.options.handshake_timeout if ctx else None,
                ),
                self.options.connect_timeout + self.options.handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) else str(exc) or "timed out"
            raise UpstreamUnavailable(
                f"{destination} ({endpoint.address}:{endpoint.port})", reason
            ) from None
        if ctx is None:
            return Upstream(destination, "", False)
        assert link.up is not None
        assert link.up.transport is not None
        ssl_object = link.up.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if settings.mode is not ClientTlsMode.ISTIO_MUTUAL:
            verified = settings.ca_certificates is not None and not settings.insecure_skip_verify
            if verified and settings.subject_alt_names:
                try:
                    verify_subject_alt_names(der, settings.subject_alt_names, destination)
                except PeerRejected as exc:
                    log.warning("outbound %s: %s", destination, exc)
                    link.up.abort()
                    raise
            return Upstream(destination, "", True)
        try:
            if not der:
                raise PeerRejected("server presented no certificate")
            identity = parse_peer_identity(der)
            verify_secure_naming(identity, sans, destination)
        except PeerRejected as exc:
            log.warning("outbound %s: %s", destination, exc)
            link.up.abort()
            raise
        return Upstream(destination, identity.principal, True)

    def _client_tls(
        self, settings: ClientTlsSettings, endpoint: Endpoint, host: str, port: int
    ) -> tuple[ssl.SSLContext | None, str | None, tuple[str, ...]]:
        mode = settings.mode
        if mode is ClientTlsMode.DISABLE:
            return None, None, ()
        if mode is ClientTlsMode.ISTIO_MUTUAL:
            if settings.auto and not endpoint.mesh:
                return None, None, ()
            sans = settings.subject_alt_names or endpoint.service_accounts
            return (
                self.tls.current.client_istio,
                settings.sni or istio_sni(host, port),
                expand_sans(sans, self.options.trust_domains),
            )
        return self._file_context(settings, host), settings.sni or host, ()

    def _file_context(self, settings: ClientTlsSettings, host: str) -> ssl.SSLContext:
        verify = settings.ca_certificates is not None and not settings.insecure_skip_verify
        if not verify and host not in self._warned:
            self._warned.add(host)
            log.warning("outbound %s: %s without server verification", host, settings.mode.value)
        key = (
            settings.client_certificate,
            settings.private_key,
            settings.ca_certificates if verify else None,
            _mtime(settings.client_certificate),
            _mtime(settings.ca_certificates),
        )
        ctx = self._file_contexts.get(key)
        if ctx is None:
            ctx = build_file_client_context(
                certificate=settings.client_certificate
                if settings.mode is ClientTlsMode.MUTUAL
                else None,
                private_key=settings.private_key,
                ca_certificates=settings.ca_certificates if verify else None,
                check_hostname=verify and not settings.subject_alt_names,
                params=self.tls.params,
            )
            self._file_contexts[key] = ctx
        return ctx


def _mtime(path: Path | None) -> float:
    try:
        return path.stat().st_mtime if path is not None else 0.0
    except OSError:
        return 0.0


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
            listen_host, listen_port, self._on_socket, backlog=self.options.backlog
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
        link = Link(self.options.limits)
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
        link = Link(self.options.limits)
        try:
            await loop.connect_accepted_socket(lambda: link.down, conn)
        except OSError:
            link.abort()
            return
        self.connections.add(link)
        ProxyHttpSession(self, link, address)


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
        self.requests = MessageReader(self._request_head, self._request_body, _nothing)
        self.responses: MessageReader | None = None
        self._informational = False
        link.down.on_data = self._from_client

    # client → upstream ------------------------------------------------------------------------
    def _from_client(self, data: bytes) -> None:
        try:
            self.requests.feed(data)
        except HttpError as exc:
            self._fail(exc.status, exc.reason)
            return
        except ValueError as exc:  # urlsplit: bad port or IPv6 literal in the request target
            self._fail(400, f"malformed request target: {exc}")
            return
        if self.requests.buffered > self.requests.max_head:
            self.link.down.pause()

    def _request_head(self, raw: bytes) -> BodyFramer | None:
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
            self._fail(status, "upstream connect error or disconnect/reset before headers")
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
        self.waiting = None
        self._send_request(raw, raw.split(b" ", 1)[0])
        self.link.start()
        self.link.down.resume()
        try:
            self.requests.release(framer)
        except HttpError as exc:
            self._fail(exc.status, exc.reason)

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
            log.warning("outbound http: bad response from %s: %s", self.authority, exc.reason)
            self.link.close()

    def _response_head(self, raw: bytes) -> BodyFramer | None:
        head = parse_response_head(raw)
        method = self.outstanding[0] if self.outstanding else None
        self.link.down.write(raw)
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
        self.link.down.write(chunk)

    def _end(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.outstanding:
            self.outstanding.popleft()
        if self.waiting is not None and not self.outstanding:
            self._spawn(self._switch())

    def _fail(self, status: int, reason: str) -> None:
        self.link.down.write(build_response(status, reason.encode()))
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
