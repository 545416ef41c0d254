"""The operator commands against a real ``meshsec up examples/photo-sharing``.

One mesh per module (bringing it up takes a few seconds): ``proxy-config secret`` shows the serial
``openssl x509`` reads from each workload's output files, ``rootca-compare`` finds one root,
``status`` sees every workload ready and the CA reachable, ``check`` predicts what the mesh's own
``--check`` observes for every in-mesh expectation, ``describe`` names the certificate model;
once the mesh stops, the live commands exit 3.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.process_wait import wait_while_running
from tests.fakes.ca_process import MESHSEC, run_meshsec

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "photo-sharing"
START_TIMEOUT = 90.0


@dataclass
class RunningMesh:
    directory: Path
    state: dict[str, Any]
    process: subprocess.Popen[str]

    def workloads(self) -> list[str]:
        return [f"{w['name']}.{w['namespace']}" for w in self.state["workloads"]]

    def meshsec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_meshsec(*args, "--mesh", str(self.directory), timeout=60)


def _wait_for_state(path: Path, proc: subprocess.Popen[str]) -> dict[str, Any]:
    def state() -> dict[str, Any] | None:
        if path.exists():
            with contextlib.suppress(ValueError):
                return dict(json.loads(path.read_text()))
        return None

    def exited() -> str:
        out, err = proc.communicate()
        return f"meshsec up exited {proc.returncode}\n{out}\n{err}"

    found: dict[str, Any] = wait_while_running(
        state, "state.json", proc, timeout=START_TIMEOUT, exited=exited
    )
    return found


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("operator") / "photo-sharing"
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns(".meshsec", "__pycache__"))
    proc = subprocess.Popen(
        [*MESHSEC, "up", str(directory)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        state = _wait_for_state(directory / ".meshsec" / "state.json", proc)
        running = RunningMesh(directory, state, proc)
        # state.json is written once everything is ready; wait until every agent says so
        deadline = time.monotonic() + START_TIMEOUT
        while running.meshsec("status").returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"mesh not ready: {running.meshsec('status').stdout}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.2)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def _openssl_serial(path: Path) -> int:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-serial"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip().removeprefix("serial="), 16)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_secret_serial_matches_openssl_on_the_output_files(mesh: RunningMesh) -> None:
    for w in mesh.state["workloads"]:
        ref = f"{w['name']}.{w['namespace']}"
        result = mesh.meshsec("proxy-config", "secret", ref, "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        secrets = json.loads(result.stdout)["secrets"]
        default = next(s for s in secrets if s["resource_name"] == "default")
        assert default["status"] == "ACTIVE"
        assert default["valid_cert"] is True
        assert default["spiffe_id"] == w["spiffe_id"]
        on_disk = _openssl_serial(Path(w["cert_dir"]) / "cert-chain.pem")
        assert int(default["serial_number"], 16) == on_disk, ref
        assert any(s["type"] == "CA" and s["status"] == "ACTIVE" for s in secrets)


def test_secret_table_uses_istioctl_columns(mesh: RunningMesh) -> None:
    result = mesh.meshsec("proxy-config", "secret", "photo-frontend.photo-ns")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == [
        "RESOURCE", "NAME", "TYPE", "STATUS", "VALID", "CERT", "SERIAL", "NUMBER", "NOT", "AFTER",
        "NOT", "BEFORE",
    ]  # fmt: skip


def test_rootca_compare_one_root_for_the_whole_mesh(mesh: RunningMesh) -> None:
    result = mesh.meshsec("proxy-config", "rootca-compare", "photo-frontend", "legacy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(
        "Both [photo-frontend.photo-ns] and [legacy.datastore-ns] have the identical ROOTCA"
    )


def test_status_every_workload_ready_and_ca_reachable(mesh: RunningMesh) -> None:
    result = mesh.meshsec("status", "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ca"]["reachable"] is True
    assert "verified" in doc["ca"]["detail"]
    assert sorted(w["workload"] for w in doc["workloads"]) == sorted(mesh.workloads())
    for w in doc["workloads"]:
        assert w["ready"] is True, w
        assert w["expires_in_seconds"] > 3600
        assert w["serial_number"]
    models = {w["workload"]: w["cert_model"] for w in doc["workloads"]}
    assert models["legacy.datastore-ns"] == "mounted"
    assert models["photo-frontend.photo-ns"] == "csr"


def test_check_predicts_the_mesh_expectations(mesh: RunningMesh) -> None:
    """Every expectation (in-mesh clients and ``outside``): allowed ⇔ OK + ALLOW (exit 0);
    denied ⇔ OK + DENY (exit 1); refused ⇔ CONFLICT (exit 1). The mesh's own --check observes
    the same."""
    spec = yaml.safe_load((mesh.directory / "expectations.yaml").read_text())["spec"]
    checked = 0
    for item in spec["expectations"]:
        result = mesh.meshsec("check", item["from"], item["to"], "-o", "json")
        assert result.returncode in (0, 1), result.stderr
        doc = json.loads(result.stdout)
        (route,) = doc["routes"]
        endpoint = route["endpoints"][0]
        verdict = (endpoint["authorization"] or {}).get("decision")
        got = {
            ("OK", "ALLOW"): "allowed",
            ("OK", "DENY"): "denied",
        }.get((endpoint["status"], verdict), "refused")
        assert got == item["expect"], (item, endpoint)
        assert result.returncode == (0 if got == "allowed" else 1)
        checked += 1
    assert checked == len(spec["expectations"])
    observed = run_meshsec("up", str(mesh.directory), "--check", timeout=90)
    assert observed.returncode == 0, observed.stdout + observed.stderr


def test_describe_names_identity_model_and_policies(mesh: RunningMesh) -> None:
    result = mesh.meshsec("describe", "legacy.datastore-ns")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "SPIFFE ID: spiffe://cluster.local/ns/datastore-ns/sa/legacy" in out
    assert "Certificate model: mounted" in out
    assert "Workload mTLS mode: DISABLE" in out
    assert "Trusts root: O=cluster.local" in out
    assert "Current certificate: serial " in out
    front = mesh.meshsec("describe", "photo-frontend", "-o", "json")
    assert front.returncode == 0, front.stdout + front.stderr
    doc = json.loads(front.stdout)
    assert doc["identity"]["cert_model"] == "csr"
    datastore = next(r for r in doc["outbound"] if r["host"].startswith("datastore."))
    assert datastore["client"]["tls_mode"] == "ISTIO_MUTUAL"
    assert datastore["client"]["subject_alt_names"] == [
        "spiffe://cluster.local/ns/datastore-ns/sa/datastore"
    ]
    assert datastore["endpoints"][0]["authorization"]["decision"] == "DENY"


def test_unknown_workload_lists_the_known_ones(mesh: RunningMesh) -> None:
    result = mesh.meshsec("proxy-config", "secret", "nosuch")
    assert result.returncode == 2
    assert "photo-frontend.photo-ns" in result.stderr


def test_zz_after_stop_live_commands_exit_3(mesh: RunningMesh) -> None:
    """Runs last in this module: stops the mesh, then the live commands say it is not running."""
    mesh.process.send_signal(signal.SIGTERM)
    mesh.process.communicate(timeout=60)
    for args in (("status",), ("proxy-config", "secret", "photo-frontend")):
        result = mesh.meshsec(*args)
        assert result.returncode == 3, result.stdout + result.stderr
        assert "mesh unavailable" in result.stderr
