"""The mesh as ``describe`` and ``check`` see it: the workloads (from state.json, or from the
manifests alone when no mesh runs) plus the policy snapshot of the mesh's manifest directory, and
the client→server route checks both commands print.

Every decision comes from the policy engine (``meshsec.core.policy``: PeerAuthentication
composition, ``resolve_client_tls``, ``check_client_server``, ``evaluate``); this module only
joins it with the running workloads' identities.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from meshsec.cli.meshstate import (
    MeshState,
    MeshStateError,
    PortState,
    WorkloadState,
    find_state_file,
    load_mesh_state,
)
from meshsec.config.sources.files import load_snapshot
from meshsec.core.pki import PkiError, parse_certificates_pem
from meshsec.core.pki.bundle import certificate_fingerprint
from meshsec.core.policy.authz import AuthorizationIndex, Decision, evaluate
from meshsec.core.policy.destination import (
    ClientTls,
    DestinationRuleIndex,
    TlsSource,
    compose_service_accounts,
    resolve_client_tls,
)
from meshsec.core.policy.diagnostics import Level
from meshsec.core.policy.explain import check_client_server, endpoint_client_tls_mode
from meshsec.core.policy.model import (
    AuthorizationPolicy,
    MeshConfig,
    MtlsMode,
    Service,
    ServicePort,
    TlsMode,
)
from meshsec.core.policy.peer_authn import EffectiveMtls, PeerAuthenticationIndex
from meshsec.core.policy.request import AuthzRequest, HttpAttributes
from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.errors import MeshsecError


class MissingConfig(MeshsecError):
    """``--config-dir`` names nothing (exit 2)."""


class UnknownService(MeshsecError):
    """A service reference names no Service (or a port it does not have); exit 2."""


@dataclass
class MeshView:
    snapshot: PolicySnapshot
    workloads: tuple[WorkloadState, ...]
    config_dir: Path
    state: MeshState | None = None
    _roots: dict[str, frozenset[str] | None] = field(default_factory=dict, repr=False)

    @property
    def mesh(self) -> MeshConfig:
        return self.snapshot.mesh_config

    @cached_property
    def peer_authn(self) -> PeerAuthenticationIndex:
        return PeerAuthenticationIndex(self.snapshot.peer_authentications, self.mesh)

    @cached_property
    def destination_rules(self) -> DestinationRuleIndex:
        return DestinationRuleIndex(self.snapshot.destination_rules, self.mesh)

    @cached_property
    def authorization(self) -> AuthorizationIndex:
        return AuthorizationIndex(self.snapshot.authorization_policies, self.mesh)

    @property
    def cluster_names(self) -> list[str]:
        return [c.name for c in self.state.clusters] if self.state is not None else []

    @property
    def config_errors(self) -> int:
        return sum(1 for d in self.snapshot.diagnostics if d.level is Level.ERROR)

    def root_fingerprints(self, workload: WorkloadState) -> frozenset[str] | None:
        """SHA-256 fingerprints of the root bundle ``workload`` was given (None: unknown)."""
        if not workload.root_pem_path:
            return None
        path = workload.root_pem_path
        if path not in self._roots:
            try:
                certs = parse_certificates_pem(Path(path).read_bytes(), what="root bundle")
                self._roots[path] = frozenset(certificate_fingerprint(c) for c in certs)
            except (OSError, PkiError):
                self._roots[path] = None
        return self._roots[path]

    def trust_conflict(
        self, client: WorkloadState, server: WorkloadState, tls: ClientTls, server_mode: MtlsMode
    ) -> str | None:
        """Across clusters: mTLS needs a certificate on both sides and a root both trust."""
        if compose_endpoint_tls(tls, server_mode).mode is not TlsMode.ISTIO_MUTUAL:
            return None
        for side in (client, server):
            if side.refused_expected:
                return (
                    f"{side.ref} has no certificate ({side.cluster} has no remote secret): the "
                    "mTLS handshake fails"
                )
        a, b = self.root_fingerprints(client), self.root_fingerprints(server)
        if a is None or b is None or a & b:
            return None
        return (
            f"trust: {server.cluster or server.ref} trusts a different root than "
            f"{client.cluster or client.ref}: the mTLS handshake fails (neither side accepts the "
            "other's certificate)"
        )

    def effective_mtls(self, workload: WorkloadState) -> EffectiveMtls:
        return self.peer_authn.compose(workload.namespace, workload.labels)

    def authorization_policies(self, workload: WorkloadState) -> tuple[AuthorizationPolicy, ...]:
        return self.authorization.for_workload(workload.namespace, workload.labels)

    def endpoints(self, service: Service) -> tuple[WorkloadState, ...]:
        # a workload refused its certificate never gets ready, so it is in no Service's
        # endpoints (the mesh runtime leaves it out of every sidecar's registry too)
        return tuple(
            w
            for w in self.workloads
            if w.namespace == service.namespace
            and service.selects(w.labels)
            and not w.refused_expected
        )


def load_mesh_view(mesh: Path | None, config: Path | None, *, cwd: Path) -> MeshView:
    """state.json (when found) + the manifests (``--config-dir`` or the state's mesh_dir)."""
    state: MeshState | None = None
    try:
        state = load_mesh_state(find_state_file(mesh, cwd=cwd))
    except MeshStateError:
        if config is None or mesh is not None:
            raise
    if config is not None:
        if not config.exists():
            raise MissingConfig(f"--config-dir {config}: no such file or directory")
        config_dir = config
    else:
        assert state is not None  # find_state_file raised otherwise
        config_dir = state.mesh_dir
        if not config_dir.exists():
            raise MeshStateError(f"{state.path}: its mesh directory {config_dir} is gone")
    snapshot = load_snapshot([config_dir])
    workloads = state.workloads if state is not None else workloads_from_snapshot(snapshot)
    return MeshView(snapshot=snapshot, workloads=workloads, config_dir=config_dir, state=state)


def workloads_from_snapshot(snapshot: PolicySnapshot) -> tuple[WorkloadState, ...]:
    """Offline: the manifests' workloads with the identity the CA would issue them."""
    trust_domain = snapshot.mesh_config.trust_domain
    return tuple(
        WorkloadState(
            name=w.meta.name,
            namespace=w.namespace,
            service_account=w.service_account,
            spiffe_id=f"spiffe://{trust_domain}/ns/{w.namespace}/sa/{w.service_account}",
            cert_model="mounted" if w.mount_mtls_certs else "csr",
            ports=tuple(PortState(port=p.port, protocol=p.protocol) for p in w.port_specs)
            or tuple(PortState(port=p) for p in w.ports),
            labels=dict(w.labels),
        )
        for w in snapshot.workloads
    )


def resolve_service(ref: str, snapshot: PolicySnapshot) -> tuple[Service, int | None]:
    """``name``, ``name.namespace``, or the FQDN, optionally ``:port`` → (Service, port)."""
    text, port = ref, None
    if "@" in ref:
        raise UnknownService(
            f"{ref!r}: a Service spans clusters (its endpoints are the selected workloads of "
            "every cluster); name no @cluster in a Service"
        )
    head, colon, tail = ref.rpartition(":")
    if colon:
        if not tail.isascii() or not tail.isdigit() or not 1 <= int(tail) <= 65535:
            raise UnknownService(f"{ref!r}: port {tail!r} is not a number in 1-65535")
        text, port = head, int(tail)
    services = snapshot.services
    known = sorted(f"{s.name}.{s.namespace}" for s in services)
    matches = [
        s
        for s in services
        if text in (s.hostname, f"{s.name}.{s.namespace}", f"{s.name}.{s.namespace}.svc")
    ]
    if not matches:
        matches = [s for s in services if s.name == text]
    if len(matches) > 1:
        raise UnknownService(
            f"service {text!r} exists in several namespaces "
            f"({', '.join(sorted(s.namespace for s in matches))}); use {text}.<namespace>"
        )
    if not matches:
        raise UnknownService(
            f"no Service {text!r} in the mesh manifests; known: {', '.join(known) or '<none>'}"
        )
    service = matches[0]
    if port is not None and all(sp.port != port for sp in service.ports):
        ports = ", ".join(str(sp.port) for sp in service.ports) or "<none>"
        raise UnknownService(f"Service {service.hostname} has no port {port} (ports: {ports})")
    return service, port


def is_http_port(port: ServicePort, endpoint_ports: tuple[PortState, ...]) -> bool:
    """Istio protocol selection: appProtocol, then the port name prefix; else the runtime's."""
    for hint in (port.app_protocol, (port.name or "").split("-", 1)[0]):
        if hint:
            return hint.lower() in ("http", "http2", "grpc", "grpc-web", "h2c")
    target = port.effective_target_port
    return any(
        p.protocol.lower() == "http" and target in (p.port, p.app_port) for p in endpoint_ports
    )


@dataclass(frozen=True)
class EndpointCheck:
    """One client→endpoint connection: transport fit, secure naming, authorization."""

    workload: WorkloadState
    target_port: int | str
    client: ClientTls  # what this endpoint receives (auto mTLS: plaintext to DISABLE ports)
    server_mode: MtlsMode
    server_policy: str | None
    conflict: str | None
    principal: str | None
    decision: Decision | None

    @property
    def status(self) -> str:
        return "CONFLICT" if self.conflict else "OK"

    @property
    def authz(self) -> str:
        if self.decision is None:
            return "-"
        return self.decision.verdict.value


@dataclass(frozen=True)
class RouteCheck:
    service: Service
    port: ServicePort
    tls: ClientTls
    protocol: str
    endpoints: tuple[EndpointCheck, ...]

    @property
    def host_port(self) -> str:
        return f"{self.service.hostname}:{self.port.port}"

    @property
    def problem(self) -> bool:
        return not self.endpoints or any(
            e.conflict or (e.decision is not None and not e.decision.allowed)
            for e in self.endpoints
        )


AUTO_PLAINTEXT_NOTE = (
    "auto mTLS sends plaintext: the endpoint's PeerAuthentication disables mTLS on this port, so "
    "it is a plaintext endpoint (as Istio marks it)"
)


def compose_endpoint_tls(tls: ClientTls, server_mode: MtlsMode) -> ClientTls:
    """What reaches one endpoint: auto mTLS does not send TLS to an endpoint whose port is
    DISABLE (the sidecar's outbound does the same, see proxy/policy.py)."""
    if endpoint_client_tls_mode(tls, server_mode) is not tls.mode:
        return replace(
            tls, mode=TlsMode.DISABLE, subject_alt_names=(), sni=None, notes=(AUTO_PLAINTEXT_NOTE,)
        )
    return tls


def compose_conflict(tls: ClientTls, server_mode: MtlsMode, server_id: str) -> str | None:
    """Why this client TLS cannot talk to this server port (None: it can)."""
    tls = compose_endpoint_tls(tls, server_mode)
    conflict = check_client_server(tls, server_mode)
    if conflict:
        return conflict
    if tls.mode is TlsMode.SIMPLE and server_mode is MtlsMode.STRICT:
        return (
            "client sends TLS without a client certificate (SIMPLE) but the port is STRICT: "
            "the server requires mTLS with a mesh identity"
        )
    if (
        tls.mode is TlsMode.ISTIO_MUTUAL
        and tls.subject_alt_names
        and server_id
        and server_id not in tls.subject_alt_names
    ):
        return (
            f"secure naming: the client accepts only {', '.join(tls.subject_alt_names)} but the "
            f"endpoint presents {server_id}"
        )
    return None


OUTSIDE = WorkloadState(name="outside", namespace="", service_account="", spiffe_id="")
"""A client without a sidecar (``from: outside`` in expectations): plaintext, no identity."""


def compose_outside_tls(tls: ClientTls) -> ClientTls:
    """No sidecar: no DestinationRule or auto mTLS applies; the connection is plaintext."""
    return replace(
        tls,
        mode=TlsMode.DISABLE,
        auto=False,
        source=TlsSource.AUTO,
        destination_rule=None,
        scope=None,
        settings=None,
        sni=None,
        subject_alt_names=(),
        reason="no sidecar: plaintext (no DestinationRule or auto mTLS applies)",
        notes=(),
        destination_rules=(),
    )


def compose_principal(tls: ClientTls, server_mode: MtlsMode, client: WorkloadState) -> str | None:
    """The source principal the server sees: the client's SPIFFE ID only over ISTIO_MUTUAL."""
    tls = compose_endpoint_tls(tls, server_mode)
    if tls.mode is TlsMode.ISTIO_MUTUAL and server_mode is not MtlsMode.DISABLE:
        return client.spiffe_id or None
    return None


def build_route_checks(
    view: MeshView,
    client: WorkloadState,
    service: Service,
    *,
    port: int | None = None,
    method: str | None = None,
    path: str | None = None,
) -> list[RouteCheck]:
    """For each port of ``service`` (or just ``port``): what ``client`` sends and what happens."""
    snapshot, mesh = view.snapshot, view.mesh
    endpoints = view.endpoints(service)
    accounts = compose_service_accounts(service, snapshot.workloads) or tuple(
        sorted({w.service_account for w in endpoints})
    )
    namespace_mode = view.peer_authn.namespace_mode(service.namespace).mode
    checks: list[RouteCheck] = []
    for sp in service.ports:
        if port is not None and sp.port != port:
            continue
        tls = resolve_client_tls(
            service.hostname,
            sp.port,
            client_namespace=client.namespace,
            service_namespace=service.namespace,
            rules=view.destination_rules,
            mesh=mesh,
            namespace_mode=namespace_mode,
            service_accounts=accounts,
            client_labels=client.labels,
            endpoints=len(endpoints),
        )
        if client == OUTSIDE:
            tls = compose_outside_tls(tls)
        http_port = (
            method is not None
            or path is not None
            or is_http_port(sp, tuple(p for w in endpoints for p in w.ports))
        )
        http = (
            HttpAttributes.build(method or "GET", path or "/", service.hostname)
            if http_port
            else None
        )
        results: list[EndpointCheck] = []
        for endpoint in endpoints:
            effective = view.effective_mtls(endpoint)
            target = sp.effective_target_port
            if isinstance(target, int):
                decision_port = effective.explain_port(target)
                server_mode, server_policy = decision_port.mode, decision_port.policy
            else:
                server_mode, server_policy = effective.mode, effective.deciding_policy
            conflict = compose_conflict(tls, server_mode, endpoint.spiffe_id)
            if conflict is None and client != OUTSIDE:
                conflict = view.trust_conflict(client, endpoint, tls, server_mode)
            principal = compose_principal(tls, server_mode, client)
            decision = None
            if conflict is None:
                request = AuthzRequest(
                    destination_port=target if isinstance(target, int) else sp.port,
                    source_principal=principal,
                    http=http,
                )
                decision = evaluate(request, view.authorization_policies(endpoint), mesh)
            results.append(
                EndpointCheck(
                    workload=endpoint,
                    target_port=target,
                    client=compose_endpoint_tls(tls, server_mode),
                    server_mode=server_mode,
                    server_policy=server_policy.meta.key if server_policy else None,
                    conflict=conflict,
                    principal=principal,
                    decision=decision,
                )
            )
        checks.append(RouteCheck(service, sp, tls, "HTTP" if http else "TCP", tuple(results)))
    return checks
