"""What one sidecar needs from the policy engine, for one policy snapshot.

:class:`PolicyView` is built once per accepted snapshot (indexes over PeerAuthentication,
DestinationRule and AuthorizationPolicy) for one workload; the sidecar swaps views atomically
when the config directory changes. :class:`LivePolicy` is the object the proxy's listeners hold:
it implements the proxy's ``Authorizer``, ``ServiceResolver`` and ``ClientTlsPolicy`` protocols
by delegating to the current view, so an edit applies to the next connection or request.

Authorization sees the workload port as declared (what ``to.operation.ports`` names), not the
port the application happens to listen on; and it fails closed while :attr:`LivePolicy.blocked`
(the configuration could not be read completely: a missing AuthorizationPolicy must not mean
"allow all").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meshsec.core.policy.authz import AuthorizationIndex, evaluate
from meshsec.core.policy.destination import DestinationRuleIndex, resolve_client_tls
from meshsec.core.policy.model import (
    AuthorizationAction,
    AuthorizationPolicy,
    MtlsMode,
    TlsMode,
)
from meshsec.core.policy.peer_authn import EffectiveMtls, PeerAuthenticationIndex
from meshsec.core.policy.request import AuthzRequest, HttpAttributes
from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.proxy.authz import Decision, HttpRequestInfo, PeerInfo
from meshsec.proxy.inbound import PortMode
from meshsec.proxy.registry import Registry, WorkloadEntry, resolve_service
from meshsec.proxy.upstream import ClientTlsMode, ClientTlsSettings, Endpoint

log = logging.getLogger(__name__)

_PORT_MODES = {
    MtlsMode.STRICT: PortMode.STRICT,
    MtlsMode.PERMISSIVE: PortMode.PERMISSIVE,
    MtlsMode.DISABLE: PortMode.DISABLE,
}


def port_mode(effective: EffectiveMtls, port: int) -> PortMode:
    """The inbound listener mode of a workload port (UNSET never reaches here)."""
    return _PORT_MODES.get(effective.mode_for_port(port), PortMode.PERMISSIVE)


@dataclass
class PolicyView:
    """Policy decisions for ``workload`` under one snapshot (immutable once built)."""

    snapshot: PolicySnapshot
    registry: Registry
    workload: WorkloadEntry
    _cache: dict[tuple[str, int], tuple[list[Endpoint], ClientTlsSettings]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        mesh = self.snapshot.mesh_config
        self.mesh = mesh
        self.peer_authn = PeerAuthenticationIndex(self.snapshot.peer_authentications, mesh)
        self.destination_rules = DestinationRuleIndex(self.snapshot.destination_rules, mesh)
        authz = AuthorizationIndex(self.snapshot.authorization_policies, mesh)
        self.authz_policies = authz.for_workload(self.workload.namespace, self.workload.labels)
        self.connection_scoped = all(_connection_scoped(p) for p in self.authz_policies)
        self.mtls = self.peer_authn.compose(self.workload.namespace, self.workload.labels)
        self._effective: dict[str, EffectiveMtls] = {}

    @property
    def version(self) -> str:
        return self.snapshot.version

    def port_mode(self, port: int) -> PortMode:
        return port_mode(self.mtls, port)

    def effective_mtls(self, entry: WorkloadEntry) -> EffectiveMtls:
        found = self._effective.get(entry.key)
        if found is None:
            found = self.peer_authn.compose(entry.namespace, entry.labels)
            self._effective[entry.key] = found
        return found

    # inbound ---------------------------------------------------------------------------------
    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        http = None
        if request is not None:
            path = request.path
            if path.startswith(("http://", "https://")):  # absolute-form: keep the path
                rest = path.split("://", 1)[1]
                path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
            http = HttpAttributes.build(
                request.method, path, request.host or None, dict(request.headers)
            )
        decision = evaluate(
            AuthzRequest(
                destination_port=port,
                source_principal=peer.principal or None,
                source_ip=peer.address,
                http=http,
                destination_ip=self.workload.address,
            ),
            self.authz_policies,
            self.mesh,
        )
        return Decision(decision.allowed, decision.reason)

    # outbound --------------------------------------------------------------------------------
    def route(self, host: str, port: int) -> tuple[list[Endpoint], ClientTlsSettings]:
        key = (host.lower(), port)
        found = self._cache.get(key)
        if found is None:
            found = self._route(host, port)
            self._cache[key] = found
        return found

    def _route(self, host: str, port: int) -> tuple[list[Endpoint], ClientTlsSettings]:
        target = resolve_service(
            self.snapshot, self.registry, host, port, client_namespace=self.workload.namespace
        )
        if target is None:
            return [], ClientTlsSettings(ClientTlsMode.DISABLE)
        endpoints: list[Endpoint] = []
        accounts: set[str] = set()
        for entry, binding in target.endpoints:
            accounts.add(entry.service_account)
            mode = self.effective_mtls(entry).mode_for_port(binding.port)
            endpoints.append(
                Endpoint(
                    entry.address,
                    binding.inbound,
                    (entry.spiffe_id,),
                    # Istio marks endpoints whose PeerAuthentication disables mTLS on that
                    # port as plaintext endpoints, so auto mTLS does not send TLS to them.
                    mesh=mode is not MtlsMode.DISABLE,
                )
            )
        service = target.service
        tls = resolve_client_tls(
            service.hostname,
            port,
            client_namespace=self.workload.namespace,
            service_namespace=service.namespace,
            rules=self.destination_rules,
            mesh=self.mesh,
            namespace_mode=self.peer_authn.namespace_mode(service.namespace).mode,
            service_accounts=sorted(accounts),
            client_labels=self.workload.labels,
            endpoints=len(endpoints),
        )
        settings = tls.settings
        return endpoints, ClientTlsSettings(
            ClientTlsMode(tls.mode.value),
            sni=tls.sni,
            subject_alt_names=tls.subject_alt_names,
            client_certificate=_path(settings.client_certificate if settings else None),
            private_key=_path(settings.private_key if settings else None),
            ca_certificates=_path(settings.ca_certificates if settings else None),
            insecure_skip_verify=bool(settings and settings.insecure_skip_verify),
            auto=tls.auto and tls.mode is TlsMode.ISTIO_MUTUAL,
        )


def _connection_scoped(policy: AuthorizationPolicy) -> bool:
    """Does ``policy`` decide the same for every HTTP request of one connection? True when no
    rule looks at request attributes: operations (hosts, methods, paths, ports), ``when``
    conditions, request principals (JWT) or remote IPs (X-Forwarded-For)."""
    if policy.action is AuthorizationAction.CUSTOM:
        return False
    for rule in policy.rules:
        if rule.operations or rule.when:
            return False
        for source in rule.sources:
            if (
                source.request_principals
                or source.not_request_principals
                or source.remote_ip_blocks
                or source.not_remote_ip_blocks
            ):
                return False
    return True


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


class LivePolicy:
    """The proxy-facing policy: Authorizer + ServiceResolver + ClientTlsPolicy over a view.

    The inbound listeners report the application's port; the workload's bindings map it back to
    the port as declared (what policies name). While :attr:`blocked` is non-empty every
    connection and request is denied with that reason. It is also a connection-scoped
    authorizer for HTTP ports: when no applicable policy looks at request attributes, one
    decision per connection and :attr:`version` serves every request on it.
    """

    def __init__(self, view: PolicyView) -> None:
        self.view = view
        self._blocked = ""
        self._declared = self._declared_ports(view.workload)
        self._version: object = object()

    @staticmethod
    def _declared_ports(workload: WorkloadEntry) -> dict[int, int]:
        return {b.app_port: b.port for b in workload.ports}

    def swap(self, view: PolicyView) -> None:
        self._declared = self._declared_ports(view.workload)
        self.view = view
        self._version = object()

    @property
    def blocked(self) -> str:
        return self._blocked

    @blocked.setter
    def blocked(self, reason: str) -> None:
        if reason != self._blocked:
            self._blocked = reason
            self._version = object()

    @property
    def version(self) -> object:
        """Changes whenever a decision may change (new view, blocked state)."""
        return self._version

    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        if self._blocked:
            return Decision(False, f"configuration not loaded: {self._blocked}")
        return self.view.authorize(peer, self._declared.get(port, port), request)

    def connection_decision(self, peer: PeerInfo, port: int) -> Decision | None:
        if self._blocked:
            return Decision(False, f"configuration not loaded: {self._blocked}")
        if not self.view.connection_scoped:
            return None
        return self.view.authorize(peer, self._declared.get(port, port), None)

    def resolve(self, host: str, port: int) -> Sequence[Endpoint]:
        return self.view.route(host, port)[0]

    def client_tls(self, host: str, port: int) -> ClientTlsSettings:
        return self.view.route(host, port)[1]


__all__ = ["LivePolicy", "PolicyView", "port_mode"]
