"""``meshsec proxy-config secret|rootca-compare`` — istioctl's views of a workload's secrets.

Both read the workload's agent ``/debug/secrets`` (the agent is the SDS server and writes the
files the sidecar loads); ``secret`` also reads the sidecar's admin ``/config_dump`` so STATUS says
what the sidecar has applied (ACTIVE) and what it has not picked up yet (WARMING), as istioctl
derives it from Envoy's active and warming secrets. ``secret`` prints istioctl's columns
(RESOURCE NAME, TYPE, STATUS, VALID CERT, SERIAL NUMBER, NOT AFTER, NOT BEFORE);
``rootca-compare`` compares two workloads' ROOTCA bundles with istioctl's wording and exits 1
when they differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from meshsec.cli.admin_http import AdminUnavailable, fetch_json
from meshsec.cli.meshstate import (
    MeshOption,
    MeshState,
    WorkloadState,
    require_running,
    resolve_workload,
)
from meshsec.cli.operator_output import (
    EXIT_PROBLEM,
    OutputOption,
    check_format,
    emit_document,
    format_rfc3339,
    open_mesh,
    operator_errors,
    parse_time,
    print_table,
)
from meshsec.cli.workload_trust import (
    TrustRelation,
    compose_trust_relation,
    load_workload_trust,
)

SECRET_COLUMNS = (
    "RESOURCE NAME",
    "TYPE",
    "STATUS",
    "VALID CERT",
    "SERIAL NUMBER",
    "NOT AFTER",
    "NOT BEFORE",
)

proxy_config_app = typer.Typer(
    name="proxy-config",
    help="Inspect what a workload's agent and sidecar hold (istioctl proxy-config).",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class SecretRow:
    resource_name: str
    type: str
    status: str
    valid_cert: bool
    serial_number: str
    not_after: str
    not_before: str
    spiffe_id: str | None = None
    subject: str | None = None
    fingerprint: str | None = None
    created_at: str | None = None
    source: str | None = None

    def cells(self) -> tuple[str, ...]:
        return (
            self.resource_name,
            self.type,
            self.status,
            "true" if self.valid_cert else "false",
            self.serial_number,
            self.not_after,
            self.not_before,
        )


def _serial(value: Any) -> str:
    """Normalise to istioctl's ``%032x`` (the agent already sends it so; tolerate others)."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        return f"{int(value.replace(':', ''), 16):032x}"
    except ValueError:
        return value


def build_secret_rows(document: Any) -> list[SecretRow]:
    """Rows from the agent's ``/debug/secrets`` JSON (``{"resources": [...]}``)."""
    resources = document.get("resources") if isinstance(document, dict) else None
    if not isinstance(resources, list):
        raise ValueError("expected an object with a 'resources' list")
    rows: list[SecretRow] = []
    for item in resources:
        if not isinstance(item, dict):
            continue
        name = str(item.get("resource_name", ""))
        kind = str(item.get("type") or ("CA" if name == "ROOTCA" else "Cert Chain"))
        has_cert = bool(item.get("serial"))
        status = str(item.get("status") or ("ACTIVE" if has_cert else "UNINITIALIZED"))
        rows.append(
            SecretRow(
                resource_name=name,
                type=kind,
                status=status,
                valid_cert=bool(item.get("valid")),
                serial_number=_serial(item.get("serial")),
                not_after=format_rfc3339(item.get("not_after")),
                not_before=format_rfc3339(item.get("not_before")),
                spiffe_id=item.get("spiffe_id"),
                subject=item.get("subject"),
                fingerprint=item.get("fingerprint"),
                created_at=format_rfc3339(item.get("created_at")) or None,
                source=item.get("source"),
            )
        )
    return rows


def fetch_secret_rows(workload: WorkloadState) -> list[SecretRow]:
    """What the agent (the SDS server) holds, from its ``/debug/secrets``."""
    what = f"agent of {workload.ref}"
    if not workload.agent_status:
        raise AdminUnavailable(what, "<none>", "state.json lists no agent status port")
    document = fetch_json(what, workload.agent_status, "/debug/secrets")
    try:
        return build_secret_rows(document)
    except ValueError as exc:
        raise AdminUnavailable(what, workload.agent_status, f"/debug/secrets: {exc}") from None


@dataclass(frozen=True)
class ProxySecrets:
    """The certificate and roots the sidecar has applied (its ``/config_dump``); ``roots`` is
    None when the sidecar does not report them."""

    default: SecretRow | None
    roots: tuple[SecretRow, ...] | None


