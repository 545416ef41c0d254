"""A CA worker process: loads the material, builds its own authenticators, ledger writer and
TLS serving certificate, and serves gRPC on the port it shares with the other workers
(``SO_REUSEPORT``) until SIGTERM / SIGINT. Started (spawned) by :mod:`meshsec.ca.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from typing import Any

from meshsec.ca.assembly import (
    build_authenticators,
    build_remote_clusters,
    build_token_verifiers,
    load_material,
)
from meshsec.ca.authority import CertificateAuthority
from meshsec.ca.errors import CaError
from meshsec.ca.grpc_server import start_grpc_server
from meshsec.ca.metrics import CaCounters
from meshsec.ca.serving import ServingCertificates
from meshsec.config.ca import CaSettings
from meshsec.config.errors import ConfigError
from meshsec.runtime.clock import SystemClock
from meshsec.runtime.log import setup_logging


@dataclass(frozen=True)
class WorkerSpec:
    settings: CaSettings
    index: int
    port: int
    mtls_port: int | None
    table: Any  # shared counter table (RawArray)
    events: Any  # multiprocessing queue: ("ready", index) | ("error", index, message)


def run_worker(spec: WorkerSpec) -> None:
    """Entry point of a spawned worker process."""
    setup_logging(spec.settings.log_level)
    try:
        asyncio.run(_worker_main(spec))
    except (CaError, ConfigError, OSError) as exc:
        spec.events.put(("error", spec.index, str(exc)))
        sys.exit(2)


async def _worker_main(spec: WorkerSpec) -> None:
    settings = spec.settings
    clock = SystemClock()
    material = load_material(settings, now=clock.now(), create=False)
    serving = None
    if not settings.plaintext:
        authority = CertificateAuthority(
            material,
            default_ttl=settings.default_workload_cert_ttl,
            max_ttl=settings.max_workload_cert_ttl,
        )
        serving = ServingCertificates(authority, ttl=settings.serving_cert_ttl, now=clock.now)
    counters = CaCounters(spec.table, spec.index)
    verifiers, local = build_token_verifiers(settings)
    # Every worker keeps its own registry; worker 0 alone logs and counts secret events.
    remote = build_remote_clusters(
        settings, verifiers, local, counters=counters, report=spec.index == 0
    )
    running = await start_grpc_server(
        settings,
        material=material,
        serving=serving,
        port=spec.port,
        mtls_port=spec.mtls_port,
        counters=counters,
        clock=clock,
        authenticators=build_authenticators(settings, material, verifiers, local, remote),
    )
    poller = (
        asyncio.create_task(remote.run(clock, settings.remote_secrets_poll.total_seconds()))
        if remote is not None
        else None
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    spec.events.put(("ready", spec.index, ""))
    await stop.wait()
    if poller is not None:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    await running.stop(grace=5.0)
    if remote is not None:
        remote.close()
