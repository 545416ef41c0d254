"""Rows of the status table ``meshsec up`` prints: identity, certificate, mTLS mode per port.

The certificate is read from the agent's output files (what the sidecar serves); the modes are
the ones the sidecar enforces right now (its ``/config_dump``), so the table shows the live state.
A workload without a certificate (its cluster has no remote secret: a pod stuck not ready) shows
"no certificate" and the CA's reason, from a fresh CSR made with the workload's own token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from meshsec.core.pki import PkiError, format_remaining, parse_certificates_pem
from meshsec.mesh.cert_probe import CertificateSubject, request_certificate
from meshsec.mesh.refs import format_ref
from meshsec.mesh.runtime import MeshRuntime, WorkloadRun, http_get
from meshsec.proxy.registry import LOOPBACK

NO_CERTIFICATE = "no certificate"


@dataclass(frozen=True)
class StatusRow:
    workload: str
    spiffe_id: str
    cert_model: str
    serial: str
    expires_in: str
    modes: str  # "8080 STRICT http, 9000 DISABLE tcp"
    cluster: str = ""
    reason: str = ""  # why there is no certificate (the CA's answer)


async def collect_status(runtime: MeshRuntime, now: datetime) -> list[StatusRow]:
    state = runtime.state()
    by_dir = {w["cert_dir"]: w for w in state["workloads"]}
    rows = []
    for run in runtime.runs:
        shown = format_ref(
            run.entry.name, run.entry.namespace, run.cluster, qualified=runtime.plan.qualified
        )
        subject = CertificateSubject.from_state(by_dir[str(run.cert_dir)], state, shown)
        rows.append(await _row(run, subject, now))
    return rows


async def _row(run: WorkloadRun, subject: CertificateSubject, now: datetime) -> StatusRow:
    serial, expires, reason = NO_CERTIFICATE, "-", ""
    try:
        leaf = parse_certificates_pem((run.cert_dir / "cert-chain.pem").read_bytes())[0]
        serial = f"{leaf.serial_number:032x}"
        expires = format_remaining(leaf.not_valid_after_utc - now)
    except (OSError, PkiError):
        signed, answer = await request_certificate(subject)
        reason = "a fresh CSR is signed now; the agent retries" if signed else answer
    modes = "-"
    status, body = await http_get(LOOPBACK, run.admin_port, "/config_dump")
    if status == 200:
        ports = json.loads(body).get("ports", [])
        modes = ", ".join(f"{p['port']} {p['mode']} {p['protocol']}" for p in ports) or "(none)"
    elif reason:
        modes = "(not ready: no certificate)"
    return StatusRow(
        subject.ref,
        run.entry.spiffe_id,
        run.cert_model,
        serial,
        expires,
        modes,
        run.cluster,
        reason,
    )


__all__ = ["NO_CERTIFICATE", "StatusRow", "collect_status"]
