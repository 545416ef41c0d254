"""What each child process of the local mesh runs: argv, environment, ports, paths.

Children inherit the user's environment minus anything that would re-configure the agent, the
sidecar or an application's proxy behind the flags ``meshsec up`` passes
(:func:`build_child_env`).
"""

from __future__ import annotations

import random
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from meshsec.core.policy.model import Workload
from meshsec.mesh.processes import ManagedProcess
from meshsec.proxy.registry import LOOPBACK, WorkloadEntry

# Variables a child must not inherit from the user's shell: they would re-configure the agent
# or the sidecar behind the flags meshsec up passes (flags win, but not every setting is a flag).
_SCRUBBED_PREFIXES = ("MESHSEC_", "ISTIO_", "SPIFFE_", "PILOT_")
_SCRUBBED = {
    "CA_ADDR",
    "CA_ROOT_CA",
    "OUTPUT_CERTS",
    "FILE_MOUNTED_CERTS",
    "TRUST_DOMAIN",
    "SECRET_TTL",
    "PROV_CERT",
    "POD_NAMESPACE",
    "SERVICE_ACCOUNT",
    "ECC_SIGNATURE_ALGORITHM",
    "ECC_CURVE",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "PORT",
}


def build_child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without mesh/proxy settings, plus ``extra``."""
    env = {
        k: v for k, v in base.items() if k not in _SCRUBBED and not k.startswith(_SCRUBBED_PREFIXES)
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class UpOptions:
    token_ttl: timedelta = timedelta(hours=1)
    workload_cert_ttl: timedelta = timedelta(hours=24)
    mounted_cert_ttl: timedelta = timedelta(hours=24)
    ready_timeout: float = 60.0
    trust_domain: str = "cluster.local"
    ca_workers: int = 1
    log_level: str = "info"


@dataclass
class WorkloadRun:
    """Everything about one running workload."""

    workload: Workload
    entry: WorkloadEntry
    directory: Path
    agent_status_port: int
    admin_port: int
    http_proxy_port: int
    cert_model: str  # "csr" | "mounted"
    mounted_dir: Path | None = None
    cluster: str = "cluster1"
    # its cluster is a remote without a remote secret: the CA will refuse it (not waited on)
    refused_expected: bool = False
    agent: ManagedProcess | None = None
    sidecar: ManagedProcess | None = None
    app: ManagedProcess | None = None

    @property
    def key(self) -> str:
        return self.entry.key

    @property
    def cert_dir(self) -> Path:
        return self.directory / "certs"

    @property
    def token_path(self) -> Path:
        return self.directory / "token"

    socket_dir: Path | None = None

    @property
    def sockets(self) -> Path:
        return self.socket_dir or self.directory


class PortAllocator:
    """Free loopback ports for the mesh's processes, held open until all are chosen.

    The children bind them only after :meth:`release`, so a port must not be one the kernel may
    meanwhile give to somebody's outgoing connection: ports come from below the ephemeral range
    (``net.ipv4.ip_local_port_range``), at random, so two meshes starting at once rarely try the
    same one — and a port in use is skipped.
    """

    LOWEST = 10000
    ATTEMPTS = 200

    def __init__(self, *, lowest: int = LOWEST, ephemeral_start: int | None = None) -> None:
        self._held: list[socket.socket] = []
        self._low = lowest
        self._high = ephemeral_start if ephemeral_start is not None else _ephemeral_start()
        self._random = random.SystemRandom()

    def take(self) -> int:
        """A port below the ephemeral range if one is free after a few tries, else the kernel's."""
        if self._high > self._low:
            for _ in range(self.ATTEMPTS):
                port = self._random.randrange(self._low, self._high)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    sock.close()
                    continue
                self._held.append(sock)
                return port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((LOOPBACK, 0))
        self._held.append(sock)
        return int(sock.getsockname()[1])

    def release(self) -> None:
        for sock in self._held:
            sock.close()
        self._held.clear()


