"""The operator commands on a multi-cluster mesh: hand-written state.json with real certificates.

Topology (every certificate is signed for real by tests/testca.py):
  cluster1, cluster2  primaries, per-cluster intermediates (L=cluster1 / L=cluster2) of root A;
  cluster3            primary with its own root B (same subject as A, different key);
  cluster4            remote of cluster1 WITH a remote secret (its gateway got a certificate);
  cluster5            remote of cluster1 WITHOUT one (its workload is refused, as expected).
``reviews.bookinfo`` runs in cluster1 and cluster2 (an ambiguous unqualified name).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from meshsec.cli.main import main
from meshsec.cli.meshstate import (
    MeshStateError,
    UnknownWorkload,
    load_mesh_state,
    resolve_workload,
)
from meshsec.cli.status import WorkloadStatus, parse_last_ca_failure
from meshsec.core.pki import X509Svid, encode_certificates_pem
from meshsec.core.pki.bundle import certificate_fingerprint
from tests.fakes.operator_admin import FakeAdmin, closed_port_addr, serve_fake_admin
from tests.testca import TestCA

NOW = datetime.now(UTC)
REFUSAL = (
    'UNAUTHENTICATED: authenticate failure: no remote secret for cluster "cluster5" '
    "(ClusterID cluster5)"
)


@dataclass
class Pki:
    root_a: TestCA
    root_b: TestCA
    inter: dict[str, TestCA]


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_a, root_b = TestCA(), TestCA()
    return Pki(
        root_a,
        root_b,
        {
            "cluster1": root_a.intermediate("cluster1"),
            "cluster2": root_a.intermediate("cluster2"),
            "cluster3": root_b.intermediate("cluster3"),
        },
    )


def agent_document(svid: X509Svid | None, roots: list[x509.Certificate]) -> dict[str, Any]:
    """/debug/secrets as the agent serves it (agent/status.py)."""
    resources: list[dict[str, Any]] = [
        {
            "resource_name": "default",
            "type": "Cert Chain",
            "status": "ACTIVE" if svid else "WARMING",
            "spiffe_id": str(svid.spiffe_id) if svid else None,
            "serial": svid.serial_hex if svid else None,
            "not_before": svid.not_before.isoformat() if svid else None,
            "not_after": svid.not_after.isoformat() if svid else None,
            "valid": svid is not None,
            "created_at": NOW.isoformat() if svid else None,
        }
    ]
    for root in roots:
        resources.append(
            {
                "resource_name": "ROOTCA",
                "type": "CA",
                "status": "ACTIVE",
                "subject": root.subject.rfc4514_string(),
                "fingerprint": certificate_fingerprint(root),
                "serial": f"{root.serial_number:032x}",
                "not_before": root.not_valid_before_utc.isoformat(),
                "not_after": root.not_valid_after_utc.isoformat(),
                "valid": True,
            }
        )
    return {"now": NOW.isoformat(), "resources": resources}


@dataclass
class Mesh:
    dir: Path
    state: Path
    pki: Pki
    agents: dict[str, FakeAdmin]
    ca_addrs: dict[str, str]
    workload_dirs: dict[str, Path]


def _cluster(
    name: str, role: str, ca_cluster: str, ca_addr: str | None, root: Path, secret: Path | None
) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "network": "network1",
        "ca_cluster": ca_cluster,
        "ca": None
        if ca_addr is None
        else {
            "addr": ca_addr,
            "mtls_addr": None,
            "monitoring": None,
            "data_dir": None,
            "root_pem_path": str(root),
        },
        "api_server": None,
        "cluster_dir": None,
        "remote_secret": None if secret is None else str(secret),
        "root_pem_path": str(root),
    }


MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: orphan, namespace: bookinfo}
spec: {selector: {app: orphan}, ports: [{name: http, port: 9080}]}
"""

# (name, namespace, cluster, issuing CA, certificate expected)
WORKLOADS = [
    ("reviews", "bookinfo", "cluster1", "cluster1", True),
    ("reviews", "bookinfo", "cluster2", "cluster2", True),
    ("ratings", "bookinfo", "cluster3", "cluster3", True),
    ("gateway", "istio-system", "cluster4", "cluster1", True),
    ("orphan", "bookinfo", "cluster5", "cluster1", False),
]


