"""``meshsec describe <workload>[.<namespace>]`` — ``istioctl x describe pod`` for the mesh.

Identity (SPIFFE ID, cluster, certificate model, the CA and the root it trusts; the live serial
when the agent answers), the effective PeerAuthentication in istioctl's wording (workload mode,
port-level modes, applied policies), the AuthorizationPolicies that apply, the Services exposing
it, and for every Service it may call: the DestinationRule TLS mode, the auto-mTLS decision, the
server SANs it accepts and whether that fits the server (the checks of ``meshsec check``).
Exit 0, or 1 when a client/server TLS CONFLICT was found; 2 unknown workload; 3 no mesh found.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from meshsec.cli.admin_http import AdminUnavailable
from meshsec.cli.check import ConfigOption, client_text, route_to_dict
from meshsec.cli.mesh_view import (
    MeshView,
    RouteCheck,
    build_route_checks,
    compose_conflict,
    compose_endpoint_tls,
    load_mesh_view,
)
from meshsec.cli.meshstate import STATE_DIR, MeshOption, WorkloadState, resolve_workload
from meshsec.cli.operator_output import (
    EXIT_PROBLEM,
    OutputOption,
    check_format,
    emit_document,
    operator_errors,
)
from meshsec.cli.proxy_config import SecretRow, fetch_secret_rows
from meshsec.core.policy.authz import policy_scope
from meshsec.core.policy.explain import (
    ServicePortTls,
    WorkloadExplanation,
    build_workload_explanation,
    explanation_to_dict,
)

CERT_MODELS = {
    "csr": "csr (the agent makes the key and a CSR; the CA signs it for the caller's token)",
    "mounted": "mounted (istio.<sa> certificate files created and rotated by the CA; "
    "FILE_MOUNTED_CERTS, no CSR)",
}


@dataclass(frozen=True)
class RootInfo:
    subject: str
    fingerprint: str
    source: str


def load_trusted_root(view: MeshView, workload: WorkloadState) -> RootInfo | None:
    """The namespace's published root (istio-ca-root-cert), else the CA's root file."""
    state = view.state
    if state is None:
        return None
    candidates = [state.mesh_dir / STATE_DIR / "roots" / workload.namespace / "root-cert.pem"]
    if state.ca.root_pem_path:
        candidates.append(Path(state.ca.root_pem_path))
    for path in candidates:
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            continue
        first = certs[0]
        return RootInfo(
            first.subject.rfc4514_string(), first.fingerprint(hashes.SHA256()).hex(), str(path)
        )
    return None


def fetch_live_secrets(workload: WorkloadState) -> tuple[list[SecretRow], str | None]:
    """The agent's secrets when it answers; describe works without them."""
    if not workload.agent_status:
        return [], None
    try:
        return fetch_secret_rows(workload), None
    except AdminUnavailable as exc:
        return [], exc.reason


def callees(view: MeshView, workload: WorkloadState) -> list[Any]:
    """Services the workload may call: every Service in the mesh except those selecting it."""
    return [
        s
        for s in view.snapshot.services
        if not (s.namespace == workload.namespace and s.selects(workload.labels))
    ]


def compose_inbound(
    explanation: WorkloadExplanation, workload: WorkloadState
) -> list[tuple[ServicePortTls, str | None]]:
    """The Services exposing the workload, each with the conflict its clients would hit (auto
    mTLS sends plaintext to a DISABLE port, as the sidecars do)."""
    return [
        (s, compose_conflict(s.tls, s.server_mode, workload.spiffe_id) if s.server_mode else None)
        for s in explanation.services
    ]


