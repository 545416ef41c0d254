"""The meshsec-up sidecar (the proxy package's policy-aware proxy, configured from sidecar.json):
certificates from the agent's files, policy edits applied live, broken edits and half-written
certificates rejected with the last good state kept."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshsec.mesh.sidecar import SidecarConfig, build_sidecar
from meshsec.proxy.authz import PeerInfo
from meshsec.proxy.inbound import PortMode
from meshsec.proxy.registry import PortBinding, Registry, WorkloadEntry
from meshsec.proxy.server import ProxyServer
from tests.fakes.clock import FakeClock
from tests.testca import TestCA

SPIFFE = "spiffe://cluster.local/ns/ns1/sa/sa1"
PA = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: ns1}}
spec:
  mtls: {{mode: {mode}}}
"""
STARTED: list[ProxyServer] = []


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(autouse=True)
async def stop_sidecars() -> AsyncIterator[None]:
    yield
    while STARTED:
        await STARTED.pop().shutdown()


def _write_certs(directory: Path, ca: TestCA) -> str:
    svid = ca.issue_svid(SPIFFE)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert-chain.pem").write_bytes(svid.cert_chain_pem())
    (directory / "key.pem").write_bytes(svid.private_key_pem())
    (directory / "root-cert.pem").write_bytes(ca.root_pem)
    return svid.serial_hex


def _config(tmp_path: Path, mode: str = "STRICT") -> SidecarConfig:
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "pa.yaml").write_text(PA.format(mode=mode))
    entry = WorkloadEntry("w", "ns1", "sa1", {"app": "w"}, (PortBinding(8080, 1, 0, "http"),))
    return SidecarConfig(
        entry, Registry((entry,)), config_dir, tmp_path / "certs", 0, 0, "cluster.local"
    )


async def _start(config: SidecarConfig, clock: FakeClock) -> ProxyServer:
    server = build_sidecar(config, clock=clock)
    await server.start()
    STARTED.append(server)
    return server


def test_sidecar_json_round_trips(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps(config.to_json()))
    assert SidecarConfig.load(path) == config


async def test_certificates_are_loaded_when_complete_and_reloaded_on_change(
    tmp_path: Path, ca: TestCA
) -> None:
    clock = FakeClock()
    server = await _start(_config(tmp_path), clock)
    assert not server.ready()
    assert "no usable certificates" in server.not_ready_reason()
    first = _write_certs(tmp_path / "certs", ca)
    await clock.wait_for_sleepers(2)  # the cert watcher and the policy watcher
    clock.advance(0.5)
    await clock.wait_for_sleepers(2)
    assert server.tls.current.svid.serial_hex == first
    assert server.ready()
    assert server.config_dump()["certificate"]["serial"] == first
    second = _write_certs(tmp_path / "certs", ca)
    clock.advance(0.5)
    await clock.wait_for_sleepers(2)
    assert server.tls.current.svid.serial_hex == second


async def test_a_key_from_another_rotation_is_not_used(tmp_path: Path, ca: TestCA) -> None:
    serial = _write_certs(tmp_path / "certs", ca)
    clock = FakeClock()
    server = await _start(_config(tmp_path), clock)
    assert server.tls.current.svid.serial_hex == serial
    other = ca.issue_svid(SPIFFE)
    (tmp_path / "certs" / "key.pem").write_bytes(other.private_key_pem())  # chain not yet
    await clock.wait_for_sleepers(2)
    clock.advance(0.5)
    await clock.wait_for_sleepers(2)
    assert server.tls.current.svid.serial_hex == serial  # the last good identity stays
    (tmp_path / "certs" / "cert-chain.pem").write_bytes(other.cert_chain_pem())  # now complete
    clock.advance(0.5)
    await clock.wait_for_sleepers(2)
    assert server.tls.current.svid.serial_hex == other.serial_hex


async def test_policy_edits_apply_live_and_broken_edits_are_rejected(
    tmp_path: Path, ca: TestCA
) -> None:
    _write_certs(tmp_path / "certs", ca)
    server = await _start(_config(tmp_path), FakeClock())
    assert server.policy is not None
    listener = server.inbound[0]
    assert listener.mode is PortMode.STRICT
    assert server.config_dump()["ports"] == [{"port": 8080, "mode": "STRICT", "protocol": "http"}]
    policy = tmp_path / "config" / "pa.yaml"
    policy.write_text(PA.format(mode="PERMISSIVE"))
    assert server.policy.source.poll()
    server.policy.apply(server.policy.source.snapshot())
    assert listener.mode is PortMode.PERMISSIVE
    version = server.policy.view.version
    assert server.config_dump()["policy_version"] == version
    policy.write_text(PA.format(mode="STRIKT"))
    assert not server.policy.source.poll()  # rejected: the last good version stays
    assert server.policy.view.version == version
    assert listener.mode is PortMode.PERMISSIVE
    assert any("STRIKT" in line for line in server.config_dump()["rejected_edit"])


async def test_an_incomplete_first_read_fails_closed_until_the_directory_reads_cleanly(
    tmp_path: Path, ca: TestCA
) -> None:
    _write_certs(tmp_path / "certs", ca)
    server = await _start(_config(tmp_path, mode="STRIKT"), FakeClock())  # as if half-read
    assert server.policy is not None
    peer = PeerInfo("127.0.0.1", "spiffe://cluster.local/ns/x/sa/y")
    decision = server.authorizer.authorize(peer, 1, None)
    assert not decision.allowed  # no AuthorizationPolicy known must not mean allow-all
    assert "configuration not loaded" in decision.reason
    assert not server.ready()
    assert "configuration not loaded" in server.not_ready_reason()
    (tmp_path / "config" / "pa.yaml").write_text(PA.format(mode="STRICT"))
    assert server.policy.source.poll()
    server.policy.apply(server.policy.source.snapshot())
    assert server.authorizer.authorize(peer, 1, None).allowed
    assert server.ready()


async def test_an_edit_applies_only_once_the_directory_reads_the_same_twice(
    tmp_path: Path, ca: TestCA
) -> None:
    _write_certs(tmp_path / "certs", ca)
    server = await _start(_config(tmp_path), FakeClock())
    assert server.policy is not None
    listener = server.inbound[0]
    policy = tmp_path / "config" / "pa.yaml"
    assert not server.policy.poll()  # nothing changed
    policy.write_text("")  # an editor truncated the file ...
    assert not server.policy.poll()  # ... first sighting: wait
    policy.write_text(PA.format(mode="DISABLE"))  # ... and wrote it again
    assert not server.policy.poll()  # changed again: wait
    assert listener.mode is PortMode.STRICT  # the empty file was never applied
    assert server.policy.poll()  # settled: applied
    assert listener.mode is PortMode.DISABLE
