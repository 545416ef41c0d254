"""The service registry the policy-aware sidecar resolves names with.

A :class:`Registry` is the set of workloads the sidecar knows, each with its labels, service
account, the address its sidecar listens on and its ports (:class:`PortBinding`: the port as
declared — what Services target and policies name —, where the application listens, where the
workload's sidecar listens for peers). Services come from the policy snapshot; a Service selects
workloads in its namespace by labels, and each selected workload that has the Service's target
port becomes an endpoint at ``<address>:<inbound>``.

Two sources build it:

* ``meshsec up`` writes it into each sidecar's ``sidecar.json`` (loopback, ports it assigned);
* ``meshsec proxy run --config-dir`` builds it from the directory's workloads
  (:func:`build_registry`): every Workload/Pod annotated ``meshsec.io/address: <IP or host>``
  is an endpoint at that address on each declared port (the sidecar there listens on the
  workload port, as a pod's sidecar does behind its pod IP). Workloads without the annotation
  are known for policy but not reachable.

Host names are resolved the way a pod's resolver does it: ``name`` (the caller's namespace),
``name.ns``, ``name.ns.svc``, ``name.ns.svc.cluster.local``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshsec.core.policy.model import Service, ServicePort, Workload
from meshsec.core.policy.snapshot import PolicySnapshot

CLUSTER_SUFFIX = "svc.cluster.local"
LOOPBACK = "127.0.0.1"
ADDRESS_ANNOTATION = "meshsec.io/address"


@dataclass(frozen=True)
class PortBinding:
    """A workload port: ``port`` as declared, where the app listens, where the sidecar listens."""

    port: int
    app_port: int
    inbound: int
    protocol: str = "tcp"  # "http" | "tcp"
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "app_port": self.app_port,
            "inbound": self.inbound,
            "protocol": self.protocol,
            "name": self.name,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PortBinding:
        return cls(
            int(data["port"]),
            int(data["app_port"]),
            int(data["inbound"]),
            str(data.get("protocol", "tcp")),
            str(data.get("name", "")),
        )


@dataclass(frozen=True)
class WorkloadEntry:
    """One workload as the registry knows it (``address``: where its sidecar listens)."""

    name: str
    namespace: str
    service_account: str
    labels: Mapping[str, str]
    ports: tuple[PortBinding, ...]
    trust_domain: str = "cluster.local"
    address: str = LOOPBACK
    cluster: str = ""  # meshsec up with several clusters: one name may run in each

    @property
    def key(self) -> str:
        where = f"@{self.cluster}" if self.cluster else ""
        return f"{self.namespace}/{self.name}{where}"

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def binding(self, port: int | str) -> PortBinding | None:
        for b in self.ports:
            if b.port == port or (isinstance(port, str) and port and b.name == port):
                return b
        return None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "service_account": self.service_account,
            "labels": dict(self.labels),
            "ports": [p.to_json() for p in self.ports],
            "trust_domain": self.trust_domain,
        }
        if self.address != LOOPBACK:
            data["address"] = self.address
        if self.cluster:
            data["cluster"] = self.cluster
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkloadEntry:
        return cls(
            str(data["name"]),
            str(data["namespace"]),
            str(data["service_account"]),
            {str(k): str(v) for k, v in dict(data.get("labels") or {}).items()},
            tuple(PortBinding.from_json(p) for p in data.get("ports") or ()),
            str(data.get("trust_domain", "cluster.local")),
            str(data.get("address", LOOPBACK)),
            str(data.get("cluster", "")),
        )


@dataclass(frozen=True)
class ServiceTarget:
    """A resolved ``host:port``: the Service, its port and the workloads behind it."""

    service: Service
    service_port: ServicePort
    endpoints: tuple[tuple[WorkloadEntry, PortBinding], ...]


@dataclass(frozen=True)
class Registry:
    workloads: tuple[WorkloadEntry, ...] = field(default=())

    def workload(self, namespace: str, name: str, cluster: str = "") -> WorkloadEntry | None:
        for w in self.workloads:
            if (
                w.namespace == namespace
                and w.name == name
                and (not cluster or w.cluster == cluster)
            ):
                return w
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [w.to_json() for w in self.workloads]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> Registry:
        return cls(tuple(WorkloadEntry.from_json(w) for w in data))


def build_workload_entry(
    workload: Workload, trust_domain: str, ports: tuple[PortBinding, ...] | None = None
) -> WorkloadEntry:
    """The registry entry of a workload from the config; ``ports`` default to its declared
    ports with the sidecar on the same port (``app_port`` is only known to its own sidecar)."""
    if ports is None:
        specs = {spec.port: spec for spec in workload.port_specs}
        ports = tuple(
            PortBinding(
                p,
                p,
                p,
                specs[p].protocol.lower() if p in specs else "tcp",
                specs[p].name if p in specs else "",
            )
            for p in workload.ports
        )
    return WorkloadEntry(
        workload.name,
        workload.namespace,
        workload.service_account,
        dict(workload.labels),
        ports,
        trust_domain,
        workload.meta.annotations.get(ADDRESS_ANNOTATION, "").strip() or LOOPBACK,
    )


def build_registry(snapshot: PolicySnapshot, trust_domain: str) -> Registry:
    """Every workload of the snapshot annotated with ``meshsec.io/address`` (pure)."""
    return Registry(
        tuple(
            build_workload_entry(w, trust_domain)
            for w in snapshot.workloads
            if w.meta.annotations.get(ADDRESS_ANNOTATION, "").strip()
        )
    )


def split_service_host(host: str, client_namespace: str) -> tuple[str, str] | None:
    """``(name, namespace)`` of a service host name, or None if it is not a cluster name."""
    host = host.rstrip(".").lower()
    if host.endswith("." + CLUSTER_SUFFIX):
        host = host[: -len(CLUSTER_SUFFIX) - 1]
    elif host.endswith(".svc"):
        host = host[:-4]
    parts = host.split(".")
    if len(parts) == 1 and parts[0]:
        return parts[0], client_namespace
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    return None


def resolve_service(
    snapshot: PolicySnapshot,
    registry: Registry,
    host: str,
    port: int,
    *,
    client_namespace: str,
) -> ServiceTarget | None:
    """The Service behind ``host:port`` and its endpoints (None if no such Service port)."""
    split = split_service_host(host, client_namespace)
    if split is None:
        return None
    name, namespace = split
    service = snapshot.service(namespace, name)
    if service is None:
        return None
    service_port = next((p for p in service.ports if p.port == port), None)
    if service_port is None:
        return None
    target = service_port.effective_target_port
    endpoints: list[tuple[WorkloadEntry, PortBinding]] = []
    for workload in registry.workloads:
        if workload.namespace != namespace or not service.selects(workload.labels):
            continue
        binding = workload.binding(target)
        if binding is not None:
            endpoints.append((workload, binding))
    return ServiceTarget(service, service_port, tuple(endpoints))


__all__ = [
    "ADDRESS_ANNOTATION",
    "CLUSTER_SUFFIX",
    "LOOPBACK",
    "PortBinding",
    "Registry",
    "ServiceTarget",
    "WorkloadEntry",
    "build_registry",
    "build_workload_entry",
    "resolve_service",
    "split_service_host",
]
