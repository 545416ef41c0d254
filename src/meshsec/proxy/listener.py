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
from typing import Any

from meshsec.proxy.balance import BEAT_INTERVAL, WorkerLoad
from meshsec.proxy.errors import ListenError

log = logging.getLogger("meshsec.proxy.listener")

ACCEPT_BATCH = 64
SHARED_ACCEPT_BATCH = 1
"""On a socket every worker waits on, one connection per wake-up: the other woken workers take
the rest of a burst instead of the first one taking it all."""

ACCEPT_DEFER = 0.001
"""Seconds a worker that deferred to a less loaded one stops watching a shared socket; a
connection still waiting after that is taken (the less loaded worker is busy)."""

PEERS_BUSY_HOLD = 0.01
"""Seconds a worker takes every connection itself after a step back that left one waiting:
the others are busy (a long handshake, a blocked event loop), and stepping back for each
connection meanwhile would let only one through per :data:`ACCEPT_DEFER`."""

_SHARED: dict[tuple[str, int], socket.socket] = {}
"""Listening sockets bound by the parent before ``--concurrency`` workers fork."""
_LOAD: WorkerLoad | None = None
"""The workers' open connections, for accepting on the shared sockets (:mod:`.balance`)."""


def bind_shared(addresses: set[tuple[str, int]], *, workers: int, backlog: int = 1024) -> None:
    """Bind ``addresses`` now, for worker processes forked next to accept on.

    Every worker then waits on the same socket and whichever is free takes the next
    connection (haproxy's threads share their listeners the same way). With ``SO_REUSEPORT``
    sockets the kernel hashes each connection to one worker whether or not it is busy, so two
    clients' handshakes can queue behind each other on one worker while the other idles.
    Addresses known only later (ports from ``--config-dir``) still use ``SO_REUSEPORT``.
    Of the ``workers`` woken for a connection, the least loaded takes it (:mod:`.balance`).
    """
    global _LOAD
    for host, port in sorted(addresses):
        if port != 0:  # port 0 would give each worker its own port anyway
            _SHARED[host, port] = _bind(host, port, backlog, reuse_port=True)
    _LOAD = WorkerLoad(workers)


_BEAT: asyncio.TimerHandle | None = None
"""The ready worker's next sign of life in the load table."""


def become_worker(index: int) -> None:
    """In forked worker ``index``, before its listeners start: its slot in the load table."""
    if _LOAD is not None:
        _LOAD.index = index


def set_worker_ready(on: bool) -> None:
    """This worker serves (listeners started, certificates loaded) or no longer does (it
    drains): only a ready worker that shows signs of life is deferred to by the others."""
    global _BEAT
    if _LOAD is None:
        return
    _LOAD.ready(on)
    if on and _BEAT is None:
        _BEAT = asyncio.get_running_loop().call_later(BEAT_INTERVAL, _beat)
    elif not on and _BEAT is not None:
        _BEAT.cancel()
        _BEAT = None


def _beat() -> None:
    global _BEAT
    _BEAT = None
    if _LOAD is not None:
        _LOAD.beat()
        _BEAT = asyncio.get_running_loop().call_later(BEAT_INTERVAL, _beat)


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
        self._load: WorkerLoad | None = None  # set on a socket shared with other workers
        self._resume: asyncio.TimerHandle | None = None
        self._take_all_until = 0.0  # loop time: no step back before (PEERS_BUSY_HOLD)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # reuse_port: several worker processes bind the same port and the kernel spreads new
        # connections over them (``meshsec proxy run --concurrency N``)
        sock = _SHARED.pop((self.host, self.port), None) if self.reuse_port else None
        self._batch = ACCEPT_BATCH if sock is None else SHARED_ACCEPT_BATCH
        self._load = None if sock is None else _LOAD
        if sock is None:
            sock = _bind(self.host, self.port, self.backlog, reuse_port=self.reuse_port)
        self._sock = sock
        self.bound_port = sock.getsockname()[1]
        self._loop.add_reader(sock.fileno(), self._accept)

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def stop(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
            if self._load is not None:
                self._load.deferring(False)
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    # a connection's share of the worker's load ---------------------------------------------
    def release(self) -> None:
        """One accepted connection is over (call exactly once per socket handed out)."""
        if self._load is not None:
            self._load.closed()

    def release_when_done(self, done: asyncio.Future[Any]) -> None:
        """:meth:`release` when ``done`` (a connection's end) completes."""
        if self._load is not None:
            done.add_done_callback(self._released)

    def _released(self, _done: asyncio.Future[Any]) -> None:
        self.release()

    # accepting ---------------------------------------------------------------------------------
    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        load = self._load
        if load is not None:
            assert self._loop is not None  # set by start()
            if self._loop.time() >= self._take_all_until and load.should_defer():
                self._defer(sock, load)
                return
        self._take(sock)

    def _defer(self, sock: socket.socket, load: WorkerLoad) -> None:
        """Leave the waiting connection to a less loaded worker (it was woken too), and stop
        watching the socket for :data:`ACCEPT_DEFER` so as not to be woken again and again."""
        assert self._loop is not None
        self._loop.remove_reader(sock.fileno())
        load.deferring(True)  # meanwhile nobody waits for this worker to take one
        self._resume = self._loop.call_later(ACCEPT_DEFER, self._stop_deferring)

    def _stop_deferring(self) -> None:
        self._resume = None
        sock = self._sock
        if sock is None or self._loop is None:
            return
        if self._load is not None:
            self._load.deferring(False)
        self._loop.add_reader(sock.fileno(), self._accept)
        if self._take(sock):  # one still waiting: the less loaded worker is busy
            self._take_all_until = self._loop.time() + PEERS_BUSY_HOLD

    def _take(self, sock: socket.socket) -> int:
        """Accept up to a batch of waiting connections; how many were taken."""
        load = self._load
        taken = 0
        for _ in range(self._batch):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return taken
            except OSError as exc:  # EMFILE and friends: keep the listener alive
                log.warning("accept failed on %s:%s: %s", self.host, self.bound_port, exc)
                return taken
            taken += 1
            if load is not None:
                load.opened()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.on_socket(conn, str(addr[0]))
            except Exception:  # one connection's set-up bug must not stop accepting
                log.exception("connection set-up failed")
                conn.close()
                self.release()
        return taken
