"""The meshsec-up sidecar: certificates from the agent's files, policy edits applied live,
broken edits and half-written certificates rejected with the last good state kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsec.mesh.registry import MeshRegistry, PortBinding, WorkloadEntry
from meshsec.mesh.sidecar import Sidecar, SidecarConfig
from meshsec.proxy.authz import PeerInfo
from meshsec.proxy.inbound import PortMode
from tests.testca import TestCA

SPIFFE = "spiffe://cluster.local/ns/ns1/sa/sa1"
PA = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: ns1}}
spec:
  mtls: {{mode: {mode}}}
"""


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


def _write_certs(directory: Path, ca: TestCA) -> str:
    svid = ca.issue_svid(SPIFFE)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert-chain.pem").write_bytes(svid.cert_chain_pem())
    (directory / "key.pem").write_bytes(svid.private_key_pem())
    (directory / "root-cert.pem").write_bytes(ca.root_pem)
    return svid.serial_hex


def _sidecar(tmp_path: Path) -> Sidecar:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "pa.yaml").write_text(PA.format(mode="STRICT"))
    entry = WorkloadEntry("w", "ns1", "sa1", {"app": "w"}, (PortBinding(8080, 0, 0, "http"),))
    config = SidecarConfig(
        entry, MeshRegistry((entry,)), config_dir, tmp_path / "certs", 0, 0, "cluster.local"
    )
    return Sidecar(config)


def test_certificates_are_loaded_when_complete_and_reloaded_on_change(
    tmp_path: Path, ca: TestCA
) -> None:
    sidecar = _sidecar(tmp_path)
    assert not sidecar.poll_certificates()
    assert "no certificates" in sidecar.config_dump_error()
    first = _write_certs(tmp_path / "certs", ca)
    assert sidecar.poll_certificates()
    assert sidecar.tls.current.svid.serial_hex == first
    assert not sidecar.poll_certificates()  # unchanged files: nothing to do
    second = _write_certs(tmp_path / "certs", ca)
    assert sidecar.poll_certificates()
    assert sidecar.tls.current.svid.serial_hex == second


def test_a_key_from_another_rotation_is_not_used(tmp_path: Path, ca: TestCA) -> None:
    sidecar = _sidecar(tmp_path)
    serial = _write_certs(tmp_path / "certs", ca)
    assert sidecar.poll_certificates()
    other = ca.issue_svid(SPIFFE)
    (tmp_path / "certs" / "key.pem").write_bytes(other.private_key_pem())  # chain not yet
    assert not sidecar.poll_certificates()
    assert sidecar.tls.current.svid.serial_hex == serial  # the last good identity stays
    assert "not usable yet" in sidecar.config_dump_error()


def test_policy_edits_apply_live_and_broken_edits_are_rejected(tmp_path: Path) -> None:
    sidecar = _sidecar(tmp_path)
    (_binding, listener) = sidecar.inbound[0]
    assert listener.mode is PortMode.STRICT
    policy = tmp_path / "config" / "pa.yaml"
    policy.write_text(PA.format(mode="PERMISSIVE"))
    assert sidecar.source.poll()
    sidecar.apply_policy(sidecar.source.snapshot())
    assert listener.mode is PortMode.PERMISSIVE
    version = sidecar.policy.view.version
    policy.write_text(PA.format(mode="STRIKT"))
    assert not sidecar.source.poll()  # rejected: the last good version stays
    assert sidecar.policy.view.version == version
    assert listener.mode is PortMode.PERMISSIVE
    assert any("STRIKT" in line for line in sidecar.config_dump()["rejected_edit"])


def test_an_incomplete_first_read_fails_closed_until_the_directory_reads_cleanly(
    tmp_path: Path, ca: TestCA
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "pa.yaml").write_text(PA.format(mode="STRIKT"))  # as if half-read
    entry = WorkloadEntry("w", "ns1", "sa1", {"app": "w"}, (PortBinding(8080, 0, 0, "http"),))
    sidecar = Sidecar(
        SidecarConfig(
            entry, MeshRegistry((entry,)), config_dir, tmp_path / "certs", 0, 0, "cluster.local"
        )
    )
    _write_certs(tmp_path / "certs", ca)
    assert sidecar.poll_certificates()
    sidecar.listening = True
    peer = PeerInfo("127.0.0.1", "spiffe://cluster.local/ns/x/sa/y")
    decision = sidecar.policy.authorize(peer, 8080, None)
    assert not decision.allowed  # no AuthorizationPolicy known must not mean allow-all
    assert "configuration not loaded" in decision.reason
    assert not sidecar.ready
    (config_dir / "pa.yaml").write_text(PA.format(mode="STRICT"))
    assert sidecar.source.poll()
    sidecar.apply_policy(sidecar.source.snapshot())
    assert sidecar.policy.authorize(peer, 8080, None).allowed
    assert sidecar.ready


def test_an_edit_applies_only_once_the_directory_reads_the_same_twice(tmp_path: Path) -> None:
    sidecar = _sidecar(tmp_path)
    (_binding, listener) = sidecar.inbound[0]
    policy = tmp_path / "config" / "pa.yaml"
    assert not sidecar.poll_policy()  # nothing changed
    policy.write_text("")  # an editor truncated the file ...
    assert not sidecar.poll_policy()  # ... first sighting: wait
    policy.write_text(PA.format(mode="DISABLE"))  # ... and wrote it again
    assert not sidecar.poll_policy()  # changed again: wait
    assert listener.mode is PortMode.STRICT  # the empty file was never applied
    assert sidecar.poll_policy()  # settled: applied
    assert listener.mode is PortMode.DISABLE
