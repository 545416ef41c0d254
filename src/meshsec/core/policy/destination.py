"""Client-side TLS towards a service: DestinationRule lookup, port-level replacement, auto mTLS
and secure naming (§5.2-§5.4).

DestinationRule lookup for a client in namespace C calling host H (:func:`select_destination_rule`),
in Istio's order — the first step that finds a rule wins:

1. rules in C itself (visible whatever their ``exportTo``; a rule with ``workloadSelector`` only
   for client workloads it selects, and then preferred over selector-less ones);
2. rules in the service's namespace exported to C;
3. rules in the root namespace exported to C.

``exportTo`` absent or containing ``*`` exports everywhere; ``.`` means the rule's own namespace;
``~`` nowhere; other entries are namespace names. Rules with a ``workloadSelector`` are never
exported. Inside one namespace the most specific host wins (exact, then the longest wildcard);
several rules for the same host are merged oldest first: the first ``trafficPolicy`` found is used
and subsets are added by name (first definition wins). Short hosts (``reviews``) mean
``reviews.<rule namespace>.svc.cluster.local``.

TLS for a port and subset (:func:`compose_client_tls`): start from ``trafficPolicy.tls``; a
``portLevelSettings`` entry for the port **replaces** it (an entry without ``tls`` leaves no TLS
setting, i.e. auto mTLS); a subset's ``trafficPolicy.tls`` overrides; a subset port-level entry
replaces again. With no TLS setting left, auto mTLS (``enableAutoMtls``, default on) chooses
ISTIO_MUTUAL unless the inferred service mode (:func:`infer_service_mtls_mode`) is DISABLE or
UNKNOWN (then plaintext). The service mode is Istio's best effort: UNKNOWN for mesh-external
services; DISABLE for passthrough load balancing with no endpoint or an endpoint without a
sidecar; else the namespace-level mode when known; else PERMISSIVE. Workload-level
PeerAuthentications are not consulted, as in Istio.

ISTIO_MUTUAL carries SNI ``outbound_.<port>_.<subset>_.<host>`` (unless the rule sets ``sni``) and
the SANs for secure naming: the rule's ``subjectAltNames`` if any, else the SPIFFE IDs of the
service accounts behind the service expanded with every trust-domain alias.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from meshsec.core.policy.model import (
    ClientTLSSettings,
    DestinationRule,
    MeshConfig,
    Service,
    Subset,
    TlsMode,
    TrafficPolicy,
    Workload,
)
from meshsec.core.policy.peer_authn import NamespaceMtlsMode

DEFAULT_DOMAIN_SUFFIX = "cluster.local"


class Scope(Enum):
    """Where the chosen DestinationRule was found."""

    CLIENT_NAMESPACE = "client namespace"
    SERVICE_NAMESPACE = "service namespace"
    ROOT_NAMESPACE = "root namespace"


class TlsSource(Enum):
    """Which part of the DestinationRule decided the TLS settings (AUTO: none did)."""

    DESTINATION = "destination"
    PORT = "port"
    SUBSET = "subset"
    SUBSET_PORT = "subset port"
    AUTO = "auto"


@dataclass(frozen=True)
class ServiceMtls:
    """The mTLS mode a client infers for a service (Istio ``BestEffortInferServiceMTLSMode``)."""

    mode: NamespaceMtlsMode
    reason: str


def infer_service_mtls_mode(
    namespace_mode: NamespaceMtlsMode,
    *,
    mesh_external: bool = False,
    passthrough: bool = False,
    endpoints: int | None = None,
    endpoint_without_sidecar: bool = False,
) -> ServiceMtls:
    """Best-effort service mode for auto mTLS, from the service namespace's mode.

    ``passthrough`` is a headless service or a DestinationRule ``loadBalancer.simple:
    PASSTHROUGH``; then ``endpoints`` (count, None = unknown) and ``endpoint_without_sidecar``
    matter: no endpoint, or any without a sidecar, means DISABLE.
    """
    if mesh_external:
        return ServiceMtls(NamespaceMtlsMode.UNKNOWN, "the service is mesh-external")
    if passthrough:
        if endpoints == 0:
            return ServiceMtls(NamespaceMtlsMode.DISABLE, "passthrough service without endpoints")
        if endpoint_without_sidecar:
            return ServiceMtls(
                NamespaceMtlsMode.DISABLE, "passthrough service with an endpoint without sidecar"
            )
    if namespace_mode is not NamespaceMtlsMode.UNKNOWN:
        return ServiceMtls(
            namespace_mode, f"the service's namespace mode is {namespace_mode.value}"
        )
    return ServiceMtls(
        NamespaceMtlsMode.PERMISSIVE,
        "no namespace or mesh PeerAuthentication: the service is assumed PERMISSIVE",
    )


@dataclass(frozen=True)
class SelectedRule:
    """The DestinationRule(s) that govern a host for a client, merged as Istio merges them."""

    rules: tuple[DestinationRule, ...]  # oldest first; rules[0] is the primary
    scope: Scope
    host: str  # the rule host (FQDN) that matched
    traffic_policy: TrafficPolicy | None
    subsets: tuple[Subset, ...]

    @property
    def rule(self) -> DestinationRule:
        return self.rules[0]

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)


@dataclass(frozen=True)
class ClientTls:
    """What the client sends to one service port.

    ``mode`` is DISABLE for plaintext. ``auto`` is True when auto mTLS chose ISTIO_MUTUAL or
    plaintext because no TLS setting applied. ``settings`` are the DestinationRule's TLS
    settings that applied (``None`` with auto). ``sni`` and ``subject_alt_names`` are what the
    client sends and accepts (ISTIO_MUTUAL: computed; SIMPLE/MUTUAL: as configured).
    """

    host: str
    port: int
    subset: str | None
    mode: TlsMode
    auto: bool
    source: TlsSource
    destination_rule: DestinationRule | None
    scope: Scope | None
    settings: ClientTLSSettings | None
    sni: str | None
    subject_alt_names: tuple[str, ...]
    reason: str
    notes: tuple[str, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()  # all merged rules, oldest first

    @property
    def is_tls(self) -> bool:
        return self.mode is not TlsMode.DISABLE


# ------------------------------------------------------------------------------ hosts


def resolve_rule_host(host: str, namespace: str, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> str:
    """A DestinationRule host as an FQDN: short names are relative to the rule's namespace."""
    if host == "*" or "." in host or ":" in host:
        return host.lower()
    return f"{host}.{namespace}.svc.{domain_suffix}".lower()