@pytest.fixture
def mesh(tmp_path: Path, pki: Pki) -> Iterator[Mesh]:
    mesh_dir = tmp_path / "mc"
    mesh_dir.mkdir()
    (mesh_dir / "mesh.yaml").write_text(MANIFESTS)
    state_dir = mesh_dir / ".meshsec"
    roots = {"a": state_dir / "roots-a.pem", "b": state_dir / "roots-b.pem"}
    state_dir.mkdir()
    roots["a"].write_bytes(pki.root_a.root_pem)
    roots["b"].write_bytes(pki.root_b.root_pem)
    secret4 = state_dir / "remote-secrets" / "istio-remote-secret-cluster4.yaml"
    secret4.parent.mkdir()
    secret4.write_text("# This file is autogenerated, do not edit.\n")
    ca_addrs = {c: closed_port_addr() for c in ("cluster1", "cluster2", "cluster3")}
    clusters = [
        _cluster("cluster1", "primary", "cluster1", ca_addrs["cluster1"], roots["a"], None),
        _cluster("cluster2", "primary", "cluster2", ca_addrs["cluster2"], roots["a"], None),
        _cluster("cluster3", "primary", "cluster3", ca_addrs["cluster3"], roots["b"], None),
        _cluster("cluster4", "remote", "cluster1", None, roots["a"], secret4),
        _cluster("cluster5", "remote", "cluster1", None, roots["a"], None),
    ]
    with ExitStack() as stack:
        agents: dict[str, FakeAdmin] = {}
        dirs: dict[str, Path] = {}
        entries: list[dict[str, Any]] = []
        for name, ns, cluster, issuer_name, expected in WORKLOADS:
            key = f"{name}.{ns}@{cluster}"
            issuer = pki.inter[issuer_name]
            root_cert = issuer.root_cert
            spiffe_id = f"spiffe://cluster.local/ns/{ns}/sa/{name}"
            svid = issuer.issue_svid(spiffe_id) if expected else None
            base = state_dir / "workloads" / cluster / ns / name
            (base / "certs").mkdir(parents=True)
            (base / "certs" / "root-cert.pem").write_bytes(issuer.root_pem)
            if svid is not None:
                (base / "certs" / "cert-chain.pem").write_bytes(encode_certificates_pem(svid.chain))
            else:
                (base / "agent.log").write_text(
                    "2026-11-23 07:00:00 INFO agent started\n"
                    f"2026-11-23 07:00:01 INFO meshsec.agent.rotation: ca request failed, "
                    f"starting attempt 2 in 0.812s: {REFUSAL}\n"
                )
            agent = stack.enter_context(serve_fake_admin())
            agent.json("/debug/secrets", agent_document(svid, [root_cert]))
            if svid is not None:
                agent.text("/healthz/ready", "ready\n")
            else:
                agent.text("/healthz/ready", "not ready: no workload certificate yet\n", 503)
            agent.text(
                "/metrics",
                'istio_agent_num_failed_outgoing_requests{request_type="csr"} '
                f"{0 if expected else 3}\n",
            )
            agents[key], dirs[key] = agent, base
            signer = "cluster1" if cluster in ("cluster4", "cluster5") else cluster
            entries.append(
                {
                    "name": name,
                    "namespace": ns,
                    "service_account": name,
                    "spiffe_id": spiffe_id,
                    "cluster": cluster,
                    "cert_model": "csr",
                    "agent_status": agent.addr,
                    "proxy_admin": None,
                    "http_proxy": None,
                    "ports": [],
                    "cert_dir": str(base / "certs"),
                    "log_dir": str(base),
                    "labels": {"app": name},
                    "ca_addr": ca_addrs[signer],
                    "root_pem_path": str(roots["b" if cluster == "cluster3" else "a"]),
                    "certificate": "expected" if expected else "refused-expected",
                }
            )
        state = state_dir / "state.json"
        state.write_text(
            json.dumps(
                {
                    "version": 1,
                    "mesh_dir": str(mesh_dir),
                    "pid": None,
                    "started_at": "2026-11-23T07:00:00+00:00",
                    "trust_domain": "cluster.local",
                    "ca": clusters[0]["ca"],
                    "clusters": clusters,
                    "workloads": entries,
                }
            )
        )
        yield Mesh(mesh_dir, state, pki, agents, ca_addrs, dirs)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def fp(cert: x509.Certificate) -> str:
    return certificate_fingerprint(cert)


