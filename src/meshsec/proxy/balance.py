"""Connection balance between ``--concurrency`` workers: the least-loaded worker accepts.

Every worker waits on the same listening sockets (:func:`meshsec.proxy.listener.bind_shared`)
and the kernel wakes all of them for a new connection; the one that calls ``accept`` first
wins. That is usually the worker already running — the busiest — so a burst of connections
piles onto one worker (29 of ``ab -c 32``'s connections, measured) while the other idles, and a
keep-alive load then runs on one core. Envoy offers an exact balancer for this (the worker with
the fewest connections takes the next); haproxy hands each accepted connection to its least
loaded thread.

:class:`WorkerLoad` is that count for processes: one slot per worker in anonymous shared
memory mapped by the parent before it forks, holding the worker's open connections, how many
reasons it has right now not to take one (not ready yet or stopping, an acceptor stepping back)
and when it last showed it is alive. Each worker writes only its own slot (aligned 8-byte
stores, so readers never see a torn value) and reads the others' without a lock: a stale read
costs at most one connection placed less evenly. A worker defers only to a less loaded one that
is accepting — ready, not stepping back, and seen within :data:`STALE_AFTER` (a worker whose
event loop is stuck stops beating, and is not waited for) — see
:class:`meshsec.proxy.listener.Acceptor` for how deferring never strands a connection.
"""

from __future__ import annotations

import mmap
import time

_COUNT, _AWAY, _SEEN = 0, 1, 2  # the fields of a worker's slot
_FIELDS = 3
SLACK = 1
"""Connections a worker may be ahead of the least loaded accepting one and still accept: short
connections (a handshake each) come and go too fast for an exact count to be worth a step back,
and a worker stepping back costs the waiting connection up to the other's current handshake."""
BEAT_INTERVAL = 0.25
"""Seconds between a ready worker's signs of life (:meth:`WorkerLoad.beat`)."""
STALE_AFTER = 1.0
"""Seconds without a sign of life after which the other workers stop deferring to a worker."""


def _now_ms() -> int:
    return int(time.monotonic() * 1000)  # CLOCK_MONOTONIC: one clock for every process


class WorkerLoad:
    """Open connections and accepting state of each worker, shared between processes."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"need at least one worker, got {workers}")
        self.workers = workers
        self._memory = mmap.mmap(-1, 8 * _FIELDS * workers)  # MAP_SHARED | MAP_ANONYMOUS
        self._table = memoryview(self._memory).cast("q")
        for worker in range(workers):
            self._table[worker * _FIELDS + _AWAY] = 1  # not ready until it says so
        self._slot = 0
        self._ready = False

    def for_worker(self, worker: int) -> WorkerLoad:
        """Another worker's view of the same table (what that worker's process sees)."""
        view = WorkerLoad.__new__(WorkerLoad)
        view.workers = self.workers
        view._memory = self._memory
        view._table = self._table
        view._slot = 0
        view._ready = False
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

    def accepting(self, worker: int, now_ms: int | None = None) -> bool:
        """Ready, not stepping back, and alive within :data:`STALE_AFTER`."""
        return self._is_accepting(worker * _FIELDS, _now_ms() if now_ms is None else now_ms)

    def _is_accepting(self, slot: int, now_ms: int) -> bool:
        table = self._table
        return not table[slot + _AWAY] and now_ms - table[slot + _SEEN] < STALE_AFTER * 1000

    def opened(self) -> None:
        self._table[self._slot + _COUNT] += 1

    def closed(self) -> None:
        self._table[self._slot + _COUNT] -= 1

    def ready(self, on: bool) -> None:
        """This worker serves (its listeners run, its certificates are loaded) or no longer
        does (draining). Repeating the same state changes nothing."""
        if on == self._ready:
            return
        self._ready = on
        if on:
            self.beat()
        self._table[self._slot + _AWAY] += -1 if on else 1

    def deferring(self, on: bool) -> None:
        """One acceptor of this worker starts (on) or ends (off) a step back: meanwhile the
        other workers do not wait for this one. Calls pair up, one acceptor's with its own."""
        self._table[self._slot + _AWAY] += 1 if on else -1

    def beat(self) -> None:
        """A sign of life (every :data:`BEAT_INTERVAL` from the worker's event loop)."""
        self._table[self._slot + _SEEN] = _now_ms()

    def should_defer(self) -> bool:
        """Is another worker that is accepting carrying more than :data:`SLACK` connections
        fewer than this one — or, while this worker is not ready, accepting at all?"""
        table = self._table
        now = _now_ms()
        if not self._ready:  # it would refuse the connection (no certificates, say)
            return any(
                slot != self._slot and self._is_accepting(slot, now)
                for slot in range(0, len(table), _FIELDS)
            )
        limit = table[self._slot + _COUNT] - SLACK
        if limit <= 0:
            return False
        return any(
            slot != self._slot and table[slot + _COUNT] < limit and self._is_accepting(slot, now)
            for slot in range(0, len(table), _FIELDS)
        )
