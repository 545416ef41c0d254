"""``meshsec up examples/photo-sharing``: the seed's photo mesh, as real processes.

* ``--check`` brings the mesh up, runs the declared expectations and stops it (exit 0);
* a running mesh takes a policy edit live: the datastore's AuthorizationPolicy is flipped to
  allow the frontend, the sidecars pick it up without a restart, and ``--check`` against the
  running mesh passes with the updated expectation; SIGTERM then stops everything.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"meshsec up exited {proc.returncode} waiting for {what}\n{out}\n{err}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.2)  # wakes early if the mesh exits
    pytest.fail(f"timed out waiting for {what}")


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
        assert first.returncode == 0, first.stdout + first.stderr
        assert "checking the mesh running from" in first.stdout

        before = json.loads(_get(datastore_admin, "/config_dump")[1])["policy_version"]
        policy = mesh_dir / "datastore-authz.yaml"
        policy.write_text(
            policy.read_text().replace(
                "        - cluster.local/ns/photo-ns/sa/photo-backend\n",
                "        - cluster.local/ns/photo-ns/sa/photo-backend\n"
                "        - cluster.local/ns/photo-ns/sa/photo-frontend\n",
            )
        )
        expectations = mesh_dir / "expectations.yaml"
        text = expectations.read_text()
        flipped = text.replace(
            "to: datastore.datastore-ns:8080, expect: denied}",
            "to: datastore.datastore-ns:8080, expect: allowed}",
        )
        assert flipped != text
        expectations.write_text(flipped)

        def applied() -> bool:
            status, body = _get(datastore_admin, "/config_dump")
            return status == 200 and json.loads(body)["policy_version"] != before

        _wait_for(applied, "the datastore sidecar to apply the edit", 30, proc)
        second = run_meshsec("up", str(mesh_dir), "--check", timeout=60)
        assert second.returncode == 0, second.stdout + second.stderr
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
