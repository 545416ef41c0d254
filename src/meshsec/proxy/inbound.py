"""Inbound listeners: one in front of each application port, in the port's PeerAuthentication mode.

* ``STRICT`` — every connection is a TLS server handshake with the current server context
  (client certificate required, chain verified against the current bundle), then the peer's
  SPIFFE ID must be in the mesh trust domain or an alias; plaintext fails the handshake.
* ``PERMISSIVE`` — the first bytes are peeked (``MSG_PEEK``, nothing consumed): a TLS record
  header (``0x16 0x03``) gets the STRICT treatment, anything else is relayed as plaintext, and a
  client that sends nothing within ``sniff_timeout`` is treated as plaintext (server-first
  protocols). ``0x16`` alone (one byte so far) counts as TLS: no HTTP or text protocol starts so.
* ``DISABLE`` — plaintext pass-through.

Then the :class:`~meshsec.proxy.authz.Authorizer` decides: TCP ports once per connection
(denied ⇒ closed), HTTP ports once per request (denied ⇒ ``403 RBAC: access denied``). Allowed
HTTP requests lose any client-sent ``x-forwarded-client-cert`` and, over mTLS, get
``By=<our id>;Hash=<sha256 of the peer leaf, hex>;URI=<peer id>`` (Envoy SANITIZE_SET); the
per-request path lives in :mod:`meshsec.proxy.inbound_http`.

Each accepted socket is handed to the loop with the TLS context current *at accept time*, so a
rotated SVID or bundle applies to the next handshake while open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
from dataclasses import dataclass, field

from meshsec.core.identity import TrustDomainSet
from meshsec.proxy.authz import AllowAll, Authorizer, PeerInfo
from meshsec.proxy.decision_cache import cache_decisions
from meshsec.proxy.errors import PeerRejected, TlsMaterialError
from meshsec.proxy.http1 import build_response
from meshsec.proxy.inbound_http import InboundHttp
from meshsec.proxy.listener import Acceptor
from meshsec.proxy.metrics import ConnectionLabels, ProxyMetrics
from meshsec.proxy.pump import ConnectionTracker, Link, PumpLimits, log_task_failure
from meshsec.proxy.tls import PeerIdentity, TlsContexts, peer_identity_of, verify_inbound_peer
from meshsec.proxy.tls_transport import accept_tls

log = logging.getLogger("meshsec.proxy.inbound")


class PortMode(enum.Enum):
    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"
    DISABLE = "DISABLE"


@dataclass(frozen=True)
class InboundPort:
    """``listen_port`` (0 = any, for tests) in front of ``app_host:app_port``."""

    listen_port: int
    app_port: int
    mode: PortMode
    http: bool = False
    app_host: str = "127.0.0.1"
    listen_host: str = "0.0.0.0"  # noqa: S104 - a sidecar listens for the pod's peers


@dataclass(frozen=True)
class InboundOptions:
    trust_domains: TrustDomainSet | None
    handshake_timeout: float = 10.0
    sniff_timeout: float = 5.0
    connect_timeout: float = 10.0
    limits: PumpLimits = field(default_factory=PumpLimits)
    backlog: int = 1024
    reuse_port: bool = False  # SO_REUSEPORT: worker processes share the listen port


def detect_tls(peeked: bytes) -> bool:
    """Does a connection starting with ``peeked`` (at least one byte) carry a TLS ClientHello?"""
    return peeked[0] == 0x16 and (len(peeked) < 2 or peeked[1] == 0x03)


class InboundListener:
    def __init__(
        self,
        port: InboundPort,
        tls: TlsContexts,
        *,
        options: InboundOptions,
        authorizer: Authorizer | None = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.port = port
        self.mode = port.mode
        self.tls = tls
        self.options = options
        # connection decisions remembered per peer while the policy version holds
        self.authorizer: Authorizer = cache_decisions(authorizer or AllowAll())
        self.metrics = metrics or ProxyMetrics()
        self.connections = ConnectionTracker()
        self._acceptor = Acceptor(
            port.listen_host,
            port.listen_port,
            self._on_socket,
            backlog=options.backlog,
            reuse_port=options.reuse_port,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.draining = False

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._acceptor.start()

    @property
    def bound_port(self) -> int:
        return self._acceptor.bound_port

    def stop_accepting(self) -> None:
        self._acceptor.stop()

    async def drain(self, grace: float) -> int:
        """Stop accepting; HTTP connections get ``connection: close`` on their next response
        (Envoy's drain), TCP ones may finish; after ``grace`` seconds the rest are closed."""
        self.stop_accepting()
        self.draining = True
        aborted = await self.connections.drain(grace)
        for task in list(self._tasks):
            task.cancel()
        return aborted

    def describe(self) -> dict[str, object]:
        return {
            "name": f"inbound|{self.port.app_port}",
            "address": f"{self.port.listen_host}:{self.bound_port}",
            "app": f"{self.port.app_host}:{self.port.app_port}",
            "mode": self.mode.value,
            "protocol": "http" if self.port.http else "tcp",
            "listening": self._acceptor.listening,
            "open_connections": len(self.connections),
        }

    # accepting --------------------------------------------------------------------------------
    def _on_socket(self, conn: socket.socket, address: str) -> None:
        mode = self.mode
        if mode is PortMode.PERMISSIVE:
            self._sniff(conn, address)
        else:
            self._spawn(conn, address, tls=mode is PortMode.STRICT)

    def _spawn(self, conn: socket.socket, address: str, *, tls: bool) -> None:
        loop = self._loop
        assert loop is not None
        task = loop.create_task(self._serve(conn, address, tls=tls))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)  # one callback (each is a loop handle)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        log_task_failure(task)

    def _sniff(self, conn: socket.socket, address: str) -> None:
        loop = self._loop
        assert loop is not None
        fd = conn.fileno()

        def decide(tls: bool | None) -> None:
            loop.remove_reader(fd)
            timer.cancel()
            if tls is None:
                conn.close()
                self._acceptor.release()
            else:
                self._spawn(conn, address, tls=tls)

        def readable() -> None:
            try:
                peeked = conn.recv(3, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                decide(None)
                return
            decide(detect_tls(peeked) if peeked else None)

        def timed_out() -> None:
            loop.remove_reader(fd)
            self._spawn(conn, address, tls=False)

        timer = loop.call_later(self.options.sniff_timeout, timed_out)
        loop.add_reader(fd, readable)

    # one connection ---------------------------------------------------------------------------
    async def _serve(self, conn: socket.socket, address: str, *, tls: bool) -> None:
        loop = self._loop
        assert loop is not None
        link = Link(self.options.limits)
        self._acceptor.release_when_done(link.done)
        identity: PeerIdentity | None = None
        try:
            if tls:
                snapshot = self.tls.current
                ctx = snapshot.server_context(http=self.port.http)
                transport = await accept_tls(
                    conn, lambda: link.down, ctx, handshake_timeout=self.options.handshake_timeout
                )
                identity = peer_identity_of(transport.get_extra_info("ssl_object"))
                verify_inbound_peer(identity, self.options.trust_domains)
            else:
                await loop.connect_accepted_socket(lambda: link.down, conn)
        except TlsMaterialError as exc:
            log.warning("inbound %s: refusing connection from %s: %s", self._name, address, exc)
            self.metrics.rejected("inbound", "no_certificate")
            _close_quietly(conn)
            link.abort()
            return
        except PeerRejected as exc:
            log.warning("inbound %s: rejected peer from %s: %s", self._name, address, exc.reason)
            self.metrics.rejected("inbound", "peer_identity")
            link.abort()
            return
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            log.info("inbound %s: handshake with %s failed: %s", self._name, address, _why(exc))
            self.metrics.rejected("inbound", "handshake")
            link.abort()  # the loop owns (and has closed) the socket now
            return
        own = self.tls.current.own_id if self.tls.ready else ""
        peer = PeerInfo.from_identity(identity, address)
        labels = ConnectionLabels(
            "destination",
            peer.principal,
            own,
            f"inbound|{self.port.app_port}",
            "mutual_tls" if identity is not None else "none",
        )
        if not self.port.http:
            decision = self.authorizer.authorize(peer, self.port.app_port, None)
            if not decision.allowed:
                log.info(
                    "inbound %s: denied connection from %s (%s): %s",
                    self._name,
                    peer.principal or address,
                    labels.connection_security_policy,
                    decision.reason,
                )
                self.metrics.rejected("inbound", "rbac_denied")
                link.abort()
                return
        self.connections.add(link)
        self.metrics.connection_opened(labels)
        link.done.add_done_callback(
            lambda _f: self.metrics.connection_closed(
                labels, link.down.bytes_in, link.up.bytes_in if link.up else 0
            )
        )
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                await loop.create_connection(
                    link.new_upstream, self.port.app_host, self.port.app_port
                )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "inbound %s: application %s:%s unreachable: %s",
                self._name,
                self.port.app_host,
                self.port.app_port,
                _why(exc),
            )
            if self.port.http:
                link.down.write(build_response(503, b"upstream connect error"))
            link.close()
            return
        if link.closed:  # the client left while we connected
            link.close()
            return
        if self.port.http:
            InboundHttp(
                link,
                peer,
                identity,
                own,
                self.port.app_port,
                self.authorizer,
                self.metrics,
                labels,
                draining=lambda: self.draining,
            )
        link.start()

    @property
    def _name(self) -> str:
        return f"{self.port.listen_port}->{self.port.app_port}"


def _close_quietly(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
