"""Explain one workload: effective inbound mTLS per port, the namespace mode clients infer, the
client TLS towards the Services that select it and, given a source, the authorization verdict.

This is the pure half of ``meshsec policy explain`` (and later ``meshsec describe``):
:func:`build_workload_explanation` composes the semantics modules over a snapshot and
:func:`explanation_to_dict` gives the stable JSON shape documented in ``docs/cli.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshsec.core.policy.authz import Decision, evaluate, select_authorization_policies
from meshsec.core.policy.destination import (
    ClientTls,
    DestinationRuleIndex,
    compose_service_accounts,
    resolve_client_tls,
)
from meshsec.core.policy.model import FrozenMap, MtlsMode, Service, TlsMode
from meshsec.core.policy.peer_authn import (
    EffectiveMtls,
    NamespaceMtls,
    PeerAuthenticationIndex,
    PortDecision,
)
from meshsec.core.policy.request import AuthzRequest, HttpAttributes
from meshsec.core.policy.snapshot import PolicySnapshot


@dataclass(frozen=True)
class Source:
    """The caller to authorize: its peer principal (None = plaintext) and address."""

    principal: str | None = None
    ip: str | None = None
    http: HttpAttributes | None = None


@dataclass(frozen=True)
class TransportCheck:
    """Whether the inbound port accepts the connection at all (before authorization)."""

    port: int
    mode: MtlsMode
    accepted: bool
    reason: str


@dataclass(frozen=True)
class PortAuthorization:
    port: int
    transport: TransportCheck
    decision: Decision


@dataclass(frozen=True)
class ServicePortTls:
    """Client TLS towards one port of a Service that selects the workload."""

    service: Service
    port: int
    target_port: int | str
    tls: ClientTls
    server_mode: MtlsMode | None  # the workload's mode on the target port (None: named port)
    conflict: str | None  # why this client/server combination fails, if it does


def check_client_server(tls: ClientTls, server_mode: MtlsMode | None) -> str | None:
    """Does the client TLS the workload receives fit its inbound mode? (None = it does.)

    Auto mTLS is decided per endpoint, as Istio's EDS does (``mtlsChecker``): with no
    DestinationRule TLS mode, an endpoint whose workload-level PeerAuthentication is DISABLE on
    that port is marked ``tlsMode: disabled``, so clients send it plaintext and nothing fails.
    Only an explicit ``ISTIO_MUTUAL`` towards a DISABLE port, or plaintext towards a STRICT one,
    is a conflict.
    """
    if server_mode is MtlsMode.STRICT and tls.mode is TlsMode.DISABLE:
        return "clients send plaintext but the workload port is STRICT: connections are rejected"
    if server_mode is MtlsMode.DISABLE and tls.mode is TlsMode.ISTIO_MUTUAL and not tls.auto:
        return (
            "clients send ISTIO_MUTUAL (set by a DestinationRule) but the workload port is "
            "DISABLE (no mTLS termination): connections fail"
        )
    return None


def endpoint_client_tls_mode(tls: ClientTls, server_mode: MtlsMode | None) -> TlsMode:
    """What a client actually sends to one endpoint (Istio EDS ``mtlsChecker``).

    An explicit DestinationRule mode is used as is; auto mTLS (``tls.auto``) sends plaintext to
    an endpoint whose port is DISABLE and mTLS otherwise.
    """
    if tls.auto and server_mode is MtlsMode.DISABLE:
        return TlsMode.DISABLE
    return tls.mode


@dataclass(frozen=True)
class WorkloadExplanation:
    namespace: str
    labels: FrozenMap[str, str]
    effective: EffectiveMtls
    namespace_mtls: NamespaceMtls
    ports: tuple[PortDecision, ...]
    services: tuple[ServicePortTls, ...]
    client_namespace: str
    authorizations: tuple[PortAuthorization, ...] = ()


def check_transport(port: int, mode: MtlsMode, principal: str | None) -> TransportCheck:
    """Does a port in ``mode`` accept a caller that does (principal) or does not use mTLS?"""
    if principal is None:
        if mode is MtlsMode.STRICT:
            return TransportCheck(
                port, mode, False, f"port {port} is STRICT: plaintext connections are rejected"
            )
        return TransportCheck(port, mode, True, f"port {port} is {mode.value}: plaintext accepted")
    if mode is MtlsMode.DISABLE:
        return TransportCheck(
            port,
            mode,
            False,
            f"port {port} is DISABLE: the server does not terminate mTLS, so an mTLS caller "
            "cannot present its identity",
        )
    return TransportCheck(port, mode, True, f"port {port} is {mode.value}: mTLS accepted")


def build_workload_explanation(
    snapshot: PolicySnapshot,
    namespace: str,
    labels: Mapping[str, str],
    *,
    ports: Sequence[int] = (),
    source: Source | None = None,
    client_namespace: str | None = None,
    index: PeerAuthenticationIndex | None = None,
) -> WorkloadExplanation:
    """Everything ``policy explain`` reports for a workload (pure; no I/O)."""
    mesh = snapshot.mesh_config
    index = index or PeerAuthenticationIndex(snapshot.peer_authentications, mesh)
    effective = index.compose(namespace, labels)
    wanted = sorted({*effective.port_modes, *ports})
    port_decisions = tuple(effective.explain_port(p) for p in wanted)

    client_ns = client_namespace or namespace
    rules = DestinationRuleIndex(snapshot.destination_rules, mesh)
    services: list[ServicePortTls] = []
    for service in snapshot.services_in(namespace):
        if not service.selects(labels):
            continue
        accounts = compose_service_accounts(service, snapshot.workloads)
        endpoints = sum(
            1 for w in snapshot.workloads_in(service.namespace) if service.selects(w.labels)
        )
        namespace_mode = index.namespace_mode(service.namespace).mode
        for sp in service.ports:
            tls = resolve_client_tls(
                service.hostname,
                sp.port,
                client_namespace=client_ns,
                service_namespace=service.namespace,
                rules=rules,
                mesh=mesh,
                namespace_mode=namespace_mode,
                service_accounts=accounts,
                endpoints=endpoints,
            )
            target = sp.effective_target_port
            server_mode = effective.mode_for_port(target) if isinstance(target, int) else None
            services.append(
                ServicePortTls(
                    service,
                    sp.port,
                    target,
                    tls,
                    server_mode,
                    check_client_server(tls, server_mode),
                )
            )

    authorizations: list[PortAuthorization] = []
    if source is not None:
        policies = select_authorization_policies(
            namespace, labels, snapshot.authorization_policies, mesh
        )
        for port in list(ports) or [0]:
            request = AuthzRequest(
                destination_port=port,
                source_principal=source.principal,
                source_ip=source.ip,
                http=source.http,
            )
            authorizations.append(
                PortAuthorization(
                    port,
                    check_transport(port, effective.mode_for_port(port), source.principal),
                    evaluate(request, policies, mesh),
                )
            )

    return WorkloadExplanation(
        namespace=namespace,
        labels=FrozenMap(labels),
        effective=effective,
        namespace_mtls=index.namespace_mode(namespace),
        ports=port_decisions,
        services=tuple(services),
        client_namespace=client_ns,
        authorizations=tuple(authorizations),
    )


def _key(policy: Any) -> str | None:
    return None if policy is None else str(policy.meta.key)


def _decision_dict(auth: PortAuthorization) -> dict[str, Any]:
    d = auth.decision
    return {
        "decision": d.verdict.value,
        "policy": _key(d.policy),
        "action": d.policy.action.value if d.policy else None,
        "rule": d.rule,
        "scope": d.scope,
        "stage": d.stage.value,
        "reason": d.reason,
        "port": auth.port,
        "transport": {
            "mode": auth.transport.mode.value,
            "accepted": auth.transport.accepted,
            "reason": auth.transport.reason,
        },
        "audited_by": [str(m) for m in d.audited_by],
        "notes": list(d.notes),
        "considered": [_key(p) for p in d.considered],
    }


def explanation_to_dict(
    explanation: WorkloadExplanation, source: Source | None = None
) -> dict[str, Any]:
    """The JSON document of ``policy explain -o json`` (keys documented in docs/cli.md)."""
    eff = explanation.effective
    out: dict[str, Any] = {
        "namespace": explanation.namespace,
        "labels": dict(explanation.labels),
        "mode": eff.mode.value,
        "decided_by": {
            "level": eff.decided_by.value,
            "policy": _key(eff.deciding_policy),
            "reason": eff.reason,
        },
        "port_modes": {str(p.port): p.mode.value for p in explanation.ports},
        "ports": {
            str(p.port): {
                "mode": p.mode.value,
                "level": p.level.value,
                "policy": _key(p.policy),
                "reason": p.reason,
            }
            for p in explanation.ports
        },
        "namespace_mode": explanation.namespace_mtls.mode.value,
        "namespace_mode_reason": explanation.namespace_mtls.reason,
        "policies": [_key(p) for p in eff.applied],
        "levels": [
            {
                "level": lv.level.value,
                "policy": _key(lv.policy),
                "mode": lv.own_mode.value,
                "resolved": lv.resolved.value,
                "reason": lv.reason,
            }
            for lv in eff.levels
        ],
        "ignored_policies": [{"policy": _key(i.policy), "reason": i.reason} for i in eff.ignored],
        "services": [
            {
                "service": s.service.meta.key,
                "host": s.tls.host,
                "port": s.port,
                "target_port": s.target_port,
                "client_namespace": explanation.client_namespace,
                "tls_mode": s.tls.mode.value,
                "auto": s.tls.auto,
                "source": s.tls.source.value,
                "destination_rule": _key(s.tls.destination_rule),
                "destination_rules": [r.meta.key for r in s.tls.destination_rules],
                "sni": s.tls.sni,
                "subject_alt_names": list(s.tls.subject_alt_names),
                "reason": s.tls.reason,
                "server_mode": s.server_mode.value if s.server_mode else None,
                "conflict": s.conflict,
            }
            for s in explanation.services
        ],
    }
    if source is not None and explanation.authorizations:
        first, *_ = explanation.authorizations
        out["source"] = {
            "principal": source.principal,
            "ip": source.ip,
            "protocol": "HTTP" if source.http else "TCP",
        }
        out["authorization"] = _decision_dict(first)
        out["authorizations"] = [_decision_dict(a) for a in explanation.authorizations]
    return out
