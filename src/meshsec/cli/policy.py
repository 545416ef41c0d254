"""``meshsec policy explain``: why a workload gets its mTLS mode and authorization verdict.

Output in the style of ``istioctl x describe`` (text) or a JSON document (``-o json``, keys in
docs/cli.md). Exit codes: 0 explained; 1 a source was given and is denied (by authorization or
because the port refuses its transport); 2 bad arguments or an unreadable config directory.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated

import typer

from meshsec.config.sources.files import load_snapshot
from meshsec.core.identity import IdentityError, SpiffeId
from meshsec.core.policy.diagnostics import Level
from meshsec.core.policy.explain import (
    Source,
    WorkloadExplanation,
    build_workload_explanation,
    endpoint_client_tls_mode,
    explanation_to_dict,
)
from meshsec.core.policy.request import HttpAttributes

EXIT_DENIED = 1
EXIT_BAD_INPUT = 2

policy_app = typer.Typer(
    name="policy",
    help="Explain PeerAuthentication, DestinationRule and AuthorizationPolicy decisions.",
    no_args_is_help=True,
)


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` → dict; empty text → no labels."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--labels")
        labels[key.strip()] = value.strip()
    return labels


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(EXIT_BAD_INPUT)


@policy_app.command("explain")
def explain(
    config: Annotated[
        Path, typer.Option("--config-dir", help="Directory (or file) of Kubernetes/Istio YAML.")
    ],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Workload namespace.")],
    labels: Annotated[
        list[str] | None,
        typer.Option("--labels", "-l", help="Workload labels: k=v,k2=v2 (repeatable)."),
    ] = None,
    port: Annotated[
        list[int] | None,
        typer.Option("--port", "-p", help="Workload (target) port to explain; repeatable."),
    ] = None,
    source_principal: Annotated[
        str | None,
        typer.Option(
            "--source-principal",
            help="Caller identity (spiffe://td/ns/x/sa/y or td/ns/x/sa/y) to authorize.",
        ),
    ] = None,
    plaintext: Annotated[
        bool, typer.Option("--plaintext", help="Authorize a plaintext caller (no identity).")
    ] = False,
    source_ip: Annotated[str | None, typer.Option("--source-ip", help="Caller IP.")] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="Authorize an HTTP request (else TCP).")
    ] = None,
    path: Annotated[str | None, typer.Option("--path", help="HTTP path.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="HTTP :authority.")] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="HTTP header Name:value; repeatable.")
    ] = None,
    client_namespace: Annotated[
        str | None,
        typer.Option("--client-namespace", help="Namespace of the client for DestinationRules."),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
) -> None:
    """Explain a workload's effective mTLS per port and, given a source, its authorization."""
    if output not in ("text", "json"):
        raise _fail(f"--output must be text or json, not {output!r}")
    if not config.exists():
        raise _fail(f"--config-dir {config}: no such file or directory")
    if source_principal is not None and plaintext:
        raise _fail("--source-principal and --plaintext are mutually exclusive")
    ports = list(port or [])
    bad = [p for p in ports if not 1 <= p <= 65535]
    if bad:
        raise _fail(f"--port {bad[0]} is out of range 1-65535")

    source: Source | None = None
    if source_principal is not None or plaintext or source_ip is not None:
        principal = None if plaintext else source_principal
        if principal is not None:
            if not principal.startswith("spiffe://"):
                principal = f"spiffe://{principal}"
            try:
                principal = str(SpiffeId.parse(principal))
            except IdentityError as exc:
                raise _fail(f"--source-principal: {exc}") from None
        if source_ip is not None:
            try:
                ipaddress.ip_address(source_ip)
            except ValueError:
                raise _fail(f"--source-ip {source_ip!r} is not an IP address") from None
        http = None
        if method or path or host or header:
            headers = {}
            for item in header or []:
                name, colon, value = item.partition(":")
                if not colon or not name.strip():
                    raise _fail(f"--header expects Name:value, got {item!r}")
                headers[name.strip()] = value.strip()
            http = HttpAttributes.build(method or "GET", path or "/", host, headers)
        source = Source(principal=principal, ip=source_ip, http=http)

    snapshot = load_snapshot([config])
    errors = [d for d in snapshot.diagnostics if d.level is Level.ERROR]
    if errors:
        typer.secho(
            f"warning: {len(errors)} configuration error(s); the objects concerned were skipped "
            f"(run `meshsec analyze {config}` for details)",
            err=True,
            fg="yellow",
        )
    explanation = build_workload_explanation(
        snapshot,
        namespace,
        parse_labels(",".join(labels or [])),
        ports=ports,
        source=source,
        client_namespace=client_namespace,
    )
    if output == "json":
        typer.echo(json.dumps(explanation_to_dict(explanation, source), indent=2))
    else:
        typer.echo(render_text(explanation, source))
    if any(not a.decision.allowed or not a.transport.accepted for a in explanation.authorizations):
        raise typer.Exit(EXIT_DENIED)


