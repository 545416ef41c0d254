"""The local mesh behind ``meshsec up``: one supervisor for every process of the mesh.

Start order (each step waits on readiness, with a timeout, before the next):

1. per cluster its token issuer (``.meshsec/clusters/<name>``, ``meshsec cluster init``), and
   for primaries sharing the mesh root an intermediate (:mod:`meshsec.mesh.control_plane`);
2. the remote clusters' API servers (``meshsec cluster serve``) and their remote secrets in
   their primary CA's watched directory; then per primary its CA (``meshsec ca serve``, TLS;
   ready line on stdout); each cluster's root bundle is published per namespace
   (Istio's ``istio-ca-root-cert`` ConfigMap);
3. credentials: a projected token per CSR-model workload (refreshed at 80% of its life);
   for ``mountMtlsCerts`` workloads the ``istio.<sa>`` secret directory (rotated at half-life);
4. per workload its agent (``meshsec agent run``: CSR flow to its cluster's CA with its own
   cluster's token and ``--cluster-id``, or ``--file-mounted-certs``), waited on
   ``/healthz/ready`` — except in a remote cluster without a remote secret, whose CA refuses it
   (started, like a pod stuck not ready, never waited on, and not an endpoint of any Service);
5. per workload its sidecar (``python -m meshsec.mesh.sidecar``), waited on ``/ready`` (same
   exception);
6. per workload the application, with ``PORT`` (and ``PORT_<n>`` for every declared port) and
   ``HTTP_PROXY`` = its sidecar; waited until its ports accept connections.

``state.json`` (:mod:`meshsec.mesh.state`) is written once everything runs and removed on a
clean stop. :meth:`MeshRuntime.stop` stops applications, sidecars, agents, then the CAs and API
servers, each process group with SIGTERM then SIGKILL, and removes any socket left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meshsec.ca.ledger import LEDGER_FILE, Ledger
from meshsec.ca.material import CaMaterial, load_or_create_self_signed, load_plugged_in_material
from meshsec.core.identity import TrustDomain
from meshsec.mesh.control_plane import ClusterRuntime, ControlPlane
from meshsec.mesh.credentials import MountedSecret, ProjectedToken
from meshsec.mesh.errors import MeshRunningError, StartupError
from meshsec.mesh.launch import (
    PortAllocator,
    UpOptions,
    WorkloadRun,
    build_agent_process,
    build_app_process,
    build_sidecar_process,
)
from meshsec.mesh.manifests import MeshPlan
from meshsec.mesh.probes import format_duration, http_get
from meshsec.mesh.processes import ManagedProcess
from meshsec.mesh.sidecar import SidecarConfig
from meshsec.mesh.state import compose_state
from meshsec.mesh.topology import DEFAULT_CLUSTER
from meshsec.proxy.registry import LOOPBACK, PortBinding, Registry, WorkloadEntry
from meshsec.runtime.clock import Clock, SystemClock
from meshsec.runtime.files import PUBLIC_MODE, write_atomic
from meshsec.runtime.pids import process_alive

log = logging.getLogger(__name__)

STATE_DIR = ".meshsec"
CLUSTER_NAME = DEFAULT_CLUSTER
MAX_SOCKET_PATH = 100


@dataclass
class MeshRuntime:
    mesh_dir: Path
    plan: MeshPlan
    options: UpOptions = field(default_factory=UpOptions)
    clock: Clock = field(default_factory=SystemClock)
    progress: Callable[[str], None] = lambda _msg: None
    environ: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mesh_dir = self.mesh_dir.resolve()
        self.state_dir = self.mesh_dir / STATE_DIR
        self.runs: list[WorkloadRun] = []
        self.tokens: list[ProjectedToken] = []
        self.secrets: dict[str, MountedSecret] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.failed: asyncio.Future[StartupError] | None = None
        self.started_at = datetime.now(UTC)
        self.registry = Registry()
        self.short_sockets: Path | None = None
        self.ledgers: dict[str, Ledger] = {}
        self.wrote_state = False
        self.control = ControlPlane(
            self.plan,
            self.state_dir,
            self.options,
            self.clock,
            self.environ,
            self.progress,
            self._spawn,
        )

    # the first primary's CA (what single-cluster readers know as "the CA")
    @property
    def ca_dir(self) -> Path:
        data_dir = self.control.first_primary.ca_data_dir
        assert data_dir is not None
        return data_dir

    @property
    def ca_addr(self) -> str:
        return self.control.first_primary.ca_addr

    def cluster(self, name: str) -> ClusterRuntime:
        return self.control.clusters[name]

    # ------------------------------------------------------------------------------ start
    async def start(self) -> None:
        self.failed = asyncio.get_running_loop().create_future()
        self._prepare_state_dir()
        self.control.init_clusters()
        monitoring = self._allocate()
        await self.control.start_api_servers()
        self.control.write_remote_secrets()
        await self.control.start_cas(monitoring)
        self.control.publish_roots(self.plan.namespaces)
        self._start_credentials()
        self._write_sidecar_configs()
        await self._start_all("agent", self._agent_process, self._wait_agent)
        await self._start_all("sidecar", self._sidecar_process, self._wait_sidecar)
        await self._start_all("app", self._app_process, self._wait_app)
        self.write_state()
        for run in self.runs:
            for proc in (run.agent, run.sidecar, run.app):
                if proc is not None:
                    self._spawn(self._watch_exit(proc))
        for proc in self.control.processes():
            self._spawn(self._watch_exit(proc))

    def _prepare_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ignore = self.state_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")
        state = self.state_dir / "state.json"
        if state.exists():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                pid = int(json.loads(state.read_text())["pid"])
                if pid != os.getpid() and process_alive(pid):
                    raise MeshRunningError(
                        f"a mesh is already running from {self.mesh_dir} (pid {pid}); "
                        "stop it first (Ctrl-C in its terminal, or kill -TERM "
                        f"{pid})"
                    )
            state.unlink(missing_ok=True)

    def _allocate(self) -> dict[str, int]:
        """Ports for every workload (and each CA's monitoring); returns the CA ones."""
        ports = PortAllocator()
        declared = self.plan.declared_clusters
        try:
            monitoring = {c.name: ports.take() for c in self.control.primaries}
            entries: list[WorkloadEntry] = []
            for placed in self.plan.placed:
                w = placed.workload
                cluster = self.cluster(placed.cluster)
                bindings = tuple(
                    PortBinding(p.port, ports.take(), ports.take(), p.protocol, p.name)
                    for p in w.port_specs
                )
                entry = WorkloadEntry(
                    w.name,
                    w.namespace,
                    w.service_account,
                    dict(w.labels),
                    bindings,
                    self.options.trust_domain,
                    cluster=placed.cluster if declared else "",
                )
                refused = not cluster.spec.attached
                if not refused:  # a pod that can never be ready is no endpoint
                    entries.append(entry)
                base = self.state_dir / "workloads"
                mounted_base = self.state_dir / "mounted"
                if declared:
                    base, mounted_base = base / placed.cluster, mounted_base / placed.cluster
                mounted = (
                    mounted_base / w.namespace / f"istio.{w.service_account}"
                    if w.mount_mtls_certs
                    else None
                )
                self.runs.append(
                    WorkloadRun(
                        w,
                        entry,
                        base / w.namespace / w.name,
                        ports.take(),
                        ports.take(),
                        ports.take(),
                        "mounted" if w.mount_mtls_certs else "csr",
                        mounted,
                        placed.cluster,
                        refused,
                    )
                )
            self.registry = Registry(tuple(entries))
        finally:
            ports.release()
        for run in self.runs:
            if len(str(run.directory / "workload.sock")) > MAX_SOCKET_PATH:
                # AF_UNIX paths are limited to 107 bytes: deep mesh directories get their
                # sockets in a short private directory instead (removed on stop)
                where = f"@{run.cluster}" if declared else ""
                run.socket_dir = (
                    self._short_socket_root() / f"{run.entry.namespace}.{run.entry.name}{where}"
                )
                run.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return monitoring

    def _short_socket_root(self) -> Path:
        if self.short_sockets is None:
            self.short_sockets = Path(tempfile.mkdtemp(prefix="meshsec-up-"))
        return self.short_sockets

    def root_path(self, namespace: str, cluster: str = CLUSTER_NAME) -> Path:
        return self.cluster(cluster).root_path(namespace)

    # ------------------------------------------------------------------------------ credentials
    def _start_credentials(self) -> None:
        for run in self.runs:
            cluster = self.cluster(run.cluster)
            if run.cert_model == "csr":
                assert cluster.signer is not None
                token = ProjectedToken(
                    cluster.signer,
                    run.token_path,
                    run.entry.namespace,
                    run.entry.service_account,
                    run.entry.name,
                    self.options.token_ttl,
                    self.clock,
                )
                token.refresh()
                self.tokens.append(token)
                self._spawn(token.run())
                continue
            assert run.mounted_dir is not None
            key = str(run.mounted_dir)
            if key in self.secrets:
                continue
            issuing = cluster.issuing
            secret = MountedSecret(
                self._material(issuing),
                run.mounted_dir,
                run.entry.namespace,
                run.entry.service_account,
                self.options.trust_domain,
                self.options.mounted_cert_ttl,
                self.clock,
                on_issued=self._ledger(issuing).record,
                cluster=run.cluster,
            )
            secret.issue()
            self.secrets[key] = secret
            self._spawn(secret.run())
        if self.tokens:
            self.progress(
                f"{len(self.tokens)} projected token(s), refreshed at 80% of "
                f"{format_duration(self.options.token_ttl)}"
            )
        if self.secrets:
            self.progress(
                f"{len(self.secrets)} mounted istio.<sa> secret(s) (mountMtlsCerts), rotated at "
                f"half of {format_duration(self.options.mounted_cert_ttl)}"
            )

    def _material(self, primary: ClusterRuntime) -> CaMaterial:
        """The signing material of ``primary``'s CA (Citadel's secret controller ran next to
        its key): the plug-in directory, or the self-signed root in its data dir."""
        if primary.cacerts is not None:
            return load_plugged_in_material(primary.cacerts, now=self.clock.now())
        assert primary.ca_data_dir is not None
        return load_or_create_self_signed(
            primary.ca_data_dir,
            trust_domain=TrustDomain.parse(self.options.trust_domain),
            now=self.clock.now(),
            ttl=timedelta(days=3650),
        )

    def _ledger(self, primary: ClusterRuntime) -> Ledger:
        found = self.ledgers.get(primary.name)
        if found is None:
            assert primary.ca_data_dir is not None
            found = self.ledgers[primary.name] = Ledger(primary.ca_data_dir / LEDGER_FILE)
        return found

    def _write_sidecar_configs(self) -> None:
        for run in self.runs:
            run.directory.mkdir(parents=True, exist_ok=True)
            # certificates an agent wrote in an earlier run are not this run's
            shutil.rmtree(run.cert_dir, ignore_errors=True)
            config = SidecarConfig(
                run.entry,
                self.registry,
                self.plan.directory.resolve(),
                run.cert_dir,
                run.http_proxy_port,
                run.admin_port,
                self.options.trust_domain,
            )
            write_atomic(
                run.directory / "sidecar.json",
                json.dumps(config.to_json(), indent=2).encode(),
                PUBLIC_MODE,
            )

    # ------------------------------------------------------------------------------ workloads
    async def _start_all(
        self,
        kind: str,
        build: Callable[[WorkloadRun], ManagedProcess],
        wait: Callable[[WorkloadRun, ManagedProcess], Awaitable[None]],
    ) -> None:
        started = self.clock.monotonic()
        procs = []
        for run in self.runs:
            proc = build(run)
            setattr(run, kind, proc)
            await proc.start()
            procs.append((run, proc))
        # a workload its CA refuses never gets ready (its app still runs)
        waited = [(r, p) for r, p in procs if kind == "app" or not r.refused_expected]
        await asyncio.gather(*(wait(run, proc) for run, proc in waited))
        took = self.clock.monotonic() - started
        skipped = len(procs) - len(waited)
        note = f"; {skipped} not waited on (no remote secret: refused by the CA)" if skipped else ""
        self.progress(f"{len(waited)} {kind}(s) ready ({took:.1f}s){note}")

    def _agent_process(self, run: WorkloadRun) -> ManagedProcess:
        cluster = self.cluster(run.cluster)
        return build_agent_process(
            run,
            self.options,
            self.environ,
            ca_addr=cluster.issuing.ca_addr,
            ca_root=cluster.root_path(run.entry.namespace),
            cluster=run.cluster,
        )

    def _sidecar_process(self, run: WorkloadRun) -> ManagedProcess:
        return build_sidecar_process(run, self.options, self.environ)

    def _app_process(self, run: WorkloadRun) -> ManagedProcess:
        return build_app_process(run, self.environ, cwd=self.plan.directory.resolve())

    async def _wait_http(self, proc: ManagedProcess, port: int, path: str, what: str) -> None:
        deadline = self.clock.monotonic() + self.options.ready_timeout
        last = "no answer"
        while self.clock.monotonic() < deadline:
            if proc.exited.is_set():
                raise proc.failure(f"exited with code {proc.returncode} before {what}")
            status, body = await http_get(LOOPBACK, port, path)
            if status == 200:
                return
            last = f"{status} {body.strip()[:200]}" if status else body
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.exited.wait(), 0.1)
        raise proc.failure(f"not {what} after {self.options.ready_timeout:.0f}s (last: {last})")

    async def _wait_agent(self, run: WorkloadRun, proc: ManagedProcess) -> None:
        await self._wait_http(proc, run.agent_status_port, "/healthz/ready", "ready")

    async def _wait_sidecar(self, run: WorkloadRun, proc: ManagedProcess) -> None:
        await self._wait_http(proc, run.admin_port, "/ready", "ready")

    async def _wait_app(self, run: WorkloadRun, proc: ManagedProcess) -> None:
        deadline = self.clock.monotonic() + self.options.ready_timeout
        for binding in run.entry.ports:
            while True:
                if proc.exited.is_set():
                    raise proc.failure(f"exited with code {proc.returncode} while starting")
                if self.clock.monotonic() > deadline:
                    raise proc.failure(
                        f"does not listen on PORT={binding.app_port} (port {binding.port}) "
                        f"after {self.options.ready_timeout:.0f}s"
                    )
                try:
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(LOOPBACK, binding.app_port), 2
                    )
                except (OSError, TimeoutError):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.exited.wait(), 0.1)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                break

    # ------------------------------------------------------------------------------ running
    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("mesh task failed: %r", exc)
        self._fail(StartupError("mesh runtime", f"background task failed: {exc!r}", ""))

    def _fail(self, error: StartupError) -> None:
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(error)

    async def _watch_exit(self, proc: ManagedProcess) -> None:
        await proc.exited.wait()
        if not proc.stopping:
            self._fail(proc.failure(f"exited unexpectedly with code {proc.returncode}"))

    def write_state(self) -> None:
        self.wrote_state = True
        write_atomic(
            self.state_dir / "state.json",
            json.dumps(self.state(), indent=2).encode(),
            PUBLIC_MODE,
        )

    def state(self) -> dict[str, Any]:
        return compose_state(
            mesh_dir=self.mesh_dir,
            started_at=self.started_at,
            trust_domain=self.options.trust_domain,
            control=self.control,
            runs=self.runs,
        )

    def run_for(self, ref: str) -> WorkloadRun | None:
        """``name.namespace[@cluster]`` → its run (None if unknown or ambiguous)."""
        name, _, cluster = ref.partition("@")
        name, _, namespace = name.rpartition(".")
        found = [
            r
            for r in self.runs
            if r.entry.name == name
            and r.entry.namespace == namespace
            and (not cluster or r.cluster == cluster)
        ]
        return found[0] if len(found) == 1 else None

    # ------------------------------------------------------------------------------ stop
    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for kind in ("app", "sidecar", "agent"):
            await asyncio.gather(
                *(proc.stop() for run in self.runs if (proc := getattr(run, kind)) is not None),
                return_exceptions=True,
            )
        for ledger in self.ledgers.values():
            await asyncio.to_thread(ledger.close)
        self.ledgers.clear()
        await self.control.stop()
        for run in self.runs:
            for name in ("sds.sock", "workload.sock"):
                (run.sockets / name).unlink(missing_ok=True)
        if self.short_sockets is not None:
            shutil.rmtree(self.short_sockets, ignore_errors=True)
        if self.wrote_state:  # never remove another running mesh's state file
            (self.state_dir / "state.json").unlink(missing_ok=True)


__all__ = ["CLUSTER_NAME", "STATE_DIR", "MeshRuntime", "UpOptions", "WorkloadRun", "http_get"]
