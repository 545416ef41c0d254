"""The sidecar ``meshsec up`` runs next to each application: the proxy, fed by policy.

``python -m meshsec.mesh.sidecar --config sidecar.json`` (written by the runtime). It assembles
the proxy library (``meshsec.proxy``) with:

* certificates from the agent's ``OUTPUT_CERTS`` directory (``cert-chain.pem``, ``key.pem``,
  ``root-cert.pem``), polled; a new serial or bundle applies to the next handshake;
* one inbound listener per workload port in the port's PeerAuthentication mode, with
  AuthorizationPolicy enforcement (per connection for TCP, per request for HTTP);
* an outbound HTTP proxy (the application's ``HTTP_PROXY``) routing by Service name with the
  DestinationRule / auto-mTLS client TLS and secure naming;
* the manifest directory watched (:class:`~meshsec.config.sources.files.DirectorySource`): an
  accepted edit swaps the policy view and re-applies the per-port modes without a restart;
* an admin HTTP port: ``/ready`` (200 once a certificate is loaded and listeners are up),
  ``/config_dump`` (JSON: listeners, modes, policy version, certificate), ``/metrics``.

SIGTERM/SIGINT stop accepting, drain open connections briefly and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from meshsec.config.sources.files import DirectorySource, digest, read_files
from meshsec.core.identity import TrustDomainSet
from meshsec.core.pki import PkiError, TrustBundle, X509Svid
from meshsec.core.policy.diagnostics import Level
from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.mesh.policy_view import LivePolicy, PolicyView
from meshsec.mesh.registry import LOOPBACK, MeshRegistry, PortBinding, WorkloadEntry
from meshsec.proxy.authz import Decision, HttpRequestInfo, PeerInfo
from meshsec.proxy.errors import TlsMaterialError
from meshsec.proxy.inbound import InboundListener, InboundOptions, InboundPort
from meshsec.proxy.metrics import ProxyMetrics
from meshsec.proxy.outbound import HttpProxyListener
from meshsec.proxy.tls import TlsContexts
from meshsec.proxy.upstream import OutboundOptions, UpstreamConnector
from meshsec.runtime.clock import SystemClock
from meshsec.runtime.log import setup_logging

log = logging.getLogger("meshsec.mesh.sidecar")

CERT_FILES = ("cert-chain.pem", "key.pem", "root-cert.pem")


@dataclass(frozen=True)
class SidecarConfig:
    """The JSON the runtime writes for one sidecar."""

    workload: WorkloadEntry
    registry: MeshRegistry
    config_dir: Path
    cert_dir: Path
    http_proxy_port: int
    admin_port: int
    trust_domain: str
    poll_interval: float = 0.5

    @classmethod
    def load(cls, path: Path) -> SidecarConfig:
        data = json.loads(path.read_text())
        return cls(
            WorkloadEntry.from_json(data["workload"]),
            MeshRegistry.from_json(data["registry"]),
            Path(data["config_dir"]),
            Path(data["cert_dir"]),
            int(data["http_proxy_port"]),
            int(data["admin_port"]),
            str(data["trust_domain"]),
            float(data.get("poll_interval", 0.5)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload.to_json(),
            "registry": self.registry.to_json(),
            "config_dir": str(self.config_dir),
            "cert_dir": str(self.cert_dir),
            "http_proxy_port": self.http_proxy_port,
            "admin_port": self.admin_port,
            "trust_domain": self.trust_domain,
            "poll_interval": self.poll_interval,
        }


class PortAwarePolicy(LivePolicy):
    """Authorization sees the workload's declared port, not the loopback port the app got.

    Fails closed while ``blocked`` (the configuration could not be read completely: a missing
    AuthorizationPolicy must not mean "allow all").
    """

    def __init__(self, view: PolicyView, bindings: tuple[PortBinding, ...]) -> None:
        super().__init__(view)
        self._declared = {b.app_port: b.port for b in bindings}
        self.blocked = ""

    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        if self.blocked:
            return Decision(False, f"configuration not loaded: {self.blocked}")
        return super().authorize(peer, self._declared.get(port, port), request)


class Sidecar:
    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.clock = SystemClock()
        self.tls = TlsContexts()
        self.metrics = ProxyMetrics()
        self.source = DirectorySource(
            [config.config_dir], clock=self.clock, interval=config.poll_interval
        )
        first = self.source.snapshot()
        self.policy = PortAwarePolicy(self._view(first), config.workload.ports)
        self._check_complete(first)
        domains = TrustDomainSet.build(
            self.policy.view.mesh.trust_domain, self.policy.view.mesh.trust_domain_aliases
        )
        self.inbound: list[tuple[PortBinding, InboundListener]] = []
        for binding in config.workload.ports:
            listener = InboundListener(
                InboundPort(
                    binding.inbound,
                    binding.app_port,
                    self.policy.view.port_mode(binding.port),
                    http=binding.protocol == "http",
                    listen_host=LOOPBACK,
                ),
                self.tls,
                options=InboundOptions(trust_domains=domains),
                authorizer=self.policy,
                metrics=self.metrics,
            )
            self.inbound.append((binding, listener))
        connector = UpstreamConnector(
            self.policy, self.policy, self.tls, OutboundOptions(trust_domains=domains)
        )
        self.outbound = HttpProxyListener(LOOPBACK, config.http_proxy_port, connector, self.metrics)
        self._cert_signature: tuple[tuple[int, int], ...] | None = None
        self._last_seen = first.version
        self._cert_error = ""
        self._admin: asyncio.Server | None = None
        self.listening = False

    def _view(self, snapshot: PolicySnapshot) -> PolicyView:
        return PolicyView(snapshot, self.config.registry, self.config.workload)

    # certificates -----------------------------------------------------------------------------
    def poll_certificates(self) -> bool:
        directory = self.config.cert_dir
        try:
            signature = tuple(
                (st.st_mtime_ns, st.st_ino)
                for st in (os.stat(directory / name) for name in CERT_FILES)
            )
        except OSError as exc:
            self._cert_error = f"no certificates in {directory} yet ({exc.strerror})"
            return False
        if signature == self._cert_signature:
            return False
        try:
            chain, key, roots = ((directory / n).read_bytes() for n in CERT_FILES)
            svid = X509Svid.from_pem(chain, key)
            bundle = TrustBundle.parse_pem(roots)
            self.tls.update(svid, bundle, now=self.clock.now())
        except (OSError, PkiError, TlsMaterialError, ValueError) as exc:
            # the agent replaces the files one by one: a key and chain from different
            # rotations do not match for a moment; the next poll sees the complete set
            self._cert_error = f"certificates in {directory} not usable yet: {exc}"
            return False
        self._cert_signature = signature
        self._cert_error = ""
        log.info(
            "loaded certificate %s serial=%s valid until %s",
            svid.spiffe_id,
            svid.serial_hex,
            svid.not_after.isoformat(),
        )
        return True

    # policy -----------------------------------------------------------------------------------
    def _check_complete(self, snapshot: PolicySnapshot) -> None:
        """``meshsec up`` starts only from an error-free directory, so errors in the first
        read mean it was incomplete (a file unreadable for a moment): deny and stay unready
        until a complete read is accepted."""
        errors = [d for d in snapshot.diagnostics if d.level is Level.ERROR]
        if errors:
            self.policy.blocked = f"{len(errors)} error(s), first: {errors[0]}"
            log.error("configuration incomplete, denying all requests: %s", self.policy.blocked)
        elif self.policy.blocked:
            log.info("configuration complete again (version %s)", snapshot.version)
            self.policy.blocked = ""

    def apply_policy(self, snapshot: PolicySnapshot) -> None:
        view = self._view(snapshot)
        self.policy.swap(view)
        self._check_complete(snapshot)
        for binding, listener in self.inbound:
            mode = view.port_mode(binding.port)
            if listener.mode is not mode:
                log.info(
                    "port %d: mTLS mode %s -> %s", binding.port, listener.mode.value, mode.value
                )
                listener.mode = mode
        log.info("policy version %s applied", snapshot.version)

    # admin ------------------------------------------------------------------------------------
    def config_dump_error(self) -> str:
        """Why no certificate is served (or the last reload failed); '' when all is well."""
        return self._cert_error

    @property
    def ready(self) -> bool:
        return self.listening and self.tls.ready and not self.policy.blocked

    def config_dump(self) -> dict[str, Any]:
        svid = self.tls.current.svid if self.tls.ready else None
        return {
            "workload": self.config.workload.key,
            "spiffe_id": str(svid.spiffe_id) if svid else None,
            "certificate": {
                "serial": svid.serial_hex,
                "not_after": svid.not_after.isoformat(),
            }
            if svid
            else None,
            "policy_version": self.policy.view.version,
            "rejected_edit": [str(d) for d in self.source.rejected],
            "listeners": [listener.describe() for _, listener in self.inbound]
            + [self.outbound.describe()],
            "ports": [
                {"port": b.port, "mode": listener.mode.value, "protocol": b.protocol}
                for b, listener in self.inbound
            ],
        }

    async def _admin_handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            status, ctype, body = 404, "text/plain", b"not found\n"
            if path == "/ready":
                if self.ready:
                    status, body = 200, b"LIVE\n"
                else:
                    why = self._cert_error or self.policy.blocked or "starting"
                    status, body = 503, why.encode() + b"\n"
            elif path == "/config_dump":
                status, ctype = 200, "application/json"
                body = json.dumps(self.config_dump(), indent=2).encode()
            elif path in ("/metrics", "/stats/prometheus"):
                status, ctype = 200, "text/plain; version=0.0.4"
                body = generate_latest(self.metrics.registry)
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # lifecycle --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._admin = await asyncio.start_server(
            self._admin_handle, LOOPBACK, self.config.admin_port
        )
        self.poll_certificates()
        for _, listener in self.inbound:
            await listener.start()
        await self.outbound.start()
        self.listening = True
        ports = ", ".join(
            f"{b.port}->{listener.bound_port} {listener.mode.value}" for b, listener in self.inbound
        )
        log.info(
            "sidecar for %s: inbound %s; HTTP proxy %s:%d; admin %s:%d",
            self.config.workload.key,
            ports or "(none)",
            LOOPBACK,
            self.outbound.bound_port,
            LOOPBACK,
            self.config.admin_port,
        )
        watcher = asyncio.create_task(self._watch(stop))
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self._admin.close()
            await asyncio.gather(
                *(listener.drain(1.0) for _, listener in self.inbound),
                self.outbound.drain(1.0),
                return_exceptions=True,
            )

    def poll_policy(self) -> bool:
        """Apply an edit once the directory reads the same on two consecutive polls.

        An editor that truncates and rewrites a file leaves it empty for a moment; reading it
        then would drop its policies (an AuthorizationPolicy gone = allow). A settled read is
        the same twice in a row, one poll interval apart.
        """
        contents, _ = read_files([self.config.config_dir])
        seen = digest(contents)
        settled = seen == self._last_seen
        self._last_seen = seen
        if not settled or seen == self.policy.view.version:
            return False
        if self.source.poll():
            self.apply_policy(self.source.snapshot())
            return True
        return False

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.clock.sleep(self.config.poll_interval)
            self.poll_certificates()
            try:
                self.poll_policy()
            except Exception:  # a bug in one reload must not take the data plane down
                log.exception("policy reload failed; keeping version %s", self.policy.view.version)


async def _main(config: SidecarConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Sidecar(config).run(stop)
    log.info("sidecar stopped at %s", datetime.now(UTC).isoformat())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshsec-sidecar", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="sidecar.json from meshsec up")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = SidecarConfig.load(args.config)
    except (OSError, ValueError, KeyError) as exc:
        log.error("cannot read %s: %s", args.config, exc)
        return 2
    return asyncio.run(_main(config))


if __name__ == "__main__":
    sys.exit(main())