def render_text(explanation: WorkloadExplanation, source: Source | None) -> str:
    """Human output modelled on ``istioctl x describe``."""
    eff = explanation.effective
    labels = ",".join(f"{k}={v}" for k, v in explanation.labels.items()) or "<none>"
    lines = [
        f"Workload: namespace {explanation.namespace}, labels {labels}",
        "Effective PeerAuthentication:",
        f"   Workload mTLS mode: {eff.mode.value}",
    ]
    if explanation.ports:
        lines.append("   Port Level mTLS mode:")
        lines += [f"      {p.port}: {p.mode.value}   ({p.reason})" for p in explanation.ports]
    lines.append(f"   Decided by: {eff.reason}")
    lines += [f"      {lv.reason}" for lv in eff.levels]
    applied = ", ".join(p.meta.key for p in eff.applied) or "<none>"
    lines += ["Applied PeerAuthentication:", f"   {applied}"]
    if eff.ignored:
        lines.append("Ignored PeerAuthentication:")
        lines += [f"   {i.policy.meta.key}: {i.reason}" for i in eff.ignored]
    ns = explanation.namespace_mtls
    lines.append(f"Namespace mTLS mode (for clients' auto mTLS): {ns.mode.value}   ({ns.reason})")
    if explanation.services:
        lines.append(f"Client TLS from namespace {explanation.client_namespace}:")
        for s in explanation.services:
            dr = s.tls.destination_rule
            lines.append(
                f"   {s.tls.host}:{s.port} -> target {s.target_port}: "
                f"Traffic Policy TLS Mode: {s.tls.mode.value}{' (auto)' if s.tls.auto else ''}"
                + (f", DestinationRule {dr.meta.key}" if dr else "")
            )
            lines.append(f"      {s.tls.reason}")
            if s.tls.sni:
                lines.append(f"      SNI: {s.tls.sni}")
            if s.tls.subject_alt_names:
                lines.append(f"      SANs: {', '.join(s.tls.subject_alt_names)}")
            if s.conflict:
                lines.append(f"      WARNING: {s.conflict}")
            elif endpoint_client_tls_mode(s.tls, s.server_mode) is not s.tls.mode:
                lines.append(
                    "      this workload's port is DISABLE: auto mTLS sends it plaintext "
                    "(Istio marks the endpoint tlsMode=disabled)"
                )
    if source is not None:
        who = source.principal or "plaintext (no identity)"
        proto = "HTTP" if source.http else "TCP"
        for auth in explanation.authorizations:
            d = auth.decision
            port = auth.port or "<unspecified>"
            lines.append(f"Authorization of {who} to port {port} ({proto}):")
            lines.append(
                f"   Transport: {'accepted' if auth.transport.accepted else 'REJECTED'}"
                f" ({auth.transport.reason})"
            )
            where = f" by {d.policy.meta.key} rule {d.rule}" if d.policy is not None else ""
            lines.append(f"   Decision: {d.verdict.value}{where}")
            lines.append(f"   Reason: {d.reason}")
            lines += [f"   Note: {n}" for n in d.notes]
            lines += [f"   Audited by: {m}" for m in d.audited_by]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
