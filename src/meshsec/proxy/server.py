"""Assembly of the sidecar from :class:`~meshsec.config.proxy.ProxySettings`.

Certificates come from ``--cert-dir`` (watched) or the agent's SDS socket; the registry and
client TLS policy, until the policy engine and config sources plug in, from static ``--endpoint``
entries
(:class:`StaticRegistry`); authorization defaults to allow-all (no AuthorizationPolicy). Each of
these is a small Protocol, so the real implementations replace them without touching this file's
callers. SIGTERM/SIGINT: readiness goes false, listeners stop accepting, open connections get
``drain_duration`` to finish, the rest are closed; exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshsec.config.proxy import EndpointSpec, ProxySettings
from meshsec.core.identity import TrustDomainSet
from meshsec.core.pki import TrustBundle, X509Svid
from meshsec.proxy.admin import AdminServer
from meshsec.proxy.authz import AllowAll, Authorizer
from meshsec.proxy.certdir import load_cert_dir, stamp_cert_dir, watch_cert_dir
from meshsec.proxy.errors import TlsMaterialError
from meshsec.proxy.inbound import InboundListener, InboundOptions, InboundPort, PortMode
from meshsec.proxy.metrics import ProxyMetrics
from meshsec.proxy.outbound import HttpProxyListener, TcpOutboundListener
from meshsec.proxy.pump import PumpLimits
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
    def __init__(
        self,
        settings: ProxySettings,
        *,
        clock: Clock | None = None,
        authorizer: Authorizer | None = None,
        resolver: ServiceResolver | None = None,
        tls_policy: ClientTlsPolicy | None = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.authorizer = authorizer or AllowAll()
        registry = StaticRegistry(settings.endpoint_specs)
        self.resolver: ServiceResolver = resolver or registry
        self.tls_policy: ClientTlsPolicy = tls_policy or registry
        self.metrics = metrics or ProxyMetrics()
        self.tls = TlsContexts(TlsParams(min_version=settings.min_tls_version))
        self.trust_domains = (
            None
            if settings.skip_validate_trust_domain
            else TrustDomainSet.build(settings.trust_domain, settings.trust_domain_aliases)
        )
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
        )
        self.outbound_options = OutboundOptions(
            trust_domains=TrustDomainSet.build(
                settings.trust_domain, settings.trust_domain_aliases
            ),
            handshake_timeout=settings.handshake_timeout.total_seconds(),
            connect_timeout=settings.connect_timeout.total_seconds(),
            limits=limits,
        )
        self.inbound: list[InboundListener] = []
        self.outbound: list[TcpOutboundListener | HttpProxyListener] = []
        self.admin: AdminServer | None = None
        self.sds: SdsSecretSource | None = None
        self.certificates_applied = asyncio.Event()
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    # certificates -----------------------------------------------------------------------------
    def apply(self, svid: X509Svid, bundle: TrustBundle) -> None:
        """New SVID/bundle (cert dir, SDS, in-process agent): next handshakes use it."""
        self.tls.update(svid, bundle, now=self.clock.now())
        self.certificates_applied.set()

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        if s.cert_dir is not None:
            stamp = stamp_cert_dir(s.cert_dir)
            self.apply(*load_cert_dir(s.cert_dir))
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
            source = SdsSecretSource(s.sds_socket, self.apply, clock=self.clock)
            self.sds = source
            self._tasks.append(asyncio.ensure_future(source.run()))
        elif s.inbound or s.outbound or s.http_proxy_port is not None:
            needs_tls = any(spec.mode != "DISABLE" for spec in s.inbound_specs) or bool(s.endpoints)
            if needs_tls and not self.tls.ready:
                raise TlsMaterialError("certificates", "no --cert-dir given and none applied")
        for spec in s.inbound_specs:
            port = InboundPort(
                spec.port,
                spec.app_port,
                PortMode(spec.mode),
                http=spec.http,
                app_host=s.app_host,
                listen_host=s.inbound_host,
            )
            listener = InboundListener(
                port,
                self.tls,
                options=self.inbound_options,
                authorizer=self.authorizer,
                metrics=self.metrics,
            )
            await listener.start()
            self.inbound.append(listener)
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
        if s.admin_addr:
            admin_host, _, admin_port = s.admin_addr.rpartition(":")
            self.admin = AdminServer(
                admin_host.strip("[]") or "127.0.0.1",
                int(admin_port),
                ready=self.ready,
                config_dump=self.config_dump,
                registry=self.metrics.registry,
            )
            await self.admin.start()
        log.info(
            "proxy ready: %d inbound, %d outbound listener(s)%s",
            len(self.inbound),
            len(self.outbound),
            f", admin on {s.admin_addr}" if self.admin else "",
        )

    def ready(self) -> bool:
        return not self.stopping and (self.tls.ready or not self._needs_tls())

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
        secrets: list[dict[str, Any]] = []
        if self.tls.ready:
            snap = self.tls.current
            leaf = snap.svid.leaf
            secrets.append(
                {
                    "name": "default",
                    "type": "Cert Chain",
                    "spiffe_id": str(snap.svid.spiffe_id),
                    "serial_number": snap.svid.serial_hex,
                    "not_before": leaf.not_valid_before_utc.isoformat(),
                    "not_after": leaf.not_valid_after_utc.isoformat(),
                    "generation": snap.generation,
                    "applied_at": snap.applied_at.isoformat() if snap.applied_at else None,
                }
            )
            secrets.append(
                {
                    "name": "ROOTCA",
                    "type": "CA",
                    "roots": [
                        {
                            "subject": root.subject.rfc4514_string(),
                            "serial_number": f"{root.serial_number:032x}",
                            "not_after": root.not_valid_after_utc.isoformat(),
                            "sha256": fp,
                        }
                        for root, fp in zip(
                            snap.bundle.certificates, snap.bundle.fingerprints, strict=True
                        )
                    ],
                }
            )
        return {
            "ready": self.ready(),
            "listeners": [x.describe() for x in (*self.inbound, *self.outbound)],
            "secrets": secrets,
            "policy": {
                "authorizer": type(self.authorizer).__name__,
                "version": getattr(self.authorizer, "version", None),
            },
            "trust_domains": [td.name for td in self.trust_domains.all]
            if self.trust_domains
            else None,
        }


async def serve_proxy(settings: ProxySettings) -> int:
    server = ProxyServer(settings)
    await server.start()
    await server.run_until_stopped()
    return 0


def run_proxy(settings: ProxySettings) -> int:
    """Run the sidecar on uvloop (stdlib asyncio where uvloop is unavailable) until signalled."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(serve_proxy(settings))
    return uvloop.run(serve_proxy(settings))
