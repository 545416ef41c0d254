"""Rows of the status table ``meshsec up`` prints: identity, certificate, mTLS mode per port.

The certificate is read from the agent's output files (what the sidecar serves); the modes are
the ones the sidecar enforces right now (its ``/config_dump``), so the table shows the live state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from meshsec.core.pki import PkiError, format_remaining, parse_certificates_pem
from meshsec.mesh.registry import LOOPBACK
from meshsec.mesh.runtime import MeshRuntime, WorkloadRun, http_get


@dataclass(frozen=True)
class StatusRow:
    workload: str
    spiffe_id: str
    cert_model: str
    serial: str
    expires_in: str
    modes: str  # "8080 STRICT http, 9000 DISABLE tcp"


async def collect_status(runtime: MeshRuntime, now: datetime) -> list[StatusRow]:
    return [await _row(run, now) for run in runtime.runs]


async def _row(run: WorkloadRun, now: datetime) -> StatusRow:
    serial, expires = "-", "-"
    try:
        leaf = parse_certificates_pem((run.cert_dir / "cert-chain.pem").read_bytes())[0]
        serial = f"{leaf.serial_number:032x}"
        expires = format_remaining(leaf.not_valid_after_utc - now)
    except (OSError, PkiError):
        pass
    modes = "-"
    status, body = await http_get(LOOPBACK, run.admin_port, "/config_dump")
    if status == 200:
        ports = json.loads(body).get("ports", [])
        modes = ", ".join(f"{p['port']} {p['mode']} {p['protocol']}" for p in ports) or "(none)"
    return StatusRow(
        f"{run.entry.name}.{run.entry.namespace}",
        run.entry.spiffe_id,
        run.cert_model,
        serial,
        expires,
        modes,
    )


__all__ = ["StatusRow", "collect_status"]
