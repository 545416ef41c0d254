"""A listening socket that hands each accepted, non-blocking socket to a callback.

The proxy accepts sockets itself (instead of ``loop.create_server``) so it can peek at the first
bytes (PERMISSIVE), pick the TLS context at accept time (rotation) and hand the socket to the loop
with ``connect_accepted_socket``. Works with the default loop and uvloop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

from meshsec.proxy.errors import ListenError

log = logging.getLogger("meshsec.proxy.listener")

ACCEPT_BATCH = 64
SHARED_ACCEPT_BATCH = 1
"""On a socket every worker waits on, one connection per wake-up: the other woken workers take
the rest of a burst instead of the first one taking it all."""

_SHARED: dict[tuple[str, int], socket.socket] = {}
"""Listening sockets bound by the parent before ``--concurrency`` workers fork."""


def bind_shared(addresses: set[tuple[str, int]], *, backlog: int = 1024) -> None:
    """Bind ``addresses`` now, for worker processes forked next to accept on.

    Every worker then waits on the same socket and whichever is free takes the next
    connection (haproxy's threads share their listeners the same way). With ``SO_REUSEPORT``
    sockets the kernel hashes each connection to one worker whether or not it is busy, so two
    clients' handshakes can queue behind each other on one worker while the other idles.
    Addresses known only later (ports from ``--config-dir``) still use ``SO_REUSEPORT``.
    """
    for host, port in sorted(addresses):
        if port != 0:  # port 0 would give each worker its own port anyway
            _SHARED[host, port] = _bind(host, port, backlog, reuse_port=True)


def _bind(host: str, port: int, backlog: int, *, reuse_port: bool) -> socket.socket:
    try:
        sock = socket.create_server((host, port), backlog=backlog, reuse_port=reuse_port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(host, port, reason) from None
    sock.setblocking(False)
    return sock


class Acceptor:
    def __init__(
        self,
        host: str,
        port: int,
        on_socket: Callable[[socket.socket, str], None],
        *,
        backlog: int = 1024,
        reuse_port: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.on_socket = on_socket
        self.backlog = backlog
        self.reuse_port = reuse_port
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bound_port = 0
        self._batch = ACCEPT_BATCH

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # reuse_port: several worker processes bind the same port and the kernel spreads new
        # connections over them (``meshsec proxy run --concurrency N``)
        sock = _SHARED.pop((self.host, self.port), None) if self.reuse_port else None
        self._batch = ACCEPT_BATCH if sock is None else SHARED_ACCEPT_BATCH
        if sock is None:
            sock = _bind(self.host, self.port, self.backlog, reuse_port=self.reuse_port)
        self._sock = sock
        self.bound_port = sock.getsockname()[1]
        self._loop.add_reader(sock.fileno(), self._accept)

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def stop(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(self._batch):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: keep the listener alive
                log.warning("accept failed on %s:%s: %s", self.host, self.bound_port, exc)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.on_socket(conn, str(addr[0]))
            except Exception:  # one connection's set-up bug must not stop accepting
                log.exception("connection set-up failed")
                conn.close()
