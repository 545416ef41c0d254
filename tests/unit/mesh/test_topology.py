"""``kind: Cluster`` documents, workloads placed in clusters, certificate expectations."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsec.core.policy.diagnostics import Level
from meshsec.mesh.manifests import MeshPlan, load_mesh_plan
from meshsec.mesh.topology import IMPLICIT_CLUSTER, ClusterSpec
from tests.unit.mesh.test_manifests import BASE, WORKLOAD, _errors, _expectations, _plan

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def cluster(name: str, spec: str) -> str:
    return (
        f"\n---\napiVersion: meshsec.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\n"
        f"spec: {spec}\n"
    )


PRIMARY = cluster("c1", "{role: primary}")
REMOTE = cluster("c2", "{role: remote}")
REMOTE_OF_C2 = cluster("c3", "{role: remote, primary: c2}")


def placed(plan: MeshPlan) -> list[tuple[str, str]]:
    return [(p.name, p.cluster) for p in plan.placed]


def test_no_cluster_document_is_the_single_cluster1() -> None:
    plan = _plan(BASE + WORKLOAD)
    assert plan.clusters == (IMPLICIT_CLUSTER,)
    assert IMPLICIT_CLUSTER.ca_root == "own"  # today's self-signed CA
    assert not plan.declared_clusters
    assert not plan.qualified
    assert placed(plan) == [("a", "cluster1")]


def test_primary_and_remote_defaults() -> None:
    plan = _plan(BASE + WORKLOAD + PRIMARY + REMOTE)
    assert _errors(plan) == []
    c1, c2 = plan.clusters
    assert (c1.role, c1.network, c1.ca_root, c1.ca_cluster) == (
        "primary",
        "network1",
        "shared",
        "c1",
    )
    assert (c2.role, c2.primary, c2.remote_secret, c2.ca_root, c2.ca_cluster) == (
        "remote",
        "c1",  # the only primary
        True,
        "",
        "c1",
    )
    assert c2.attached
    assert plan.cluster("c2") == c2
    assert placed(plan) == [("a", "c1")]  # default: the first primary
    assert c2.line > 0


def test_detached_remote_and_own_root() -> None:
    plan = _plan(
        BASE
        + cluster("c1", "{role: primary, ca: {root: own}, network: net-a}")
        + cluster("c2", "{role: remote, remoteSecret: false, primary: c1}")
        + WORKLOAD.replace("serviceAccount: sa1", "serviceAccount: sa1\n  cluster: c2")
    )
    assert _errors(plan) == []
    c1, c2 = plan.clusters
    assert (c1.ca_root, c1.network) == ("own", "net-a")
    assert not c2.attached
    assert placed(plan) == [("a", "c2")]


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        (cluster("c1", "{role: boss}"), "invalid role 'boss'; valid values: primary, remote"),
        (cluster("c1", "{}"), "spec.role is required"),
        (cluster("C_1", "{role: primary}"), "cluster name 'C_1' must be lower-case"),
        (cluster("../x", "{role: primary}"), "cluster name '../x' must be lower-case"),
        (PRIMARY + PRIMARY, "Cluster 'c1' is defined twice"),
        (REMOTE, "no Cluster has role: primary"),
        (
            PRIMARY + cluster("c2", "{role: remote, ca: {root: own}}"),
            "a remote cluster has no CA of its own",
        ),
        (PRIMARY + cluster("c2", "{role: remote, primary: c9}"), "spec.primary 'c9': no Cluster"),
        (
            PRIMARY
            + cluster("c2", "{role: remote}")
            + cluster("c3", "{role: remote, primary: c2}"),
            "spec.primary 'c2' is a remote cluster",
        ),
        (
            PRIMARY + cluster("c3", "{role: primary}") + REMOTE,
            "remote cluster 'c2' needs spec.primary: there are several primaries (c1, c3)",
        ),
        (cluster("c1", "{role: primary, primary: c1}"), "spec.primary is for remote clusters"),
        (cluster("c1", "{role: primary, remoteSecret: true}"), "spec.remoteSecret is for remote"),
        (cluster("c1", "{role: primary, ca: {root: mine}}"), "invalid ca.root 'mine'"),
        (cluster("c1", "{role: primary, ca: {roots: own}}"), "unknown field 'roots'"),
        (cluster("c1", "{role: primary, zone: a}"), "unknown field 'zone'"),
        (PRIMARY + cluster("c2", '{role: remote, remoteSecret: "false"}'), "must be a boolean"),
        (
            cluster("c1", "{role: primary}").replace("meshsec.io/v1alpha1", "v1"),
            "apiVersion 'v1' is not served for Cluster",
        ),
        (
            cluster("c1", "{role: primary}").replace("{name: c1}", "{name: c1, namespace: x}"),
            "unknown field 'namespace'",
        ),
    ],
    ids=[
        "bad-role",
        "no-role",
        "bad-name",
        "path-name",
        "duplicate",
        "no-primary",
        "remote-with-ca",
        "unknown-primary",
        "remote-primary",
        "ambiguous-primary",
        "primary-with-primary",
        "primary-with-remote-secret",
        "bad-root",
        "ca-unknown-field",
        "spec-unknown-field",
        "non-boolean",
        "bad-api-version",
        "namespaced",
    ],
)
def test_invalid_clusters_are_diagnostics_with_file_and_line(docs: str, expected: str) -> None:
    plan = _plan(BASE + WORKLOAD + docs)
    errors = [d for d in plan.diagnostics if d.level is Level.ERROR]
    assert any(expected in d.message for d in errors), [d.message for d in errors]
    hit = next(d for d in errors if expected in d.message)
    assert hit.file == "m.yaml"
    assert hit.line > 0


@pytest.mark.parametrize(
    ("docs", "workload_cluster", "expected"),
    [
        (PRIMARY, "c9", "spec.cluster 'c9': no kind: Cluster by that name; clusters: c1"),
        ("", "cluster2", "the directory declares no kind: Cluster"),
        ("", "Bad_Name", "cluster 'Bad_Name': must be lower-case"),
    ],
    ids=["unknown", "undeclared", "invalid"],
)
def test_workload_cluster_must_exist(docs: str, workload_cluster: str, expected: str) -> None:
    text = WORKLOAD.replace(
        "serviceAccount: sa1", f"serviceAccount: sa1\n  cluster: {workload_cluster}"
    )
    errors = _errors(_plan(BASE + text + docs))
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        (
            PRIMARY + cluster("c2", "{role: secondary}"),
            "invalid role 'secondary'; valid values: primary, remote",
        ),
        (
            PRIMARY + cluster("c2", "{role: primray}") + REMOTE_OF_C2,
            "invalid role 'primray'",
        ),
    ],
    ids=["workload-in-it", "remote-of-it"],
)
def test_a_rejected_cluster_is_reported_once_not_as_missing(docs: str, expected: str) -> None:
    """A workload (or remote) naming a Cluster whose document was rejected gets no second,
    misleading "no Cluster by that name": the one error is the cluster's own."""
    text = WORKLOAD.replace("serviceAccount: sa1", "serviceAccount: sa1\n  cluster: c2")
    errors = _errors(_plan(BASE + text + docs))
    [error] = errors
    assert expected in error


