"""``meshsec up examples/photo-sharing``: the seed's photo mesh, as real processes.

* ``--check`` brings the mesh up, runs the declared expectations and stops it (exit 0);
* a running mesh takes a policy edit live: the datastore's AuthorizationPolicy is flipped to
  allow the frontend, the sidecars pick it up without a restart, and ``--check`` against the
  running mesh passes with the updated expectation; SIGTERM then stops everything.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from meshsec.config.sources.files import digest, read_files
from tests.e2e.process_wait import wait_while_running
from tests.fakes.ca_process import MESHSEC, run_meshsec

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "photo-sharing"
START_TIMEOUT = 90.0


@pytest.fixture
def mesh_dir(tmp_path: Path) -> Path:
    target = tmp_path / "photo-sharing"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".meshsec", "__pycache__"))
    return target


def _get(addr: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _wait_for(predicate: Any, what: str, timeout: float, proc: subprocess.Popen[str]) -> Any:
    """Poll ``predicate`` (a cheap local read) until truthy; fail early if ``proc`` died."""

    def exited() -> str:
        out, err = proc.communicate()
        return f"meshsec up exited {proc.returncode} waiting for {what}\n{out}\n{err}"

    return wait_while_running(predicate, what, proc, timeout=timeout, exited=exited)


def _diagnose(mesh_dir: Path, state: dict[str, Any]) -> str:
    """What each sidecar enforces and the tail of every log, for a failure message."""
    parts = []
    for w in state["workloads"]:
        status, dump = _get(w["proxy_admin"], "/config_dump")
        parts.append(f"--- {w['name']}.{w['namespace']} config_dump ({status}): {dump[:1500]}")
        for log in ("proxy.log", "app.log"):
            path = Path(w["log_dir"]) / log
            if path.exists():
                parts.append(f"--- {path}:\n" + "\n".join(path.read_text().splitlines()[-15:]))
    return "\n".join(parts)


def _replace_file(path: Path, text: str) -> None:
    """Replace a manifest atomically, as editors and config tools do (write, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _listening(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def test_check_brings_the_photo_mesh_up_meets_every_expectation_and_stops(
    mesh_dir: Path,
) -> None:
    result = run_meshsec("up", str(mesh_dir), "--check", timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "all 10 expectation(s) met" in out
    assert "FAIL" not in out
    for workload in ("photo-frontend.photo-ns", "datastore.datastore-ns", "legacy.datastore-ns"):
        assert workload in out
    assert "spiffe://cluster.local/ns/photo-ns/sa/photo-backend" in out
    assert "8080 DISABLE http" in out  # legacy's workload-level DISABLE
    assert "8080 PERMISSIVE http" in out  # the public namespace
    state = mesh_dir / ".meshsec"
    assert not (state / "state.json").exists()  # removed on a clean stop
    assert not list(state.rglob("*.sock"))  # no socket left behind
    assert (state / ".gitignore").read_text() == "*\n"
    # the istio-ca-root-cert equivalent, one per namespace, equal to the CA's root
    root = (state / "ca" / "root-cert.pem").read_bytes()
    for ns in ("photo-ns", "datastore-ns", "public-ns", "istio-system"):
        assert (state / "roots" / ns / "root-cert.pem").read_bytes() == root
    issued = run_meshsec("ca", "issued", "--data-dir", str(state / "ca"), "-o", "json")
    assert issued.returncode == 0, issued.stderr
    by_id = {r["spiffe_id"]: r["authenticator"] for r in json.loads(issued.stdout)}
    assert by_id["spiffe://cluster.local/ns/datastore-ns/sa/legacy"] == "secret-controller"
    assert by_id["spiffe://cluster.local/ns/photo-ns/sa/photo-frontend"] != "secret-controller"
    mounted = state / "mounted" / "datastore-ns" / "istio.legacy"
    assert (mounted / "key.pem").stat().st_mode & 0o777 == 0o600
    # the legacy agent served the mounted certificate (same serial in its output files)
    legacy_out = state / "workloads" / "datastore-ns" / "legacy" / "certs" / "cert-chain.pem"
    assert (
        legacy_out.read_bytes().split(b"-----END")[0]
        == (mounted / "cert-chain.pem").read_bytes().split(b"-----END")[0]
    )


def test_policy_edit_applies_to_the_running_mesh_without_restart(mesh_dir: Path) -> None:
    proc = subprocess.Popen(
        [*MESHSEC, "up", str(mesh_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state_path = mesh_dir / ".meshsec" / "state.json"
    try:
        state = _wait_for(
            lambda: json.loads(state_path.read_text()) if state_path.exists() else None,
            "state.json",
            START_TIMEOUT,
            proc,
        )
        workloads = {f"{w['name']}.{w['namespace']}": w for w in state["workloads"]}
        assert workloads["legacy.datastore-ns"]["cert_model"] == "mounted"
        assert workloads["photo-frontend.photo-ns"]["cert_model"] == "csr"
        datastore_admin = workloads["datastore.datastore-ns"]["proxy_admin"]

        first = run_meshsec("up", str(mesh_dir), "--check", timeout=60)
        assert first.returncode == 0, first.stdout + first.stderr + _diagnose(mesh_dir, state)
        assert "checking the mesh running from" in first.stdout
        again = run_meshsec("up", str(mesh_dir), timeout=60)  # a second mesh on the same dir
        assert again.returncode == 3, again.stdout + again.stderr
        assert "already running" in again.stdout
        assert state_path.exists()  # the running mesh's state is left alone

        before = json.loads(_get(datastore_admin, "/config_dump")[1])["policy_version"]
        assert before == digest(read_files([mesh_dir])[0])  # the sidecar read every file
        policy = mesh_dir / "datastore-authz.yaml"
        _replace_file(
            policy,
            policy.read_text().replace(
                "        - cluster.local/ns/photo-ns/sa/photo-backend\n",
                "        - cluster.local/ns/photo-ns/sa/photo-backend\n"
                "        - cluster.local/ns/photo-ns/sa/photo-frontend\n",
            ),
        )
        # and the public namespace goes STRICT: plaintext clients are now refused there
        peer_authn = mesh_dir / "peer-authentication.yaml"
        text = peer_authn.read_text()
        assert text.count("mode: PERMISSIVE") == 1
        _replace_file(peer_authn, text.replace("mode: PERMISSIVE", "mode: STRICT"))
        expectations = mesh_dir / "expectations.yaml"
        text = expectations.read_text()
        flipped = text.replace(
            "to: datastore.datastore-ns:8080, expect: denied}",
            "to: datastore.datastore-ns:8080, expect: allowed}",
        ).replace(
            "{from: outside, to: gallery.public-ns:8080, expect: allowed}",
            "{from: outside, to: gallery.public-ns:8080, expect: refused}",
        )
        assert flipped.count("expect: denied") == 0
        assert flipped.count("expect: refused") == 3
        _replace_file(expectations, flipped)
        expected_version = digest(read_files([mesh_dir])[0])
        gallery_admin = workloads["gallery.public-ns"]["proxy_admin"]

        def applied() -> bool:
            for admin in (datastore_admin, gallery_admin):
                status, body = _get(admin, "/config_dump")
                if status != 200 or json.loads(body)["policy_version"] != expected_version:
                    return False
            return True

        _wait_for(applied, "the datastore sidecar to apply the edit", 30, proc)
        second = run_meshsec("up", str(mesh_dir), "--check", timeout=60)
        assert second.returncode == 0, second.stdout + second.stderr + _diagnose(mesh_dir, state)
        assert "all 10 expectation(s) met" in second.stdout
        assert proc.poll() is None  # nothing restarted: the same mesh process is running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "stopped: every process ended" in out
    assert not state_path.exists()
    assert not list((mesh_dir / ".meshsec").rglob("*.sock"))
    for w in state["workloads"]:
        for addr in (w["agent_status"], w["proxy_admin"], w["http_proxy"]):
            assert not _listening(addr), f"{w['name']}: {addr} still listening after stop"


def test_a_failing_application_is_named_with_its_log_tail_and_nothing_is_left(
    tmp_path: Path,
) -> None:
    mesh = tmp_path / "m"
    mesh.mkdir()
    (mesh / "mesh.yaml").write_text(
        """
apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: broken, namespace: ns1}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: broken, namespace: ns1, labels: {app: broken}}
spec:
  serviceAccount: broken
  command: [python, -c, "import sys; print('cannot open the photo bucket'); sys.exit(4)"]
  ports: [{port: 8080, protocol: http}]
"""
    )
    result = run_meshsec("up", str(mesh), "--check", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "application of ns1/broken" in result.stdout
    assert "exited with code 4" in result.stdout
    assert "cannot open the photo bucket" in result.stdout  # the log tail
    assert not list((mesh / ".meshsec").rglob("*.sock"))
    assert not (mesh / ".meshsec" / "state.json").exists()


def test_bad_manifests_start_nothing_and_say_where(tmp_path: Path) -> None:
    mesh = tmp_path / "m"
    shutil.copytree(EXAMPLE, mesh, ignore=shutil.ignore_patterns(".meshsec", "__pycache__"))
    workloads = mesh / "workloads.yaml"
    workloads.write_text(workloads.read_text().replace("protocol: http}", "protocol: grpc}", 1))
    result = run_meshsec("up", str(mesh), "--check", timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "workloads.yaml" in result.stdout
    assert "invalid protocol 'grpc'" in result.stdout
    assert not (mesh / ".meshsec").exists()


def test_mounted_certificates_rotate_and_the_agent_and_sidecar_pick_them_up(
    mesh_dir: Path,
) -> None:
    proc = subprocess.Popen(
        [*MESHSEC, "up", str(mesh_dir), "--mounted-cert-ttl", "8s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state_path = mesh_dir / ".meshsec" / "state.json"
    try:
        state = _wait_for(
            lambda: json.loads(state_path.read_text()) if state_path.exists() else None,
            "state.json",
            START_TIMEOUT,
            proc,
        )
        legacy = next(w for w in state["workloads"] if w["name"] == "legacy")

        def served() -> tuple[str, str]:
            _, secrets = _get(legacy["agent_status"], "/debug/secrets")
            _, dump = _get(legacy["proxy_admin"], "/config_dump")
            agent_serial = next(
                r["serial"]
                for r in json.loads(secrets)["resources"]
                if r["resource_name"] == "default"
            )
            return agent_serial, json.loads(dump)["certificate"]["serial"]

        # A read of the agent and one of the sidecar may straddle a rotation (8 s certificates):
        # start from a moment where both serve the same certificate.
        first: list[tuple[str, str]] = []

        def consistent() -> bool:
            first[:] = [served()]
            return first[0][0] == first[0][1]

        _wait_for(consistent, "the agent and the sidecar serving the same certificate", 30, proc)
        first_agent = first[0][0]
        mounted = Path(legacy["mounted_dir"]) / "cert-chain.pem"

        def rotated() -> bool:
            agent, proxy = served()
            return agent != first_agent and proxy == agent

        _wait_for(rotated, "a rotation served by the agent and the sidecar", 30, proc)
        assert mounted.exists()
        # mTLS with the rotated mounted certificate still works
        check = run_meshsec("up", str(mesh_dir), "--check", timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err


ONE_SHOT_APP = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
        print("served one request; giving up", flush=True)
        os._exit(5)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def test_an_application_dying_while_the_mesh_runs_is_named_and_stops_the_mesh(
    tmp_path: Path,
) -> None:
    mesh = tmp_path / "m"
    mesh.mkdir()
    (mesh / "oneshot.py").write_text(ONE_SHOT_APP)
    (mesh / "mesh.yaml").write_text(
        """
apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: oneshot, namespace: ns1}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: oneshot, namespace: ns1, labels: {app: oneshot}}
spec:
  serviceAccount: oneshot
  command: [python, oneshot.py]
  ports: [{port: 8080, protocol: http}]
"""
    )
    proc = subprocess.Popen(
        [*MESHSEC, "up", str(mesh)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state_path = mesh / ".meshsec" / "state.json"
    try:
        state = _wait_for(
            lambda: json.loads(state_path.read_text()) if state_path.exists() else None,
            "state.json",
            START_TIMEOUT,
            proc,
        )
        port = state["workloads"][0]["ports"][0]["app_port"]
        _get(f"127.0.0.1:{port}", "/")  # the app answers, then exits 5
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out + err
    assert "application of ns1/oneshot" in out
    assert "exited unexpectedly with code 5" in out
    assert "served one request; giving up" in out
    assert not state_path.exists()
    for addr in (state["workloads"][0]["agent_status"], state["workloads"][0]["proxy_admin"]):
        assert not _listening(addr)
