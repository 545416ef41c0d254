"""``state.json``: what the operator CLI reads about a running mesh (docs/architecture.md).

Version 1; fields are only ever added. The top-level ``ca`` is the first primary's CA (the
single-cluster readers' view); ``clusters`` describes every cluster, and each workload names its
cluster, the CA its agent talks to, the root bundle it trusts and whether its certificate is
expected to be refused (its cluster is a remote without a remote secret).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from meshsec.mesh.control_plane import ClusterRuntime, ControlPlane
from meshsec.mesh.launch import WorkloadRun
from meshsec.proxy.registry import LOOPBACK

STATE_VERSION = 1
EXPECTED = "expected"
REFUSED_EXPECTED = "refused-expected"


def _ca(c: ClusterRuntime) -> dict[str, Any] | None:
    if not c.spec.is_primary or c.ca_data_dir is None:
        return None
    return {
        "addr": c.ca_addr,
        "mtls_addr": c.ca_mtls_addr,
        "monitoring": c.ca_monitoring,
        "data_dir": str(c.ca_data_dir),
        "root_pem_path": str(c.ca_data_dir / "root-cert.pem"),
        "cacerts": str(c.cacerts) if c.cacerts is not None else None,
        "remote_secrets_dir": (
            str(c.remote_secrets_dir) if c.remote_secrets_dir is not None else None
        ),
        "log": str(c.ca_log) if c.ca_log is not None else None,
    }


def compose_cluster(c: ClusterRuntime) -> dict[str, Any]:
    return {
        "name": c.name,
        "role": c.spec.role,
        "network": c.spec.network,
        "ca_cluster": c.spec.ca_cluster,
        "ca": _ca(c),
        "ca_root": c.issuing.spec.ca_root,  # "shared" | "own": the trust its workloads are in
        "api_server": c.api_url or None,
        "cluster_dir": str(c.cluster_dir),
        "remote_secret": str(c.remote_secret) if c.remote_secret is not None else None,
        "root_pem_path": str(c.root_bundle),
    }


def compose_workload(run: WorkloadRun, cluster: ClusterRuntime) -> dict[str, Any]:
    entry = run.entry
    return {
        "name": entry.name,
        "namespace": entry.namespace,
        "service_account": entry.service_account,
        "spiffe_id": entry.spiffe_id,
        "cluster": run.cluster,
        "cert_model": run.cert_model,
        "certificate": REFUSED_EXPECTED if run.refused_expected else EXPECTED,
        "ca_addr": cluster.issuing.ca_addr,
        "root_pem_path": str(cluster.root_path(entry.namespace)),
        "token_path": str(run.token_path) if run.cert_model == "csr" else None,
        "agent_status": f"{LOOPBACK}:{run.agent_status_port}",
        "proxy_admin": f"{LOOPBACK}:{run.admin_port}",
        "http_proxy": f"{LOOPBACK}:{run.http_proxy_port}",
        "ports": [
            {"port": b.port, "app_port": b.app_port, "inbound": b.inbound, "protocol": b.protocol}
            for b in entry.ports
        ],
        "cert_dir": str(run.cert_dir),
        "log_dir": str(run.directory),
        "labels": dict(entry.labels),
        **({"mounted_dir": str(run.mounted_dir)} if run.mounted_dir is not None else {}),
    }


def compose_state(
    *,
    mesh_dir: Path,
    started_at: datetime,
    trust_domain: str,
    control: ControlPlane,
    runs: Sequence[WorkloadRun],
) -> dict[str, Any]:
    first = control.first_primary
    assert first.ca_data_dir is not None
    return {
        "version": STATE_VERSION,
        "mesh_dir": str(mesh_dir),
        "pid": os.getpid(),
        "started_at": started_at.isoformat().replace("+00:00", "Z"),
        "trust_domain": trust_domain,
        "ca": {
            "addr": first.ca_addr,
            "monitoring": first.ca_monitoring,
            "data_dir": str(first.ca_data_dir),
            "root_pem_path": str(first.ca_data_dir / "root-cert.pem"),
        },
        "clusters": [compose_cluster(c) for c in control.clusters.values()],
        "workloads": [compose_workload(run, control.clusters[run.cluster]) for run in runs],
    }


__all__ = ["EXPECTED", "REFUSED_EXPECTED", "compose_state"]