def test_mounted_certificates_need_an_attached_cluster() -> None:
    detached = cluster("c2", "{role: remote, remoteSecret: false}")
    text = _in("a", "c2").replace(
        "serviceAccount: sa1", "serviceAccount: sa1\n  mountMtlsCerts: true"
    )
    errors = _errors(_plan(BASE + PRIMARY + detached + text))
    assert any(
        "spec.mountMtlsCerts in cluster 'c2', which has no remote secret" in e for e in errors
    )
    assert _errors(_plan(BASE + PRIMARY + REMOTE + text)) == []


def test_cluster1_may_be_named_without_cluster_documents() -> None:
    text = WORKLOAD.replace("serviceAccount: sa1", "serviceAccount: sa1\n  cluster: cluster1")
    assert _errors(_plan(BASE + text)) == []


def _in(name: str, where: str) -> str:
    return WORKLOAD.replace("name: a,", f"name: {name},").replace(
        "serviceAccount: sa1", f"serviceAccount: sa1\n  cluster: {where}"
    )


def test_one_name_once_per_cluster() -> None:
    plan = _plan(BASE + PRIMARY + REMOTE + _in("a", "c1") + _in("a", "c2"))
    assert _errors(plan) == []
    assert sorted(placed(plan)) == [("a", "c1"), ("a", "c2")]
    assert plan.qualified
    assert plan.workload("a.ns1") is None  # ambiguous
    found = plan.workload("a.ns1@c2")
    assert found is not None
    assert found.cluster == "c2"
    twice = _errors(_plan(BASE + PRIMARY + REMOTE + _in("a", "c2") + _in("a", "c2")))
    assert any("defined again" in e or "defined twice" in e for e in twice), twice
    # no spec.cluster means the first primary: the same as naming it
    implicit = _errors(_plan(BASE + PRIMARY + WORKLOAD + _in("a", "c1")))
    assert any("Workload ns1/a is defined twice in cluster c1" in e for e in implicit), implicit


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("{certificate: a.ns1@c2, expect: refused}", ""),
        ("{certificate: a.ns1@c1, expect: issued}", ""),
        ("{from: a.ns1@c1, to: svc:80, expect: allowed}", ""),
        ("{certificate: a.ns1, expect: issued}", "exists in clusters c1, c2; say which"),
        ("{from: a.ns1, to: svc:80, expect: allowed}", "exists in clusters c1, c2"),
        ("{certificate: a.ns1@c1, expect: denied}", "valid values: issued, refused"),
        ("{certificate: a.ns1@c1, expect: issued, to: svc:80}", "'to' does not go with"),
        ("{certificate: a.ns1@c7, expect: issued}", "no cluster 'c7' in the mesh"),
        ("{certificate: a, expect: issued}", "say the namespace"),
        ("{from: a.ns1@c1, to: svc@c2:80, expect: allowed}", "a Service spans clusters"),
    ],
    ids=[
        "refused",
        "issued",
        "qualified-from",
        "ambiguous-certificate",
        "ambiguous-from",
        "bad-verdict",
        "mixed-kinds",
        "unknown-cluster",
        "no-namespace",
        "cluster-in-to",
    ],
)
def test_expectations_with_clusters(item: str, expected: str) -> None:
    plan = _plan(BASE + PRIMARY + REMOTE + _in("a", "c1") + _in("a", "c2") + _expectations(item))
    errors = _errors(plan)
    if expected:
        assert any(expected in e for e in errors), errors
        assert plan.expectations == ()
        return
    assert errors == []
    (exp,) = plan.expectations
    assert exp.source == exp.source_key  # several clusters: shown qualified
    assert "@c" in exp.source
    if "certificate" in item:
        assert exp.kind == "certificate"
        assert exp.target == "(certificate)"