# --- state.json ------------------------------------------------------------------------------


def test_clusters_are_parsed(mesh: Mesh) -> None:
    state = load_mesh_state(mesh.state)
    assert [c.name for c in state.clusters] == [f"cluster{i}" for i in range(1, 6)]
    assert state.multi_cluster
    remote = state.cluster("cluster4")
    assert remote is not None
    assert remote.is_remote
    assert remote.role_text == "remote of cluster1"
    orphan = next(w for w in state.workloads if w.name == "orphan")
    assert orphan.refused_expected
    assert orphan.ref == "orphan.bookinfo@cluster5"
    ca = state.ca_cluster_of(orphan)
    assert ca is not None
    assert ca.name == "cluster1"


def test_single_cluster_state_reads_as_cluster1(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "ca": {"addr": "127.0.0.1:1", "root_pem_path": "/r.pem"},
                "workloads": [{"name": "a", "namespace": "ns"}],
            }
        )
    )
    state = load_mesh_state(path)
    (cluster,) = state.clusters
    assert (cluster.name, cluster.role, cluster.network) == ("cluster1", "primary", "network1")
    assert cluster.ca == state.ca
    (workload,) = state.workloads
    assert (workload.cluster, workload.ca_addr, workload.root_pem_path) == (
        "cluster1",
        "127.0.0.1:1",
        "/r.pem",
    )
    assert workload.ref == "a.ns"
    assert not workload.refused_expected


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        pytest.param({"clusters": {}}, "clusters: expected a list", id="clusters-not-list"),
        pytest.param(
            {"clusters": [{"name": "c1", "role": "leader"}]},
            r"clusters\[0\]\.role: expected 'primary' or 'remote'",
            id="bad-role",
        ),
        pytest.param(
            {"clusters": [{"name": "c1"}, {"name": "c1"}]}, "appears twice", id="duplicate"
        ),
        pytest.param(
            {
                "clusters": [{"name": "c1"}],
                "workloads": [{"name": "a", "namespace": "n", "cluster": "c9"}],
            },
            r"workloads\[0\]\.cluster: 'c9' is not in clusters \(c1\)",
            id="workload-in-unknown-cluster",
        ),
        pytest.param(
            {"clusters": [{"name": "c1", "ca": "127.0.0.1:1"}]},
            r"clusters\[0\]\.ca: expected an object",
            id="ca-not-object",
        ),
    ],
)
def test_bad_clusters_name_the_field(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 1, "workloads": [], **patch}))
    with pytest.raises(MeshStateError, match=message):
        load_mesh_state(path)


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param("reviews.bookinfo@cluster2", "reviews.bookinfo@cluster2", id="qualified"),
        pytest.param("reviews@cluster1", "reviews.bookinfo@cluster1", id="name-at-cluster"),
        pytest.param("ratings", "ratings.bookinfo@cluster3", id="unique-unqualified"),
        pytest.param("gateway.istio-system", "gateway.istio-system@cluster4", id="unique-name-ns"),
    ],
)
def test_resolve_across_clusters(mesh: Mesh, ref: str, expected: str) -> None:
    state = load_mesh_state(mesh.state)
    assert resolve_workload(ref, state.workloads, [c.name for c in state.clusters]).ref == expected


