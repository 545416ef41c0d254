"""The agent's local status server (HTTP/1.1, GET only, one request per connection).

* ``/healthz/ready`` — 200 only while a valid, unexpired workload certificate is held, else 503
  with the reason;
* ``/debug/secrets`` — JSON: per resource the serial, validity window and whether it is valid now
  (never key material); ``status`` ACTIVE (held and served) or WARMING (``default`` requested but
  not issued yet), ``type`` as istioctl shows it ("Cert Chain" / "CA"), ``created_at`` of the
  workload certificate (its last rotation) and each root's SHA-256 ``fingerprint`` (what
  ``meshsec proxy-config secret`` / ``rootca-compare`` read);
* ``/metrics`` (also ``/stats/prometheus``) — Prometheus text with the ``istio_agent_*`` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from cryptography.hazmat.primitives import hashes

from meshsec.agent.metrics import AgentMetrics
from meshsec.agent.secret import DEFAULT, ROOTCA
from meshsec.agent.store import SecretStore
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"


class StatusServer:
    def __init__(self, store: SecretStore, clock: Clock, metrics: AgentMetrics) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- endpoints -------------------------------------------------------------------------

    def readiness(self) -> tuple[int, str]:
        snapshot = self._store.snapshot()
        now = self._clock.now()
        workload = snapshot.workload
        if workload is None:
            return 503, "not ready: no workload certificate yet\n"
        if not workload.is_valid(now):
            return 503, (
                f"not ready: workload certificate serial {workload.serial_hex} "
                f"expired at {workload.not_after.isoformat()}\n"
            )
        return 200, "ready\n"

    def debug_secrets(self) -> dict[str, Any]:
        snapshot = self._store.snapshot()
        now = self._clock.now()
        resources: list[dict[str, Any]] = []
        workload = snapshot.workload
        if workload is not None:
            resources.append(
                {
                    "resource_name": DEFAULT,
                    "type": "Cert Chain",
                    "status": "ACTIVE" if workload.is_valid(now) else "EXPIRED",
                    "spiffe_id": str(workload.spiffe_id),
                    "serial": workload.serial_hex,
                    "not_before": workload.not_before.isoformat(),
                    "not_after": workload.not_after.isoformat(),
                    "valid": workload.is_valid(now),
                    "source": workload.source,
                    "key_fingerprint": workload.key_fingerprint,
                    "version": snapshot.versions.get(DEFAULT, 0),
                    "created_at": workload.created_at.isoformat(),
                }
            )
        else:
            resources.append(
                {
                    "resource_name": DEFAULT,
                    "type": "Cert Chain",
                    "status": "WARMING",  # requested, not issued yet: same keys, no values
                    "spiffe_id": None,
                    "serial": None,
                    "not_before": None,
                    "not_after": None,
                    "valid": False,
                    "source": None,
                    "version": snapshot.versions.get(DEFAULT, 0),
                    "created_at": None,
                }
            )
        if snapshot.roots is not None:
            for cert in snapshot.roots.certificates:
                resources.append(
                    {
                        "resource_name": ROOTCA,
                        "type": "CA",
                        "status": "ACTIVE",
                        "subject": cert.subject.rfc4514_string(),
                        "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
                        "serial": f"{cert.serial_number:032x}",
                        "not_before": cert.not_valid_before_utc.isoformat(),
                        "not_after": cert.not_valid_after_utc.isoformat(),
                        "valid": cert.not_valid_before_utc <= now < cert.not_valid_after_utc,
                        "version": snapshot.versions.get(ROOTCA, 0),
                    }
                )
        return {"now": now.isoformat(), "resources": resources}

    def route(self, method: str, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if method != "GET":
            return 405, "text/plain", b"only GET is supported\n"
        if path == "/healthz/ready":
            code, text = self.readiness()
            return code, "text/plain", text.encode()
        if path == "/debug/secrets":
            body = json.dumps(self.debug_secrets(), indent=2) + "\n"
            return 200, "application/json", body.encode()
        if path in ("/metrics", "/stats/prometheus"):
            return 200, "text/plain; version=0.0.4", self._metrics.render().encode()
        return 404, "text/plain", b"not found: try /healthz/ready, /debug/secrets, /metrics\n"

    # --- HTTP ------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > MAX_REQUEST_HEAD:
                self._write(writer, 400, "text/plain", b"request head too large\n")
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self._write(writer, 400, "text/plain", b"malformed request line\n")
                return
            code, content_type, body = self.route(parts[0], parts[1])
            self._write(writer, code, content_type, body, head_only=parts[0] == "HEAD")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    def _write(
        writer: asyncio.StreamWriter,
        code: int,
        content_type: str,
        body: bytes,
        *,
        head_only: bool = False,
    ) -> None:
        head = (
            f"HTTP/1.1 {code} {_REASONS.get(code, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + (b"" if head_only else body))