def render_describe(
    workload: WorkloadState,
    view: MeshView,
    explanation: WorkloadExplanation,
    inbound: list[tuple[ServicePortTls, str | None]],
    routes: list[RouteCheck],
    root: RootInfo | None,
    live: list[SecretRow],
    live_error: str | None,
) -> str:
    state = view.state
    labels = ",".join(f"{k}={v}" for k, v in sorted(workload.labels.items())) or "<none>"
    lines = [
        f"Workload: {workload.ref}",
        f"   SPIFFE ID: {workload.spiffe_id or '<unknown>'}",
        f"   Service account: {workload.service_account}",
        f"   Cluster: {workload.cluster or '-'}",
        f"   Labels: {labels}",
    ]
    if workload.ports:
        ports = ", ".join(f"{p.port}/{p.protocol}" for p in workload.ports)
        lines.append(f"   Ports: {ports}")
    lines.append(
        f"   Certificate model: {CERT_MODELS.get(workload.cert_model, workload.cert_model)}"
    )
    if state is not None:
        lines.append(f"   CA: {state.ca.addr or '-'} (trust domain {state.trust_domain})")
    if root is not None:
        lines.append(
            f"   Trusts root: {root.subject} sha256:{root.fingerprint[:16]}… ({root.source})"
        )
    default = next((r for r in live if r.resource_name == "default" and r.serial_number), None)
    if default is not None:
        lines.append(
            f"   Current certificate: serial {default.serial_number}, valid "
            f"{default.not_before} .. {default.not_after}"
            + (f", issued {default.created_at}" if default.created_at else "")
        )
    elif live_error:
        lines.append(f"   Current certificate: agent unreachable ({live_error})")

    eff = explanation.effective
    lines += ["Effective PeerAuthentication:", f"   Workload mTLS mode: {eff.mode.value}"]
    port_level = [p for p in explanation.ports if p.port in eff.port_modes]
    if port_level:
        lines.append("   Port Level mTLS mode:")
        lines += [f"      {p.port}: {p.mode.value}" for p in port_level]
    lines.append(f"   Decided by: {eff.reason}")
    lines.append("Applied PeerAuthentication:")
    lines.append(f"   {', '.join(p.meta.key for p in eff.applied) or '<none>'}")
    for ignored in eff.ignored:
        lines.append(f"   ignored {ignored.policy.meta.key}: {ignored.reason}")

    policies = view.authorization_policies(workload)
    if policies:
        rbac = ", ".join(
            f"ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"
            for p in policies
            for i in range(len(p.rules))
        )
        lines.append(f"RBAC policies: {rbac or '<no rules>'}")
        lines.append("Applied AuthorizationPolicy:")
        for p in policies:
            count = len(p.rules)
            lines.append(
                f"   {p.meta.key}: {p.action.value}, {policy_scope(p, view.mesh)}-wide, "
                f"{count} rule{'s' if count != 1 else ''}"
            )
    else:
        lines.append("Applied AuthorizationPolicy: <none> (every request is allowed)")

    for s, conflict in inbound:
        lines.append(
            f"Exposed by Service {s.service.hostname}:{s.port} -> port {s.target_port} "
            f"({s.server_mode.value if s.server_mode else 'named port'}); clients in "
            f"{explanation.client_namespace} send "
            f"{client_text(compose_endpoint_tls(s.tls, s.server_mode) if s.server_mode else s.tls)}"
        )
        if conflict:
            lines.append(f"   WARNING: {conflict}")

    if routes:
        lines.append("Outbound (what this workload sends to each Service):")
    for route in routes:
        dr = route.tls.destination_rule
        lines.append(f"   {route.host_port} ({route.protocol})")
        lines.append(
            f"      DestinationRule: {dr.meta.key if dr else '<none>'}   "
            f"Traffic Policy TLS Mode: {client_text(route.tls)}"
        )
        lines.append(f"      {route.tls.reason}")
        if route.tls.subject_alt_names:
            lines.append(f"      Accepts server SANs: {', '.join(route.tls.subject_alt_names)}")
        if not route.endpoints:
            lines.append("      No workload behind this Service")
        for e in route.endpoints:
            verdict = f", authorization {e.authz}" if e.decision is not None else ""
            if e.decision is not None and e.decision.policy is not None:
                verdict += f" by {e.decision.policy.meta.key}"
            sent = f"sends {client_text(e.client)}, " if e.client is not route.tls else ""
            server = f"server {e.server_mode.value}, {e.status}"
            lines.append(f"      -> {e.workload.ref}: {sent}{server}{verdict}")
            if e.conflict:
                lines.append(f"         {e.conflict}")
    return "\n".join(lines)


def describe(
    workload: Annotated[str, typer.Argument(help="<workload>[.<namespace>]")],
    mesh: MeshOption = None,
    config: ConfigOption = None,
    output: OutputOption = "table",
) -> None:
    """Identity, effective mTLS, authorization and outbound TLS of one workload."""
    fmt = check_format(output)
    with operator_errors():
        view = load_mesh_view(mesh, config, cwd=Path.cwd())
        target = resolve_workload(workload, view.workloads)
    explanation = build_workload_explanation(
        view.snapshot,
        target.namespace,
        target.labels,
        ports=[p.port for p in target.ports],
        index=view.peer_authn,
    )
    routes = [
        route
        for service in callees(view, target)
        for route in build_route_checks(view, target, service)
    ]
    root = load_trusted_root(view, target)
    live, live_error = fetch_live_secrets(target) if view.state is not None else ([], None)
    current = next((r for r in live if r.resource_name == "default" and r.serial_number), None)
    inbound = compose_inbound(explanation, target)
    peer_authn = explanation_to_dict(explanation)
    for service_doc, (_, conflict) in zip(peer_authn["services"], inbound, strict=True):
        service_doc["conflict"] = conflict
    if fmt == "table":
        typer.echo(
            render_describe(target, view, explanation, inbound, routes, root, live, live_error)
        )
    else:
        emit_document(
            {
                "workload": target.ref,
                "identity": {
                    "spiffe_id": target.spiffe_id,
                    "namespace": target.namespace,
                    "service_account": target.service_account,
                    "cluster": target.cluster,
                    "labels": dict(target.labels),
                    "cert_model": target.cert_model,
                    "ca": view.state.ca.addr if view.state else None,
                    "trusted_root": None
                    if root is None
                    else {
                        "subject": root.subject,
                        "sha256": root.fingerprint,
                        "source": root.source,
                    },
                    "certificate": None if current is None else asdict(current),
                },
                "peer_authentication": peer_authn,
                "authorization_policies": [
                    {
                        "policy": p.meta.key,
                        "action": p.action.value,
                        "scope": policy_scope(p, view.mesh),
                        "rules": len(p.rules),
                    }
                    for p in view.authorization_policies(target)
                ],
                "outbound": [route_to_dict(r) for r in routes],
            },
            fmt,
        )
    conflicts = any(e.conflict for r in routes for e in r.endpoints) or any(
        conflict for _, conflict in inbound
    )
    if conflicts:
        raise typer.Exit(EXIT_PROBLEM)


def register(app: typer.Typer) -> None:
    app.command("describe")(describe)
