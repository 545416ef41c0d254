"""The local mesh's service registry: where each workload's ports listen, and service lookup.

``meshsec up`` assigns every workload port two loopback ports — the application's (``app_port``)
and the sidecar's inbound listener in front of it (``inbound``, the "pod IP:port" peers dial) —
and records them in a :class:`MeshRegistry` (one for the whole mesh: the endpoints of every
cluster, each with its service account for secure naming). Services come from the policy
snapshot (they may be edited live); a Service selects workloads in its namespace by labels,
and each selected workload that has the Service's target port becomes an endpoint at
``127.0.0.1:<inbound>``.

Host names are resolved the way a pod's resolver does it: ``name`` (the caller's namespace),
``name.ns``, ``name.ns.svc``, ``name.ns.svc.cluster.local``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshsec.core.policy.model import Service, ServicePort
from meshsec.core.policy.snapshot import PolicySnapshot

CLUSTER_SUFFIX = "svc.cluster.local"
LOOPBACK = "127.0.0.1"


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
    """One running workload as the registry knows it."""

    name: str
    namespace: str
    service_account: str
    labels: Mapping[str, str]
    ports: tuple[PortBinding, ...]
    trust_domain: str = "cluster.local"
    cluster: str = ""  # set when the mesh declares clusters (one name may run in several)

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
        return {
            "name": self.name,
            "namespace": self.namespace,
            "service_account": self.service_account,
            "labels": dict(self.labels),
            "ports": [p.to_json() for p in self.ports],
            "trust_domain": self.trust_domain,
            **({"cluster": self.cluster} if self.cluster else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkloadEntry:
        return cls(
            str(data["name"]),
            str(data["namespace"]),
            str(data["service_account"]),
            {str(k): str(v) for k, v in dict(data.get("labels") or {}).items()},
            tuple(PortBinding.from_json(p) for p in data.get("ports") or ()),
            str(data.get("trust_domain", "cluster.local")),
            str(data.get("cluster", "")),
        )


@dataclass(frozen=True)
class ServiceTarget:
    """A resolved ``host:port``: the Service, its port and the workloads behind it."""

    service: Service
    service_port: ServicePort
    endpoints: tuple[tuple[WorkloadEntry, PortBinding], ...]


@dataclass(frozen=True)
class MeshRegistry:
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
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> MeshRegistry:
        return cls(tuple(WorkloadEntry.from_json(w) for w in data))


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
    registry: MeshRegistry,
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
    "CLUSTER_SUFFIX",
    "LOOPBACK",
    "MeshRegistry",
    "PortBinding",
    "ServiceTarget",
    "WorkloadEntry",
    "resolve_service",
    "split_service_host",
]
