"""``meshsec up examples/primary-remote``: seeds 000/001 as real processes.

One mesh for the whole scenario (bringing it up is the expensive part):

* ``--check`` against the running mesh meets every expectation — cross-cluster mTLS with both
  identities verified, the remote gateway's and service's certificates from the primary's CA,
  and cluster3 (no remote secret) refused with the CA's reason;
* state.json describes the clusters and each workload's CA and root;
* the remote secret is the seed's Secret, in the primary CA's watched directory;
* removing cluster2's remote secret makes a fresh cluster2 CSR (the workload's own token,
  ``clusterid: cluster2``) refused at once; putting it back makes it issued again;
* attaching cluster3 the way an operator does (``meshsec create-remote-secret`` into the
  watched directory) makes cluster3's workload able to get certificates;
* SIGTERM stops every process (the API servers and the CA too).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshsec.mesh.cert_probe import CertificateSubject, request_certificate
from tests.e2e.test_photo_sharing import _listening, _wait_for
from tests.fakes.ca_process import MESHSEC, run_meshsec

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
START_TIMEOUT = 120.0


def copy_example(tmp_path: Path, name: str) -> Path:
    """The example and the photo-sharing apps it runs (``../photo-sharing/apps``)."""
    ignore = shutil.ignore_patterns(".meshsec", "__pycache__")
    shutil.copytree(EXAMPLES / name, tmp_path / name, ignore=ignore)
    shutil.copytree(
        EXAMPLES / "photo-sharing" / "apps", tmp_path / "photo-sharing" / "apps", ignore=ignore
    )
    return tmp_path / name


def _subject(state: dict[str, Any], name: str, namespace: str, cluster: str) -> CertificateSubject:
    (w,) = [
        w
        for w in state["workloads"]
        if (w["name"], w["namespace"], w["cluster"]) == (name, namespace, cluster)
    ]
    return CertificateSubject.from_state(w, state, f"{name}.{namespace}@{cluster}")


def _csr(subject: CertificateSubject) -> tuple[bool, str]:
    """A fresh CSR as the workload's agent makes it (its token, ``clusterid``)."""
    return asyncio.run(request_certificate(subject))


def _csr_when(subject: CertificateSubject, signed: bool) -> Callable[[], tuple[bool, str] | None]:
    def probe() -> tuple[bool, str] | None:
        result = _csr(subject)
        return result if result[0] is signed else None

    return probe