def test_single_cluster_refs_stay_plain() -> None:
    plan = _plan(BASE + WORKLOAD + _expectations("{certificate: a.ns1, expect: issued}"))
    (exp,) = plan.expectations
    assert (exp.source, exp.source_key) == ("a.ns1", "a.ns1@cluster1")


@pytest.mark.parametrize("example", ["primary-remote", "multi-primary"])
def test_the_topology_examples_are_clean(example: str) -> None:
    plan = load_mesh_plan(EXAMPLES / example)
    assert [str(d) for d in plan.diagnostics if d.level is not Level.INFO] == []
    assert plan.declared_clusters
    assert plan.expectations
    kinds = {e.kind for e in plan.expectations}
    assert kinds == {"request", "certificate"}


def test_primary_remote_example_shape() -> None:
    plan = load_mesh_plan(EXAMPLES / "primary-remote")
    by_name = {c.name: c for c in plan.clusters}
    assert by_name["cluster2"] == ClusterSpec(
        "cluster2",
        "remote",
        "network1",
        "cluster1",
        True,
        "",
        by_name["cluster2"].file,
        by_name["cluster2"].line,
    )
    assert not by_name["cluster3"].attached
    refused = [e for e in plan.expectations if e.kind == "certificate" and e.expect == "refused"]
    assert [e.source for e in refused] == ["productpage.sample@cluster3"]
