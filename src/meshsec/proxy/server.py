"""Assembly of the sidecar from :class:`~meshsec.config.proxy.ProxySettings`.

Certificates come from ``--cert-dir`` (watched) or the agent's SDS socket. With
``--config-dir`` (and ``--workload``) a :class:`~meshsec.proxy.policy_watch.PolicyController`
supplies the port modes, AuthorizationPolicy, registry and DestinationRule client TLS, all live;
without it the registry and client TLS come from static ``--endpoint`` entries
(:class:`StaticRegistry`) and authorization is allow-all (no AuthorizationPolicy). Each of these
is a small Protocol owned by the listeners, so either source plugs in without touching them.
``--concurrency N`` forks N such servers (:mod:`meshsec.proxy.workers`). SIGTERM/SIGINT:
readiness goes false, listeners stop accepting, open connections get ``drain_duration`` to
finish, the rest are closed; exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from meshsec.config.load import parse_host_port
from meshsec.config.proxy import EndpointSpec, ProxySettings
from meshsec.core.identity import TrustDomainSet
from meshsec.core.pki import TrustBundle, X509Svid
from meshsec.proxy.admin import AdminServer, build_secrets_dump
from meshsec.proxy.authz import AllowAll, Authorizer
from meshsec.proxy.certdir import load_cert_dir, stamp_cert_dir, watch_cert_dir
from meshsec.proxy.errors import TlsMaterialError
from meshsec.proxy.inbound import InboundListener, InboundOptions, InboundPort, PortMode
from meshsec.proxy.listener import set_worker_ready
from meshsec.proxy.metrics import (
    ProxyMetrics,
)
from meshsec.proxy.outbound import HttpProxyListener, TcpOutboundListener
from meshsec.proxy.policy_watch import (
    PolicyController,
    build_policy_controller,
    effective_trust_domain,
)
from meshsec.proxy.pump import PumpLimits
from meshsec.proxy.registry import PortBinding
from meshsec.proxy.sds import SdsSecretSource
from meshsec.proxy.tls import TlsContexts, TlsParams
from meshsec.proxy.upstream import (
    ClientTlsMode,
    ClientTlsPolicy,
    ClientTlsSettings,
    Endpoint,
    OutboundOptions,
    ServiceResolver,
    UpstreamConnector,
)
from meshsec.runtime.clock import Clock, SystemClock

log = logging.getLogger("meshsec.proxy")

TICKET_KEYS_RECHECK = 60.0  # s: the longest wait before the ticket-key epoch is checked again


@dataclass
class StaticRegistry:
    """Resolver + client TLS policy from ``--endpoint`` specs (SANs ⇒ ISTIO_MUTUAL)."""

    specs: Sequence[EndpointSpec] = ()
    _by_service: dict[tuple[str, int], list[Endpoint]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for spec in self.specs:
            self._by_service.setdefault((spec.host, spec.port), []).append(
                Endpoint(spec.address, spec.address_port, spec.sans, mesh=bool(spec.sans))
            )

    def resolve(self, host: str, port: int) -> Sequence[Endpoint]:
        return self._by_service.get((host, port), ())

    def client_tls(self, host: str, port: int) -> ClientTlsSettings:
        endpoints = self._by_service.get((host, port), ())
        if any(e.service_accounts for e in endpoints):
            return ClientTlsSettings(ClientTlsMode.ISTIO_MUTUAL, auto=True)
        return ClientTlsSettings(ClientTlsMode.DISABLE)


class ProxyServer:
    """The sidecar: static (``--inbound PORT:APPPORT:MODE``, ``--endpoint``, allow-all) or
    policy-aware (a :class:`PolicyController` over an Istio config directory: modes,
    AuthorizationPolicy, registry and DestinationRule client TLS, all live)."""

    def __init__(
        self,
        settings: ProxySettings,
        *,
        clock: Clock | None = None,
        authorizer: Authorizer | None = None,
        resolver: ServiceResolver | None = None,
        tls_policy: ClientTlsPolicy | None = None,
        metrics: ProxyMetrics | None = None,
        policy: PolicyController | None = None,
        admin: bool = True,
        reuse_port: bool = False,
        admin_registry: CollectorRegistry | None = None,
        ticket_secret: bytes | None = None,
    ) -> None:
        """``admin_registry``: what ``/metrics`` reports (default: ``metrics``' own registry;
        ``--concurrency``: the sum over every worker). ``ticket_secret``: the run's secret
        for session-ticket keys, the same in every worker (:mod:`meshsec.proxy.tls`)."""
        self.settings = settings
        self.clock = clock or SystemClock()
        if policy is None and settings.config_dir is not None:
            policy = build_policy_controller(settings, self.clock)
        self.policy = policy
        trust_domain: tuple[str, ...] = (settings.trust_domain, *settings.trust_domain_aliases)
        if policy is not None:
            trust_domain = effective_trust_domain(policy.view.snapshot, settings)
            authorizer = resolver = tls_policy = policy.live
        self.authorizer = authorizer or AllowAll()
        registry = StaticRegistry(settings.endpoint_specs)
        self.resolver: ServiceResolver = resolver or registry
        self.tls_policy: ClientTlsPolicy = tls_policy or registry
        self.metrics = metrics or ProxyMetrics()
        self.admin_registry = admin_registry or self.metrics.registry
        self.tls = TlsContexts(
            TlsParams(min_version=settings.min_tls_version), ticket_secret=ticket_secret
        )
        mesh_domains = TrustDomainSet.build(trust_domain[0], trust_domain[1:])
        self.trust_domains = None if settings.skip_validate_trust_domain else mesh_domains
        limits = PumpLimits(
            high_water=settings.buffer_bytes,
            low_water=settings.buffer_bytes // 4,
            max_pending=settings.buffer_bytes,
            idle_timeout=settings.idle_timeout.total_seconds(),
        )
        self.inbound_options = InboundOptions(
            trust_domains=self.trust_domains,
            handshake_timeout=settings.handshake_timeout.total_seconds(),
            sniff_timeout=settings.sniff_timeout.total_seconds(),
            connect_timeout=settings.connect_timeout.total_seconds(),
            limits=limits,
            reuse_port=reuse_port,  # --concurrency: every worker binds the same ports
        )
        self.outbound_options = OutboundOptions(
            trust_domains=mesh_domains,
            handshake_timeout=settings.handshake_timeout.total_seconds(),
            connect_timeout=settings.connect_timeout.total_seconds(),
            limits=limits,
            reuse_port=reuse_port,  # --concurrency: every worker binds the same ports
        )
        self.serve_admin = admin
        self.inbound: list[InboundListener] = []
        self._bindings: list[PortBinding | None] = []
        self.outbound: list[TcpOutboundListener | HttpProxyListener] = []
        self.admin: AdminServer | None = None
        self.sds: SdsSecretSource | None = None
        self.certificates_applied = asyncio.Event()
        self.cert_error = ""
        self.listening = False
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    # certificates -----------------------------------------------------------------------------
    def apply(self, svid: X509Svid, bundle: TrustBundle) -> None:
        """New SVID/bundle (cert dir, SDS, in-process agent): next handshakes use it."""
        self.tls.update(svid, bundle, now=self.clock.now())
        self.cert_error = ""
        self.certificates_applied.set()
        self._serving_changed()
        if self.policy is not None and str(svid.spiffe_id) != self.policy.workload.spiffe_id:
            # Envoy does not check this either, but it is almost always a wrong --workload or
            # certificate source: peers' secure naming will refuse this sidecar
            log.warning(
                "certificate identity %s is not workload %s's %s",
                svid.spiffe_id,
                self.policy.workload.key,
                self.policy.workload.spiffe_id,
            )

    def _serving_changed(self) -> None:
        """Tell the other ``--concurrency`` workers whether this one serves now (certificates
        loaded, configuration complete): they defer to it only while it does."""
        if self.listening and not self.stopping:
            set_worker_ready(self.ready())

    async def _rotate_ticket_keys(self) -> None:
        """The shared session-ticket keys change at each epoch (:mod:`meshsec.proxy.tls`).
        The wait is at most :data:`TICKET_KEYS_RECHECK`: the epoch follows the wall clock,
        which may be stepped or stand still (a paused VM) while the loop's clock runs on."""
        while True:
            wait = self.tls.seconds_to_next_ticket_keys(self.clock.now())
            await self.clock.sleep(min(wait, TICKET_KEYS_RECHECK))
            try:
                if self.tls.rotate_ticket_keys(self.clock.now()):
                    log.debug("session-ticket keys changed")
            except Exception:  # keys that could not change must not stop the data plane
                log.exception("session-ticket key change failed")

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        if s.cert_dir is not None:
            stamp = stamp_cert_dir(s.cert_dir)
            try:
                self.apply(*load_cert_dir(s.cert_dir))
            except TlsMaterialError as exc:
                # the agent may not have written them yet: not ready until it has (the watcher
                # applies the first consistent set), as Envoy waits for its SDS secrets
                self.cert_error = f"no usable certificates yet: {exc}"
                log.warning("%s; waiting for %s", self.cert_error, s.cert_dir)
            self._tasks.append(
                asyncio.ensure_future(
                    watch_cert_dir(
                        s.cert_dir,
                        self.apply,
                        clock=self.clock,
                        interval=s.cert_watch_interval.total_seconds(),
                        initial=stamp,
                    )
                )
            )
        elif s.sds_socket is not None:
            node = self._node_id()
            source = (
                SdsSecretSource(s.sds_socket, self.apply, clock=self.clock, node_id=node)
                if node
                else SdsSecretSource(s.sds_socket, self.apply, clock=self.clock)
            )
            self.sds = source
            self._tasks.append(asyncio.ensure_future(source.run()))
        elif s.inbound or s.outbound or s.http_proxy_port is not None:
            needs_tls = any(spec.mode != "DISABLE" for spec in s.inbound_specs) or bool(s.endpoints)
            if needs_tls and not self.tls.ready:
                raise TlsMaterialError("certificates", "no --cert-dir given and none applied")
        for port, binding in self._inbound_ports():
            listener = InboundListener(
                port,
                self.tls,
                options=self.inbound_options,
                authorizer=self.authorizer,
                metrics=self.metrics,
            )
            await listener.start()
            self.inbound.append(listener)
            self._bindings.append(binding)
            if self.policy is not None and binding is not None:
                self.policy.attach(binding, listener)
        connector = UpstreamConnector(
            self.resolver, self.tls_policy, self.tls, self.outbound_options
        )
        for out in s.outbound_specs:
            tcp = TcpOutboundListener(
                s.outbound_host, out.listen_port, out.host, out.port, connector, self.metrics
            )
            await tcp.start()
            self.outbound.append(tcp)
        if s.http_proxy_port is not None:
            proxy = HttpProxyListener(s.outbound_host, s.http_proxy_port, connector, self.metrics)
            await proxy.start()
            self.outbound.append(proxy)
        if s.admin_addr and self.serve_admin:
            admin_host, admin_port = parse_host_port(s.admin_addr, what="--admin-addr")
            if s.admin_addr.startswith(":"):  # ":PORT": loopback, as Istio binds Envoy's admin
                admin_host = "127.0.0.1"
            self.admin = AdminServer(
                admin_host,
                admin_port,
                ready=self.ready,
                config_dump=self.config_dump,
                registry=self.admin_registry,
                not_ready_reason=self.not_ready_reason,
            )
            await self.admin.start()
        if self.policy is not None:
            self.policy.on_applied = self._serving_changed
            self._tasks.append(asyncio.ensure_future(self.policy.watch()))
        if self.tls.ticket_secret is not None:
            self._tasks.append(asyncio.ensure_future(self._rotate_ticket_keys()))
        self.listening = True
        self._serving_changed()
        log.info(
            "proxy %s: inbound %s; %d outbound listener(s)%s%s",
            "ready" if self.ready() else f"started (not ready: {self.not_ready_reason()})",
            ", ".join(
                f"{x.port.listen_port or x.bound_port}->{x.port.app_port} {x.mode.value}"
                for x in self.inbound
            )
            or "(none)",
            len(self.outbound),
            f"; policy from {', '.join(str(p) for p in self.policy.paths)} "
            f"for {self.policy.workload.key}, version {self.policy.view.version}"
            if self.policy
            else "",
            f"; admin on {s.admin_addr}" if self.admin else "",
        )

    def _node_id(self) -> str:
        """The SDS node id Istio's sidecars send: ``sidecar~IP~NAME.NS~NS.svc.cluster.local``."""
        if self.policy is None:
            return ""
        w = self.policy.workload
        return f"sidecar~{w.address}~{w.name}.{w.namespace}~{w.namespace}.svc.cluster.local"

    def _inbound_ports(self) -> list[tuple[InboundPort, PortBinding | None]]:
        """Listeners in front of the application: the policy's workload ports (mode from
        PeerAuthentication) or the static ``--inbound`` specs."""
        s = self.settings
        if self.policy is not None:
            return [
                (
                    InboundPort(
                        b.inbound,
                        b.app_port,
                        self.policy.port_mode(b.port),
                        http=b.protocol == "http",
                        app_host=s.app_host,
                        listen_host=s.inbound_host,
                    ),
                    b,
                )
                for b in self.policy.workload.ports
            ]
        return [
            (
                InboundPort(
                    spec.port,
                    spec.app_port,
                    PortMode(spec.mode or "PERMISSIVE"),
                    http=spec.http,
                    app_host=s.app_host,
                    listen_host=s.inbound_host,
                ),
                None,
            )
            for spec in s.inbound_specs
        ]

    def ready(self) -> bool:
        return not self.not_ready_reason()

    def not_ready_reason(self) -> str:
        """Why ``/ready`` answers 503 ('' when ready)."""
        if self.stopping:
            return "draining"
        if not self.listening:
            return "starting"
        if self.policy is not None and self.policy.blocked:
            return f"configuration not loaded: {self.policy.blocked}"
        if not self.tls.ready and self._needs_tls():
            return self.cert_error or "no certificate yet"
        return ""

    def _needs_tls(self) -> bool:
        return any(listener.mode is not PortMode.DISABLE for listener in self.inbound) or bool(
            self.outbound
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, let open connections finish for ``drain_duration``, close the rest."""
        self.stopping = True
        set_worker_ready(False)  # the other workers stop deferring to this one
        grace = self.settings.drain_duration.total_seconds()
        listeners: list[Any] = [*self.inbound, *self.outbound]
        log.info("draining %d listener(s) for up to %.1fs", len(listeners), grace)
        aborted = await asyncio.gather(*(listener.drain(grace) for listener in listeners))
        if sum(aborted):
            log.info("closed %d connection(s) still open after the drain period", sum(aborted))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.admin is not None:
            await self.admin.stop()

    # introspection ----------------------------------------------------------------------------
    def config_dump(self) -> dict[str, Any]:
        """Listeners, secrets (serials, expiry), policy version — one shape for ``meshsec up``'s
        sidecars and ``meshsec proxy run`` (MESH_STATE.md)."""
        svid = self.tls.current.svid if self.tls.ready else None
        policy = self.policy.describe() if self.policy is not None else {}
        return {
            "ready": self.ready(),
            "not_ready_reason": self.not_ready_reason() or None,
            "workload": policy.get("workload"),
            "spiffe_id": str(svid.spiffe_id) if svid else None,
            "certificate": {"serial": svid.serial_hex, "not_after": svid.not_after.isoformat()}
            if svid
            else None,
            "policy_version": policy.get("policy_version"),
            "rejected_edit": policy.get("rejected_edit", []),
            "listeners": [x.describe() for x in (*self.inbound, *self.outbound)],
            "ports": [
                {
                    "port": binding.port if binding else x.port.listen_port,
                    "mode": x.mode.value,
                    "protocol": "http" if x.port.http else "tcp",
                }
                for x, binding in zip(self.inbound, self._bindings, strict=True)
            ],
            "secrets": build_secrets_dump(self.tls),
            "policy": policy.get("policy")
            or {
                "authorizer": type(self.authorizer).__name__,
                "version": _text_or_none(getattr(self.authorizer, "version", None)),
            },
            "trust_domains": [td.name for td in self.trust_domains.all]
            if self.trust_domains
            else None,
        }


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
