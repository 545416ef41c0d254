"""The immutable policy snapshot a config source produces, with its per-namespace indexes.

Consumers (the policy engine's indexes, the sidecar, the operator CLI) swap whole snapshots
atomically; nothing in a snapshot changes after it is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.frozen_map import FrozenMap as FrozenMap  # re-exported
from meshsec.core.policy.model import (
    AuthorizationPolicy,
    DestinationRule,
    MeshConfig,
    Namespace,
    PeerAuthentication,
    Service,
    ServiceAccount,
    Workload,
    _ResourceBase,
)


@dataclass(frozen=True)
class PolicySnapshot:
    """Everything one config source read at one moment, immutable.

    Tuples are in input order. ``diagnostics`` are the parser's (analyzers add their own when
    run). ``version`` identifies the content (a digest for files) so consumers can skip
    unchanged snapshots.
    """

    version: str = ""
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    service_accounts: tuple[ServiceAccount, ...] = ()
    services: tuple[Service, ...] = ()
    workloads: tuple[Workload, ...] = ()
    mesh_config: MeshConfig = field(default_factory=MeshConfig)
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def root_namespace(self) -> str:
        return self.mesh_config.root_namespace

    @property
    def has_errors(self) -> bool:
        return any(d.level is Level.ERROR for d in self.diagnostics)

    # Simple indexes by namespace (computed once; the snapshot never changes).
    @cached_property
    def _pa_by_ns(self) -> Mapping[str, tuple[PeerAuthentication, ...]]:
        return _group(self.peer_authentications)

    @cached_property
    def _dr_by_ns(self) -> Mapping[str, tuple[DestinationRule, ...]]:
        return _group(self.destination_rules)

    @cached_property
    def _ap_by_ns(self) -> Mapping[str, tuple[AuthorizationPolicy, ...]]:
        return _group(self.authorization_policies)

    @cached_property
    def _svc_by_ns(self) -> Mapping[str, tuple[Service, ...]]:
        return _group(self.services)

    @cached_property
    def _wl_by_ns(self) -> Mapping[str, tuple[Workload, ...]]:
        return _group(self.workloads)

    @cached_property
    def _sa_by_ns(self) -> Mapping[str, tuple[ServiceAccount, ...]]:
        return _group(self.service_accounts)

    def peer_authentications_in(self, namespace: str) -> tuple[PeerAuthentication, ...]:
        return self._pa_by_ns.get(namespace, ())

    def destination_rules_in(self, namespace: str) -> tuple[DestinationRule, ...]:
        return self._dr_by_ns.get(namespace, ())

    def authorization_policies_in(self, namespace: str) -> tuple[AuthorizationPolicy, ...]:
        return self._ap_by_ns.get(namespace, ())

    def services_in(self, namespace: str) -> tuple[Service, ...]:
        return self._svc_by_ns.get(namespace, ())

    def workloads_in(self, namespace: str) -> tuple[Workload, ...]:
        return self._wl_by_ns.get(namespace, ())

    def service_accounts_in(self, namespace: str) -> tuple[ServiceAccount, ...]:
        return self._sa_by_ns.get(namespace, ())

    @cached_property
    def namespace_names(self) -> frozenset[str]:
        """Names of the Namespace objects given (not every namespace referenced)."""
        return frozenset(n.meta.name for n in self.namespaces)

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.meta.name == name), None)

    @cached_property
    def services_by_hostname(self) -> Mapping[str, tuple[Service, ...]]:
        """Services by ``name.namespace.svc.cluster.local``."""
        grouped: dict[str, list[Service]] = {}
        for service in self.services:
            grouped.setdefault(service.hostname, []).append(service)
        return FrozenMap((host, tuple(v)) for host, v in grouped.items())

    def services_for_host(self, host: str) -> tuple[Service, ...]:
        """Services a DestinationRule host (an FQDN, ``*`` or ``*.suffix``) covers."""
        host = host.lower()
        if host.startswith("*"):
            suffix = host[1:]
            return tuple(s for s in self.services if s.hostname.endswith(suffix))
        return self.services_by_hostname.get(host, ())

    def service(self, namespace: str, name: str) -> Service | None:
        return next((s for s in self.services_in(namespace) if s.meta.name == name), None)


R = TypeVar("R", bound=_ResourceBase)


def _group(items: Iterable[R]) -> Mapping[str, tuple[R, ...]]:
    grouped: dict[str, list[R]] = {}
    for item in items:
        grouped.setdefault(item.meta.namespace, []).append(item)
    return FrozenMap((ns, tuple(v)) for ns, v in grouped.items())
