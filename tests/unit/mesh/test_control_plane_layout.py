"""Where each cluster's pieces live and what state.json says about them (no process started)."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

from meshsec.mesh.control_plane import ControlPlane
from meshsec.mesh.launch import UpOptions
from meshsec.mesh.manifests import load_mesh_plan
from meshsec.mesh.state import compose_cluster
from tests.fakes.clock import FakeClock

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _control(example: str, state_dir: Path) -> ControlPlane:
    def spawn(coro: Awaitable[None]) -> None:
        raise AssertionError("nothing runs in a layout test")

    plan = load_mesh_plan(EXAMPLES / example)
    return ControlPlane(plan, state_dir, UpOptions(), FakeClock(), {}, lambda _m: None, spawn)


def test_primary_remote_layout(tmp_path: Path) -> None:
    control = _control("primary-remote", tmp_path)
    c1, c2, c3 = (control.clusters[n] for n in ("cluster1", "cluster2", "cluster3"))
    assert [c.name for c in control.primaries] == ["cluster1"]
    assert c1.ca_data_dir == tmp_path / "cas" / "cluster1"
    assert c1.cacerts == tmp_path / "cacerts" / "cluster1"  # root: shared
    assert c1.remote_secrets_dir == tmp_path / "remote-secrets" / "cluster1"
    for remote in (c2, c3):
        assert remote.issuing is c1
        assert remote.ca_data_dir is None
        assert remote.api_log == tmp_path / "clusters" / f"{remote.name}.apiserver.log"
        assert remote.root_bundle == c1.ca_data_dir / "root-cert.pem"
    assert c2.root_path("sample") == tmp_path / "roots" / "cluster2" / "sample" / "root-cert.pem"
    state = compose_cluster(c2)
    assert state["role"] == "remote"
    assert state["ca_cluster"] == "cluster1"
    assert state["ca"] is None
    assert state["ca_root"] == "shared"
    assert state["cluster_dir"] == str(tmp_path / "clusters" / "cluster2")
    primary = compose_cluster(c1)["ca"]
    assert primary["remote_secrets_dir"] == str(c1.remote_secrets_dir)
    assert primary["cacerts"] == str(c1.cacerts)


def test_multi_primary_layout(tmp_path: Path) -> None:
    control = _control("multi-primary", tmp_path)
    assert [c.name for c in control.primaries] == ["cluster1", "cluster2", "cluster3"]
    assert control.remotes == []
    own = control.clusters["cluster3"]
    assert own.cacerts is None  # its own self-signed root, in its data dir
    assert own.remote_secrets_dir is None  # no remotes: no watched directory
    assert compose_cluster(own)["ca_root"] == "own"
    assert control.clusters["cluster2"].cacerts == tmp_path / "cacerts" / "cluster2"


def test_single_cluster_keeps_its_layout(tmp_path: Path) -> None:
    control = _control("photo-sharing", tmp_path)
    (only,) = control.clusters.values()
    assert only.name == "cluster1"
    assert only.ca_data_dir == tmp_path / "ca"
    assert only.ca_log == tmp_path / "ca.log"
    assert only.cacerts is None
    assert only.root_path("photo-ns") == tmp_path / "roots" / "photo-ns" / "root-cert.pem"
    assert compose_cluster(only)["api_server"] is None
