"""The operator commands against real multi-cluster meshes (``examples/multi-primary`` and
``examples/primary-remote``), one running mesh per example:

* ``describe`` names the workload's cluster, the CA that signs for it with its intermediate, the
  root its agent trusts (the fingerprint of the mesh root on disk) and the issuer chain;
* ``proxy-config rootca-compare`` says which clusters share a root (exit 0) and which cannot talk
  (a cluster with its own root; a remote cluster without a remote secret: exit 1);
* ``status`` has a CLUSTER column and reports the refused workload with the CA's reason;
* ``check`` predicts, for every traffic expectation of the example, what ``meshsec up --check``
  observes on the running mesh (the cross-cluster refusals included).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshsec.core.pki import parse_certificates_pem
from meshsec.core.pki.bundle import certificate_fingerprint
from tests.fakes.ca_process import MESHSEC, run_meshsec

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
START_TIMEOUT = 150.0


@dataclass
class RunningMesh:
    directory: Path
    state: dict[str, Any]
    process: subprocess.Popen[str]

    def meshsec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_meshsec(*args, "--mesh", str(self.directory), timeout=60)

    def root_fingerprint(self, path: str) -> str:
        return certificate_fingerprint(parse_certificates_pem(Path(path).read_bytes())[0])


def _start(tmp_path: Path, name: str) -> Iterator[RunningMesh]:
    ignore = shutil.ignore_patterns(".meshsec", "__pycache__")
    directory = tmp_path / name
    shutil.copytree(EXAMPLES / name, directory, ignore=ignore)
    shutil.copytree(
        EXAMPLES / "photo-sharing" / "apps", tmp_path / "photo-sharing" / "apps", ignore=ignore
    )
    proc = subprocess.Popen(
        [*MESHSEC, "up", str(directory)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state_path = directory / ".meshsec" / "state.json"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        state: dict[str, Any] | None = None
        while state is None:
            if state_path.exists():
                with contextlib.suppress(ValueError):
                    state = dict(json.loads(state_path.read_text()))
                    continue
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"meshsec up exited {proc.returncode}\n{out}\n{err}")
            if time.monotonic() > deadline:
                pytest.fail("timed out waiting for state.json")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.2)  # returns early if the mesh dies
        yield RunningMesh(directory, state, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


@pytest.fixture(scope="module")
def multi_primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    yield from _start(tmp_path_factory.mktemp("mp"), "multi-primary")


@pytest.fixture(scope="module")
def primary_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    yield from _start(tmp_path_factory.mktemp("pr"), "primary-remote")


def _predicted(mesh: RunningMesh, source: str, target: str) -> tuple[str, int]:
    """What ``meshsec check`` predicts: allowed (OK + ALLOW), denied (OK + DENY), refused."""
    result = mesh.meshsec("check", source, target, "-o", "json")
    assert result.returncode in (0, 1), result.stderr
    (route,) = json.loads(result.stdout)["routes"]
    verdicts = set()
    for endpoint in route["endpoints"]:
        decision = str((endpoint["authorization"] or {}).get("decision"))
        verdicts.add(
            {("OK", "ALLOW"): "allowed", ("OK", "DENY"): "denied"}.get(
                (endpoint["status"], decision), "refused"
            )
        )
    assert len(verdicts) == 1, route
    return verdicts.pop(), result.returncode


def _check_predicts_expectations(mesh: RunningMesh) -> int:
    spec = yaml.safe_load((mesh.directory / "expectations.yaml").read_text())["spec"]
    checked = 0
    for item in spec["expectations"]:
        if "from" not in item:
            continue  # certificate expectations: status/describe cover those
        got, code = _predicted(mesh, item["from"], item["to"])
        assert got == item["expect"], item
        assert code == (0 if got == "allowed" else 1), item
        checked += 1
    observed = run_meshsec("up", str(mesh.directory), "--check", timeout=120)
    assert observed.returncode == 0, observed.stdout + observed.stderr
    return checked


# --- multi-primary: per-cluster intermediates of one root, and cluster3 with its own ----------


def test_multi_primary_describe(multi_primary: RunningMesh) -> None:
    result = multi_primary.meshsec("describe", "sleep.sample@cluster2")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr  # its calls to cluster3 conflict
    clusters = {c["name"]: c for c in multi_primary.state["clusters"]}
    mesh_root = multi_primary.root_fingerprint(
        str(multi_primary.directory / ".meshsec" / "mesh-root" / "root-cert.pem")
    )
    assert "   Cluster: cluster2 (primary, network network2, shared root)" in out
    assert f"   CA: {clusters['cluster2']['ca']['addr']}, cluster2's CA" in out
    assert "      Signing certificate: CN=Intermediate CA,L=cluster2,O=cluster.local" in out
    assert f"sha256:{mesh_root} (agent /debug/secrets)" in out
    assert "      CN=Intermediate CA,L=cluster2,O=cluster.local (intermediate, sha256:" in out
    assert "      verifies up to a root it trusts" in out
    assert "-> helloworld-v3.sample@cluster3: server STRICT, CONFLICT" in out
    assert "trust: cluster3 trusts a different root than cluster2" in out


def test_multi_primary_rootca_compare(multi_primary: RunningMesh) -> None:
    shared = multi_primary.meshsec(
        "proxy-config", "rootca-compare", "sleep@cluster1", "helloworld-v2"
    )
    assert shared.returncode == 0, shared.stdout + shared.stderr
    assert "have the identical ROOTCA" in shared.stdout
    assert "cluster1 and cluster2 share root sha256:" in shared.stdout
    assert "(intermediates: cluster1, cluster2)" in shared.stdout
    other = multi_primary.meshsec(
        "proxy-config", "rootca-compare", "sleep@cluster1", "sleep@cluster3", "-o", "json"
    )
    assert other.returncode == 1
    doc = json.loads(other.stdout)
    assert doc["identical"] is False
    assert doc["explanation"][0].startswith("cluster3 trusts a different root (sha256:")
    assert doc["explanation"][0].endswith("mTLS between them will fail")
    assert any("cluster3 does not accept the certificate" in x for x in doc["explanation"])


def test_multi_primary_status_and_refs(multi_primary: RunningMesh) -> None:
    status = multi_primary.meshsec("status")
    assert status.returncode == 0, status.stdout + status.stderr
    header = next(x for x in status.stdout.splitlines() if x.startswith("WORKLOAD"))
    assert header.split()[:2] == ["WORKLOAD", "CLUSTER"]
    assert status.stdout.count("CA of cluster") == 3
    ambiguous = multi_primary.meshsec("describe", "sleep")
    assert ambiguous.returncode == 2
    assert (
        "candidates: sleep.sample@cluster1, sleep.sample@cluster2, sleep.sample@cluster3"
    ) in ambiguous.stderr


def _call_inbound_as(mesh: RunningMesh, client: str, server: str) -> str:
    """An HTTP request straight to ``server``'s inbound mTLS port, presenting ``client``'s
    certificate and NOT checking the server's: what the SERVER sidecar decides about the
    client's chain (a client sidecar would refuse a foreign root before the server is asked).
    ``client``/``server`` are ``name@cluster`` in namespace ``sample``."""
    by_ref = {f"{w['name']}@{w['cluster']}": w for w in mesh.state["workloads"]}
    certs = Path(by_ref[client]["cert_dir"])
    (port,) = by_ref[server]["ports"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["istio-peer-exchange", "istio"])
    ctx.load_cert_chain(certs / "cert-chain.pem", certs / "key.pem")
    try:
        with (
            socket.create_connection(("127.0.0.1", port["inbound"]), timeout=10) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: helloworld\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"
    return answer.split(b"\r\n", 1)[0].decode() if answer else "refused: closed, no answer"


def test_multi_primary_servers_refuse_a_client_of_another_root(multi_primary: RunningMesh) -> None:
    """The other half of "refused both ways": every sleep has the same SPIFFE ID, which the
    AuthorizationPolicy allows, so only the client's ROOT decides here."""
    ok = _call_inbound_as(multi_primary, "sleep@cluster2", "helloworld-v1@cluster1")
    assert ok.startswith("HTTP/1.1 200"), ok  # the control: a shared-root client is let in
    for client, server in (
        ("sleep@cluster3", "helloworld-v1@cluster1"),
        ("sleep@cluster3", "helloworld-v2@cluster2"),
        ("sleep@cluster1", "helloworld-v3@cluster3"),
    ):
        got = _call_inbound_as(multi_primary, client, server)
        assert "TLSV1_ALERT_UNKNOWN_CA" in got, (client, server, got)  # the server said so


