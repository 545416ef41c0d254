"""The proxy's admin port (Envoy's :15000 role): readiness, config dump, Prometheus stats.

``GET /ready`` → 200 ``LIVE`` when certificates are loaded and listeners accept, else 503 with
the reason (no certificate yet, configuration incomplete, draining);
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

from meshsec.proxy.tls import TlsContexts

log = logging.getLogger("meshsec.proxy.admin")

MAX_HEAD = 8192
_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 503: b"Service Unavailable"}


class AdminServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[], bool],
        config_dump: Callable[[], dict[str, Any]],
        registry: CollectorRegistry,
        not_ready_reason: Callable[[], str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self.not_ready_reason = not_ready_reason
        self.config_dump = config_dump
        self.registry = registry
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)

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
            if self.ready():
                return 200, "text/plain", b"LIVE\n"
            why = (self.not_ready_reason() if self.not_ready_reason else "") or "NOT READY"
            return 503, "text/plain", why.encode("utf-8", "replace") + b"\n"
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
                % (status, _REASONS.get(status, b"Error"), ctype.encode(), len(body), body)
            )
            await writer.drain()
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()


def build_secrets_dump(tls: TlsContexts) -> list[dict[str, Any]]:
    """Envoy's secrets dump, shortened: ``default`` (the SVID) and ``ROOTCA`` (every root)."""
    if not tls.ready:
        return []
    snap = tls.current
    leaf = snap.svid.leaf
    return [
        {
            "name": "default",
            "type": "Cert Chain",
            "spiffe_id": str(snap.svid.spiffe_id),
            "serial_number": snap.svid.serial_hex,
            "not_before": leaf.not_valid_before_utc.isoformat(),
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "generation": snap.generation,
            "applied_at": snap.applied_at.isoformat() if snap.applied_at else None,
        },
        {
            "name": "ROOTCA",
            "type": "CA",
            "roots": [
                {
                    "subject": root.subject.rfc4514_string(),
                    "serial_number": f"{root.serial_number:032x}",
                    "not_after": root.not_valid_after_utc.isoformat(),
                    "sha256": fp,
                }
                for root, fp in zip(snap.bundle.certificates, snap.bundle.fingerprints, strict=True)
            ],
        },
    ]
