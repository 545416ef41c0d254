"""``meshsec status`` — every workload of a running mesh at a glance.

Per workload: ready (agent ``/healthz/ready``), SPIFFE ID, certificate model, current serial and
how long until it expires, when it was last (re)issued, and whether its agent gets through to the
CA (agent metrics); plus one probe of each CA (TLS handshake verified against its root). In a
multi-cluster mesh a CLUSTER column says where each workload runs; a workload whose cluster has
no remote secret shows "no certificate" and the CA's last refusal from its agent's log.
Exit 0 when everything is ready (or refused as expected), 1 when something is not, 3 when the
mesh is not running.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from prometheus_client.parser import text_string_to_metric_families

from meshsec.cli.admin_http import AdminUnavailable, Reachability, fetch, probe_tls_server
from meshsec.cli.meshstate import (
    CaState,
    MeshOption,
    MeshState,
    WorkloadState,
    require_running,
)
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
AGENT_LOG = "agent.log"
LOG_TAIL_BYTES = 64 * 1024
# agent/rotation.py: "ca request failed, starting attempt %d in %.3fs: %s" (a retried call) and
# "failed to renew workload certificate (attempt %d): %s; %s; retrying in %.2fs" (given up)
CA_FAILURES = (
    re.compile(r"ca request failed, starting attempt \d+ in [0-9.]+s: (?P<reason>.+)$"),
    re.compile(
        r"failed to renew workload certificate \(attempt \d+\): (?P<reason>.+); [^;]+; "
        r"retrying in [0-9.]+s$"
    ),
)


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
    cluster: str = ""
    certificate_expected: bool = True
    no_certificate_reason: str | None = None  # certificate refused as expected: why

    @property
    def refused_as_expected(self) -> bool:
        return not self.certificate_expected and self.serial_number is None

    @property
    def ok(self) -> bool:
        if not self.certificate_expected:
            return self.serial_number is None  # a certificate here is a finding
        return self.ready

    def ready_text(self) -> str:
        if self.refused_as_expected:
            reason = f": {self.no_certificate_reason}" if self.no_certificate_reason else ""
            return f"no certificate (expected{reason})"
        if not self.certificate_expected:
            return "UNEXPECTED certificate: its cluster has no remote secret"
        return "ready" if self.ready else f"NOT READY: {self.ready_detail}"

    def cells(self, now: datetime, *, show_cluster: bool = False) -> tuple[str, ...]:
        not_after = parse_time(self.not_after) if self.not_after else None
        expires = format_duration(not_after - now) if not_after else "-"
        rotated = parse_time(self.last_rotation) if self.last_rotation else None
        return (
            self.workload,
            *((self.cluster,) if show_cluster else ()),
            self.ready_text(),
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


def parse_last_ca_failure(log_text: str) -> str | None:
    """The reason of the agent's last failed CA call in its log, if any."""
    for line in reversed(log_text.splitlines()):
        for pattern in CA_FAILURES:
            match = pattern.search(line)
            if match:
                return match.group("reason").strip().removeprefix("ca request failed: ")[:300]
    return None


def load_last_ca_failure(workload: WorkloadState) -> str | None:
    if not workload.log_dir:
        return None
    try:
        with (Path(workload.log_dir) / AGENT_LOG).open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    return parse_last_ca_failure(tail)


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
    reason: str | None = None
    if workload.refused_expected and serial is None:
        refusal = load_last_ca_failure(workload)
        reason = f"{workload.cluster} has no remote secret" + (
            f"; the CA said: {refusal}" if refusal else ""
        )
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
        cluster=workload.cluster,
        certificate_expected=not workload.refused_expected,
        no_certificate_reason=reason,
    )


@dataclass(frozen=True)
class CaProbe:
    cluster: str
    addr: str | None
    reachable: bool
    detail: str


def probe_ca(ca: CaState) -> Reachability:
    if not ca.addr:
        return Reachability(False, "state.json lists no CA address")
    root: bytes | None = None
    if ca.root_pem_path:
        try:
            root = Path(ca.root_pem_path).read_bytes()
        except OSError as exc:
            return Reachability(False, f"cannot read the root {ca.root_pem_path}: {exc}")
    return probe_tls_server(ca.addr, root)


def probe_cas(state: MeshState) -> list[CaProbe]:
    """One probe per CA: each primary cluster's (the top-level one when none is listed)."""
    cas = [(c.name, c.ca) for c in state.clusters if c.ca is not None] or [
        (state.clusters[0].name if state.clusters else "", state.ca)
    ]
    probes: list[CaProbe] = []
    for cluster, ca in cas:
        result = probe_ca(ca)
        probes.append(CaProbe(cluster, ca.addr, result.reachable, result.detail))
    return probes


def ca_reachability(workload: WorkloadState, probes: list[CaProbe]) -> Reachability:
    """The probe of the CA this workload's agent talks to (the first CA when unknown)."""
    probe = next((p for p in probes if workload.ca_addr and p.addr == workload.ca_addr), None)
    probe = probe or probes[0]
    return Reachability(probe.reachable, probe.detail)


def build_status_document(
    state: MeshState, probes: list[CaProbe], statuses: list[WorkloadStatus]
) -> dict[str, Any]:
    first = probes[0]
    return {
        "mesh_dir": str(state.mesh_dir),
        "pid": state.pid,
        "started_at": state.started_at,
        "trust_domain": state.trust_domain,
        "ca": {"addr": first.addr, "reachable": first.reachable, "detail": first.detail},
        "cas": [asdict(p) for p in probes],
        "clusters": [asdict(c) for c in state.clusters],
        "workloads": [asdict(s) for s in statuses],
    }


def status(mesh: MeshOption = None, output: OutputOption = "table") -> None:
    """Every workload: ready, identity, certificate serial and expiry, last rotation, CA."""
    fmt = check_format(output)
    with operator_errors():
        state = open_mesh(mesh)
        require_running(state)
    now = datetime.now(UTC)
    probes = probe_cas(state)
    statuses = [
        collect_workload_status(w, ca_reachability(w, probes), now) for w in state.workloads
    ]
    multi = state.multi_cluster
    if fmt == "table":
        typer.echo(
            f"mesh {state.mesh_dir} (pid {state.pid}, started {format_rfc3339(state.started_at)}), "
            f"trust domain {state.trust_domain}"
        )
        if multi:
            typer.echo(
                "clusters: "
                + ", ".join(f"{c.name} ({c.role_text}, {c.network})" for c in state.clusters)
            )
        for probe in probes:
            whose = f" of {probe.cluster}" if multi else ""
            verdict = "reachable" if probe.reachable else "UNREACHABLE"
            typer.echo(f"CA{whose} {verdict}: {probe.detail}")
        headers = STATUS_COLUMNS[:1] + (("CLUSTER",) if multi else ()) + STATUS_COLUMNS[1:]
        print_table(headers, [s.cells(now, show_cluster=multi) for s in statuses])
    else:
        emit_document(build_status_document(state, probes, statuses), fmt)
    if not all(p.reachable for p in probes) or not all(s.ok for s in statuses):
        raise typer.Exit(EXIT_PROBLEM)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
