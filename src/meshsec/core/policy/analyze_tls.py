"""TLS analyzers: DestinationRules that do not verify servers, and client/server mTLS conflicts.

* **IST0128 / IST0129** (Istio's NoServerCertificateVerification{Destination,Port}Level): a
  ``tls`` block with mode SIMPLE or MUTUAL and no ``caCertificates`` — unless ``credentialName``
  is set on a DestinationRule with a ``workloadSelector`` (then the CA comes from the secret).
  Subsets are checked too (their ``tls`` counts as destination level, their port settings as
  port level).
* **MS0301 MTLSPolicyConflict** (the check Istio removed as IST0113): for each Service a
  DestinationRule's host covers, and each Service port, the TLS the rule makes clients send
  (port-level settings replacing destination-level ones, subsets overriding) is compared with
  the effective inbound mode of the workloads behind the port (PeerAuthentication composition,
  port-level included). Plaintext (``DISABLE``) into a STRICT workload, or ``ISTIO_MUTUAL`` into
  a DISABLE workload, fails every connection. Auto mTLS is never a conflict: it is what the
  rule does when it sets no TLS.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.destination import (
    Scope,
    SelectedRule,
    TlsSource,
    compose_client_tls,
    resolve_rule_host,
)
from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.core.policy.model import (
    ClientTLSSettings,
    DestinationRule,
    FrozenMap,
    MtlsMode,
    Service,
    ServicePort,
    Subset,
    TlsMode,
    TrafficPolicy,
    Workload,
)
from meshsec.core.policy.peer_authn import NamespaceMtlsMode, PeerAuthenticationIndex
from meshsec.core.policy.snapshot import PolicySnapshot

_UNVERIFIED_MODES = (TlsMode.SIMPLE, TlsMode.MUTUAL)


def _diag(info: dg.CodeInfo, rule: DestinationRule, path: str, message: str) -> Diagnostic:
    return dg.make(
        info,
        message,
        file=rule.origin.file,
        line=rule.origin.line_of(path),
        path=path,
        resource=rule.ref,
    )


def _policies(rule: DestinationRule) -> Iterator[tuple[str, str, TrafficPolicy]]:
    """(path, label, policy) for the destination policy and every subset policy."""
    if rule.traffic_policy is not None:
        yield "spec.trafficPolicy", "", rule.traffic_policy
    for i, subset in enumerate(rule.subsets):
        if subset.traffic_policy is not None:
            yield (
                f"spec.subsets[{i}].trafficPolicy",
                f" (subset {subset.name})",
                subset.traffic_policy,
            )


def _unverified(rule: DestinationRule, tls: ClientTLSSettings | None) -> bool:
    if tls is None or tls.mode not in _UNVERIFIED_MODES or tls.ca_certificates:
        return False
    with_selector = rule.workload_selector is not None and not rule.workload_selector.is_empty
    return not (tls.credential_name and with_selector)


def analyze_server_verification(snapshot: PolicySnapshot) -> list[Diagnostic]:
    """IST0128 / IST0129 for every DestinationRule."""
    out: list[Diagnostic] = []
    for rule in snapshot.destination_rules:
        for path, label, policy in _policies(rule):
            if _unverified(rule, policy.tls):
                assert policy.tls is not None
                out.append(
                    _diag(
                        dg.NO_SERVER_CERT_VERIFICATION_DEST,
                        rule,
                        f"{path}.tls.mode",
                        f"tls mode {policy.tls.mode.value} for host {rule.host}{label} has no "
                        "caCertificates, so the server's certificate is not verified against a "
                        "CA you trust; set caCertificates (or credentialName together with "
                        "workloadSelector)",
                    )
                )
            for j, entry in enumerate(policy.port_level_settings):
                if _unverified(rule, entry.tls):
                    assert entry.tls is not None
                    port = entry.port.number if entry.port else "?"
                    out.append(
                        _diag(
                            dg.NO_SERVER_CERT_VERIFICATION_PORT,
                            rule,
                            f"{path}.portLevelSettings[{j}].tls.mode",
                            f"tls mode {entry.tls.mode.value} for host {rule.host} port {port}"
                            f"{label} has no caCertificates, so the server's certificate is not "
                            "verified; set caCertificates on this port's tls",
                        )
                    )
    return out


# --------------------------------------------------------------------------- mTLS conflicts


def _port_entry(policy: TrafficPolicy | None, port: int) -> int:
    entries = policy.port_level_settings if policy is not None else ()
    return next(
        (j for j, e in enumerate(entries) if e.port is not None and e.port.number == port), -1
    )


def _tls_for(
    rule: DestinationRule, host: str, port: int, subset: Subset | None, snapshot: PolicySnapshot
) -> tuple[TlsMode, str] | None:
    """The TLS mode the rule itself sets for ``port`` (and subset), with the field path that
    set it; None when the rule leaves TLS to auto mTLS."""
    selected = SelectedRule(
        rules=(rule,),
        scope=Scope.SERVICE_NAMESPACE,
        host=host,
        traffic_policy=rule.traffic_policy,
        subsets=rule.subsets,
    )
    result = compose_client_tls(
        selected,
        host,
        port,
        mesh=snapshot.mesh_config,
        service_mode=NamespaceMtlsMode.PERMISSIVE,
        subset=subset.name if subset is not None else None,
    )
    if result.auto:
        return None
    base = "spec.trafficPolicy"
    policy = rule.traffic_policy
    if subset is not None and result.source in (TlsSource.SUBSET, TlsSource.SUBSET_PORT):
        base = f"spec.subsets[{rule.subsets.index(subset)}].trafficPolicy"
        policy = subset.traffic_policy
    if result.source in (TlsSource.PORT, TlsSource.SUBSET_PORT):
        return result.mode, f"{base}.portLevelSettings[{_port_entry(policy, port)}].tls.mode"
    return result.mode, f"{base}.tls.mode"


def _target_port(port: ServicePort) -> int | None:
    target = port.effective_target_port
    return target if isinstance(target, int) else None


def _backends(
    service: Service, workloads: Sequence[Workload]
) -> list[tuple[str, Mapping[str, str]]]:
    """(description, labels) of the workloads behind a Service; its selector when none known."""
    selected = [
        w for w in workloads if w.namespace == service.namespace and service.selects(w.labels)
    ]
    if selected:
        return [(w.ref, w.labels) for w in selected]
    if service.selector:
        shown = ",".join(f"{k}={v}" for k, v in service.selector.items())
        return [(f"workloads labelled {shown}", service.selector)]
    return []


_CONFLICTS: Mapping[tuple[TlsMode, MtlsMode], str] = {
    (TlsMode.DISABLE, MtlsMode.STRICT): (
        "clients send plaintext but the server only accepts mTLS (STRICT): every connection "
        "is refused; use ISTIO_MUTUAL (or remove tls to let auto mTLS choose)"
    ),
    (TlsMode.ISTIO_MUTUAL, MtlsMode.DISABLE): (
        "clients send Istio mTLS but the server has mTLS disabled (DISABLE) and expects "
        "plaintext: every handshake fails; use DISABLE for this destination (or remove tls to "
        "let auto mTLS choose)"
    ),
}


def analyze_mtls_conflicts(
    snapshot: PolicySnapshot, index: PeerAuthenticationIndex
) -> list[Diagnostic]:
    """MS0301: DestinationRule TLS against the effective mode of the workloads it reaches."""
    out: list[Diagnostic] = []
    seen: set[tuple[str, str, str]] = set()
    for rule in snapshot.destination_rules:
        rule_host = resolve_rule_host(rule.host, rule.namespace)
        for service in snapshot.services_for_host(rule_host):
            backends = _backends(service, snapshot.workloads)
            for port in service.ports:
                target = _target_port(port)
                for subset in (None, *rule.subsets):
                    explicit = _tls_for(rule, service.hostname, port.port, subset, snapshot)
                    if explicit is None:
                        continue
                    tls_mode, where = explicit
                    for ref, labels in backends:
                        if subset is not None and not all(
                            labels.get(k) == v for k, v in subset.labels.items()
                        ):
                            continue
                        effective = index.compose(service.namespace, FrozenMap(labels))
                        server = (
                            effective.mode_for_port(target)
                            if target is not None
                            else effective.mode
                        )
                        problem = _CONFLICTS.get((tls_mode, server))
                        key = (rule.ref, f"{service.meta.key}:{port.port}", ref)
                        if problem is None or key in seen:
                            continue
                        seen.add(key)
                        decided = (
                            effective.explain_port(target).reason
                            if target is not None
                            else effective.reason
                        )
                        sub = f" subset {subset.name}" if subset is not None else ""
                        out.append(
                            _diag(
                                dg.MTLS_CONFLICT,
                                rule,
                                where,
                                f"{tls_mode.value} to {service.hostname}:{port.port}{sub} "
                                f"conflicts with {ref} (target port {target or port.target_port}"
                                f" is {server.value}: {decided}); {problem}",
                            )
                        )
    return out
