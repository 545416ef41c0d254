"""The proxy's admin port (Envoy's :15000 role): readiness, config dump, Prometheus stats.

``GET /ready`` → 200 ``LIVE`` when certificates are loaded and listeners accept, else 503;
``GET /config_dump`` → JSON (listeners, secrets with serials and expiry, policy version);
``GET /stats/prometheus`` → the metrics. Loopback by default; GET only; bounded request head.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("meshsec.proxy.admin")

MAX_HEAD = 8192


class AdminServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[], bool],
        config_dump: Callable[[], dict[str, Any]],
        registry: CollectorRegistry,
    ) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self.config_dump = config_dump
        self.registry = registry
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/ready":
            ok = self.ready()
            return (200 if ok else 503), "text/plain", b"LIVE\n" if ok else b"NOT READY\n"
        if path == "/config_dump":
            body = json.dumps(self.config_dump(), indent=2, sort_keys=True).encode() + b"\n"
            return 200, "application/json", body
        if path in ("/stats/prometheus", "/metrics"):
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, "text/plain", b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            if len(parts) != 3 or parts[0] != b"GET":
                status, ctype, body = 405, "text/plain", b"GET only\n"
            else:
                status, ctype, body = self._answer(parts[1].decode("latin-1").split("?", 1)[0])
            writer.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s"
                % (status, b"OK" if status == 200 else b"Error", ctype.encode(), len(body), body)
            )
            await writer.drain()
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