def parse_proxy_secrets(document: Any, now: datetime) -> ProxySecrets:
    """The applied secrets from a sidecar ``/config_dump``: the ``secrets`` list of
    ``meshsec proxy run`` or the ``certificate`` object of the ``meshsec up`` sidecar."""
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    secrets = document.get("secrets")
    if isinstance(secrets, list):
        return _parse_secret_list(secrets, now)
    if "certificate" in document:
        cert = document["certificate"]
        if cert is None:
            return ProxySecrets(None, None)
        if not isinstance(cert, dict):
            raise ValueError("'certificate' is not an object")
        return ProxySecrets(
            _proxy_default_row({**cert, "spiffe_id": document.get("spiffe_id")}, now), None
        )
    raise ValueError("no 'secrets' list or 'certificate' object")


def _proxy_default_row(item: dict[str, Any], now: datetime) -> SecretRow:
    return SecretRow(
        resource_name="default",
        type=str(item.get("type") or "Cert Chain"),
        status="ACTIVE",
        valid_cert=_valid(item.get("not_before"), item.get("not_after"), now),
        serial_number=_serial(item.get("serial_number") or item.get("serial")),
        not_after=format_rfc3339(item.get("not_after")),
        not_before=format_rfc3339(item.get("not_before")),
        spiffe_id=item.get("spiffe_id"),
        created_at=format_rfc3339(item.get("applied_at")) or None,
        source="proxy",
    )


def _parse_secret_list(secrets: list[Any], now: datetime) -> ProxySecrets:
    default: SecretRow | None = None
    roots: list[SecretRow] = []
    for item in secrets:
        if not isinstance(item, dict):
            continue
        if item.get("name") == "default":
            default = _proxy_default_row(item, now)
        elif item.get("name") == "ROOTCA":
            for root in item.get("roots") or []:
                if not isinstance(root, dict):
                    continue
                roots.append(
                    SecretRow(
                        resource_name="ROOTCA",
                        type="CA",
                        status="ACTIVE",
                        valid_cert=_valid(root.get("not_before"), root.get("not_after"), now),
                        serial_number=_serial(root.get("serial_number")),
                        not_after=format_rfc3339(root.get("not_after")),
                        not_before=format_rfc3339(root.get("not_before")),
                        subject=root.get("subject"),
                        fingerprint=root.get("sha256"),
                        source="proxy",
                    )
                )
    return ProxySecrets(default, tuple(roots))


def _valid(not_before: Any, not_after: Any, now: datetime) -> bool:
    start = parse_time(not_before) if isinstance(not_before, str) else None
    end = parse_time(not_after) if isinstance(not_after, str) else None
    return end is not None and now < end and (start is None or start <= now)


def merge_secret_rows(agent: list[SecretRow], proxy: ProxySecrets | None) -> list[SecretRow]:
    """istioctl's view: what the sidecar applied is ACTIVE; what the agent holds but the sidecar
    has not applied yet is WARMING (a rotation in flight). Without a proxy, the agent's rows."""
    if proxy is None:
        return agent
    rows: list[SecretRow] = []
    agent_default = next((r for r in agent if r.resource_name == "default"), None)
    if proxy.default is not None:
        same = (
            agent_default is not None and agent_default.serial_number == proxy.default.serial_number
        )
        rows.append(
            replace(agent_default, status="ACTIVE") if same and agent_default else proxy.default
        )
        if agent_default is not None and agent_default.serial_number and not same:
            rows.append(replace(agent_default, status="WARMING"))
    elif agent_default is not None:
        rows.append(replace(agent_default, status="WARMING"))
    agent_roots = [r for r in agent if r.resource_name == "ROOTCA"]
    if proxy.roots is None:  # the sidecar does not report its roots: the agent's view
        return rows + agent_roots
    applied = {r.fingerprint or r.serial_number for r in proxy.roots}
    held = set()
    for row in agent_roots:
        key = row.fingerprint or row.serial_number
        held.add(key)
        rows.append(replace(row, status="ACTIVE" if key in applied else "WARMING"))
    rows += [r for r in proxy.roots if (r.fingerprint or r.serial_number) not in held]
    return rows


def fetch_proxy_secrets(workload: WorkloadState, now: datetime) -> ProxySecrets | None:
    """The sidecar's applied secrets, or None when the workload has no proxy admin port."""
    if not workload.proxy_admin:
        return None
    what = f"proxy of {workload.ref}"
    document = fetch_json(what, workload.proxy_admin, "/config_dump")
    try:
        return parse_proxy_secrets(document, now)
    except ValueError as exc:
        raise AdminUnavailable(what, workload.proxy_admin, f"/config_dump: {exc}") from None


def _running_mesh(mesh: Any) -> MeshState:
    state = open_mesh(mesh)
    require_running(state)
    return state


