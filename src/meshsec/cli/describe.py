"""``meshsec describe <workload>[.<namespace>][@<cluster>]`` — ``istioctl x describe pod``.

Identity (SPIFFE ID, certificate model; its cluster and role, the CA that signs for it and that
CA's signing certificate, every root its agent trusts with its SHA-256 fingerprint, the live
serial when the agent answers and the issuer chain of its certificate), the effective
PeerAuthentication in istioctl's wording (workload mode, port-level modes, applied policies),
the AuthorizationPolicies that apply, the Services exposing it, and for every Service it may
call: the DestinationRule TLS mode, the auto-mTLS decision, the server SANs it accepts and
whether that fits the server (the checks of ``meshsec check``).
Exit 0, or 1 when a client/server TLS CONFLICT was found; 2 unknown workload; 3 no mesh found.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

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
from meshsec.cli.meshstate import (
    ClusterState,
    MeshOption,
    MeshState,
    WorkloadState,
    resolve_workload,
)
from meshsec.cli.operator_output import (
    EXIT_PROBLEM,
    OutputOption,
    check_format,
    emit_document,
    operator_errors,
)
from meshsec.cli.proxy_config import SecretRow, fetch_secret_rows
from meshsec.cli.workload_trust import (
    WorkloadTrust,
    cluster_text,
    describe_issuers,
    fetch_ca_signer,
    load_workload_trust,
)
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


@dataclass(frozen=True)
class IdentityView:
    """Where the workload runs and what it trusts: its cluster, the CA that signs for it (and
    with which certificate), the roots its agent holds and the chain of its certificate."""

    cluster: ClusterState | None
    ca_cluster: ClusterState | None
    ca_addr: str | None
    ca_signer: str | None
    trust: WorkloadTrust
    current: SecretRow | None
    live_error: str | None


def build_identity_view(
    workload: WorkloadState, state: MeshState, live: list[SecretRow], live_error: str | None
) -> IdentityView:
    trust = load_workload_trust(workload, live if live else None, state)
    current = next((r for r in live if r.resource_name == "default" and r.serial_number), None)
    ca_cluster = state.ca_cluster_of(workload)
    ca_addr = workload.ca_addr or state.ca.addr
    if trust.chain is not None:
        signer: str | None = trust.chain.leaf.issuer.rfc4514_string()
    else:  # no certificate yet (or refused): ask the CA which certificate it signs with
        root = None
        if ca_cluster is not None and ca_cluster.ca and ca_cluster.ca.root_pem_path:
            with contextlib.suppress(OSError):
                root = Path(ca_cluster.ca.root_pem_path).read_bytes()
        signer = fetch_ca_signer(ca_addr, root) if ca_addr else None
    return IdentityView(
        cluster=state.cluster(workload.cluster),
        ca_cluster=ca_cluster,
        ca_addr=ca_addr,
        ca_signer=signer,
        trust=trust,
        current=current,
        live_error=live_error,
    )


def compose_remote_secret(cluster: ClusterState, ca_name: str) -> str:
    if cluster.remote_secret is None:
        return (
            f"none: {ca_name}'s CA cannot verify {cluster.name}'s tokens, so workloads here get "
            "no certificate"
        )
    present = "" if Path(cluster.remote_secret).exists() else " (MISSING: removed?)"
    return f"{cluster.remote_secret}{present} ({ca_name}'s CA verifies {cluster.name}'s tokens)"


def render_identity(workload: WorkloadState, state: MeshState, ident: IdentityView) -> list[str]:
    ca_name = ident.ca_cluster.name if ident.ca_cluster else "?"
    lines = [
        f"   Cluster: {cluster_text(ident.cluster, workload.cluster)}",
        f"   CA: {ident.ca_addr or '-'}, {ca_name}'s CA (trust domain {state.trust_domain})",
    ]
    if ident.ca_signer:
        lines.append(f"      Signing certificate: {ident.ca_signer}")
    if ident.cluster is not None and ident.cluster.is_remote:
        lines.append(f"   Remote secret: {compose_remote_secret(ident.cluster, ca_name)}")
    trust = ident.trust
    for root in trust.roots:
        lines.append(f"   Trusts root: {root.subject} sha256:{root.fingerprint} ({root.source})")
    if not trust.roots:
        lines.append(f"   Trusts root: <none> ({trust.problem})")
    current = ident.current
    if current is not None:
        lines.append(
            f"   Current certificate: serial {current.serial_number}, valid "
            f"{current.not_before} .. {current.not_after}"
            + (f", issued {current.created_at}" if current.created_at else "")
        )
        if workload.refused_expected:
            lines.append(
                f"   WARNING: {workload.cluster} has no remote secret, so its CA should have "
                "refused this workload; it holds a certificate anyway"
            )
    elif workload.refused_expected:
        lines.append(
            f"   Current certificate: none (expected: {workload.cluster} has no remote secret "
            f"in {ca_name}'s CA, which refuses its tokens)"
        )
    elif ident.live_error:
        lines.append(f"   Current certificate: agent unreachable ({ident.live_error})")
    chain = trust.chain
    if chain is not None:
        rotation = (
            f"; the agent serves serial {current.serial_number}"
            if current is not None and current.serial_number != chain.serial
            else ""
        )
        lines.append(f"   Issuer chain ({chain.source}, serial {chain.serial}{rotation}):")
        lines += [
            f"      {line}" for line in describe_issuers(chain, trust.roots, datetime.now(UTC))
        ]
    elif not workload.refused_expected and trust.chain_problem:
        lines.append(f"   Issuer chain: unknown ({trust.chain_problem})")
    return lines


def identity_to_dict(ident: IdentityView) -> dict[str, Any]:
    trust, chain = ident.trust, ident.trust.chain
    roots = [
        {"subject": r.subject, "sha256": r.fingerprint, "source": r.source} for r in trust.roots
    ]
    return {
        "cluster_info": None if ident.cluster is None else asdict(ident.cluster),
        "ca_cluster": ident.ca_cluster.name if ident.ca_cluster else None,
        "ca_signer": ident.ca_signer,
        "trusted_roots": roots,
        "trusted_root": roots[0] if roots else None,
        "certificate_chain": None
        if chain is None
        else {
            "source": chain.source,
            "serial": chain.serial,
            "not_after": chain.not_after,
            "intermediate": chain.intermediate_label,
            "issuers": [asdict(i) for i in chain.issuers],
        },
    }


def render_describe(
    workload: WorkloadState,
    view: MeshView,
    explanation: WorkloadExplanation,
    inbound: list[tuple[ServicePortTls, str | None]],
    routes: list[RouteCheck],
    ident: IdentityView | None,
) -> str:
    state = view.state
    labels = ",".join(f"{k}={v}" for k, v in sorted(workload.labels.items())) or "<none>"
    lines = [
        f"Workload: {workload.ref}",
        f"   SPIFFE ID: {workload.spiffe_id or '<unknown>'}",
        f"   Service account: {workload.service_account}",
        f"   Labels: {labels}",
    ]
    if workload.ports:
        ports = ", ".join(f"{p.port}/{p.protocol}" for p in workload.ports)
        lines.append(f"   Ports: {ports}")
    lines.append(
        f"   Certificate model: {CERT_MODELS.get(workload.cert_model, workload.cert_model)}"
    )
    if state is not None and ident is not None:
        lines += render_identity(workload, state, ident)
    else:
        lines.append(f"   Cluster: {workload.cluster or '-'} (no mesh running)")

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
    workload: Annotated[str, typer.Argument(help="<workload>[.<namespace>][@<cluster>]")],
    mesh: MeshOption = None,
    config: ConfigOption = None,
    output: OutputOption = "table",
) -> None:
    """Identity, effective mTLS, authorization and outbound TLS of one workload."""
    fmt = check_format(output)
    with operator_errors():
        view = load_mesh_view(mesh, config, cwd=Path.cwd())
        target = resolve_workload(workload, view.workloads, view.cluster_names)
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
    ident: IdentityView | None = None
    if view.state is not None:
        live, live_error = fetch_live_secrets(target)
        ident = build_identity_view(target, view.state, live, live_error)
    current = ident.current if ident is not None else None
    inbound = compose_inbound(explanation, target)
    peer_authn = explanation_to_dict(explanation)
    for service_doc, (_, conflict) in zip(peer_authn["services"], inbound, strict=True):
        service_doc["conflict"] = conflict
    if fmt == "table":
        typer.echo(render_describe(target, view, explanation, inbound, routes, ident))
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
                    "ca": ident.ca_addr if ident else None,
                    **(identity_to_dict(ident) if ident else {}),
                    "certificate": None if current is None else asdict(current),
                    "certificate_expected": not target.refused_expected,
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
