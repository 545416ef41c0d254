"""The sidecar ``meshsec up`` runs next to each application: ``meshsec proxy run``'s policy-aware
proxy, configured from the ``sidecar.json`` the runtime writes.

``python -m meshsec.mesh.sidecar --config sidecar.json``. Everything it does is the proxy
package's (:class:`~meshsec.proxy.server.ProxyServer` with a
:class:`~meshsec.proxy.policy_watch.PolicyController`): certificates from the agent's
``OUTPUT_CERTS`` directory (watched), one inbound listener per workload port in the port's live
PeerAuthentication mode with AuthorizationPolicy, the outbound HTTP proxy (the application's
``HTTP_PROXY``) with DestinationRule / auto-mTLS client TLS and secure naming, the mesh directory
watched (settled edits, broken edits rejected, fail closed on an incomplete first read), and the
admin port (``/ready``, ``/config_dump``, ``/metrics``). What this module adds is the mapping
from ``sidecar.json``: the workload entry and the registry are the runtime's (loopback ports it
assigned), not read from the manifests.

SIGTERM/SIGINT stop accepting, drain open connections briefly and exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings
from meshsec.config.proxy import ProxySettings
from meshsec.proxy.policy_watch import PolicyController
from meshsec.proxy.process import run_event_loop
from meshsec.proxy.registry import LOOPBACK, Registry, WorkloadEntry
from meshsec.proxy.server import ProxyServer
from meshsec.runtime.clock import Clock, SystemClock
from meshsec.runtime.log import setup_logging

log = logging.getLogger("meshsec.mesh.sidecar")

DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class SidecarConfig:
    """The JSON the runtime writes for one sidecar."""

    workload: WorkloadEntry
    registry: Registry
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
            Registry.from_json(data["registry"]),
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


def build_sidecar(config: SidecarConfig, *, clock: Clock | None = None) -> ProxyServer:
    """The proxy for one ``meshsec up`` workload (listeners start with ``await .start()``)."""
    clock = clock or SystemClock()
    entry, registry = config.workload, config.registry  # the proxy registry's types
    settings = load_settings(
        ProxySettings,
        env={},  # sidecar.json is the whole configuration
        flags={
            "cert_dir": config.cert_dir,
            "cert_watch_interval": str(config.poll_interval),
            "config_poll_interval": str(config.poll_interval),
            "http_proxy_port": config.http_proxy_port,
            "outbound_host": LOOPBACK,
            "inbound_host": LOOPBACK,
            "admin_addr": f"{LOOPBACK}:{config.admin_port}",
            "trust_domain": config.trust_domain,
            "drain_duration": str(DRAIN_SECONDS),
        },
    )
    policy = PolicyController(
        [config.config_dir],
        identify=lambda _snapshot: entry,
        registry_of=lambda _snapshot: registry,
        clock=clock,
        interval=config.poll_interval,
        workload_ref=entry.key,
    )
    return ProxyServer(settings, clock=clock, policy=policy)


async def _serve(config: SidecarConfig) -> int:
    server = build_sidecar(config)
    await server.start()
    await server.run_until_stopped()
    log.info("sidecar for %s stopped", config.workload.key)
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
    try:
        return run_event_loop(_serve(config))  # uvloop, like `meshsec proxy run`
    except ConfigError as exc:
        log.error("%s: %s", args.config, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
