"""The local mesh behind ``meshsec up``: one supervisor for every process of the mesh.

Start order (each step waits on readiness, with a timeout, before the next):

1. the cluster's token issuer (``.meshsec/clusters/cluster1``, ``meshsec cluster init``);
2. the CA (``meshsec ca serve``, TLS; ready line on stdout); its root is published per namespace
   in ``roots/<ns>/root-cert.pem`` (Istio's ``istio-ca-root-cert`` ConfigMap);
3. credentials: a projected token per CSR-model workload (refreshed at 80% of its life);
   for ``mountMtlsCerts`` workloads the ``istio.<sa>`` secret directory (rotated at half-life);
4. per workload its agent (``meshsec agent run``: CSR flow with ``--ca-root roots/<ns>/...``,
   or ``--file-mounted-certs``), waited on ``/healthz/ready``;
5. per workload its sidecar (``python -m meshsec.mesh.sidecar``), waited on ``/ready``;
6. per workload the application, with ``PORT`` (and ``PORT_<n>`` for every declared port) and
   ``HTTP_PROXY`` = its sidecar; waited until its ports accept connections.

``state.json`` (see /work/notes/MESH_STATE.md) is written once everything runs and removed on a
clean stop. :meth:`MeshRuntime.stop` stops applications, sidecars, agents, then the CA, each
process group with SIGTERM then SIGKILL, and removes any socket left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meshsec.ca.ledger import LEDGER_FILE, Ledger
from meshsec.ca.material import load_or_create_self_signed
from meshsec.cluster import init_cluster_dir, load_cluster_signer
from meshsec.core.identity import TrustDomain
from meshsec.mesh.credentials import MountedSecret, ProjectedToken
from meshsec.mesh.errors import MeshRunningError, StartupError
from meshsec.mesh.launch import (
    PortAllocator,
    UpOptions,
    WorkloadRun,
    build_agent_process,
    build_app_process,
    build_child_env,
    build_sidecar_process,
)
from meshsec.mesh.manifests import MeshPlan
from meshsec.mesh.probes import format_duration, http_get
from meshsec.mesh.processes import ManagedProcess
from meshsec.mesh.registry import LOOPBACK, MeshRegistry, PortBinding, WorkloadEntry
from meshsec.mesh.sidecar import SidecarConfig
from meshsec.runtime.clock import Clock, SystemClock
from meshsec.runtime.files import PUBLIC_MODE, write_atomic
from meshsec.runtime.pids import process_alive

log = logging.getLogger(__name__)

STATE_DIR = ".meshsec"
CLUSTER_NAME = "cluster1"
MAX_SOCKET_PATH = 100
CA_READY_PREFIX = "meshsec ca ready: listening on "


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
        self.ca_dir = self.state_dir / "ca"
        self.cluster_dir = self.state_dir / "clusters" / CLUSTER_NAME
        self.runs: list[WorkloadRun] = []
        self.ca: ManagedProcess | None = None
        self.ca_addr = ""
        self.ca_monitoring = ""
        self.tokens: list[ProjectedToken] = []
        self.secrets: dict[str, MountedSecret] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.failed: asyncio.Future[StartupError] | None = None
        self.started_at = datetime.now(UTC)
        self.registry = MeshRegistry()
        self.short_sockets: Path | None = None
        self.ledger: Ledger | None = None
        self.wrote_state = False

    # ------------------------------------------------------------------------------ start
    async def start(self) -> None:
        self.failed = asyncio.get_running_loop().create_future()
        self._prepare_state_dir()
        self._init_cluster()
        self._allocate()
        await self._start_ca()
        self._publish_roots()
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
        if self.ca is not None:
            self._spawn(self._watch_exit(self.ca))

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

    def _init_cluster(self) -> None:
        if not (self.cluster_dir / "cluster.yaml").exists():
            init_cluster_dir(self.cluster_dir, name=CLUSTER_NAME, now=self.clock.now())
        self.signer = load_cluster_signer(self.cluster_dir)
        self.progress(f"cluster token issuer [cyan]{CLUSTER_NAME}[/] ({self.cluster_dir})")

    def _allocate(self) -> None:
        ports = PortAllocator()
        try:
            self.ca_monitoring = f"{LOOPBACK}:{ports.take()}"
            entries: list[WorkloadEntry] = []
            for w in self.plan.workloads:
                bindings = tuple(
                    PortBinding(
                        p.port,
                        ports.take(),
                        ports.take(),
                        p.protocol,
                        p.name,
                    )
                    for p in w.port_specs
                )
                entry = WorkloadEntry(
                    w.name,
                    w.namespace,
                    w.service_account,
                    dict(w.labels),
                    bindings,
                    self.options.trust_domain,
                )
                entries.append(entry)
                mounted = (
                    self.state_dir / "mounted" / w.namespace / f"istio.{w.service_account}"
                    if w.mount_mtls_certs
                    else None
                )
                self.runs.append(
                    WorkloadRun(
                        w,
                        entry,
                        self.state_dir / "workloads" / w.namespace / w.name,
                        ports.take(),
                        ports.take(),
                        ports.take(),
                        "mounted" if w.mount_mtls_certs else "csr",
                        mounted,
                    )
                )
            self.registry = MeshRegistry(tuple(entries))
        finally:
            ports.release()
        for run in self.runs:
            if len(str(run.directory / "workload.sock")) > MAX_SOCKET_PATH:
                # AF_UNIX paths are limited to 107 bytes: deep mesh directories get their
                # sockets in a short private directory instead (removed on stop)
                run.socket_dir = (
                    self._short_socket_root() / f"{run.entry.namespace}.{run.entry.name}"
                )
                run.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    # ------------------------------------------------------------------------------ CA
    async def _start_ca(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "meshsec",
            "ca",
            "serve",
            "--data-dir",
            str(self.ca_dir),
            "--cluster",
            str(self.cluster_dir),
            "--listen",
            f"{LOOPBACK}:0",
            "--mtls-listen",
            f"{LOOPBACK}:0",
            "--monitoring",
            self.ca_monitoring,
            "--trust-domain",
            self.options.trust_domain,
            "--workers",
            str(self.options.ca_workers),
        ]
        self.ca = ManagedProcess(
            "CA",
            argv,
            self.state_dir / "ca.log",
            self._env({"MESHSEC_LOG_LEVEL": self.options.log_level}),
            capture_stdout=True,
        )
        await self.ca.start()
        deadline = self.clock.monotonic() + self.options.ready_timeout
        while True:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                raise self.ca.failure(f"not ready after {self.options.ready_timeout:.0f}s")
            try:
                line = await self.ca.read_line(remaining)
            except TimeoutError:
                continue
            if not line:
                await self.ca.exited.wait()
                raise self.ca.failure(f"exited with code {self.ca.returncode} while starting")
            if line.startswith(CA_READY_PREFIX):
                self.ca_addr = line[len(CA_READY_PREFIX) :].split()[0]
                break
        self._spawn(self.ca.forward_stdout())
        self.progress(f"CA ready on [cyan]{self.ca_addr}[/] (TLS), data in {self.ca_dir}")

    def _short_socket_root(self) -> Path:
        if self.short_sockets is None:
            self.short_sockets = Path(tempfile.mkdtemp(prefix="meshsec-up-"))
        return self.short_sockets

    def _publish_roots(self) -> None:
        root = (self.ca_dir / "root-cert.pem").read_bytes()
        for ns in self.plan.namespaces:
            path = self.root_path(ns)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, root, PUBLIC_MODE)
        self.progress(
            f"root published to {len(self.plan.namespaces)} namespace(s) "
            f"({self.state_dir / 'roots'}/<ns>/root-cert.pem)"
        )

    def root_path(self, namespace: str) -> Path:
        return self.state_dir / "roots" / namespace / "root-cert.pem"

    # ------------------------------------------------------------------------------ credentials
    def _start_credentials(self) -> None:
        material = None
        for run in self.runs:
            if run.cert_model == "csr":
                token = ProjectedToken(
                    self.signer,
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
            if material is None:
                material = load_or_create_self_signed(
                    self.ca_dir,
                    trust_domain=TrustDomain.parse(self.options.trust_domain),
                    now=self.clock.now(),
                    ttl=timedelta(days=3650),
                )
            if self.ledger is None:
                self.ledger = Ledger(self.ca_dir / LEDGER_FILE)
            secret = MountedSecret(
                material,
                run.mounted_dir,
                run.entry.namespace,
                run.entry.service_account,
                self.options.trust_domain,
                self.options.mounted_cert_ttl,
                self.clock,
                on_issued=self.ledger.record,
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

    def _write_sidecar_configs(self) -> None:
        for run in self.runs:
            run.directory.mkdir(parents=True, exist_ok=True)
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
        await asyncio.gather(*(wait(run, proc) for run, proc in procs))
        took = self.clock.monotonic() - started
        self.progress(f"{len(procs)} {kind}(s) ready ({took:.1f}s)")

    def _agent_process(self, run: WorkloadRun) -> ManagedProcess:
        return build_agent_process(
            run,
            self.options,
            self.environ,
            ca_addr=self.ca_addr,
            ca_root=self.root_path(run.entry.namespace),
            cluster=CLUSTER_NAME,
        )

    def _sidecar_process(self, run: WorkloadRun) -> ManagedProcess:
        return build_sidecar_process(run, self.options, self.environ)

    def _app_process(self, run: WorkloadRun) -> ManagedProcess:
        return build_app_process(run, self.environ, cwd=self.plan.directory.resolve())

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        return build_child_env(self.environ, extra)

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
        return {
            "version": 1,
            "mesh_dir": str(self.mesh_dir),
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "trust_domain": self.options.trust_domain,
            "ca": {
                "addr": self.ca_addr,
                "monitoring": self.ca_monitoring,
                "data_dir": str(self.ca_dir),
                "root_pem_path": str(self.ca_dir / "root-cert.pem"),
            },
            "workloads": [
                {
                    "name": run.entry.name,
                    "namespace": run.entry.namespace,
                    "service_account": run.entry.service_account,
                    "spiffe_id": run.entry.spiffe_id,
                    "cluster": CLUSTER_NAME,
                    "cert_model": run.cert_model,
                    "agent_status": f"{LOOPBACK}:{run.agent_status_port}",
                    "proxy_admin": f"{LOOPBACK}:{run.admin_port}",
                    "http_proxy": f"{LOOPBACK}:{run.http_proxy_port}",
                    "ports": [
                        {
                            "port": b.port,
                            "app_port": b.app_port,
                            "inbound": b.inbound,
                            "protocol": b.protocol,
                        }
                        for b in run.entry.ports
                    ],
                    "cert_dir": str(run.cert_dir),
                    "log_dir": str(run.directory),
                    "labels": dict(run.entry.labels),
                    **(
                        {"mounted_dir": str(run.mounted_dir)} if run.mounted_dir is not None else {}
                    ),
                }
                for run in self.runs
            ],
        }

    def run_for(self, ref: str) -> WorkloadRun | None:
        name, _, namespace = ref.partition(".")
        return next(
            (r for r in self.runs if r.entry.name == name and r.entry.namespace == namespace),
            None,
        )

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
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)
            self.ledger = None
        if self.ca is not None:
            await self.ca.stop()
        for run in self.runs:
            for name in ("sds.sock", "workload.sock"):
                (run.sockets / name).unlink(missing_ok=True)
        if self.short_sockets is not None:
            shutil.rmtree(self.short_sockets, ignore_errors=True)
        if self.wrote_state:  # never remove another running mesh's state file
            (self.state_dir / "state.json").unlink(missing_ok=True)


__all__ = ["CLUSTER_NAME", "STATE_DIR", "MeshRuntime", "UpOptions", "WorkloadRun", "http_get"]
