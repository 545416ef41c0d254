"""Workload references across clusters: ``name[.namespace][@cluster]`` (see docs/cli.md).

* ``photo-frontend.photo-ns`` — istioctl style: the LAST dot splits name and namespace;
* ``productpage.sample@cluster2`` — the workload in cluster ``cluster2``.

Cluster names are DNS-1123 labels (no ``.``, ``@`` or ``:``), so the split is unambiguous: the
cluster is what follows the last ``@``. Without ``@cluster`` a reference must match exactly one
workload in the whole mesh; a ``name.namespace`` that runs in several clusters is an error that
names them. Shown qualified (``name.ns@cluster``) whenever the mesh has more than one cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from meshsec.core.policy.document import check_dns1123_label


class ClusterScoped(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def cluster(self) -> str: ...


C = TypeVar("C", bound=ClusterScoped)


@dataclass(frozen=True)
class WorkloadRef:
    name: str
    namespace: str  # "" = not given
    cluster: str  # "" = not given

    def __str__(self) -> str:
        text = f"{self.name}.{self.namespace}" if self.namespace else self.name
        return f"{text}@{self.cluster}" if self.cluster else text


def parse_workload_ref(text: str) -> WorkloadRef | str:
    """The reference, or a message saying what is wrong with ``text``."""
    base, at, cluster = text.rpartition("@") if "@" in text else (text, "", "")
    if "@" in base:
        return "more than one '@': expected name.namespace@cluster"
    if at:
        problem = check_dns1123_label(cluster) if cluster else "is empty"
        if problem:
            return f"cluster {cluster!r} after '@' {problem}"
    name, dot, namespace = base.rpartition(".") if "." in base else (base, "", "")
    if not name or (dot and not namespace):
        return "expected name.namespace or name.namespace@cluster"
    return WorkloadRef(name, namespace, cluster)


def format_ref(name: str, namespace: str, cluster: str, *, qualified: bool) -> str:
    """``name.namespace`` (one cluster) or ``name.namespace@cluster`` (several)."""
    return f"{name}.{namespace}@{cluster}" if qualified else f"{name}.{namespace}"


def resolve_workload_ref(ref: WorkloadRef, items: Iterable[C]) -> C | str:
    """The one workload ``ref`` names, or a message (unknown / ambiguous / unknown cluster)."""
    candidates = list(items)
    clusters = sorted({c.cluster for c in candidates})
    if ref.cluster and ref.cluster not in clusters:
        return f"no cluster {ref.cluster!r} in the mesh; clusters: {', '.join(clusters)}"
    found = [
        c
        for c in candidates
        if c.name == ref.name
        and (not ref.namespace or c.namespace == ref.namespace)
        and (not ref.cluster or c.cluster == ref.cluster)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        known = _known(candidates, qualified=len(clusters) > 1)
        return f"no workload {str(ref)!r}; known: {', '.join(known) or '(none)'}"
    in_clusters = sorted({c.cluster for c in found})
    if len(in_clusters) > 1 and len({c.namespace for c in found}) == 1:
        first = found[0]
        return (
            f"workload {str(ref)!r} exists in clusters {', '.join(in_clusters)}; say which "
            f"with {first.name}.{first.namespace}@<cluster>"
        )
    return (
        f"workload {str(ref)!r} is ambiguous: "
        f"{', '.join(_known(found, qualified=len(clusters) > 1))}; say which with "
        "name.namespace[@cluster]"
    )


def _known(items: Sequence[ClusterScoped], *, qualified: bool) -> list[str]:
    return sorted(format_ref(c.name, c.namespace, c.cluster, qualified=qualified) for c in items)


__all__ = ["WorkloadRef", "format_ref", "parse_workload_ref", "resolve_workload_ref"]