def host_matches(rule_host: str, host: str) -> bool:
    """Exact, or a wildcard rule host (``*`` or ``*.suffix``) covering ``host``."""
    host = host.lower()
    if rule_host == host:
        return True
    if rule_host.startswith("*"):
        return host.endswith(rule_host[1:])
    return False


def _most_specific(host: str, candidates: Sequence[str]) -> str | None:
    """The exact candidate, else the longest matching wildcard."""
    if host.lower() in candidates:
        return host.lower()
    wildcards = [c for c in candidates if c.startswith("*") and host_matches(c, host)]
    return max(wildcards, key=len) if wildcards else None


# ------------------------------------------------------------------------------ visibility


def is_exported_to(rule: DestinationRule, namespace: str) -> bool:
    """Whether ``rule`` (in another namespace) is visible to clients in ``namespace``."""
    if rule.workload_selector is not None and not rule.workload_selector.is_empty:
        return False
    export_to = rule.export_to or ("*",)
    for entry in export_to:
        if entry == "*" or entry == namespace:
            return True
        if entry == "." and rule.namespace == namespace:
            return True
    return False


class DestinationRuleIndex:
    """DestinationRules grouped by namespace (hosts resolved to FQDNs) once per snapshot."""

    def __init__(
        self,
        rules: Iterable[DestinationRule],
        mesh: MeshConfig,
        domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
    ) -> None:
        self.mesh = mesh
        self._by_ns: dict[str, list[tuple[str, DestinationRule]]] = {}
        for rule in rules:
            fqdn = resolve_rule_host(rule.host, rule.namespace, domain_suffix)
            self._by_ns.setdefault(rule.namespace, []).append((fqdn, rule))

    def select(
        self,
        host: str,
        *,
        client_namespace: str,
        service_namespace: str,
        client_labels: Mapping[str, str] | None = None,
    ) -> SelectedRule | None:
        """The DestinationRule a client in ``client_namespace`` uses for ``host`` (or None)."""
        labels = client_labels or {}

        def has_selector(rule: DestinationRule) -> bool:
            return rule.workload_selector is not None and not rule.workload_selector.is_empty

        def client_visible(rule: DestinationRule) -> bool:
            if not has_selector(rule):
                return True
            selector = rule.workload_selector
            return client_labels is not None and selector is not None and selector.matches(labels)

        own = [e for e in self._by_ns.get(client_namespace, ()) if client_visible(e[1])]
        steps: list[tuple[Scope, list[tuple[str, DestinationRule]]]] = [
            (Scope.CLIENT_NAMESPACE, [e for e in own if has_selector(e[1])]),
            (Scope.CLIENT_NAMESPACE, own),
        ]
        for scope, namespace in (
            (Scope.SERVICE_NAMESPACE, service_namespace),
            (Scope.ROOT_NAMESPACE, self.mesh.root_namespace),
        ):
            if namespace != client_namespace:
                exported = [
                    e
                    for e in self._by_ns.get(namespace, ())
                    if is_exported_to(e[1], client_namespace)
                ]
                steps.append((scope, exported))

        for scope, candidates in steps:
            if not candidates:
                continue
            best = _most_specific(host, sorted({fqdn for fqdn, _ in candidates}))
            if best is None:
                continue
            same_host = sorted(
                (r for fqdn, r in candidates if fqdn == best), key=lambda r: r.precedence_key
            )
            return _merge(same_host, scope, best)
        return None


