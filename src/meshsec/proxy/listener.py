"""A listening socket that hands each accepted, non-blocking socket to a callback.

The proxy accepts sockets itself (instead of ``loop.create_server``) so it can peek at the first
bytes (PERMISSIVE), pick the TLS context at accept time (rotation) and hand the socket to the loop
with ``connect_accepted_socket``. Works with the default loop and uvloop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("meshsec.proxy.listener")

ACCEPT_BATCH = 64


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

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # reuse_port: several worker processes bind the same port and the kernel spreads new
        # connections over them (``meshsec proxy run --concurrency N``)
        sock = socket.create_server(
            (self.host, self.port), backlog=self.backlog, reuse_port=self.reuse_port
        )
        sock.setblocking(False)
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
        for _ in range(ACCEPT_BATCH):
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
