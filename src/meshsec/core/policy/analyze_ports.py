"""MS0306: a port number written in the wrong port space.

Istio mixes two port spaces and users mix them up:

* PeerAuthentication ``portLevelMtls`` keys and AuthorizationPolicy ``ports``/``notPorts`` and
  ``destination.port`` are **workload (target) ports** — what the container listens on;
* DestinationRule ``portLevelSettings[].port.number`` is a **Service port**.

When a number is not a port of the right space for the Services involved but *is* one of the
other space (``port: 80 → targetPort: 8080``), the setting silently applies to nothing; this
analyzer says which port was meant. Only ports known from Services (and container ports) are
compared, so nothing is reported without Services.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.destination import resolve_rule_host
from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.core.policy.document import parse_port_text
from meshsec.core.policy.model import (
    AuthorizationPolicy,
    DestinationRule,
    PeerAuthentication,
    Service,
    WorkloadSelector,
)
from meshsec.core.policy.snapshot import PolicySnapshot


def _label_sets(snapshot: PolicySnapshot, namespace: str) -> list[Mapping[str, str]]:
    sets: list[Mapping[str, str]] = [w.labels for w in snapshot.workloads_in(namespace)]
    sets += [s.selector for s in snapshot.services_in(namespace) if s.selector]
    return sets


def _services_for(
    snapshot: PolicySnapshot, namespace: str, selector: WorkloadSelector | None
) -> list[Service]:
    """Services in ``namespace`` in front of workloads the selector picks (all with none)."""
    services = snapshot.services_in(namespace)
    if selector is None or selector.is_empty:
        return list(services)
    picked = [labels for labels in _label_sets(snapshot, namespace) if selector.matches(labels)]
    return [s for s in services if any(s.selects(labels) for labels in picked)]


def _port_spaces(
    snapshot: PolicySnapshot, services: Iterable[Service], namespace: str
) -> tuple[dict[int, list[str]], set[int]]:
    """Service port → ["svc:port→target"...] and the set of known target ports."""
    by_service_port: dict[int, list[str]] = {}
    targets: set[int] = set()
    services = list(services)
    for service in services:
        for port in service.ports:
            target = port.effective_target_port
            if isinstance(target, int):
                targets.add(target)
            by_service_port.setdefault(port.port, []).append(
                f"Service {service.meta.key} port {port.port} → targetPort {target}"
            )
    for workload in snapshot.workloads_in(namespace):
        if any(s.selects(workload.labels) for s in services):
            targets.update(workload.ports)
    return by_service_port, targets


def _wrong_target(
    port: int, by_service_port: Mapping[int, list[str]], targets: set[int]
) -> str | None:
    if port in targets or port not in by_service_port:
        return None
    mapping = "; ".join(by_service_port[port])
    return (
        f"port {port} is a Service port, but this field takes the workload (target) port, so "
        f"it matches nothing ({mapping}); use the targetPort"
    )


def _diag(
    resource: PeerAuthentication | AuthorizationPolicy | DestinationRule, path: str, msg: str
) -> Diagnostic:
    return dg.make(
        dg.WRONG_PORT_SPACE,
        msg,
        file=resource.origin.file,
        line=resource.origin.line_of(path),
        path=path,
        resource=resource.ref,
    )


def _authz_ports(policy: AuthorizationPolicy) -> Iterator[tuple[str, int]]:
    for rule in policy.rules:
        base = f"spec.rules[{rule.index}]"
        for i, op in enumerate(rule.operations):
            for name, values in (("ports", op.ports), ("notPorts", op.not_ports)):
                for j, value in enumerate(values):
                    port = parse_port_text(value)
                    if port is not None:
                        yield f"{base}.to[{i}].operation.{name}[{j}]", port
        for i, cond in enumerate(rule.when):
            if cond.key == "destination.port":
                for name, values in (("values", cond.values), ("notValues", cond.not_values)):
                    for j, value in enumerate(values):
                        port = parse_port_text(value)
                        if port is not None:
                            yield f"{base}.when[{i}].{name}[{j}]", port


def analyze_port_spaces(snapshot: PolicySnapshot) -> list[Diagnostic]:
    """MS0306 for PeerAuthentications, AuthorizationPolicies and DestinationRules."""
    out: list[Diagnostic] = []
    root = snapshot.root_namespace
    for pa in snapshot.peer_authentications:
        if not pa.port_level_mtls or pa.namespace == root:
            continue
        services = _services_for(snapshot, pa.namespace, pa.selector)
        by_port, targets = _port_spaces(snapshot, services, pa.namespace)
        for port in pa.port_level_mtls:
            problem = _wrong_target(port, by_port, targets)
            if problem:
                out.append(_diag(pa, f"spec.portLevelMtls[{port}]", f"portLevelMtls {problem}"))
    for ap in snapshot.authorization_policies:
        if ap.namespace == root:
            continue
        services = _services_for(snapshot, ap.namespace, ap.selector)
        by_port, targets = _port_spaces(snapshot, services, ap.namespace)
        for path, port in _authz_ports(ap):
            problem = _wrong_target(port, by_port, targets)
            if problem:
                out.append(_diag(ap, path, problem))
    for rule in snapshot.destination_rules:
        out += _destination_rule_ports(snapshot, rule)
    return out


def _destination_rule_ports(snapshot: PolicySnapshot, rule: DestinationRule) -> list[Diagnostic]:
    host = resolve_rule_host(rule.host, rule.namespace)
    services = snapshot.services_for_host(host)
    if not services or host.startswith("*"):
        return []
    service_ports = {p.port for s in services for p in s.ports}
    target_to_service: dict[int, list[str]] = {}
    for service in services:
        for port in service.ports:
            target = port.effective_target_port
            if isinstance(target, int) and target != port.port:
                target_to_service.setdefault(target, []).append(
                    f"Service {service.meta.key} port {port.port} → targetPort {target}"
                )
    out: list[Diagnostic] = []
    policies = [("spec.trafficPolicy", rule.traffic_policy)] + [
        (f"spec.subsets[{i}].trafficPolicy", s.traffic_policy) for i, s in enumerate(rule.subsets)
    ]
    for base, policy in policies:
        if policy is None:
            continue
        for j, entry in enumerate(policy.port_level_settings):
            if entry.port is None:
                continue
            number = entry.port.number
            if number in service_ports or number not in target_to_service:
                continue
            mapping = "; ".join(target_to_service[number])
            out.append(
                _diag(
                    rule,
                    f"{base}.portLevelSettings[{j}].port.number",
                    f"port {number} is a workload (target) port, but portLevelSettings takes the "
                    f"Service port, so it matches nothing ({mapping}); use the Service port",
                )
            )
    return out