def select_destination_rule(
    host: str,
    *,
    client_namespace: str,
    service_namespace: str,
    rules: Iterable[DestinationRule],
    mesh: MeshConfig,
    client_labels: Mapping[str, str] | None = None,
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
) -> SelectedRule | None:
    """One-shot :meth:`DestinationRuleIndex.select` (builds a throw-away index)."""
    return DestinationRuleIndex(rules, mesh, domain_suffix).select(
        host,
        client_namespace=client_namespace,
        service_namespace=service_namespace,
        client_labels=client_labels,
    )


def _merge(rules: list[DestinationRule], scope: Scope, host: str) -> SelectedRule:
    traffic_policy = next((r.traffic_policy for r in rules if r.traffic_policy is not None), None)
    subsets: list[Subset] = []
    for rule in rules:
        for subset in rule.subsets:
            if all(s.name != subset.name for s in subsets):
                subsets.append(subset)
    return SelectedRule(tuple(rules), scope, host, traffic_policy, tuple(subsets))


# ------------------------------------------------------------------------------ TLS


def build_sni(host: str, port: int, subset: str | None = None) -> str:
    """Istio's cluster SNI: ``outbound_.<port>_.<subset>_.<host>`` (empty subset allowed)."""
    return f"outbound_.{port}_.{subset or ''}_.{host}"


def build_service_sans(
    namespace: str, service_accounts: Iterable[str], mesh: MeshConfig
) -> tuple[str, ...]:
    """SPIFFE IDs a service may present: one per service account and trust domain (sorted)."""
    trust_domains = (mesh.trust_domain, *mesh.trust_domain_aliases)
    return tuple(
        sorted(
            {
                f"spiffe://{td}/ns/{namespace}/sa/{sa}"
                for sa in service_accounts
                for td in trust_domains
            }
        )
    )


def compose_service_accounts(service: Service, workloads: Iterable[Workload]) -> tuple[str, ...]:
    """Service accounts of the workloads a Service selects (sorted, unique)."""
    return tuple(
        sorted(
            {
                w.service_account
                for w in workloads
                if w.namespace == service.namespace and service.selects(w.labels)
            }
        )
    )


def _port_tls(policy: TrafficPolicy, port: int) -> tuple[bool, ClientTLSSettings | None]:
    for entry in policy.port_level_settings:
        if entry.port is not None and entry.port.number == port:
            return True, entry.tls
    return False, None


