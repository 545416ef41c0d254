"""Clusters of a mesh directory: meshsec's ``kind: Cluster`` (``meshsec.io/v1alpha1``).

::

    apiVersion: meshsec.io/v1alpha1
    kind: Cluster
    metadata: {name: cluster2}          # DNS-1123 label: the cluster id (ISTIO_META_CLUSTER_ID)
    spec:
      role: remote                      # primary | remote
      network: network1                 # default network1 (recorded; one loopback network here)
      primary: cluster1                 # remote only: whose CA it uses (default: the only primary)
      remoteSecret: true                # remote only: the primary's CA has this cluster's remote
                                        # secret (false = `create-remote-secret` not yet run)
    ---
    kind: Cluster
    metadata: {name: cluster1}
    spec:
      role: primary
      ca: {root: shared}                # primary only: shared (intermediate from the mesh-wide
                                        # root, the default) | own (its own self-signed root)

A Workload picks its cluster with ``spec.cluster`` (default: the first primary). With no
Cluster document the mesh is one primary ``cluster1`` on ``network1`` with a self-signed CA —
exactly the single-cluster mesh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.core.policy.document import DocumentReader, SourceDocument, check_dns1123_label

CLUSTER_KIND = "Cluster"
MESHSEC_API = "meshsec.io/v1alpha1"
DEFAULT_CLUSTER = "cluster1"
DEFAULT_NETWORK = "network1"
ROLES = ("primary", "remote")
ROOTS = ("shared", "own")
CLUSTER_FIELDS = ("apiVersion", "kind", "metadata", "spec")
METADATA_FIELDS = ("name", "labels", "annotations")
SPEC_FIELDS = ("role", "network", "primary", "remoteSecret", "ca")
CA_FIELDS = ("root",)


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    role: str  # "primary" | "remote"
    network: str = DEFAULT_NETWORK
    primary: str = ""  # remote: the primary whose CA its workloads use
    remote_secret: bool = True  # remote: attached to the primary's CA
    ca_root: str = ""  # primary: "shared" | "own"; remote: ""
    file: str = ""
    line: int = 0

    @property
    def is_primary(self) -> bool:
        return self.role == "primary"

    @property
    def ca_cluster(self) -> str:
        """The cluster whose CA signs this cluster's workloads."""
        return self.name if self.is_primary else self.primary

    @property
    def attached(self) -> bool:
        """Whether this cluster's tokens can be checked by its CA (primary, or remote secret)."""
        return self.is_primary or self.remote_secret


# The mesh without Cluster documents: one primary with a self-signed CA (the single cluster).
IMPLICIT_CLUSTER = ClusterSpec(DEFAULT_CLUSTER, "primary", ca_root="own")


def is_cluster_document(doc: SourceDocument) -> bool:
    data = doc.data
    return isinstance(data, dict) and data.get("kind") == CLUSTER_KIND


