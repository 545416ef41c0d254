"""A mesh directory: manifests for ``meshsec up`` plus the scenario's expectations.

Everything the policy engine reads (Namespace, ServiceAccount, Service, PeerAuthentication,
DestinationRule, AuthorizationPolicy, the ``istio`` ConfigMap) and meshsec's ``Workload`` kind
(``meshsec.io/v1alpha1``: ``spec.serviceAccount``, ``spec.command`` argv, ``spec.env``,
``spec.ports`` with ``protocol: http|tcp``, ``spec.mountMtlsCerts``, ``spec.cluster``) are parsed
by the policy parser, with its diagnostics. On top, :func:`build_mesh_plan` checks what running
the mesh needs (every Workload has a command, its namespace and service account exist, its
cluster is declared, ...), reads the clusters (``kind: Cluster``, :mod:`meshsec.mesh.topology`)
and the ``Expectations`` documents (:mod:`meshsec.mesh.expectations`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshsec.config.sources.files import build_snapshot, read_files
from meshsec.config.sources.yaml_lines import parse_yaml_text
from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.document import SourceDocument
from meshsec.core.policy.model import Workload
from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.mesh.expectations import (
    EXPECTATIONS_KIND,
    OUTSIDE,
    VERDICTS,
    Expectation,
    is_expectations_document,
    parse_expectations,
)
from meshsec.mesh.refs import parse_workload_ref, resolve_workload_ref
from meshsec.mesh.topology import (
    CLUSTER_KIND,
    DEFAULT_CLUSTER,
    IMPLICIT_CLUSTER,
    ClusterSpec,
    invalid_cluster_names,
    parse_clusters,
)

_OWN_KINDS = (EXPECTATIONS_KIND, CLUSTER_KIND)


@dataclass(frozen=True)
class PlacedWorkload:
    """A workload with the cluster it runs in (its ``spec.cluster`` or the default)."""

    name: str
    namespace: str
    cluster: str
    workload: Workload


@dataclass(frozen=True)
class MeshPlan:
    """What ``meshsec up`` runs: the snapshot, the clusters, the workloads, the expectations."""

    directory: Path
    snapshot: PolicySnapshot
    workloads: tuple[Workload, ...]
    expectations: tuple[Expectation, ...]
    diagnostics: tuple[Diagnostic, ...]
    clusters: tuple[ClusterSpec, ...] = (IMPLICIT_CLUSTER,)
    declared_clusters: bool = False  # the directory has kind: Cluster documents

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.level is Level.ERROR)

    @property
    def namespaces(self) -> tuple[str, ...]:
        names = {w.namespace for w in self.workloads} | set(self.snapshot.namespace_names)
        return tuple(sorted(names))

    @property
    def default_cluster(self) -> str:
        """Where a Workload without ``spec.cluster`` runs: the first primary."""
        return next((c.name for c in self.clusters if c.is_primary), DEFAULT_CLUSTER)

    @property
    def qualified(self) -> bool:
        """Workloads are shown ``name.ns@cluster`` (the mesh has several clusters)."""
        return len(self.clusters) > 1

    def cluster(self, name: str) -> ClusterSpec | None:
        return next((c for c in self.clusters if c.name == name), None)

    def cluster_of(self, workload: Workload) -> str:
        return workload.cluster or self.default_cluster

    @property
    def placed(self) -> tuple[PlacedWorkload, ...]:
        return tuple(
            PlacedWorkload(w.name, w.namespace, self.cluster_of(w), w) for w in self.workloads
        )

    def workload(self, ref: str) -> Workload | None:
        """``name.namespace[@cluster]`` → the workload (None if unknown or ambiguous)."""
        parsed = parse_workload_ref(ref)
        if isinstance(parsed, str):
            return None
        found = resolve_workload_ref(parsed, self.placed)
        return None if isinstance(found, str) else found.workload


def load_mesh_plan(directory: Path) -> MeshPlan:
    """Read every manifest under ``directory`` (I/O) and build the plan."""
    contents, problems = read_files([directory])
    snapshot = build_snapshot(contents, problems)
    documents: list[SourceDocument] = []
    for item in contents:
        if item.data is None:
            continue
        try:
            text = item.data.decode("utf-8-sig")
        except UnicodeDecodeError:
            continue  # already a diagnostic of the snapshot
        documents.extend(parse_yaml_text(text, file=item.path).documents)
    return build_mesh_plan(directory, snapshot, documents)


def build_mesh_plan(
    directory: Path, snapshot: PolicySnapshot, documents: Sequence[SourceDocument]
) -> MeshPlan:
    """Check the snapshot for running, read the clusters and the expectations (pure)."""
    diags: list[Diagnostic] = [
        d
        for d in snapshot.diagnostics
        if not (d.code == dg.UNKNOWN_KIND.code and any(k in d.message for k in _OWN_KINDS))
    ]
    declared, cluster_diags = parse_clusters(documents)
    diags.extend(cluster_diags)
    workloads = tuple(w for w in snapshot.workloads if w.source_kind == "Workload")
    plan = MeshPlan(
        directory,
        snapshot,
        workloads,
        (),
        (),
        declared or (IMPLICIT_CLUSTER,),
        bool(declared),
    )
    diags.extend(_check_workloads(snapshot, plan, invalid_cluster_names(documents, declared)))
    expectations: list[Expectation] = []
    for doc in documents:
        if is_expectations_document(doc):
            expectations.extend(parse_expectations(doc, snapshot, plan.placed, diags))
    return MeshPlan(
        directory,
        snapshot,
        workloads,
        tuple(expectations),
        tuple(dg.sort_diagnostics(diags)),
        plan.clusters,
        plan.declared_clusters,
    )


def _at(info: dg.CodeInfo, message: str, workload: Workload, path: str) -> Diagnostic:
    return dg.make(
        info,
        message,
        file=workload.origin.file,
        line=workload.origin.line_of(path),
        path=path,
        resource=workload.ref,
    )


def _check_workloads(
    snapshot: PolicySnapshot, plan: MeshPlan, rejected_clusters: frozenset[str]
) -> Iterable[Diagnostic]:
    workloads = plan.workloads
    if not workloads:
        yield dg.make(
            dg.MISSING_FIELD, "no meshsec.io/v1alpha1 Workload in the directory: nothing to run"
        )
    namespaces = set(snapshot.namespace_names)
    others = [w for w in snapshot.workloads if w.source_kind != "Workload"]
    for other in others:
        yield dg.make(
            dg.UNKNOWN_KIND,
            f"{other.ref} is read for policy analysis only; meshsec up runs meshsec.io/v1alpha1 "
            "Workload objects (they carry the command)",
            file=other.origin.file,
            line=other.origin.line,
            resource=other.ref,
            level=Level.INFO,
        )
    for w in workloads:
        if not w.command:
            yield _at(
                dg.MISSING_FIELD,
                "spec.command is required: the argv list that runs the application "
                "(e.g. [python, app.py]; 'python' means the Python running meshsec)",
                w,
                "spec.command",
            )
        if w.namespace not in namespaces:
            yield _at(
                dg.INVALID_VALUE,
                f"namespace {w.namespace!r} has no Namespace object in the directory; add one "
                "(kubectl would refuse the pod too)",
                w,
                "metadata.namespace",
            )
        accounts = {sa.name for sa in snapshot.service_accounts_in(w.namespace)}
        if w.service_account not in accounts:
            yield _at(
                dg.INVALID_VALUE,
                f"service account {w.namespace}/{w.service_account} has no ServiceAccount object; "
                "the workload's identity would be spiffe://.../sa/"
                f"{w.service_account} — add the ServiceAccount",
                w,
                "spec.serviceAccount",
            )
        for key in w.env:
            if (
                not key
                or not (key[0].isalpha() or key[0] == "_")
                or not all(c.isalnum() or c == "_" for c in key)
            ):
                yield _at(
                    dg.INVALID_VALUE,
                    f"env var name {key!r} is not a valid name ([A-Za-z_][A-Za-z0-9_]*)",
                    w,
                    f"spec.env.{key}",
                )
    yield from _check_clusters(plan, rejected_clusters)
    seen: dict[str, Workload] = {}
    for w in workloads:
        key = f"{w.name}.{w.namespace}@{plan.cluster_of(w)}"
        if key in seen:
            where = f" in cluster {plan.cluster_of(w)}" if plan.declared_clusters else ""
            yield _at(
                dg.DUPLICATE_RESOURCE,
                f"Workload {w.namespace}/{w.name} is defined twice{where}",
                w,
                "metadata.name",
            )
        seen[key] = w


def _check_clusters(plan: MeshPlan, rejected: frozenset[str]) -> Iterable[Diagnostic]:
    names = [c.name for c in plan.clusters]
    for w in plan.workloads:
        placed_in = plan.cluster(plan.cluster_of(w))
        if w.mount_mtls_certs and placed_in is not None and not placed_in.attached:
            yield _at(
                dg.INVALID_VALUE,
                f"spec.mountMtlsCerts in cluster {placed_in.name!r}, which has no remote secret: "
                f"{placed_in.primary}'s CA cannot reach the cluster to write its istio.<sa> "
                "secrets (set remoteSecret: true, or use the CSR flow)",
                w,
                "spec.mountMtlsCerts",
            )
        if not w.cluster or w.cluster in names or w.cluster in rejected:
            continue  # (a rejected Cluster document has its own error)
        if plan.declared_clusters:
            message = (
                f"spec.cluster {w.cluster!r}: no kind: Cluster by that name; clusters: "
                f"{', '.join(names)}"
            )
        else:
            if w.cluster == DEFAULT_CLUSTER:
                continue
            message = (
                f"spec.cluster {w.cluster!r}: the directory declares no kind: Cluster, so the "
                f"mesh is the single cluster {DEFAULT_CLUSTER!r}; declare a Cluster named "
                f"{w.cluster!r} (meshsec.io/v1alpha1)"
            )
        yield _at(dg.INVALID_VALUE, message, w, "spec.cluster")


__all__ = [
    "OUTSIDE",
    "VERDICTS",
    "Expectation",
    "MeshPlan",
    "PlacedWorkload",
    "build_mesh_plan",
    "load_mesh_plan",
]