@pytest.mark.parametrize(
    ("ref", "message", "listed"),
    [
        pytest.param(
            "reviews.bookinfo",
            "workload 'reviews.bookinfo' exists in clusters cluster1, cluster2; "
            "say which with reviews.bookinfo@<cluster>",
            ("reviews.bookinfo@cluster1", "reviews.bookinfo@cluster2"),
            id="ambiguous-name-ns",
        ),
        pytest.param(
            "reviews",
            "say which with reviews.bookinfo@<cluster>",
            ("reviews.bookinfo@cluster1", "reviews.bookinfo@cluster2"),
            id="ambiguous-name",
        ),
        pytest.param(
            "reviews@cluster9",
            "no cluster 'cluster9' in the mesh",
            ("cluster1", "cluster2", "cluster3", "cluster4", "cluster5"),
            id="unknown-cluster",
        ),
        pytest.param(
            "ratings@cluster1",
            "no workload 'ratings@cluster1'; known: ",
            None,
            id="wrong-cluster",
        ),
        pytest.param("ratings@", "after '@' is empty", None, id="empty-cluster"),
        pytest.param("ratings@Cluster_1", "after '@' must be lower-case", None, id="bad"),
        pytest.param(
            "@cluster1", "expected name.namespace or name.namespace@cluster", None, id="no-name"
        ),
    ],
)
def test_bad_refs_exit_2_with_candidates(
    mesh: Mesh,
    capsys: pytest.CaptureFixture[str],
    ref: str,
    message: str,
    listed: tuple[str, ...] | None,
) -> None:
    state = load_mesh_state(mesh.state)
    with pytest.raises(UnknownWorkload) as info:
        resolve_workload(ref, state.workloads, [c.name for c in state.clusters])
    assert message in str(info.value)
    if listed is not None:
        assert info.value.known == listed
    code, _, err = run(capsys, "describe", ref, "--mesh", str(mesh.dir))
    assert code == 2
    assert message in err


def test_a_cluster_without_workloads_is_still_a_cluster(mesh: Mesh) -> None:
    state = load_mesh_state(mesh.state)
    workloads = [w for w in state.workloads if w.cluster != "cluster5"]
    with pytest.raises(UnknownWorkload, match="cluster 'cluster5' runs no workload"):
        resolve_workload("orphan@cluster5", workloads, [c.name for c in state.clusters])


# --- describe --------------------------------------------------------------------------------


def test_describe_primary_with_intermediate(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "describe", "reviews.bookinfo@cluster2", "--mesh", str(mesh.dir))
    assert code == 1, err  # its outbound calls to cluster3 / cluster5 conflict
    inter = mesh.pki.inter["cluster2"]
    assert "Workload: reviews.bookinfo@cluster2" in out
    assert "   Cluster: cluster2 (primary, network network1)" in out
    assert f"   CA: {mesh.ca_addrs['cluster2']}, cluster2's CA (trust domain cluster.local)" in out
    assert f"      Signing certificate: {inter.cert.subject.rfc4514_string()}" in out
    root = mesh.pki.root_a.root_cert
    assert (
        f"   Trusts root: {root.subject.rfc4514_string()} sha256:{fp(root)} (agent /debug/secrets)"
    ) in out
    assert "L=cluster2" in out
    assert "(intermediate, sha256:" in out
    assert f"      {root.subject.rfc4514_string()} (root, trusted, sha256:{fp(root)[:16]})" in out
    assert "      verifies up to a root it trusts" in out
    assert "Remote secret" not in out


def test_describe_remote_uses_the_primary_ca(
    mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "describe", "gateway", "--mesh", str(mesh.dir))
    assert code == 1, err  # its outbound calls to cluster3 / cluster5 conflict
    assert "   Cluster: cluster4 (remote of cluster1, network network1)" in out
    assert f"   CA: {mesh.ca_addrs['cluster1']}, cluster1's CA" in out
    assert "istio-remote-secret-cluster4.yaml (cluster1's CA verifies cluster4's tokens)" in out
    assert "L=cluster1" in out


def test_describe_refused_workload(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "describe", "orphan", "--mesh", str(mesh.dir))
    assert code == 1, err  # its outbound calls to cluster3 / cluster5 conflict
    assert "   Cluster: cluster5 (remote of cluster1, network network1)" in out
    assert "Remote secret: none: cluster1's CA cannot verify cluster5's tokens" in out
    assert (
        "Current certificate: none (expected: cluster5 has no remote secret in cluster1's CA, "
        "which refuses its tokens)"
    ) in out
    assert "Issuer chain" not in out


