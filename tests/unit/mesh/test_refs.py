"""Workload references across clusters: ``name.namespace[@cluster]`` (REFS.md)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from meshsec.mesh.refs import WorkloadRef, format_ref, parse_workload_ref, resolve_workload_ref


@dataclass(frozen=True)
class W:
    name: str
    namespace: str
    cluster: str


MESH = (
    W("productpage", "sample", "cluster2"),
    W("productpage", "sample", "cluster3"),
    W("ratings", "sample", "cluster1"),
    W("ratings", "other", "cluster1"),
    W("web.v2", "sample", "cluster1"),  # a dotted name: the LAST dot splits
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ratings.sample", WorkloadRef("ratings", "sample", "")),
        ("productpage.sample@cluster3", WorkloadRef("productpage", "sample", "cluster3")),
        ("ratings", WorkloadRef("ratings", "", "")),
        ("ratings@cluster1", WorkloadRef("ratings", "", "cluster1")),
        ("web.v2.sample", WorkloadRef("web.v2", "sample", "")),
        ("a.b@", "cluster '' after '@' is empty"),
        ("a.b@Cluster_1", "must be lower-case alphanumerics"),
        ("a.b@c@d", "more than one '@'"),
        (".sample", "expected name.namespace"),
        ("ratings.", "expected name.namespace"),
        ("a.b@" + "c" * 64, "longer than 63 characters"),
    ],
    ids=[
        "name-ns",
        "qualified",
        "name-only",
        "name-at-cluster",
        "dotted-name",
        "empty-cluster",
        "bad-cluster",
        "two-ats",
        "no-name",
        "no-namespace",
        "long-cluster",
    ],
)
def test_parse(text: str, expected: WorkloadRef | str) -> None:
    got = parse_workload_ref(text)
    if isinstance(expected, WorkloadRef):
        assert got == expected
        assert str(got) == text
    else:
        assert isinstance(got, str)
        assert expected in got


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ratings.sample", W("ratings", "sample", "cluster1")),
        ("ratings.sample@cluster1", W("ratings", "sample", "cluster1")),
        ("productpage.sample@cluster3", W("productpage", "sample", "cluster3")),
        ("web.v2.sample", W("web.v2", "sample", "cluster1")),
        (
            "productpage.sample",
            "exists in clusters cluster2, cluster3; say which with productpage.sample@<cluster>",
        ),
        ("ratings", "is ambiguous: ratings.other@cluster1, ratings.sample@cluster1"),
        ("ratings.sample@cluster9", "no cluster 'cluster9' in the mesh; clusters: cluster1"),
        ("ratings.sample@cluster2", "no workload 'ratings.sample@cluster2'; known: "),
        ("nope.sample", "no workload 'nope.sample'"),
    ],
    ids=[
        "unique",
        "qualified",
        "qualified-repeated",
        "dotted",
        "ambiguous-clusters",
        "ambiguous-namespaces",
        "unknown-cluster",
        "not-in-that-cluster",
        "unknown",
    ],
)
def test_resolve(text: str, expected: W | str) -> None:
    ref = parse_workload_ref(text)
    assert isinstance(ref, WorkloadRef)
    got = resolve_workload_ref(ref, MESH)
    if isinstance(expected, W):
        assert got == expected
    else:
        assert isinstance(got, str)
        assert expected in got


def test_known_list_is_qualified_only_with_several_clusters() -> None:
    single = (W("a", "ns", "cluster1"),)
    message = resolve_workload_ref(WorkloadRef("b", "ns", ""), single)
    assert message == "no workload 'b.ns'; known: a.ns"
    message = resolve_workload_ref(WorkloadRef("b", "ns", ""), MESH)
    assert isinstance(message, str)
    assert "productpage.sample@cluster2" in message


def test_format() -> None:
    assert format_ref("a", "ns", "c2", qualified=False) == "a.ns"
    assert format_ref("a", "ns", "c2", qualified=True) == "a.ns@c2"
