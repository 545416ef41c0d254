"""Analyzers: cross-resource checks over a parsed :class:`PolicySnapshot`. Pure.

:func:`analyze_snapshot` returns the analyzers' diagnostics; :func:`collect_diagnostics` adds
them to the parser's and sorts everything for output (``meshsec analyze``).

Checks (codes in :mod:`meshsec.core.policy.diagnostics`):

* IST0127 NoMatchingWorkloadsFound — an AuthorizationPolicy or PeerAuthentication whose selector
  matches no known workload, or a namespace-wide AuthorizationPolicy in a namespace with no
  known workload. Workloads are known from Pods, controllers' pod templates, meshsec Workloads
  and Services' selectors. With nothing known at all the check is skipped (MS0304, INFO).
* IST0101 ReferencedResourceNotFound — AuthorizationPolicy ``namespaces``/``notNamespaces`` (and
  ``when`` ``source.namespace``) naming a namespace that does not exist; only when Namespace
  objects are given, and never for values with ``*``.
* MS0302 — more than one selector-less PeerAuthentication in a namespace (only the oldest
  applies); MS0303 — a PeerAuthentication with a selector in the root namespace (ignored).
* IST0128 / IST0129 / MS0301 — see :mod:`meshsec.core.policy.analyze_tls`.
* MS0306 — Service port vs target port mix-ups, see :mod:`meshsec.core.policy.analyze_ports`.
* MS0307 / MS0308 — principals in a foreign trust domain or naming a missing ServiceAccount,
  see :mod:`meshsec.core.policy.analyze_identity`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.analyze_identity import analyze_identity_references
from meshsec.core.policy.analyze_ports import analyze_port_spaces
from meshsec.core.policy.analyze_tls import analyze_mtls_conflicts, analyze_server_verification
from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.core.policy.model import AuthorizationPolicy, PeerAuthentication, WorkloadSelector
from meshsec.core.policy.peer_authn import build_peer_authentication_index
from meshsec.core.policy.snapshot import PolicySnapshot


def _at(
    info: dg.CodeInfo, res: AuthorizationPolicy | PeerAuthentication, path: str, msg: str
) -> Diagnostic:
    return dg.make(
        info,
        msg,
        file=res.origin.file,
        line=res.origin.line_of(path),
        path=path,
        resource=res.ref,
    )


def _known_labels(snapshot: PolicySnapshot) -> dict[str, list[Mapping[str, str]]]:
    """Label sets of the workloads known per namespace (workloads, then Service selectors)."""
    known: dict[str, list[Mapping[str, str]]] = {}
    for workload in snapshot.workloads:
        known.setdefault(workload.namespace, []).append(workload.labels)
    for service in snapshot.services:
        if service.selector:
            known.setdefault(service.namespace, []).append(service.selector)
    return known


def _selector_text(selector: WorkloadSelector) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.match_labels.items())


def analyze_workload_selectors(snapshot: PolicySnapshot) -> list[Diagnostic]:
    """IST0127 for AuthorizationPolicies and PeerAuthentications; MS0304 when nothing is known."""
    known = _known_labels(snapshot)
    policies: list[AuthorizationPolicy | PeerAuthentication] = [
        *snapshot.authorization_policies,
        *snapshot.peer_authentications,
    ]
    if not known:
        if not policies:
            return []
        return [
            dg.make(
                dg.NO_WORKLOADS_KNOWN,
                "no Pods, Deployments, Workloads or Services with selectors were given, so "
                "policy selectors (IST0127) were not checked; add them to the input to check",
            )
        ]
    root = snapshot.root_namespace
    out: list[Diagnostic] = []
    for policy in policies:
        in_root = policy.namespace == root
        if in_root:
            candidates = [labels for group in known.values() for labels in group]
        else:
            candidates = known.get(policy.namespace, [])
        if policy.has_selector:
            if isinstance(policy, PeerAuthentication) and in_root:
                continue  # ignored anyway: reported as MS0303
            selector = policy.selector
            assert selector is not None
            if not any(selector.matches(labels) for labels in candidates):
                scope = "any namespace" if in_root else f"namespace {policy.namespace}"
                out.append(
                    _at(
                        dg.NO_MATCHING_WORKLOADS,
                        policy,
                        "spec.selector.matchLabels",
                        f"selector {_selector_text(selector)} matches no known workload in "
                        f"{scope}; the policy has no effect (check the labels)",
                    )
                )
        elif isinstance(policy, AuthorizationPolicy) and not in_root and not candidates:
            out.append(
                _at(
                    dg.NO_MATCHING_WORKLOADS,
                    policy,
                    "metadata.namespace",
                    f"namespace-wide policy, but no workload is known in namespace "
                    f"{policy.namespace}",
                )
            )
    return out


def _namespace_refs(policy: AuthorizationPolicy) -> Iterator[tuple[str, str]]:
    """(field path, namespace value) for every namespace an AuthorizationPolicy names."""
    for rule in policy.rules:
        base = f"spec.rules[{rule.index}]"
        for i, source in enumerate(rule.sources):
            for attr, yaml_name in (
                ("namespaces", "namespaces"),
                ("not_namespaces", "notNamespaces"),
            ):
                for j, value in enumerate(getattr(source, attr)):
                    yield f"{base}.from[{i}].source.{yaml_name}[{j}]", value
        for i, cond in enumerate(rule.when):
            if cond.key == "source.namespace":
                for j, value in enumerate(cond.values):
                    yield f"{base}.when[{i}].values[{j}]", value
                for j, value in enumerate(cond.not_values):
                    yield f"{base}.when[{i}].notValues[{j}]", value


def analyze_namespace_references(snapshot: PolicySnapshot) -> list[Diagnostic]:
    """IST0101 for namespaces named by AuthorizationPolicies (when Namespaces are given)."""
    existing = snapshot.namespace_names
    if not existing:
        return []
    out: list[Diagnostic] = []
    for policy in snapshot.authorization_policies:
        for path, value in _namespace_refs(policy):
            if "*" in value or value in existing:
                continue
            out.append(
                _at(
                    dg.REFERENCED_RESOURCE_NOT_FOUND,
                    policy,
                    path,
                    f"namespace {value!r} does not exist (known namespaces: "
                    f"{', '.join(sorted(existing))})",
                )
            )
    return out


def analyze_peer_authentication_scope(snapshot: PolicySnapshot) -> list[Diagnostic]:
    """MS0302 duplicate selector-less policies; MS0303 selectors in the root namespace."""
    out: list[Diagnostic] = []
    by_ns: dict[str, list[PeerAuthentication]] = {}
    for policy in snapshot.peer_authentications:
        if not policy.has_selector:
            by_ns.setdefault(policy.namespace, []).append(policy)
        elif policy.namespace == snapshot.root_namespace:
            out.append(
                _at(
                    dg.ROOT_NAMESPACE_SELECTOR,
                    policy,
                    "spec.selector",
                    f"PeerAuthentication with a selector in the root namespace "
                    f"{snapshot.root_namespace} is ignored by Istio; put it in the workload's "
                    "namespace, or drop the selector to make it the mesh-wide policy",
                )
            )
    for namespace, group in by_ns.items():
        ordered = sorted(group, key=lambda p: p.precedence_key)
        level = "mesh-wide" if namespace == snapshot.root_namespace else "namespace-wide"
        for newer in ordered[1:]:
            out.append(
                _at(
                    dg.DUPLICATE_NAMESPACE_POLICY,
                    newer,
                    "metadata.name",
                    f"{ordered[0].meta.key} is already the {level} policy of {namespace} (oldest "
                    f"creationTimestamp, then input order); this one is ignored",
                )
            )
    return out


def analyze_snapshot(snapshot: PolicySnapshot) -> tuple[Diagnostic, ...]:
    """Every analyzer's diagnostics for ``snapshot`` (parser diagnostics not included)."""
    index = build_peer_authentication_index(snapshot.peer_authentications, snapshot.mesh_config)
    found: list[Diagnostic] = []
    found += analyze_workload_selectors(snapshot)
    found += analyze_namespace_references(snapshot)
    found += analyze_peer_authentication_scope(snapshot)
    found += analyze_server_verification(snapshot)
    found += analyze_mtls_conflicts(snapshot, index)
    found += analyze_port_spaces(snapshot)
    found += analyze_identity_references(snapshot)
    return tuple(found)


def collect_diagnostics(snapshot: PolicySnapshot) -> tuple[Diagnostic, ...]:
    """Parser and analyzer diagnostics together, in output order (file, line, code)."""
    return dg.sort_diagnostics([*snapshot.diagnostics, *analyze_snapshot(snapshot)])


def count_levels(diagnostics: Iterable[Diagnostic]) -> dict[str, int]:
    """How many diagnostics per level name (Error, Warning, Info)."""
    counts = {level.value: 0 for level in dg.Level}
    for diag in diagnostics:
        counts[diag.level.value] += 1
    return counts
