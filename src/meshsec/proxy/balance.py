"""Connection balance between ``--concurrency`` workers: the least-loaded worker accepts.

Every worker waits on the same listening sockets (:func:`meshsec.proxy.listener.bind_shared`)
and the kernel wakes all of them for a new connection; the one that calls ``accept`` first
wins. That is usually the worker already running — the busiest — so a burst of connections
piles onto one worker (29 of ``ab -c 32``'s connections, measured) while the other idles, and a
keep-alive load then runs on one core. Envoy offers an exact balancer for this (the worker with
the fewest connections takes the next); haproxy hands each accepted connection to its least
loaded thread.

:class:`WorkerLoad` is that count for processes: one slot per worker in anonymous shared
memory mapped by the parent before it forks, holding the worker's open connections and
whether it is accepting. Each worker writes only its own slot (an aligned 8-byte store, so
readers never see a torn value) and reads the others' without a lock: a stale read costs at
most one connection placed less evenly. A worker defers to a less loaded one that is accepting;
see :class:`meshsec.proxy.listener.Acceptor` for how deferring never strands a connection.
"""

from __future__ import annotations

import mmap

_COUNT, _DEFERRING = 0, 1  # the fields of a worker's slot
_FIELDS = 2
SLACK = 1
"""Connections a worker may be ahead of the least loaded accepting one and still accept: short
connections (a handshake each) come and go too fast for an exact count to be worth a step back,
and a worker stepping back costs the waiting connection up to the other's current handshake."""


class WorkerLoad:
    """Open connections and accepting state of each worker, shared between processes."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"need at least one worker, got {workers}")
        self.workers = workers
        self._memory = mmap.mmap(-1, 8 * _FIELDS * workers)  # MAP_SHARED | MAP_ANONYMOUS
        self._table = memoryview(self._memory).cast("q")
        self._slot = 0

    def for_worker(self, worker: int) -> WorkerLoad:
        """Another worker's view of the same table (what that worker's process sees)."""
        view = WorkerLoad.__new__(WorkerLoad)
        view.workers = self.workers
        view._memory = self._memory
        view._table = self._table
        view._slot = 0
        view.index = worker
        return view

    @property
    def index(self) -> int:
        return self._slot // _FIELDS

    @index.setter
    def index(self, worker: int) -> None:
        """In a forked worker: which slot is its own."""
        if not 0 <= worker < self.workers:
            raise ValueError(f"worker {worker} out of range 0..{self.workers - 1}")
        self._slot = worker * _FIELDS

    def open_connections(self, worker: int) -> int:
        return self._table[worker * _FIELDS + _COUNT]

    def is_deferring(self, worker: int) -> bool:
        return bool(self._table[worker * _FIELDS + _DEFERRING])

    def opened(self) -> None:
        self._table[self._slot + _COUNT] += 1

    def closed(self) -> None:
        self._table[self._slot + _COUNT] -= 1

    def deferring(self, on: bool) -> None:
        """While on, the other workers do not wait for this one to take a connection."""
        self._table[self._slot + _DEFERRING] = 1 if on else 0

    def should_defer(self) -> bool:
        """Is another worker that is accepting carrying more than :data:`SLACK` connections
        fewer than this one?"""
        table = self._table
        limit = table[self._slot + _COUNT] - SLACK
        if limit <= 0:
            return False
        for slot in range(0, len(table), _FIELDS):
            if slot != self._slot and not table[slot + _DEFERRING] and table[slot + _COUNT] < limit:
                return True
        return False
