"""Bidirectional byte pump between two asyncio transports (plain or TLS).

A :class:`Link` joins a downstream and an upstream :class:`Side`. Bytes are written straight from
one transport's ``data_received`` to the other transport (no per-connection task, no stream
objects). Guarantees:

* **Bounded buffers / backpressure** — each transport's write buffer has high/low water marks;
  when the destination is above the mark the source stops reading (``pause_reading``) until it
  drains. Bytes arriving before the other side exists are held up to ``max_pending`` and reading
  pauses beyond that.
* **Half-close** — an EOF on one side (TCP FIN, or a TLS ``close_notify``) is passed on with
  ``write_eof`` (FIN on plain TCP, ``close_notify`` on TLS — see
  :mod:`meshsec.proxy.tls_transport`); the link closes when both directions ended, so a client
  that half-closes still receives the whole answer.
* **Idle timeout** — no byte in either direction for ``idle_timeout`` seconds closes both sides
  (one timer per link, re-armed lazily).
* **Errors stay per connection** — callbacks never raise; a broken side closes its link only.
* **End hook** — a filter may set ``Side.on_end`` to see a side's EOF or lost connection first
  (the HTTP proxy answers 503 when its upstream ends before a response head); when it returns
  True the link does nothing more for that event. Only the end events look at it, never data.

:class:`ConnectionTracker` keeps the open links of a listener for graceful drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger("meshsec.proxy.pump")


@dataclass(frozen=True)
class PumpLimits:
    high_water: int = 64 * 1024
    low_water: int = 16 * 1024
    max_pending: int = 64 * 1024
    idle_timeout: float = 3600.0  # Envoy tcp_proxy default idle timeout: 1h


DataSink = Callable[[bytes], None]
EndHook = Callable[[], bool]  # True: the event was handled, the link does nothing more


class Side(asyncio.Protocol):
    """One end of a link. ``on_data`` defaults to forwarding to the other side."""

    __slots__ = (
        "_paused",
        "bytes_in",
        "closed",
        "detached",
        "eof",
        "held",
        "link",
        "name",
        "on_data",
        "on_end",
        "pending",
        "plain",
        "transport",
        "write_paused",
    )

    def __init__(self, link: Link, name: str) -> None:
        self.link = link
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.on_data: DataSink | None = None
        self.on_end: EndHook | None = None
        self.pending: bytearray | None = None
        self.eof = False
        self.closed = False
        self.plain = True
        self.detached = False
        self.bytes_in = 0
        self._paused = False
        self.held = False  # a filter holds our reading: the other side's drain must not resume it
        self.write_paused = False  # our transport's write buffer is above its high-water mark

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass, but has its methods
        self.transport = cast(asyncio.Transport, transport)
        self.plain = transport.get_extra_info("sslcontext") is None
        limits = self.link.limits
        self.transport.set_write_buffer_limits(high=limits.high_water, low=limits.low_water)

    def data_received(self, data: bytes) -> None:
        if self.detached:
            return
        link = self.link
        link.last_activity = link.loop.time()
        self.bytes_in += len(data)
        sink = self.on_data
        if sink is not None:  # a filter (HTTP) decides what goes where
            sink(data)
            return
        other = link.other(self)
        if link.started and other is not None and other.transport is not None and not other.closed:
            other.transport.write(data)
            return
        if other is not None and other.closed:
            return  # nowhere to go: the link is closing
        if self.pending is None:
            self.pending = bytearray()
        self.pending += data
        if len(self.pending) > link.limits.max_pending:
            self.pause()

    def eof_received(self) -> bool | None:
        self.eof = True
        if not self.detached and not self.ended_here():
            self.link.on_eof(self)
        # Plain TCP: keep our write half open for the reply. TLS ignores the return value.
        return True if self.plain else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.detached and not self.ended_here():
            self.link.on_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.detached:
            return
        other = self.link.other(self)
        if other is not None:
            other.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.detached:
            return
        other = self.link.other(self)
        if other is not None:
            other.follow_flow()

    # helpers --------------------------------------------------------------------------------------
    def ended_here(self) -> bool:
        """The end hook's verdict on an EOF or a lost connection (False without a hook)."""
        hook = self.on_end
        if hook is None:
            return False
        try:
            return hook()
        except Exception:  # callbacks never raise into the event loop
            log.exception("%s end hook failed", self.name)
            self.link.close()
            return True

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def hold(self) -> None:
        """Stop reading until :meth:`release`, whatever the other side's write buffer does."""
        self.held = True
        self.pause()

    def release(self) -> None:
        """End :meth:`hold`; reading resumes unless the other side's write buffer is full."""
        self.held = False
        self.follow_flow()

    def follow_flow(self) -> None:
        """Read exactly when not held and the other side's write buffer has room."""
        other = self.link.other(self)
        if self.held or (other is not None and other.write_paused):
            self.pause()
        else:
            self.resume()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class WriteBatch:
    """Writes to one side collected while an input chunk is processed, then sent as one
    ``write`` (one TLS record batch, one ``send``): an HTTP head and the body bytes that came
    with it, or several pipelined messages, do not cost a system call each."""

    __slots__ = ("parts", "side")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.parts: list[bytes | memoryview] = []

    def add(self, data: bytes | memoryview) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        parts = self.parts
        if not parts:
            return
        if len(parts) == 1:
            self.side.write(parts[0])
        else:
            self.side.write(b"".join(parts))
        parts.clear()