def test_multi_primary_check_predicts_the_expectations(multi_primary: RunningMesh) -> None:
    assert _check_predicts_expectations(multi_primary) == 9


# --- primary-remote: one CA in cluster1; cluster2 attached, cluster3 without a remote secret ---


def test_primary_remote_describe(primary_remote: RunningMesh) -> None:
    gateway = primary_remote.meshsec("describe", "istio-ingressgateway")
    out = gateway.stdout
    assert gateway.returncode == 0, out + gateway.stderr
    primary = next(c for c in primary_remote.state["clusters"] if c["name"] == "cluster1")
    assert "Workload: istio-ingressgateway.istio-system@cluster2" in out
    assert "   Cluster: cluster2 (remote of cluster1, network network1, shared root)" in out
    assert f"   CA: {primary['ca']['addr']}, cluster1's CA" in out
    assert "cluster2.yaml (cluster1's CA verifies cluster2's tokens)" in out
    assert "      CN=Intermediate CA,L=cluster1,O=cluster.local (intermediate" in out
    root = primary_remote.root_fingerprint(primary["root_pem_path"])
    assert f"sha256:{root} (agent /debug/secrets)" in out

    refused = primary_remote.meshsec("describe", "productpage@cluster3")
    assert "Remote secret: none: cluster1's CA cannot verify cluster3's tokens" in refused.stdout
    assert (
        "Current certificate: none (expected: cluster3 has no remote secret in cluster1's CA"
    ) in refused.stdout


def test_primary_remote_rootca_compare(primary_remote: RunningMesh) -> None:
    ok = primary_remote.meshsec("proxy-config", "rootca-compare", "istio-ingressgateway", "ratings")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "cluster2 and cluster1 share root sha256:" in ok.stdout
    refused = primary_remote.meshsec(
        "proxy-config", "rootca-compare", "productpage@cluster3", "ratings"
    )
    assert refused.returncode == 1
    assert "productpage.sample@cluster3 has no certificate (expected:" in refused.stdout


def test_primary_remote_status_reports_the_refusal(primary_remote: RunningMesh) -> None:
    status = primary_remote.meshsec("status")
    assert status.returncode == 0, status.stdout + status.stderr  # refused as expected
    row = next(x for x in status.stdout.splitlines() if x.startswith("productpage.sample@cluster3"))
    assert "no certificate (expected: cluster3 has no remote secret; the CA said:" in row
    assert "unknown cluster 'cluster3'" in row


def test_primary_remote_check_predicts_the_expectations(primary_remote: RunningMesh) -> None:
    assert _check_predicts_expectations(primary_remote) == 7
