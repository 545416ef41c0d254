"""``meshsec status`` — every workload of a running mesh at a glance.

Per workload: ready (agent ``/healthz/ready``), SPIFFE ID, certificate model, current serial and
how long until it expires, when it was last (re)issued, and whether its agent gets through to the
CA (agent metrics); plus one probe of the CA itself (TLS handshake verified against the mesh root).
Exit 0 when everything is ready, 1 when something is not, 3 when the mesh is not running.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from prometheus_client.parser import text_string_to_metric_families

from meshsec.cli.admin_http import AdminUnavailable, Reachability, fetch, probe_tls_server
from meshsec.cli.meshstate import MeshOption, MeshState, WorkloadState, require_running
from meshsec.cli.operator_output import (
    EXIT_PROBLEM,
    OutputOption,
    check_format,
    emit_document,
    format_duration,
    format_rfc3339,
    open_mesh,
    operator_errors,
    parse_time,
    print_table,
)
from meshsec.cli.proxy_config import SecretRow, fetch_secret_rows

STATUS_COLUMNS = (
    "WORKLOAD",
    "READY",
    "SPIFFE ID",
    "CERT",
    "SERIAL NUMBER",
    "EXPIRES IN",
    "LAST ROTATION",
    "CA",
)

FAILED_CSR_METRIC = "istio_agent_num_failed_outgoing_requests"


@dataclass(frozen=True)
class WorkloadStatus:
    workload: str
    ready: bool
    ready_detail: str
    spiffe_id: str
    cert_model: str
    serial_number: str | None
    not_after: str | None
    expires_in_seconds: int | None
    last_rotation: str | None
    ca: str

    def cells(self, now: datetime) -> tuple[str, ...]:
        not_after = parse_time(self.not_after) if self.not_after else None
        expires = format_duration(not_after - now) if not_after else "-"
        rotated = parse_time(self.last_rotation) if self.last_rotation else None
        return (
            self.workload,
            "ready" if self.ready else f"NOT READY: {self.ready_detail}",
            self.spiffe_id,
            self.cert_model,
            self.serial_number or "-",
            expires,
            f"{format_duration(now - rotated)} ago" if rotated else "-",
            self.ca,
        )


def count_failed_csr(metrics_text: str) -> int:
    """Failed CSR calls counted by the agent (``istio_agent_num_failed_outgoing_requests``)."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in (FAILED_CSR_METRIC, FAILED_CSR_METRIC.removesuffix("_total")):
            continue
        for sample in family.samples:
            if sample.labels.get("request_type") == "csr" and not sample.name.endswith("_created"):
                total += sample.value
    return int(total)


def collect_workload_status(
    workload: WorkloadState, ca: Reachability, now: datetime
) -> WorkloadStatus:
    """Ask one agent: readiness, secrets, metrics. An unreachable agent is reported, not raised."""
    what = f"agent of {workload.ref}"
    serial = not_after = rotated = None
    expires_in: int | None = None
    try:
        if not workload.agent_status:
            raise AdminUnavailable(what, "<none>", "no agent status port in state.json")
        reply = fetch(what, workload.agent_status, "/healthz/ready")
        ready, detail = reply.status == 200, reply.body.strip()
        rows: list[SecretRow] = fetch_secret_rows(workload)
        default = next((r for r in rows if r.resource_name == "default" and r.serial_number), None)
        if default is not None:
            serial, not_after, rotated = (
                default.serial_number,
                default.not_after,
                default.created_at,
            )
            moment = parse_time(default.not_after)
            expires_in = int((moment - now).total_seconds()) if moment else None
        if workload.cert_model == "mounted":
            ca_text = "n/a (mounted certs)"
        else:
            metrics = fetch(what, workload.agent_status, "/metrics")
            failed = count_failed_csr(metrics.body) if metrics.status == 200 else 0
            ca_text = "reachable" if ca.reachable else "UNREACHABLE"
            if failed:
                ca_text += f" ({failed} failed CSR call{'s' if failed != 1 else ''})"
    except AdminUnavailable as exc:
        ready, detail, ca_text = False, f"agent unreachable ({exc.reason})", "?"
    return WorkloadStatus(
        workload=workload.ref,
        ready=ready,
        ready_detail=detail,
        spiffe_id=workload.spiffe_id,
        cert_model=workload.cert_model,
        serial_number=serial,
        not_after=not_after,
        expires_in_seconds=expires_in,
        last_rotation=rotated,
        ca=ca_text,
    )


def probe_ca(state: MeshState) -> Reachability:
    if not state.ca.addr:
        return Reachability(False, "state.json lists no CA address")
    root: bytes | None = None
    if state.ca.root_pem_path:
        try:
            root = Path(state.ca.root_pem_path).read_bytes()
        except OSError as exc:
            return Reachability(False, f"cannot read the root {state.ca.root_pem_path}: {exc}")
    return probe_tls_server(state.ca.addr, root)


def build_status_document(
    state: MeshState, ca: Reachability, statuses: list[WorkloadStatus]
) -> dict[str, Any]:
    return {
        "mesh_dir": str(state.mesh_dir),
        "pid": state.pid,
        "started_at": state.started_at,
        "trust_domain": state.trust_domain,
        "ca": {"addr": state.ca.addr, "reachable": ca.reachable, "detail": ca.detail},
        "workloads": [asdict(s) for s in statuses],
    }


def status(mesh: MeshOption = None, output: OutputOption = "table") -> None:
    """Every workload: ready, identity, certificate serial and expiry, last rotation, CA."""
    fmt = check_format(output)
    with operator_errors():
        state = open_mesh(mesh)
        require_running(state)
    now = datetime.now(UTC)
    ca = probe_ca(state)
    statuses = [collect_workload_status(w, ca, now) for w in state.workloads]
    if fmt == "table":
        typer.echo(
            f"mesh {state.mesh_dir} (pid {state.pid}, started {format_rfc3339(state.started_at)}), "
            f"trust domain {state.trust_domain}"
        )
        typer.echo(f"CA {'reachable' if ca.reachable else 'UNREACHABLE'}: {ca.detail}")
        print_table(STATUS_COLUMNS, [s.cells(now) for s in statuses])
    else:
        emit_document(build_status_document(state, ca, statuses), fmt)
    if not ca.reachable or not all(s.ready for s in statuses):
        raise typer.Exit(EXIT_PROBLEM)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