def invalid_cluster_names(
    documents: Sequence[SourceDocument], valid: Sequence[ClusterSpec]
) -> frozenset[str]:
    """Names of Cluster documents that were rejected (their own diagnostics say why): a
    reference to one is not "no Cluster by that name", and is not reported again."""
    kept = {c.name for c in valid}
    names = set()
    for doc in documents:
        if not is_cluster_document(doc):
            continue
        meta = doc.data.get("metadata") if isinstance(doc.data, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if isinstance(name, str) and name not in kept:
            names.add(name)
    return frozenset(names)


def parse_clusters(
    documents: Sequence[SourceDocument],
) -> tuple[tuple[ClusterSpec, ...], list[Diagnostic]]:
    """Every ``kind: Cluster`` document, checked together (names, roles, primaries)."""
    diags: list[Diagnostic] = []
    parsed: list[tuple[ClusterSpec, DocumentReader, bool]] = []
    for doc in documents:
        if is_cluster_document(doc):
            spec, reader, given = _parse_one(doc)
            if spec is not None:
                parsed.append((spec, reader, given))
            else:
                diags.extend(reader.diagnostics)
    out: list[ClusterSpec] = []
    seen: dict[str, ClusterSpec] = {}
    for spec, r, _ in parsed:
        if spec.name in seen:
            first = seen[spec.name]
            r.report(
                dg.DUPLICATE_RESOURCE,
                f"Cluster {spec.name!r} is defined twice (first at {first.file}:{first.line})",
                ("metadata", "name"),
            )
            continue
        seen[spec.name] = spec
    primaries = [s.name for s in seen.values() if s.is_primary]
    rejected = invalid_cluster_names(documents, list(seen.values()))
    if parsed and not primaries:
        spec, r, _ = parsed[0]
        r.report(
            dg.MISSING_FIELD,
            "no Cluster has role: primary; a mesh needs at least one primary (it runs the CA)",
            ("spec", "role"),
        )
    for spec, r, primary_given in parsed:
        if seen.get(spec.name) is not spec:
            diags.extend(r.diagnostics)
            continue
        if spec.is_primary or not primaries:
            out.append(spec)
            diags.extend(r.diagnostics)
            continue
        if primary_given and spec.primary in rejected:
            out.append(spec)  # the primary's own document carries the error
            diags.extend(r.diagnostics)
            continue
        resolved = _resolve_primary(spec, r, primary_given, seen, primaries)
        out.append(resolved)
        diags.extend(r.diagnostics)
    return tuple(out), diags


def _reader_of(doc: SourceDocument) -> DocumentReader:
    return DocumentReader(doc, resource=f"{CLUSTER_KIND} {doc.file}")


def _resolve_primary(
    spec: ClusterSpec,
    r: DocumentReader,
    given: bool,
    seen: dict[str, ClusterSpec],
    primaries: list[str],
) -> ClusterSpec:
    if given:
        target = seen.get(spec.primary)
        if target is None:
            r.report(
                dg.INVALID_VALUE,
                f"spec.primary {spec.primary!r}: no Cluster by that name; primaries: "
                f"{', '.join(primaries)}",
                ("spec", "primary"),
            )
        elif not target.is_primary:
            r.report(
                dg.INVALID_VALUE,
                f"spec.primary {spec.primary!r} is a remote cluster; a remote's CA is a "
                f"primary's: {', '.join(primaries)}",
                ("spec", "primary"),
            )
        return spec
    if len(primaries) > 1:
        r.report(
            dg.MISSING_FIELD,
            f"remote cluster {spec.name!r} needs spec.primary: there are several primaries "
            f"({', '.join(primaries)}) and its workloads use exactly one CA",
            ("spec",),
        )
        return spec
    return ClusterSpec(
        spec.name,
        spec.role,
        spec.network,
        primaries[0],
        spec.remote_secret,
        spec.ca_root,
        spec.file,
        spec.line,
    )


def _parse_one(doc: SourceDocument) -> tuple[ClusterSpec | None, DocumentReader, bool]:
    r = _reader_of(doc)
    body = r.mapping(doc.data, (), CLUSTER_FIELDS, CLUSTER_KIND)
    if body is None:
        return None, r, False
    if body.get("apiVersion") != MESHSEC_API:
        r.report(
            dg.UNKNOWN_API_VERSION,
            f"apiVersion {body.get('apiVersion')!r} is not served for {CLUSTER_KIND}; "
            f"use {MESHSEC_API}",
            ("apiVersion",),
        )
    meta = r.mapping(body.get("metadata"), ("metadata",), METADATA_FIELDS, "metadata") or {}
    name = r.string(meta.get("name"), ("metadata", "name"), required=True)
    if name is None:
        return None, r, False
    r.resource = f"{CLUSTER_KIND} {name}"
    problem = check_dns1123_label(name)
    if problem:
        r.report(
            dg.INVALID_VALUE,
            f"cluster name {name!r} {problem} (it is a cluster id, like istioctl's --name)",
            ("metadata", "name"),
        )
    spec = r.mapping(body.get("spec"), ("spec",), SPEC_FIELDS, "Cluster spec") or {}
    role = r.string(spec.get("role"), ("spec", "role"), required=True)
    if role is not None and role not in ROLES:
        r.report(
            dg.INVALID_ENUM,
            f"invalid role {role!r}; valid values: {', '.join(ROLES)}",
            ("spec", "role"),
        )
        role = None
    network = r.string(spec.get("network"), ("spec", "network"), required="network" in spec)
    primary = r.string(spec.get("primary"), ("spec", "primary"), required="primary" in spec)
    remote_secret = r.boolean(spec.get("remoteSecret"), ("spec", "remoteSecret"))
    ca_root = ""
    if role == "remote":
        if "ca" in spec:
            r.report(
                dg.INVALID_VALUE,
                "a remote cluster has no CA of its own: its workloads get certificates from "
                "spec.primary's CA; remove spec.ca (or make the cluster a primary)",
                ("spec", "ca"),
            )
        if primary == name:
            r.report(dg.INVALID_VALUE, "a remote cannot be its own primary", ("spec", "primary"))
    elif role == "primary":
        for key, why in (
            ("primary", "a primary runs its own CA"),
            ("remoteSecret", "remote secrets are about remote clusters"),
        ):
            if key in spec:
                r.report(
                    dg.INVALID_VALUE,
                    f"spec.{key} is for remote clusters only ({why}); remove it",
                    ("spec", key),
                )
        ca = r.mapping(spec.get("ca"), ("spec", "ca"), CA_FIELDS, "Cluster spec.ca") or {}
        ca_root = r.string(ca.get("root"), ("spec", "ca", "root")) or "shared"
        if ca_root not in ROOTS:
            r.report(
                dg.INVALID_ENUM,
                f"invalid ca.root {ca_root!r}; valid values: shared (an intermediate from the "
                "mesh-wide root), own (its own self-signed root, outside the shared trust)",
                ("spec", "ca", "root"),
            )
    if role is None:
        return None, r, False
    cluster = ClusterSpec(
        name,
        role,
        network or DEFAULT_NETWORK,
        primary or "",
        True if remote_secret is None else remote_secret,
        ca_root if role == "primary" else "",
        doc.file,
        doc.line_of(("metadata", "name")),
    )
    return cluster, r, primary is not None


__all__ = [
    "CLUSTER_KIND",
    "DEFAULT_CLUSTER",
    "DEFAULT_NETWORK",
    "IMPLICIT_CLUSTER",
    "ClusterSpec",
    "invalid_cluster_names",
    "is_cluster_document",
    "parse_clusters",
]
