"""Reader side of the ``meshsec up`` state contract (``<mesh>/.meshsec/state.json``).

The mesh runtime writes the file (see the contract in docs/cli.md, "Operator commands"); the
operator commands (``proxy-config``, ``describe``, ``check``, ``status``) read it to find the
workloads and the admin/status ports of their agents and proxies.

Finding the file: ``--mesh DIR`` (or ``MESHSEC_MESH_DIR``) names the mesh directory (or the
``.meshsec`` directory, or the state file itself); without it the nearest
``.meshsec/state.json`` from the current directory upward is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer

from meshsec.errors import MeshsecError
from meshsec.runtime.pids import process_alive

STATE_DIR = ".meshsec"
STATE_FILE = "state.json"
SUPPORTED_VERSION = 1
MAX_STATE_BYTES = 16 * 1024 * 1024

MeshOption = Annotated[
    Path | None,
    typer.Option(
        "--mesh",
        envvar="MESHSEC_MESH_DIR",
        help="Mesh directory run by `meshsec up` (default: nearest .meshsec/state.json upward).",
        show_default=False,
    ),
]


class MeshStateError(MeshsecError):
    """state.json is missing or unusable (exit 3: the mesh is not running or not found)."""


class UnknownWorkload(MeshsecError):
    """A workload reference names nothing (or several things); lists what is known (exit 2)."""

    def __init__(self, ref: str, reason: str, known: Sequence[str]) -> None:
        self.ref = ref
        self.known = tuple(known)
        listing = ", ".join(known) if known else "<none>"
        super().__init__(f"{reason}; known workloads: {listing}")


@dataclass(frozen=True)
class PortState:
    port: int
    app_port: int | None = None
    inbound: int | None = None
    protocol: str = "tcp"


@dataclass(frozen=True)
class WorkloadState:
    name: str
    namespace: str
    service_account: str
    spiffe_id: str
    cluster: str = ""
    cert_model: str = "csr"
    agent_status: str | None = None
    proxy_admin: str | None = None
    http_proxy: str | None = None
    ports: tuple[PortState, ...] = ()
    cert_dir: str | None = None
    log_dir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}.{self.namespace}"


@dataclass(frozen=True)
class CaState:
    addr: str | None = None
    monitoring: str | None = None
    data_dir: str | None = None
    root_pem_path: str | None = None


@dataclass(frozen=True)
class MeshState:
    path: Path
    mesh_dir: Path
    version: int
    pid: int | None
    started_at: str | None
    trust_domain: str
    ca: CaState
    workloads: tuple[WorkloadState, ...]


def find_state_file(mesh: Path | None, *, cwd: Path) -> Path:
    """The state file for ``--mesh`` (dir, .meshsec dir or file) or the nearest one upward."""
    if mesh is not None:
        candidates = [mesh / STATE_DIR / STATE_FILE, mesh / STATE_FILE, mesh]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        if not mesh.exists():
            raise MeshStateError(f"--mesh {mesh}: no such directory")
        raise MeshStateError(
            f"--mesh {mesh}: no {STATE_DIR}/{STATE_FILE} — is the mesh running? "
            f"start it with `meshsec up {mesh}`"
        )
    for directory in (cwd, *cwd.parents):
        candidate = directory / STATE_DIR / STATE_FILE
        if candidate.is_file():
            return candidate
    raise MeshStateError(
        f"no {STATE_DIR}/{STATE_FILE} in {cwd} or any parent — is a mesh running? "
        "start one with `meshsec up DIR`, or pass --mesh DIR (or set MESHSEC_MESH_DIR)"
    )


def load_mesh_state(path: Path) -> MeshState:
    """Read and validate ``state.json`` (errors name the file and the field)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except OSError as exc:
        raise MeshStateError(f"{path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_STATE_BYTES:
        raise MeshStateError(f"{path}: larger than {MAX_STATE_BYTES} bytes, refusing to read it")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MeshStateError(f"{path}: not valid JSON ({exc})") from None
    return parse_mesh_state(data, path=path)


def parse_mesh_state(data: Any, *, path: Path) -> MeshState:
    reader = _Reader(path)
    top = reader.mapping(data, "")
    version = reader.integer(top, "version", "")
    if version != SUPPORTED_VERSION:
        raise MeshStateError(
            f"{path}: state version {version} is not supported (this meshsec reads version "
            f"{SUPPORTED_VERSION}); use the meshsec that started the mesh"
        )
    ca_raw = reader.mapping(top.get("ca", {}), "ca")
    ca = CaState(
        addr=reader.optional_str(ca_raw, "addr", "ca."),
        monitoring=reader.optional_str(ca_raw, "monitoring", "ca."),
        data_dir=reader.optional_str(ca_raw, "data_dir", "ca."),
        root_pem_path=reader.optional_str(ca_raw, "root_pem_path", "ca."),
    )
    workloads_raw = top.get("workloads", [])
    if not isinstance(workloads_raw, list):
        raise MeshStateError(f"{path}: workloads: expected a list")
    workloads = tuple(reader.workload(item, i) for i, item in enumerate(workloads_raw))
    pid = top.get("pid")
    return MeshState(
        path=path,
        mesh_dir=Path(reader.optional_str(top, "mesh_dir", "") or path.parent.parent),
        version=version,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        started_at=reader.optional_str(top, "started_at", ""),
        trust_domain=reader.optional_str(top, "trust_domain", "") or "cluster.local",
        ca=ca,
        workloads=workloads,
    )


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> MeshStateError:
        return MeshStateError(f"{self.path}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where or "top level", "expected an object")
        return value

    def integer(self, obj: Mapping[str, Any], key: str, prefix: str) -> int:
        value = obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(prefix + key, f"expected an integer, got {value!r}")
        return value

    def string(self, obj: Mapping[str, Any], key: str, prefix: str) -> str:
        value = obj.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(prefix + key, f"expected a non-empty string, got {value!r}")
        return value

    def optional_str(self, obj: Mapping[str, Any], key: str, prefix: str) -> str | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(prefix + key, f"expected a string, got {value!r}")
        return value

    def workload(self, value: Any, index: int) -> WorkloadState:
        where = f"workloads[{index}]."
        item = self.mapping(value, where.rstrip("."))
        ports: list[PortState] = []
        for j, port in enumerate(item.get("ports") or []):
            entry = self.mapping(port, f"{where}ports[{j}]")
            app_port, inbound = entry.get("app_port"), entry.get("inbound")
            ports.append(
                PortState(
                    port=self.integer(entry, "port", f"{where}ports[{j}]."),
                    app_port=app_port if isinstance(app_port, int) else None,
                    inbound=inbound if isinstance(inbound, int) else None,
                    protocol=str(entry.get("protocol") or "tcp"),
                )
            )
        labels = item.get("labels") or {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise self.fail(where + "labels", "expected an object of strings")
        name = self.string(item, "name", where)
        namespace = self.string(item, "namespace", where)
        service_account = self.optional_str(item, "service_account", where) or "default"
        return WorkloadState(
            name=name,
            namespace=namespace,
            service_account=service_account,
            spiffe_id=self.optional_str(item, "spiffe_id", where) or "",
            cluster=self.optional_str(item, "cluster", where) or "",
            cert_model=self.optional_str(item, "cert_model", where) or "csr",
            agent_status=self.optional_str(item, "agent_status", where),
            proxy_admin=self.optional_str(item, "proxy_admin", where),
            http_proxy=self.optional_str(item, "http_proxy", where),
            ports=tuple(ports),
            cert_dir=self.optional_str(item, "cert_dir", where),
            log_dir=self.optional_str(item, "log_dir", where),
            labels=dict(labels),
        )


def require_running(state: MeshState) -> None:
    """Raise when the runtime that wrote ``state`` is gone (the file is stale)."""
    if state.pid is not None and not process_alive(state.pid):
        raise MeshStateError(
            f"the mesh in {state.mesh_dir} is not running: {state.path} was written by pid "
            f"{state.pid} (started {state.started_at or 'at an unknown time'}), which is gone; "
            f"start it with `meshsec up {state.mesh_dir}`"
        )


class Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...


N = TypeVar("N", bound=Named)


def resolve_workload(ref: str, workloads: Iterable[N]) -> N:
    """``name`` or ``name.namespace`` (istioctl style; the last dot splits) → the workload."""
    items = list(workloads)
    known = sorted(f"{w.name}.{w.namespace}" for w in items)
    exact = [w for w in items if w.name == ref]
    if len(exact) == 1:
        return exact[0]
    name, dot, namespace = ref.rpartition(".")
    if dot and name:
        qualified = [w for w in items if w.name == name and w.namespace == namespace]
        if qualified:
            return qualified[0]
    if len(exact) > 1:
        raise UnknownWorkload(
            ref,
            f"workload {ref!r} exists in several namespaces "
            f"({', '.join(sorted(w.namespace for w in exact))}); say which with {ref}.<namespace>",
            known,
        )
    raise UnknownWorkload(ref, f"no workload {ref!r} in the mesh", known)
