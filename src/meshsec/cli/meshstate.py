"""Reader side of the ``meshsec up`` state contract (``<mesh>/.meshsec/state.json``).

The mesh runtime writes the file (see the contract in docs/cli.md, "Operator commands"); the
operator commands (``proxy-config``, ``describe``, ``check``, ``status``) read it to find the
workloads, the clusters they run in, and the admin/status ports of their agents and proxies.

A state file without a ``clusters`` list (single-cluster meshes, older writers) reads as one
primary ``cluster1`` whose CA is the top-level ``ca``. Workload references are
``<name>[.<namespace>][@<cluster>]``, resolved by :mod:`meshsec.mesh.refs` exactly as
``meshsec up`` expectations are (docs/cli.md "Workload references across clusters").

Finding the file: ``--mesh DIR`` (or ``MESHSEC_MESH_DIR``) names the mesh directory (or the
``.meshsec`` directory, or the state file itself); without it the nearest
``.meshsec/state.json`` from the current directory upward is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from meshsec.errors import MeshsecError
from meshsec.mesh.refs import ClusterScoped, format_ref, parse_workload_ref, resolve_workload_ref
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


DEFAULT_CLUSTER = "cluster1"
DEFAULT_NETWORK = "network1"
PRIMARY, REMOTE = "primary", "remote"
CERT_EXPECTED, CERT_REFUSED_EXPECTED = "expected", "refused-expected"


class UnknownWorkload(MeshsecError):
    """A workload reference names nothing (or several things); lists what fits (exit 2)."""

    def __init__(
        self, ref: str, reason: str, known: Sequence[str] = (), *, what: str = "candidates"
    ) -> None:
        self.ref = ref
        self.known = tuple(known)
        super().__init__(f"{reason}; {what}: {', '.join(known)}" if known else reason)


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
    ca_addr: str | None = None  # the CA its agent talks to
    root_pem_path: str | None = None  # the root bundle its agent was given
    certificate: str = CERT_EXPECTED  # "refused-expected": its cluster has no remote secret
    mounted_dir: str | None = None
    show_cluster: bool = field(default=False, compare=False)  # the mesh has several clusters

    @property
    def ref(self) -> str:
        """How output names it: ``name.ns``, plus ``@cluster`` in a multi-cluster mesh."""
        return self.qualified_ref if self.show_cluster else f"{self.name}.{self.namespace}"

    @property
    def qualified_ref(self) -> str:
        return f"{self.name}.{self.namespace}@{self.cluster}"

    @property
    def refused_expected(self) -> bool:
        return self.certificate == CERT_REFUSED_EXPECTED


@dataclass(frozen=True)
class CaState:
    addr: str | None = None
    monitoring: str | None = None
    data_dir: str | None = None
    root_pem_path: str | None = None
    mtls_addr: str | None = None


@dataclass(frozen=True)
class ClusterState:
    """One cluster of the mesh (a ``kind: Cluster`` manifest, or the implicit ``cluster1``)."""

    name: str
    role: str = PRIMARY
    network: str = DEFAULT_NETWORK
    ca_cluster: str = ""  # whose CA its workloads use (itself for a primary)
    ca: CaState | None = None  # primaries only
    api_server: str | None = None
    cluster_dir: str | None = None
    remote_secret: str | None = None  # its secret in the primary CA's --remote-secrets dir
    root_pem_path: str | None = None  # the root bundle published to its namespaces
    ca_root: str | None = None  # "shared" (an intermediate of the mesh root) | "own"

    @property
    def is_remote(self) -> bool:
        return self.role == REMOTE

    @property
    def role_text(self) -> str:
        """``primary`` or ``remote of cluster1`` (the cluster whose CA it uses)."""
        if self.is_remote:
            return f"remote of {self.ca_cluster or '<unknown primary>'}"
        return self.role


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
    clusters: tuple[ClusterState, ...] = ()

    @property
    def multi_cluster(self) -> bool:
        return len(self.clusters) > 1

    def cluster(self, name: str) -> ClusterState | None:
        return next((c for c in self.clusters if c.name == name), None)

    def ca_cluster_of(self, workload: WorkloadState) -> ClusterState | None:
        """The primary whose CA signs for ``workload`` (its own cluster for a primary)."""
        own = self.cluster(workload.cluster)
        if own is None:
            return None
        return self.cluster(own.ca_cluster or own.name) or own


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
    ca = reader.ca(top.get("ca") or {}, "ca")
    workloads_raw = top.get("workloads", [])
    if not isinstance(workloads_raw, list):
        raise MeshStateError(f"{path}: workloads: expected a list")
    workloads = tuple(reader.workload(item, i) for i, item in enumerate(workloads_raw))
    clusters_raw = top.get("clusters")
    if clusters_raw is not None and not isinstance(clusters_raw, list):
        raise MeshStateError(f"{path}: clusters: expected a list")
    if clusters_raw:
        clusters = tuple(reader.cluster(item, i) for i, item in enumerate(clusters_raw))
    else:
        clusters = build_implicit_clusters(workloads, ca)
    workloads = reader.place_workloads(workloads, clusters, ca)
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
        clusters=clusters,
    )


def build_implicit_clusters(
    workloads: Sequence[WorkloadState], ca: CaState
) -> tuple[ClusterState, ...]:
    """No ``clusters`` list: one primary per cluster name the workloads use (``cluster1`` when
    they name none), each with the top-level CA — what single-cluster writers mean."""
    names = list(dict.fromkeys(w.cluster for w in workloads if w.cluster)) or [DEFAULT_CLUSTER]
    return tuple(
        ClusterState(name=n, ca_cluster=n, ca=ca, root_pem_path=ca.root_pem_path) for n in names
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

    def ca(self, value: Any, where: str) -> CaState:
        raw = self.mapping(value, where)
        prefix = where + "."
        return CaState(
            addr=self.optional_str(raw, "addr", prefix),
            monitoring=self.optional_str(raw, "monitoring", prefix),
            data_dir=self.optional_str(raw, "data_dir", prefix),
            root_pem_path=self.optional_str(raw, "root_pem_path", prefix),
            mtls_addr=self.optional_str(raw, "mtls_addr", prefix),
        )

    def cluster(self, value: Any, index: int) -> ClusterState:
        where = f"clusters[{index}]."
        item = self.mapping(value, where.rstrip("."))
        name = self.string(item, "name", where)
        role = self.optional_str(item, "role", where) or PRIMARY
        if role not in (PRIMARY, REMOTE):
            raise self.fail(where + "role", f"expected {PRIMARY!r} or {REMOTE!r}, got {role!r}")
        ca_raw = item.get("ca")
        return ClusterState(
            name=name,
            role=role,
            network=self.optional_str(item, "network", where) or DEFAULT_NETWORK,
            ca_cluster=self.optional_str(item, "ca_cluster", where) or name,
            ca=None if ca_raw is None else self.ca(ca_raw, where + "ca"),
            api_server=self.optional_str(item, "api_server", where),
            cluster_dir=self.optional_str(item, "cluster_dir", where),
            remote_secret=self.optional_str(item, "remote_secret", where),
            root_pem_path=self.optional_str(item, "root_pem_path", where),
            ca_root=self.optional_str(item, "ca_root", where),
        )

    def place_workloads(
        self,
        workloads: tuple[WorkloadState, ...],
        clusters: tuple[ClusterState, ...],
        ca: CaState,
    ) -> tuple[WorkloadState, ...]:
        """Fill each workload's cluster, CA address and root from its cluster when the writer
        left them out; a workload in a cluster the file does not list is refused."""
        by_name = {c.name: c for c in clusters}
        if len(by_name) != len(clusters):
            raise self.fail("clusters", "a cluster name appears twice")
        known = ", ".join(by_name) or "<none>"
        placed: list[WorkloadState] = []
        for index, w in enumerate(workloads):
            name = w.cluster or clusters[0].name
            own = by_name.get(name)
            if own is None:
                raise self.fail(
                    f"workloads[{index}].cluster", f"{name!r} is not in clusters ({known})"
                )
            signer = by_name.get(own.ca_cluster, own)
            signer_ca = signer.ca or (ca if signer is clusters[0] else None)
            placed.append(
                replace(
                    w,
                    cluster=name,
                    ca_addr=w.ca_addr or (signer_ca.addr if signer_ca else None),
                    root_pem_path=w.root_pem_path
                    or own.root_pem_path
                    or (signer_ca.root_pem_path if signer_ca else None),
                    show_cluster=len(clusters) > 1,
                )
            )
        return tuple(placed)

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
            ca_addr=self.optional_str(item, "ca_addr", where),
            root_pem_path=self.optional_str(item, "root_pem_path", where),
            certificate=self.optional_str(item, "certificate", where) or CERT_EXPECTED,
            mounted_dir=self.optional_str(item, "mounted_dir", where),
        )


def require_running(state: MeshState) -> None:
    """Raise when the runtime that wrote ``state`` is gone (the file is stale)."""
    if state.pid is not None and not process_alive(state.pid):
        raise MeshStateError(
            f"the mesh in {state.mesh_dir} is not running: {state.path} was written by pid "
            f"{state.pid} (started {state.started_at or 'at an unknown time'}), which is gone; "
            f"start it with `meshsec up {state.mesh_dir}`"
        )


N = TypeVar("N", bound=ClusterScoped)


def resolve_workload(ref: str, workloads: Iterable[N], clusters: Iterable[str] = ()) -> N:
    """``name[.namespace][@cluster]`` → the workload, by the rules of ``meshsec up``
    expectations (:mod:`meshsec.mesh.refs`, docs/cli.md): without ``@cluster`` the
    reference must match exactly one workload across all clusters. Errors (exit 2) list the
    candidates in qualified form, or the known workloads / clusters."""
    items = list(workloads)
    parsed = parse_workload_ref(ref)
    if isinstance(parsed, str):
        raise UnknownWorkload(ref, f"{ref!r} is not a workload reference: {parsed}")
    names = list(dict.fromkeys([*clusters, *(w.cluster for w in items)]))
    if parsed.cluster and parsed.cluster not in names:
        raise UnknownWorkload(
            ref, f"no cluster {parsed.cluster!r} in the mesh", names, what="clusters"
        )
    if parsed.cluster and all(w.cluster != parsed.cluster for w in items):
        raise UnknownWorkload(ref, f"cluster {parsed.cluster!r} runs no workload")
    found = resolve_workload_ref(parsed, items)
    if not isinstance(found, str):
        return found
    matches = [
        w
        for w in items
        if w.name == parsed.name
        and (not parsed.namespace or w.namespace == parsed.namespace)
        and (not parsed.cluster or w.cluster == parsed.cluster)
    ]
    qualified = len(names) > 1
    candidates = sorted(
        format_ref(w.name, w.namespace, w.cluster, qualified=qualified) for w in matches
    )
    raise UnknownWorkload(ref, found, candidates)