def test_primary_remote_mesh_checks_and_follows_its_remote_secrets(tmp_path: Path) -> None:
    mesh_dir = copy_example(tmp_path, "primary-remote")
    proc = subprocess.Popen(
        [*MESHSEC, "up", str(mesh_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state_path = mesh_dir / ".meshsec" / "state.json"
    try:
        state = _wait_for(
            lambda: json.loads(state_path.read_text()) if state_path.exists() else None,
            "state.json",
            START_TIMEOUT,
            proc,
        )
        check = run_meshsec("up", str(mesh_dir), "--check", timeout=90)
        out = check.stdout
        assert check.returncode == 0, out + check.stderr
        assert "all 11 expectation(s) met" in out
        assert " FAIL " not in out  # (CERTIFICATE_VERIFY_FAILED in a detail is fine)
        assert "productpage.sample@cluster3" in out
        assert "unknown cluster 'cluster3'" in out  # the CA's reason for the refusal
        assert "200 from sample/ratings@cluster1" in out  # cluster2 -> cluster1 over mTLS
        # the handshake worked and the server's policy refused the verified principal
        assert out.count("403 RBAC: access denied") == 2

        # --- state.json: clusters, and per workload its cluster, CA and root
        clusters = {c["name"]: c for c in state["clusters"]}
        assert {n: (c["role"], c["ca_cluster"]) for n, c in clusters.items()} == {
            "cluster1": ("primary", "cluster1"),
            "cluster2": ("remote", "cluster1"),
            "cluster3": ("remote", "cluster1"),
        }
        primary = clusters["cluster1"]
        assert primary["ca"]["addr"] == state["ca"]["addr"]  # the top-level ca is the primary's
        assert primary["api_server"] is None
        assert clusters["cluster2"]["ca"] is None
        assert clusters["cluster2"]["api_server"].startswith("https://127.0.0.1:")
        assert clusters["cluster3"]["remote_secret"] is None
        watched = Path(primary["ca"]["remote_secrets_dir"])
        secret_path = Path(clusters["cluster2"]["remote_secret"])
        assert secret_path.parent == watched
        assert sorted(p.name for p in watched.iterdir()) == ["cluster2.yaml"]
        assert secret_path.stat().st_mode & 0o777 == 0o600
        secret = secret_path.read_text()
        assert secret.startswith("# This file is autogenerated, do not edit.\n")
        for line in (
            "networking.istio.io/cluster: cluster2",
            'istio/multiCluster: "true"',
            "name: istio-remote-secret-cluster2",
            f"server: {clusters['cluster2']['api_server']}",
        ):
            assert line in secret
        by_key = {(w["name"], w["namespace"], w["cluster"]): w for w in state["workloads"]}
        gateway = by_key[("istio-ingressgateway", "istio-system", "cluster2")]
        assert gateway["ca_addr"] == primary["ca"]["addr"]  # a remote uses the primary's CA
        assert gateway["certificate"] == "expected"
        assert by_key[("productpage", "sample", "cluster3")]["certificate"] == "refused-expected"
        root = Path(primary["root_pem_path"]).read_bytes()
        for w in state["workloads"]:
            assert Path(w["root_pem_path"]).read_bytes() == root  # one CA: one root everywhere
        issued = run_meshsec("ca", "issued", "--data-dir", primary["ca"]["data_dir"], "-o", "json")
        assert issued.returncode == 0, issued.stderr
        rows = json.loads(issued.stdout)
        gateway_id = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
        assert {
            (r["cluster"], r["authenticator"]) for r in rows if r["spiffe_id"] == gateway_id
        } == {("cluster2", "KubeJWTAuthenticator")}

        # --- remove cluster2's remote secret: its callers are refused at once ...
        subject = _subject(state, "istio-ingressgateway", "istio-system", "cluster2")
        assert _csr(subject)[0]
        saved = secret_path.read_bytes()
        secret_path.unlink()
        # the CA polls the directory every second
        _, answer = _wait_for(_csr_when(subject, False), "cluster2 refused", 30, proc)
        assert answer.startswith("UNAUTHENTICATED: "), answer
        assert "unknown cluster 'cluster2'" in answer, answer
        assert _csr(_subject(state, "ratings", "sample", "cluster1"))[0]  # cluster1 unaffected
        # ... and put back: issued again
        tmp = watched / ".cluster2.yaml.tmp"  # hidden while written, then renamed (atomic)
        tmp.write_bytes(saved)
        tmp.rename(secret_path)
        _, answer = _wait_for(_csr_when(subject, True), "cluster2 issued again", 30, proc)
        assert answer.startswith("serial ")

        # --- attach cluster3 as an operator does: create-remote-secret into the watched dir
        cluster3 = _subject(state, "productpage", "sample", "cluster3")
        assert not _csr(cluster3)[0]
        created = run_meshsec(
            "create-remote-secret",
            "--cluster",
            clusters["cluster3"]["cluster_dir"],
            "--name",
            "cluster3",
            "-o",
            str(watched / "cluster3.yaml"),
        )
        assert created.returncode == 0, created.stderr
        _wait_for(_csr_when(cluster3, True), "cluster3's first certificate", 30, proc)
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "stopped: every process ended" in out
    # the status table at start-up: cluster3's workload has no certificate, with the CA's reason
    assert "1 not waited on (no remote secret: refused by the CA)" in out
    assert "no certificate" in out
    assert "UNAUTHENTICATED" in out  # (the table wraps the rest of the reason)
    assert "--name cluster3 -o" in out  # the hint: how to attach cluster3
    assert not state_path.exists()
    assert not _listening(state["ca"]["addr"])
    for c in state["clusters"]:
        if c["api_server"]:
            assert not _listening(c["api_server"].removeprefix("https://"))
    for w in state["workloads"]:
        for addr in (w["agent_status"], w["proxy_admin"], w["http_proxy"]):
            assert not _listening(addr), f"{w['name']}@{w['cluster']}: {addr} still listening"
