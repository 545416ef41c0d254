"""Running the CA: the supervisor of ``meshsec ca serve`` and its worker processes.

Process layout (signing is CPU-bound and holds the GIL, so one process per core):

* the **supervisor** (here) loads or creates the CA material, publishes the root bundle, creates
  the ledger, reserves the ports, starts the workers, serves ``/metrics`` (summing the workers'
  shared-memory counters) and stops everything on SIGTERM / SIGINT;
* each **worker** (:mod:`meshsec.ca.workers`, spawned) loads the same material from disk,
  issues itself a TLS serving certificate (:mod:`meshsec.ca.serving`, renewed at half-life) and
  runs a ``grpc.aio`` server (:mod:`meshsec.ca.grpc_server`) on the same port with
  ``SO_REUSEPORT`` (the kernel spreads connections), with its own group-committing ledger writer
  (:mod:`meshsec.ca.loop_ledger`) and in-flight limit.

The parts are built from the settings by :mod:`meshsec.ca.assembly`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import sys
import time
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from prometheus_client.exposition import start_http_server

from meshsec.ca.assembly import build_token_verifiers, load_material
from meshsec.ca.errors import CaError
from meshsec.ca.ledger import LEDGER_FILE, init_ledger
from meshsec.ca.material import describe_material, publish_root_bundle
from meshsec.ca.metrics import (
    CaCollector,
    allocate_counter_table,
    build_registry,
    reported_chain_not_after,
)
from meshsec.ca.workers import WorkerSpec, run_worker
from meshsec.config.ca import CaSettings
from meshsec.config.load import format_host_port, parse_host_port
from meshsec.runtime.clock import Clock, SystemClock

log = logging.getLogger(__name__)


@dataclass
class Supervisor:
    """``meshsec ca serve``: prepare shared state, run the workers, serve metrics, stop cleanly."""

    settings: CaSettings
    out: TextIO = field(default_factory=lambda: sys.stdout)
    clock: Clock = field(default_factory=SystemClock)

    def run(self) -> int:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        now = self.clock.now()
        material = load_material(settings, now=now)
        log.info("CA material loaded: %s", describe_material(material))
        publish_root_bundle(settings.data_dir, material)
        verifiers, _ = build_token_verifiers(settings)  # fail fast on bad --cluster / kubeconfig
        if not verifiers and settings.remote_secrets is None:
            log.warning(
                "no --cluster and no --kubeconfig: only callers presenting a mesh client "
                "certificate can be authenticated"
            )
        init_ledger(settings.data_dir / LEDGER_FILE)
        workers = settings.workers or os.cpu_count() or 1
        host, port = parse_host_port(settings.listen)
        reservations = [_reserve_port(host, port)]
        port = reservations[0].getsockname()[1]
        mtls_port: int | None = None
        if not settings.plaintext and settings.mtls_listen:
            mtls_host, mtls_port = parse_host_port(settings.mtls_listen, what="mtls")
            reservations.append(_reserve_port(mtls_host, mtls_port))
            mtls_port = reservations[-1].getsockname()[1]
        ctx = multiprocessing.get_context("spawn")
        table: MutableSequence[int] = allocate_counter_table(workers)
        events = ctx.Queue()
        procs = [
            ctx.Process(
                target=run_worker,
                args=(WorkerSpec(settings, i, port, mtls_port, table, events),),
                name=f"meshsec-ca-worker-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]
        stop_r, stop_w = os.pipe()
        os.set_blocking(stop_w, False)
        previous = {
            sig: signal.signal(sig, lambda *_: _poke(stop_w))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        metrics_server = None
        try:
            for proc in procs:
                proc.start()
            error = _wait_ready(events, procs, timeout=120.0)
            for reservation in reservations:
                reservation.close()
            if error is not None:
                raise CaError(f"a CA worker failed to start: {error}")
            mon_host, mon_port = parse_host_port(settings.monitoring, what="monitoring")
            collector = CaCollector(
                table,
                workers,
                root_not_after=material.root_not_after,
                chain_not_after=reported_chain_not_after(material),
                now=self.clock.now,
                multicluster=settings.remote_secrets is not None,
            )
            metrics_server, _ = start_http_server(
                mon_port, addr=mon_host, registry=build_registry(collector)
            )
            mon_port = metrics_server.server_port
            scheme = "plaintext" if settings.plaintext else "tls"
            mtls = "" if mtls_port is None else f" mtls {format_host_port(mtls_host, mtls_port)}"
            remote = (
                f" remote-secrets {settings.remote_secrets}"
                if settings.remote_secrets is not None
                else ""
            )
            print(
                f"meshsec ca ready: listening on {format_host_port(host, port)} ({scheme}){mtls} "
                f"metrics http://{format_host_port(mon_host, mon_port)}/metrics "
                f"root sha256:{material.root_fingerprint} "
                f"trust-domain {settings.trust_domain} workers {workers} mode {material.mode}"
                f"{remote}",
                file=self.out,
                flush=True,
            )
            return self._wait(procs, stop_r)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _stop_workers(procs)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            os.close(stop_r)
            os.close(stop_w)
            for reservation in reservations:
                with contextlib.suppress(OSError):
                    reservation.close()
            events.close()

    def _wait(self, procs: list[Any], stop_r: int) -> int:
        sentinels = [p.sentinel for p in procs]
        ready = multiprocessing.connection.wait([*sentinels, stop_r])
        if stop_r in ready:
            log.info("stopping: signal received")
            return 0
        for proc in procs:
            if proc.sentinel in ready:
                proc.join(timeout=5)  # the sentinel fires as it exits, before it can be reaped
                log.error("CA worker %s exited with code %s; stopping", proc.name, proc.exitcode)
        return 1


def _poke(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, b"x")


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT so port 0 resolves to one port all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port != 0:
        # SO_REUSEPORT would let us share a port with another live CA of the same user: probe
        # with a plain bind first so "address in use" is reported instead.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise CaError(
                    f"cannot listen on {format_host_port(host, port)}: {exc.strerror}"
                ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CaError(f"cannot listen on {format_host_port(host, port)}: {exc.strerror}") from None
    return sock


def _wait_ready(events: Any, procs: list[Any], *, timeout: float) -> str | None:
    pending = {i for i in range(len(procs))}
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"workers {sorted(pending)} not ready after {timeout:.0f}s"
        try:
            kind, index, message = events.get(timeout=min(remaining, 1.0))
        except queue.Empty:  # check the workers are still alive
            dead = [p for p in procs if p.exitcode is not None]
            if dead:
                return f"{dead[0].name} exited with code {dead[0].exitcode}"
            continue
        if kind == "error":
            return str(message)
        pending.discard(index)
    return None


def _stop_workers(procs: list[Any]) -> None:
    for proc in procs:
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.join(timeout=15)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def run_ca(settings: CaSettings, *, out: TextIO | None = None) -> int:
    return Supervisor(settings, out=out or sys.stdout).run()


__all__ = ["Supervisor", "run_ca"]