def _ephemeral_start(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """First port of the kernel's ephemeral range (Linux); 32768 when it cannot be read."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def build_agent_process(
    run: WorkloadRun,
    options: UpOptions,
    environ: Mapping[str, str],
    *,
    ca_addr: str,
    ca_root: Path,
    cluster: str,
) -> ManagedProcess:
    """``meshsec agent run`` for ``run``: CSR flow (token + CA root of its namespace) or
    ``FILE_MOUNTED_CERTS`` on its ``istio.<sa>`` directory; writes OUTPUT_CERTS for the sidecar."""
    argv = [
        sys.executable,
        "-m",
        "meshsec",
        "agent",
        "run",
        "--sds-socket",
        str(run.sockets / "sds.sock"),
        "--workload-socket",
        f"unix://{run.sockets / 'workload.sock'}",
        "--output-certs",
        str(run.cert_dir),
        "--status",
        f"{LOOPBACK}:{run.agent_status_port}",
        "--trust-domain",
        options.trust_domain,
        "--log-level",
        options.log_level,
    ]
    if run.cert_model == "mounted":
        argv += ["--file-mounted-certs", "--mounted-certs-dir", str(run.mounted_dir)]
    else:
        argv += [
            "--ca-addr",
            ca_addr,
            "--ca-root",
            str(ca_root),
            "--token-file",
            str(run.token_path),
            "--cluster-id",
            cluster,
            "--secret-ttl",
            f"{int(options.workload_cert_ttl.total_seconds())}s",
        ]
    env = build_child_env(
        environ,
        {
            "POD_NAMESPACE": run.entry.namespace,
            "SERVICE_ACCOUNT": run.entry.service_account,
            "POD_NAME": run.entry.name,
            "ECC_SIGNATURE_ALGORITHM": "ECDSA",
        },
    )
    return ManagedProcess(
        f"agent of {run.key}", argv, run.directory / "agent.log", env, cwd=run.directory
    )


def build_sidecar_process(
    run: WorkloadRun, options: UpOptions, environ: Mapping[str, str]
) -> ManagedProcess:
    argv = [
        sys.executable,
        "-m",
        "meshsec.mesh.sidecar",
        "--config",
        str(run.directory / "sidecar.json"),
        "--log-level",
        options.log_level,
    ]
    return ManagedProcess(
        f"sidecar of {run.key}", argv, run.directory / "proxy.log", build_child_env(environ, {})
    )


def build_app_process(run: WorkloadRun, environ: Mapping[str, str], *, cwd: Path) -> ManagedProcess:
    """The application: ``python`` first means this Python; PORT/PORT_<n>, HTTP_PROXY, identity."""
    w = run.workload
    argv = [sys.executable if a == "python" and i == 0 else a for i, a in enumerate(w.command)]
    proxy = f"http://{LOOPBACK}:{run.http_proxy_port}"
    extra = {
        **dict(w.env),
        "HTTP_PROXY": proxy,
        "http_proxy": proxy,
        "NO_PROXY": "localhost,127.0.0.1",
        "no_proxy": "localhost,127.0.0.1",
        "POD_NAME": run.entry.name,
        "POD_NAMESPACE": run.entry.namespace,
        "SERVICE_ACCOUNT": run.entry.service_account,
        "MESHSEC_WORKLOAD": run.key,
        "PYTHONUNBUFFERED": "1",
    }
    for binding in run.entry.ports:
        extra[f"PORT_{binding.port}"] = str(binding.app_port)
    if run.entry.ports:
        extra["PORT"] = str(run.entry.ports[0].app_port)
    return ManagedProcess(
        f"application of {run.key}",
        argv,
        run.directory / "app.log",
        build_child_env(environ, {}) | dict(extra),
        cwd=cwd,
    )


__all__ = [
    "PortAllocator",
    "UpOptions",
    "WorkloadRun",
    "build_agent_process",
    "build_app_process",
    "build_child_env",
    "build_sidecar_process",
]
