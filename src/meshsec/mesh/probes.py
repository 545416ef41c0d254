"""Small probes the runtime uses: a one-shot HTTP GET, durations for people (is a pid alive:
:func:`meshsec.runtime.pids.process_alive`)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


async def http_get(host: str, port: int, path: str, wait: float = 5.0) -> tuple[int, str]:
    """A one-shot HTTP/1.1 GET: ``(status, body)``; ``(0, reason)`` when it failed."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait)
    except (OSError, TimeoutError) as exc:
        return 0, str(exc) or type(exc).__name__
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), wait)
    except (OSError, TimeoutError) as exc:
        return 0, str(exc) or type(exc).__name__
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, "not an HTTP response"
    return status, body.decode("utf-8", "replace")


__all__ = ["format_duration", "http_get"]
