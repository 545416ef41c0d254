"""An in-memory asyncio transport for the proxy's byte pump and filters: records what is
written, whether reading is paused, the write-buffer limits and a half-close; ``tls`` makes it
look like a TLS transport to :class:`meshsec.proxy.pump.Side` (no TCP half-close)."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeTransport(asyncio.Transport):
    def __init__(self, *, tls: bool = False) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading = True
        self.eof_written = False
        self.closed = False
        self.tls = tls
        self.limits: tuple[int, int] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":
            return object() if self.tls else None
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high or 0, low or 0)

    def write(self, data: Any) -> None:
        self.written += data

    def can_write_eof(self) -> bool:
        return not self.tls

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