def compose_client_tls(
    selected: SelectedRule | None,
    host: str,
    port: int,
    *,
    mesh: MeshConfig,
    service_mode: ServiceMtls | NamespaceMtlsMode,
    service_sans: Sequence[str] = (),
    subset: str | None = None,
) -> ClientTls:
    """The client TLS for ``host:port`` (and ``subset``) under the selected rule.

    ``service_mode`` is the inferred service mode (:func:`infer_service_mtls_mode`); a bare
    namespace-level mode is run through that inference first (UNKNOWN becomes PERMISSIVE).
    """
    if isinstance(service_mode, NamespaceMtlsMode):
        service_mode = infer_service_mtls_mode(service_mode)
    notes: list[str] = []
    tls: ClientTLSSettings | None = None
    source = TlsSource.AUTO
    where = "no DestinationRule"
    rule = selected.rule if selected else None
    if selected is not None:
        key = selected.rule.meta.key
        where = f"DestinationRule {key} sets no tls"
        policy = selected.traffic_policy
        if policy is not None:
            if policy.tls is not None:
                tls, source, where = policy.tls, TlsSource.DESTINATION, f"DestinationRule {key}"
            found, port_tls = _port_tls(policy, port)
            if found:
                tls, source = port_tls, TlsSource.PORT
                where = f"portLevelSettings[{port}] of DestinationRule {key}" + (
                    "" if port_tls else " (replaces the destination-level policy; sets no tls)"
                )
        if subset is not None:
            chosen = selected.subset(subset)
            if chosen is None:
                notes.append(f"subset {subset!r} is not defined in DestinationRule {key}")
            elif chosen.traffic_policy is not None:
                if chosen.traffic_policy.tls is not None:
                    tls, source = chosen.traffic_policy.tls, TlsSource.SUBSET
                    where = f"subset {subset} of DestinationRule {key}"
                found, port_tls = _port_tls(chosen.traffic_policy, port)
                if found:
                    tls, source = port_tls, TlsSource.SUBSET_PORT
                    where = (
                        f"subset {subset} portLevelSettings[{port}] of DestinationRule {key}"
                        + ("" if port_tls else " (replaces; sets no tls)")
                    )

    def result(
        mode: TlsMode, auto: bool, reason: str, sni: str | None, sans: Sequence[str]
    ) -> ClientTls:
        return ClientTls(
            host=host,
            port=port,
            subset=subset,
            mode=mode,
            auto=auto,
            source=TlsSource.AUTO if auto else source,
            destination_rule=rule,
            scope=selected.scope if selected else None,
            settings=None if auto else tls,
            sni=sni,
            subject_alt_names=tuple(sans),
            reason=reason,
            notes=tuple(notes),
            destination_rules=selected.rules if selected else (),
        )

    computed_sni = build_sni(host, port, subset)
    if tls is None:
        if not mesh.enable_auto_mtls:
            return result(
                TlsMode.DISABLE, True, f"{where} and enableAutoMtls is off: plaintext", None, ()
            )
        if service_mode.mode in (NamespaceMtlsMode.DISABLE, NamespaceMtlsMode.UNKNOWN):
            return result(
                TlsMode.DISABLE,
                True,
                f"{where}; auto mTLS: {service_mode.reason}: plaintext",
                None,
                (),
            )
        return result(
            TlsMode.ISTIO_MUTUAL,
            True,
            f"{where}; auto mTLS: {service_mode.reason}: ISTIO_MUTUAL",
            computed_sni,
            service_sans,
        )
    if tls.mode is TlsMode.ISTIO_MUTUAL:
        sans = tls.subject_alt_names or tuple(service_sans)
        return result(
            TlsMode.ISTIO_MUTUAL, False, f"{where} sets ISTIO_MUTUAL", tls.sni or computed_sni, sans
        )
    return result(tls.mode, False, f"{where} sets {tls.mode.value}", tls.sni, tls.subject_alt_names)


def resolve_client_tls(
    host: str,
    port: int,
    *,
    client_namespace: str,
    service_namespace: str,
    rules: Iterable[DestinationRule] | DestinationRuleIndex,
    mesh: MeshConfig,
    namespace_mode: NamespaceMtlsMode,
    service_accounts: Iterable[str] = (),
    subset: str | None = None,
    client_labels: Mapping[str, str] | None = None,
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
    mesh_external: bool = False,
    endpoints: int | None = None,
) -> ClientTls:
    """Select the DestinationRule and compose the TLS a client uses for ``host:port``.

    ``namespace_mode`` is the service namespace's mode
    (:meth:`~meshsec.core.policy.peer_authn.PeerAuthenticationIndex.namespace_mode`), from which
    the service mode is inferred; ``service_accounts`` are the names of the service accounts the
    service's workloads run as; ``endpoints`` their number (None = unknown). Pass a
    :class:`DestinationRuleIndex` as ``rules`` when resolving many hosts of one snapshot.
    """
    index = (
        rules
        if isinstance(rules, DestinationRuleIndex)
        else DestinationRuleIndex(rules, mesh, domain_suffix)
    )
    selected = index.select(
        host,
        client_namespace=client_namespace,
        service_namespace=service_namespace,
        client_labels=client_labels,
    )
    sans = build_service_sans(service_namespace, service_accounts, mesh)
    policy = selected.traffic_policy if selected else None
    service_mode = infer_service_mtls_mode(
        namespace_mode,
        mesh_external=mesh_external,
        passthrough=policy is not None and policy.load_balancer_simple == "PASSTHROUGH",
        endpoints=endpoints,
    )
    return compose_client_tls(
        selected,
        host,
        port,
        mesh=mesh,
        service_mode=service_mode,
        service_sans=sans,
        subset=subset,
    )
