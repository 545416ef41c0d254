"""``meshsec check <from-workload> <service>[:port]`` — the removed ``istioctl authn tls-check``.

For each port of the service and each workload behind it: the TLS the client sends (DestinationRule
or auto mTLS) against the server port's PeerAuthentication mode → OK / CONFLICT with the reason,
secure naming (the client must accept the identity the server presents), and the authorization
verdict for the client's identity. Exit 1 on any CONFLICT or DENY (or a service with no workload
behind it), 2 for unknown names, 3 when no mesh (and no ``--config-dir``) is found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from meshsec.cli.mesh_view import (
    OUTSIDE,
    RouteCheck,
    build_route_checks,
    load_mesh_view,
    resolve_service,
)
from meshsec.cli.meshstate import MeshOption, resolve_workload
from meshsec.cli.operator_output import (
    EXIT_PROBLEM,
    OutputOption,
    check_format,
    emit_document,
    operator_errors,
    print_table,
)
from meshsec.core.policy.destination import ClientTls
from meshsec.core.policy.model import TlsMode

CHECK_COLUMNS = (
    "HOST:PORT",
    "STATUS",
    "SERVER",
    "CLIENT",
    "AUTHN POLICY",
    "DESTINATION RULE",
    "AUTHZ",
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config-dir",
        help="Manifest directory to read policies from (default: the running mesh's); "
        "with no running mesh, workloads come from these manifests.",
    ),
]


def client_text(tls: ClientTls) -> str:
    mode = "plaintext" if tls.mode is TlsMode.DISABLE else tls.mode.value
    return f"{mode} (auto)" if tls.auto else mode


def route_rows(route: RouteCheck) -> list[tuple[str, ...]]:
    dr = route.tls.destination_rule.meta.key if route.tls.destination_rule else "-"
    if not route.endpoints:
        return [(route.host_port, "NO ENDPOINTS", "-", client_text(route.tls), "-", dr, "-")]
    rows: list[tuple[str, ...]] = []
    for e in route.endpoints:
        host = (
            route.host_port
            if len(route.endpoints) == 1
            else f"{route.host_port} ({e.workload.ref})"
        )
        authz = e.authz
        if e.decision is not None:
            d = e.decision
            authz += f" {d.policy.meta.key}" if d.policy is not None else f" ({d.stage.value})"
        rows.append(
            (
                host,
                e.status,
                e.server_mode.value,
                client_text(e.client),
                e.server_policy or "-",
                dr,
                authz,
            )
        )
    return rows


def route_reasons(route: RouteCheck) -> list[str]:
    lines = [f"{route.host_port} ({route.protocol}): client: {route.tls.reason}"]
    if route.tls.subject_alt_names:
        lines.append(f"   accepts server SANs: {', '.join(route.tls.subject_alt_names)}")
    if not route.endpoints:
        lines.append("   no workload in the mesh is selected by this Service")
    for e in route.endpoints:
        lines.append(f"   -> {e.workload.ref} ({e.workload.spiffe_id}) port {e.target_port}:")
        lines += [f"      {note}" for note in e.client.notes if e.client is not route.tls]
        if e.conflict:
            lines.append(f"      CONFLICT: {e.conflict}")
        if e.decision is not None:
            who = e.principal or "no peer identity (plaintext)"
            lines.append(
                f"      authorization as {who}: {e.decision.verdict.value}: {e.decision.reason}"
            )
            lines += [f"      note: {n}" for n in e.decision.notes]
    return lines


def route_to_dict(route: RouteCheck) -> dict[str, Any]:
    tls = route.tls
    return {
        "host": route.service.hostname,
        "port": route.port.port,
        "protocol": route.protocol,
        "client": {
            "tls_mode": tls.mode.value,
            "auto": tls.auto,
            "destination_rule": tls.destination_rule.meta.key if tls.destination_rule else None,
            "sni": tls.sni,
            "subject_alt_names": list(tls.subject_alt_names),
            "reason": tls.reason,
        },
        "endpoints": [
            {
                "workload": e.workload.ref,
                "spiffe_id": e.workload.spiffe_id,
                "target_port": e.target_port,
                "client_tls_mode": e.client.mode.value,
                "status": e.status,
                "server_mode": e.server_mode.value,
                "authn_policy": e.server_policy,
                "conflict": e.conflict,
                "principal": e.principal,
                "authorization": None
                if e.decision is None
                else {
                    "decision": e.decision.verdict.value,
                    "policy": e.decision.policy.meta.key if e.decision.policy else None,
                    "rule": e.decision.rule,
                    "stage": e.decision.stage.value,
                    "reason": e.decision.reason,
                    "notes": list(e.decision.notes),
                },
            }
            for e in route.endpoints
        ],
        "status": "NO ENDPOINTS"
        if not route.endpoints
        else ("CONFLICT" if any(e.conflict for e in route.endpoints) else "OK"),
    }


def check(
    from_workload: Annotated[
        str,
        typer.Argument(
            help="Client: <workload>[.<namespace>][@<cluster>], or outside (no sidecar)."
        ),
    ],
    service: Annotated[
        str, typer.Argument(help="Server: <service>[.<namespace>] or its FQDN, optionally :port")
    ],
    mesh: MeshOption = None,
    config: ConfigOption = None,
    method: Annotated[
        str | None, typer.Option("--method", help="Authorize this HTTP method (default GET).")
    ] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Authorize this HTTP path (default /).")
    ] = None,
    output: OutputOption = "table",
) -> None:
    """Client TLS vs server mTLS mode (OK / CONFLICT) and the authorization verdict."""
    fmt = check_format(output)
    with operator_errors():
        view = load_mesh_view(mesh, config, cwd=Path.cwd())
        client = (
            OUTSIDE
            if from_workload == OUTSIDE.name and all(w.name != OUTSIDE.name for w in view.workloads)
            else resolve_workload(from_workload, view.workloads, view.cluster_names)
        )
        target, port = resolve_service(service, view.snapshot)
        routes = build_route_checks(view, client, target, port=port, method=method, path=path)
    if view.config_errors:
        typer.secho(
            f"warning: {view.config_errors} configuration error(s) in {view.config_dir}; the "
            f"objects concerned were skipped (run `meshsec analyze {view.config_dir}`)",
            err=True,
            fg="yellow",
        )
    if fmt == "table":
        who = "outside (no sidecar)" if client == OUTSIDE else client.ref
        typer.echo(f"From {who} ({client.spiffe_id or 'no identity'}):")
        print_table(CHECK_COLUMNS, [row for r in routes for row in route_rows(r)])
        typer.echo("")
        for route in routes:
            typer.echo("\n".join(route_reasons(route)))
    else:
        emit_document(
            {
                "from": {"workload": client.ref, "spiffe_id": client.spiffe_id},
                "service": target.hostname,
                "routes": [route_to_dict(r) for r in routes],
                "ok": not any(r.problem for r in routes),
            },
            fmt,
        )
    if any(r.problem for r in routes):
        raise typer.Exit(EXIT_PROBLEM)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