@proxy_config_app.command("secret")
def secret(
    workload: Annotated[str, typer.Argument(help="<workload>[.<namespace>][@<cluster>]")],
    mesh: MeshOption = None,
    output: OutputOption = "table",
) -> None:
    """The workload's certificate chain and trust bundle as its agent serves them over SDS."""
    fmt = check_format(output)
    with operator_errors():
        state = _running_mesh(mesh)
        target = resolve_workload(workload, state.workloads, [c.name for c in state.clusters])
        agent_rows = fetch_secret_rows(target)
    proxy_problem: str | None = None
    try:
        proxy = fetch_proxy_secrets(target, datetime.now(UTC))
    except AdminUnavailable as exc:
        proxy, proxy_problem = None, str(exc)
        typer.secho(
            f"warning: {exc}; showing what the agent holds (STATUS cannot say what the sidecar "
            "applied)",
            err=True,
            fg="yellow",
        )
    rows = merge_secret_rows(agent_rows, proxy)
    if fmt == "table":
        print_table(SECRET_COLUMNS, [row.cells() for row in rows])
    else:
        emit_document(
            {
                "workload": target.ref,
                "spiffe_id": target.spiffe_id,
                "agent_status": target.agent_status,
                "proxy_admin": target.proxy_admin,
                "proxy_problem": proxy_problem,
                "secrets": [asdict(row) for row in rows],
            },
            fmt,
        )
    if proxy_problem is not None:
        raise typer.Exit(EXIT_PROBLEM)


def root_identity(rows: list[SecretRow]) -> frozenset[str]:
    """The ROOTCA bundle as a set of certificate identities (fingerprint, else serial+subject)."""
    return frozenset(
        row.fingerprint or f"{row.serial_number}/{row.subject}"
        for row in rows
        if row.resource_name == "ROOTCA" and row.serial_number
    )


def compose_rootca_report(a: str, roots_a: frozenset[str], b: str, roots_b: frozenset[str]) -> str:
    """istioctl's sentence (``a``/``b`` are ``name.namespace``)."""
    if roots_a and roots_a == roots_b:
        return (
            f"Both [{a}] and [{b}] have the identical ROOTCA, theoretically the connectivity "
            "between them is available"
        )
    return (
        f"Both [{a}] and [{b}] have the non identical ROOTCA, theoretically the connectivity "
        "between them is unavailable"
    )


def compose_cluster_report(
    state: MeshState,
    a: WorkloadState,
    b: WorkloadState,
    rows_a: list[SecretRow],
    rows_b: list[SecretRow],
    now: datetime,
) -> TrustRelation:
    """The cross-cluster situation of two workloads (shared root and intermediates, or a
    different root), with each chain verified against the other's roots where the files are."""
    return compose_trust_relation(
        load_workload_trust(a, rows_a, state), load_workload_trust(b, rows_b, state), now
    )


@proxy_config_app.command("rootca-compare")
def rootca_compare(
    first: Annotated[str, typer.Argument(help="<workload>[.<namespace>][@<cluster>]")],
    second: Annotated[str, typer.Argument(help="<workload>[.<namespace>][@<cluster>]")],
    mesh: MeshOption = None,
    output: OutputOption = "table",
) -> None:
    """Compare the ROOTCA two workloads trust (in any clusters); exit 1 when they cannot talk."""
    fmt = check_format(output)
    with operator_errors():
        state = _running_mesh(mesh)
        clusters = [c.name for c in state.clusters]
        a = resolve_workload(first, state.workloads, clusters)
        b = resolve_workload(second, state.workloads, clusters)
        rows_a, rows_b = fetch_secret_rows(a), fetch_secret_rows(b)
    roots_a, roots_b = root_identity(rows_a), root_identity(rows_b)
    identical = bool(roots_a) and roots_a == roots_b
    report = compose_rootca_report(a.ref, roots_a, b.ref, roots_b)
    shared = sorted(roots_a & roots_b)
    relation = compose_cluster_report(state, a, b, rows_a, rows_b, datetime.now(UTC))
    show_relation = state.multi_cluster or bool(relation.problems)
    if fmt == "table":
        typer.echo(report)
        if show_relation:
            for line in relation.lines:
                typer.echo(line)
        if not identical and shared:
            typer.echo(
                f"note: they share {len(shared)} root(s) (a root rotation in progress?); "
                "peers verify each other only through a root both trust"
            )
        if (not roots_a or not roots_b) and not show_relation:
            empty = a.ref if not roots_a else b.ref
            typer.echo(f"note: {empty} holds no ROOTCA yet (its agent is still warming)")
    else:
        emit_document(
            {
                "identical": identical,
                "can_talk": identical and relation.can_talk,
                "report": report,
                "clusters": {a.ref: a.cluster, b.ref: b.cluster},
                "explanation": list(relation.lines),
                "workloads": {a.ref: sorted(roots_a), b.ref: sorted(roots_b)},
                "shared": shared,
            },
            fmt,
        )
    if not identical or not relation.can_talk:
        raise typer.Exit(EXIT_PROBLEM)


def register(app: typer.Typer) -> None:
    app.add_typer(proxy_config_app, name="proxy-config")
