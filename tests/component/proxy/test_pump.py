"""The byte pump on in-memory transports: gating before start, backpressure, half-close, idle."""

from __future__ import annotations

import asyncio
from typing import Any

from meshsec.proxy.pump import Link, PumpLimits
from tests.fakes.transport import FakeTransport


def _link(**limits: Any) -> tuple[Link, FakeTransport, FakeTransport]:
    link = Link(PumpLimits(**limits))
    down, up = FakeTransport(), FakeTransport()
    link.down.connection_made(down)
    link.new_upstream().connection_made(up)
    return link, down, up


async def test_nothing_is_forwarded_before_start_even_when_upstream_is_connected() -> None:
    link, _down, up = _link()
    link.down.data_received(b"GET /admin HTTP/1.1\r\n")  # arrives while checks still run
    assert up.written == b""
    link.start()
    assert up.written == b"GET /admin HTTP/1.1\r\n"
    link.down.data_received(b"more")
    assert up.written.endswith(b"more")
    link.close()


async def test_early_bytes_beyond_the_limit_pause_reading_until_start() -> None:
    link, down, up = _link(max_pending=8)
    link.down.data_received(b"0123456789")
    assert not down.reading
    link.start()
    assert down.reading
    assert up.written == b"0123456789"
    link.close()


async def test_backpressure_pauses_the_source_and_resumes_it() -> None:
    link, down, _up = _link()
    link.start()
    assert link.up is not None
    link.up.pause_writing()  # upstream buffer above its high-water mark
    assert not down.reading
    link.up.resume_writing()
    assert down.reading
    link.close()


async def test_half_close_is_passed_on_between_plain_sides() -> None:
    link, down, up = _link()
    link.start()
    link.down.eof_received()
    assert up.eof_written
    assert not link.closed  # the reply direction is still open
    assert link.up is not None
    link.up.data_received(b"reply")
    assert down.written == b"reply"
    link.up.eof_received()
    assert link.closed
    assert down.closed


async def test_eof_towards_a_side_that_cannot_half_close_closes_the_link_after_buffered_bytes() -> (
    None
):
    link = Link(PumpLimits())
    down, up = FakeTransport(), FakeTransport(tls=True)
    link.down.connection_made(down)
    link.new_upstream().connection_made(up)
    link.start()
    link.down.data_received(b"last")
    link.down.eof_received()
    assert up.written == b"last"
    assert link.closed
    assert up.closed


async def test_detached_upstream_does_not_end_the_link() -> None:
    link, down, old = _link()
    link.start()
    detached = link.up
    link.detach_upstream()
    assert old.closed
    assert detached is not None
    detached.data_received(b"late bytes")
    detached.connection_lost(None)
    assert not link.closed
    assert down.written == b""
    link.close()


async def test_idle_timer_aborts_quiet_links() -> None:
    link, down, up = _link(idle_timeout=0.01)
    link.start()
    await asyncio.wait_for(link.done, 5)
    assert down.closed
    assert up.closed