def test_describe_says_when_the_chain_does_not_verify(
    mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    """The agent trusts root A but its certificate came from root B's intermediate (a CA
    plugged with the wrong cacerts): describe names the root as untrusted and why it fails."""
    svid = mesh.pki.inter["cluster3"].issue_svid("spiffe://cluster.local/ns/bookinfo/sa/reviews")
    chain = mesh.pki.root_b.root_cert
    certs = mesh.workload_dirs["reviews.bookinfo@cluster2"] / "certs"
    (certs / "cert-chain.pem").write_bytes(encode_certificates_pem((*svid.chain, chain, chain)))
    _, out, _ = run(capsys, "describe", "reviews@cluster2", "--mesh", str(mesh.dir))
    assert f"(root, NOT in its trusted roots, sha256:{fp(chain)[:16]}, 2 times in the file)" in out
    assert "      DOES NOT VERIFY against its trusted roots: signature of" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"garbage", "no PEM", id="garbage"),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "", id="bad-der"
        ),
        pytest.param(b"x" * (1024 * 1024 + 1), "larger than 1048576 bytes", id="huge"),
    ],
)
def test_describe_with_hostile_certificate_files(
    mesh: Mesh, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    """Unreadable chain and root files are reported with the file's name, never a traceback;
    the roots still come from the agent."""
    certs = mesh.workload_dirs["ratings.bookinfo@cluster3"] / "certs"
    (certs / "cert-chain.pem").write_bytes(content)
    (certs / "root-cert.pem").write_bytes(content)
    code, out, err = run(capsys, "describe", "ratings", "--mesh", str(mesh.dir))
    assert code == 1, err  # outbound conflicts, as in every describe here
    line = next(x for x in out.splitlines() if x.startswith("   Issuer chain: unknown ("))
    assert f"{certs / 'cert-chain.pem'}: " in line
    assert message in line
    assert "(agent /debug/secrets)" in out


def test_describe_warns_when_a_refused_workload_holds_a_certificate(
    mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    svid = mesh.pki.inter["cluster1"].issue_svid("spiffe://cluster.local/ns/bookinfo/sa/orphan")
    mesh.agents["orphan.bookinfo@cluster5"].json(
        "/debug/secrets", agent_document(svid, [mesh.pki.root_a.root_cert])
    )
    _, out, _ = run(capsys, "describe", "orphan", "--mesh", str(mesh.dir))
    assert "WARNING: cluster5 has no remote secret" in out


def test_describe_json(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "describe", "reviews.bookinfo@cluster1", "--mesh", str(mesh.dir), "-o", "json"
    )
    assert code == 1, err  # its outbound calls to cluster3 / cluster5 conflict
    identity = json.loads(out)["identity"]
    assert identity["cluster"] == "cluster1"  # the name, as in a single-cluster mesh
    assert identity["cluster_info"]["role"] == "primary"
    assert identity["ca_cluster"] == "cluster1"
    assert identity["trusted_roots"][0]["sha256"] == fp(mesh.pki.root_a.root_cert)
    assert identity["certificate_chain"]["intermediate"] == "cluster1"
    assert identity["certificate_expected"] is True


def test_describe_falls_back_to_root_files_without_an_agent(
    mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh.agents["ratings.bookinfo@cluster3"].routes.clear()  # every path 404s
    code, out, _ = run(capsys, "describe", "ratings", "--mesh", str(mesh.dir))
    assert code == 1  # its outbound calls to cluster3 / cluster5 conflict
    root_b = mesh.pki.root_b.root_cert
    assert f"sha256:{fp(root_b)} ({mesh.workload_dirs['ratings.bookinfo@cluster3']}" in out


# --- rootca-compare --------------------------------------------------------------------------


def test_rootca_compare_shared_root(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "proxy-config",
        "rootca-compare",
        "reviews@cluster1",
        "reviews@cluster2",
        "--mesh",
        str(mesh.state),
    )
    assert code == 0, err + out
    lines = out.splitlines()
    assert lines[0] == (
        "Both [reviews.bookinfo@cluster1] and [reviews.bookinfo@cluster2] have the identical "
        "ROOTCA, theoretically the connectivity between them is available"
    )
    root = mesh.pki.root_a.root_cert
    assert lines[1] == (
        f"cluster1 and cluster2 share root sha256:{fp(root)[:16]} "
        f"({root.subject.rfc4514_string()}) (intermediates: cluster1, cluster2)"
    )


def test_rootca_compare_remote_and_primary(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "proxy-config",
        "rootca-compare",
        "gateway",
        "reviews@cluster2",
        "--mesh",
        str(mesh.dir),
    )
    assert code == 0
    assert "cluster4 and cluster2 share root" in out
    assert "(intermediates: cluster1, cluster2)" in out


def test_rootca_compare_different_root(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "proxy-config",
        "rootca-compare",
        "reviews@cluster1",
        "ratings",
        "--mesh",
        str(mesh.dir),
        "-o",
        "json",
    )
    assert code == 1
    doc = json.loads(out)
    assert doc["identical"] is False
    assert doc["can_talk"] is False
    assert doc["clusters"] == {
        "reviews.bookinfo@cluster1": "cluster1",
        "ratings.bookinfo@cluster3": "cluster3",
    }
    a, b = fp(mesh.pki.root_a.root_cert), fp(mesh.pki.root_b.root_cert)
    assert doc["explanation"][0] == (
        f"cluster3 trusts a different root (sha256:{b[:16]}) than cluster1 (sha256:{a[:16]}): "
        "mTLS between them will fail"
    )
    # the same root subject, another key: the chains really do not verify
    assert any("does not accept the certificate of" in line for line in doc["explanation"])


def test_rootca_compare_refused_workload(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "proxy-config", "rootca-compare", "orphan", "gateway", "--mesh", str(mesh.dir)
    )
    assert code == 1
    assert "have the identical ROOTCA" in out  # istioctl's sentence only compares roots
    # the deciding fact comes right after istioctl's sentence, before the roots it overrides
    assert out.splitlines()[1] == (
        "orphan.bookinfo@cluster5 has no certificate (expected: cluster5 has no remote secret "
        "in its primary's CA)"
    )


def test_rootca_compare_same_fingerprint_but_foreign_chain(
    mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent reporting root A while its files hold a chain from root B's intermediate (e.g. a
    CA plugged with the wrong cacerts): the fingerprints agree, the verification does not."""
    svid = mesh.pki.inter["cluster3"].issue_svid("spiffe://cluster.local/ns/bookinfo/sa/reviews")
    certs = mesh.workload_dirs["reviews.bookinfo@cluster2"] / "certs"
    (certs / "cert-chain.pem").write_bytes(encode_certificates_pem(svid.chain))
    code, out, _ = run(
        capsys,
        "proxy-config",
        "rootca-compare",
        "reviews@cluster1",
        "reviews@cluster2",
        "--mesh",
        str(mesh.dir),
    )
    assert code == 1
    assert "cluster1 does not accept the certificate of reviews.bookinfo@cluster2" in out


# --- check ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "service", "code", "expected"),
    [
        pytest.param(
            "reviews@cluster2",
            "reviews.bookinfo:9080",
            0,
            "OK",
            id="shared-root-both-clusters",
        ),
        pytest.param(
            "reviews@cluster1",
            "ratings.bookinfo:9080",
            1,
            "trust: cluster3 trusts a different root than cluster1: the mTLS handshake fails",
            id="different-root",
        ),
        pytest.param(
            "orphan",
            "reviews.bookinfo:9080",
            1,
            "orphan.bookinfo@cluster5 has no certificate (cluster5 has no remote secret)",
            id="client-refused",
        ),
        pytest.param(
            "gateway", "orphan.bookinfo:9080", 1, "NO ENDPOINTS", id="refused-is-no-endpoint"
        ),
    ],
)
def test_check_across_clusters(
    mesh: Mesh,
    capsys: pytest.CaptureFixture[str],
    client: str,
    service: str,
    code: int,
    expected: str,
) -> None:
    got, out, err = run(capsys, "check", client, service, "--mesh", str(mesh.dir))
    assert got == code, out + err
    assert expected in out


@pytest.mark.parametrize(
    "service", ["ratings.bookinfo:9080@cluster2", "ratings.bookinfo@cluster2:9080"]
)
def test_check_a_service_takes_no_cluster(
    mesh: Mesh, capsys: pytest.CaptureFixture[str], service: str
) -> None:
    got, _, err = run(capsys, "check", "reviews@cluster1", service, "--mesh", str(mesh.dir))
    assert got == 2
    assert "a Service spans clusters" in err
    assert "name no @cluster in a Service" in err


def test_check_shared_root_reaches_both_clusters(
    mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(
        capsys, "check", "ratings", "reviews.bookinfo:9080", "--mesh", str(mesh.dir), "-o", "json"
    )
    endpoints = json.loads(out)["routes"][0]["endpoints"]
    verdicts = {e["workload"]: e["status"] for e in endpoints}
    assert verdicts == {
        "reviews.bookinfo@cluster1": "CONFLICT",
        "reviews.bookinfo@cluster2": "CONFLICT",
    }


# --- status ----------------------------------------------------------------------------------


def test_status_has_a_cluster_column(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "--mesh", str(mesh.dir))
    assert code == 1  # the CAs are not running in this test
    header = next(line for line in out.splitlines() if line.startswith("WORKLOAD"))
    assert header.split()[:3] == ["WORKLOAD", "CLUSTER", "READY"]
    row = next(line for line in out.splitlines() if line.startswith("orphan"))
    assert "cluster5" in row
    assert (
        f"no certificate (expected: cluster5 has no remote secret; the CA said: {REFUSAL})" in row
    )
    assert "clusters: cluster1 (primary, network1)" in out
    assert f"CA of cluster3 UNREACHABLE: {mesh.ca_addrs['cluster3']}" in out


def test_status_json(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "status", "--mesh", str(mesh.dir), "-o", "json")
    doc = json.loads(out)
    assert [c["cluster"] for c in doc["cas"]] == ["cluster1", "cluster2", "cluster3"]
    orphan = next(w for w in doc["workloads"] if w["workload"] == "orphan.bookinfo@cluster5")
    assert orphan["certificate_expected"] is False
    assert orphan["serial_number"] is None
    assert REFUSAL in orphan["no_certificate_reason"]


def _status(expected: bool, serial: str | None, ready: bool) -> WorkloadStatus:
    return WorkloadStatus(
        "w", ready, "", "", "csr", serial, None, None, None, "?", certificate_expected=expected
    )


@pytest.mark.parametrize(
    ("status", "ok", "text"),
    [
        pytest.param(_status(False, None, False), True, "no certificate (expected)", id="refused"),
        pytest.param(
            _status(False, "ab", True), False, "UNEXPECTED certificate", id="refused-but-issued"
        ),
        pytest.param(_status(True, "ab", True), True, "ready", id="ready"),
        pytest.param(_status(True, None, False), False, "NOT READY", id="not-ready"),
    ],
)
def test_workload_status_verdicts(status: WorkloadStatus, ok: bool, text: str) -> None:
    assert status.ok is ok
    assert status.ready_text().startswith(text)


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        pytest.param(
            "x ca request failed, starting attempt 1 in 0.5s: first\n"
            "x ca request failed, starting attempt 2 in 1.250s: PERMISSION_DENIED: last\n"
            "x something else\n",
            "PERMISSION_DENIED: last",
            id="last-failure",
        ),
        pytest.param(
            "2026-11-23T07:21:16.016Z INFO  meshsec.agent.rotation ca request failed, starting "
            "attempt 5 in 1.679s: ca request failed: INTERNAL: CSR signing error (UNKNOWN)\n",
            "INTERNAL: CSR signing error (UNKNOWN)",
            id="agent-log-format",
        ),
        pytest.param(
            "2026-11-23T07:28:41.303Z WARNING meshsec.agent.rotation failed to renew workload "
            "certificate (attempt 5): ca request failed: UNAUTHENTICATED: request authenticate "
            "failure (unknown cluster 'cluster3'); no certificate yet; retrying in 5.87s\n",
            "UNAUTHENTICATED: request authenticate failure (unknown cluster 'cluster3')",
            id="renewal-given-up",
        ),
        pytest.param("x agent started\n", None, id="none"),
    ],
)
def test_parse_last_ca_failure(log: str, reason: str | None) -> None:
    assert parse_last_ca_failure(log) == reason
