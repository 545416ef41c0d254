"""The local mesh's service registry: the proxy's (:mod:`meshsec.proxy.registry`).

``meshsec up`` assigns every workload port two loopback ports — the application's
(``app_port``) and the sidecar's inbound listener in front of it (``inbound``, the "pod IP:port"
peers dial) — and records them in one registry for the whole mesh: the endpoints of every
cluster (``WorkloadEntry.cluster`` set when the mesh declares clusters), each with its service
account for secure naming. It is written into each sidecar's ``sidecar.json`` in the proxy
registry's JSON. Services come from the policy snapshot; host names resolve the way a pod's
resolver does it (``name``, ``name.ns``, ``name.ns.svc``, ``name.ns.svc.cluster.local``).
"""

from __future__ import annotations

from meshsec.proxy.registry import (
    CLUSTER_SUFFIX,
    LOOPBACK,
    PortBinding,
    Registry,
    ServiceTarget,
    WorkloadEntry,
    resolve_service,
    split_service_host,
)

MeshRegistry = Registry

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
