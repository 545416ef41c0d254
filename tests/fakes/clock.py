"""A controllable clock for rotation and retry tests: time moves only when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta


class FakeClock:
    """Implements ``meshsec.runtime.clock.Clock``. ``advance()`` wakes sleepers that are due."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._origin = self._now
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._sleeper_added = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self._origin).total_seconds()

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        due = self._now + timedelta(seconds=max(0.0, seconds))
        heapq.heappush(self._sleepers, (due, next(self._counter), fut))
        self._sleeper_added.set()
        await fut

    @property
    def pending_sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def wait_for_sleepers(self, count: int = 1, within: float = 5.0) -> None:
        """Wait (real time, bounded) until ``count`` tasks sleep on this clock."""

        async def _wait() -> None:
            while self.pending_sleepers < count:
                self._sleeper_added.clear()
                await self._sleeper_added.wait()

        await asyncio.wait_for(_wait(), within)

    def advance(self, delta: timedelta | float) -> None:
        """Move time forward and resolve every sleep that is now due."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        self._now += step
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