class Link:
    """A downstream/upstream pair with one idle timer and one close callback."""

    __slots__ = (
        "_closed_cb",
        "_timer",
        "closed",
        "done",
        "down",
        "last_activity",
        "limits",
        "loop",
        "started",
        "up",
    )

    def __init__(self, limits: PumpLimits, on_closed: Callable[[Link], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.limits = limits
        self.down = Side(self, "downstream")
        self.up: Side | None = None
        self.closed = False
        self.started = False  # nothing is forwarded before start(): checks come first
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.last_activity = self.loop.time()
        self._closed_cb = on_closed
        self._timer: asyncio.TimerHandle | None = None
        self._arm_idle()

    def new_upstream(self) -> Side:
        self.up = Side(self, "upstream")
        return self.up

    def detach_upstream(self) -> None:
        """Close the current upstream without ending the link (an HTTP proxy switching hosts)."""
        old, self.up = self.up, None
        if old is not None:
            old.detached = True
            old.close()

    def other(self, side: Side) -> Side | None:
        return self.up if side is self.down else self.down

    def start(self) -> None:
        """Every check passed and both sides exist: flush early bytes, forward from now on."""
        self.started = True
        for side in (self.down, self.up):
            if side is None:
                continue
            other = self.other(side)
            if side.pending and other is not None and side.on_data is None:
                data, side.pending = bytes(side.pending), None
                other.write(data)
            elif side.pending and side.on_data is not None:
                data, side.pending = bytes(side.pending), None
                side.on_data(data)
            side.follow_flow()  # a new upstream whose client cannot take more yet stays paused
            if side.eof and not side.ended_here():
                self.on_eof(side)

    # events -----------------------------------------------------------------------------------
    def on_eof(self, side: Side) -> None:
        other = self.other(side)
        if not self.started or other is None or other.transport is None:
            return  # passed on in start()
        if side.pending:
            return  # start() forwards pending first, then the EOF
        if other.closed:
            self.close()
            return
        if other.eof:
            self.close()
            return
        if other.transport.can_write_eof() and not other.transport.is_closing():
            try:
                other.transport.write_eof()  # TCP FIN, or close_notify on a TLS side
            except (OSError, RuntimeError):
                self.close()
        else:
            self.close()

    def on_lost(self, side: Side, exc: Exception | None) -> None:
        if exc is not None and not isinstance(exc, ConnectionError | TimeoutError):
            log.debug("%s connection lost: %r", side.name, exc)
        self.close()

    def _arm_idle(self) -> None:
        timeout = self.limits.idle_timeout
        if timeout > 0:
            self._timer = self.loop.call_at(self.last_activity + timeout, self._idle_check)

    def _idle_check(self) -> None:
        if self.closed:
            return
        deadline = self.last_activity + self.limits.idle_timeout
        if self.loop.time() >= deadline:
            log.debug("closing idle connection after %.3fs", self.limits.idle_timeout)
            self.abort()
        else:
            self._timer = self.loop.call_at(deadline, self._idle_check)

    # closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close both sides gracefully (buffered writes are flushed)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.down.close()
        if self.up is not None:
            self.up.close()
        if not self.done.done():
            self.done.set_result(None)
        if self._closed_cb is not None:
            callback, self._closed_cb = self._closed_cb, None
            try:
                callback(self)
            except Exception:  # a metrics/log hook must never take the proxy down
                log.exception("connection close hook failed")

    def abort(self) -> None:
        """Drop both sides now (idle timeout, drain deadline)."""
        self.close()
        self.down.abort()
        if self.up is not None:
            self.up.abort()


class ConnectionTracker:
    """Open links of one listener, for graceful drain."""

    def __init__(self) -> None:
        self._links: set[Link] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._links)

    def add(self, link: Link) -> None:
        self._links.add(link)
        self._empty.clear()
        link.done.add_done_callback(lambda _f: self._discard(link))

    def _discard(self, link: Link) -> None:
        self._links.discard(link)
        if not self._links:
            self._empty.set()

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` s for links to finish, then abort the rest; returns how many."""
        try:
            await asyncio.wait_for(self._empty.wait(), grace)
            return 0
        except TimeoutError:
            remaining = list(self._links)
            for link in remaining:
                link.abort()
            return len(remaining)


def log_task_failure(task: asyncio.Task[Any]) -> None:
    """Done-callback for per-connection tasks: a bug in one connection is logged, not fatal."""
    if not task.cancelled() and task.exception() is not None:
        log.error("connection handler failed", exc_info=task.exception())


def extra(transport: asyncio.BaseTransport | None, name: str) -> Any:
    return transport.get_extra_info(name) if transport is not None else None
