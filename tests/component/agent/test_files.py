"""OUTPUT_CERTS and FILE_MOUNTED_CERTS (polling watcher, Kubernetes ..data symlink swaps)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from meshsec.agent.metrics import FILE_SECRET_FAILURES, FILE_WATCHER_FAILURES
from meshsec.config.agent import AgentSettings
from meshsec.core.pki import TrustBundle, parse_certificates_pem, parse_private_key_pem
from tests.fakes.agent_harness import AgentFactory, rotate, wait_for_snapshot
from tests.fakes.ca_client import FakeCaClient
from tests.fakes.clock import FakeClock
from tests.fakes.sds_client import SdsClient, secrets_of
from tests.testca import TestCA


async def test_output_certs_written_atomically_with_key_0600_and_rewritten_on_rotation(
    agent_factory: AgentFactory, settings: AgentSettings, sockdir: Path, clock: FakeClock
) -> None:
    out = sockdir / "out"
    agent = agent_factory(replace(settings, output_certs=out))
    await agent.start()
    first = (await wait_for_snapshot(agent, lambda s: s.workload is not None)).workload
    assert first is not None
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "cert-chain.pem").stat().st_mode) == 0o644
    assert (out / "cert-chain.pem").read_bytes() == first.cert_chain_pem
    assert parse_private_key_pem((out / "key.pem").read_bytes()).public_key() == (
        first.leaf.public_key()
    )
    assert TrustBundle.parse_pem((out / "root-cert.pem").read_bytes()) == first.roots
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    second = (await rotate(agent, clock)).workload
    assert second is not None
    chain = parse_certificates_pem((out / "cert-chain.pem").read_bytes())
    assert chain[0].serial_number == second.leaf.serial_number
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600


def _write_mounted(directory: Path, ca: TestCA, clock: FakeClock, ttl: timedelta) -> str:
    svid = ca.issue_svid("spiffe://cluster.local/ns/default/sa/mounted", ttl=ttl, now=clock.now())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert-chain.pem").write_bytes(svid.cert_chain_pem() + ca.root_pem)
    (directory / "key.pem").write_bytes(svid.private_key_pem())
    (directory / "root-cert.pem").write_bytes(ca.root_pem)
    return svid.serial_hex


def _kubernetes_volume(root: Path, ca: TestCA, clock: FakeClock, version: str) -> str:
    """Secret-volume layout: files are symlinks to ..data/, ..data links to a timestamped dir."""
    serial = _write_mounted(root / f"..{version}", ca, clock, timedelta(hours=1))
    tmp = root / "..data_tmp"
    tmp.symlink_to(f"..{version}")
    os.replace(tmp, root / "..data")  # the atomic swap the kubelet does
    for name in ("cert-chain.pem", "key.pem", "root-cert.pem"):
        link = root / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    return serial


@pytest.fixture
def mounted_settings(settings: AgentSettings, sockdir: Path) -> AgentSettings:
    return replace(
        settings,
        file_mounted_certs=True,
        mounted_certs_dir=sockdir / "etc-certs",
        file_debounce_duration=timedelta(milliseconds=100),
    )


async def test_mounted_certs_served_and_kubernetes_symlink_swap_pushed(
    agent_factory: AgentFactory,
    mounted_settings: AgentSettings,
    test_ca: TestCA,
    clock: FakeClock,
) -> None:
    root = mounted_settings.mounted_certs_dir
    first_serial = _kubernetes_volume(root, test_ca, clock, "2026_01_01_00_00_00.1")
    agent = agent_factory(mounted_settings)
    await agent.start()
    snap = agent.store.snapshot()
    assert snap.workload is not None
    assert snap.workload.serial_hex == first_serial
    assert snap.workload.source.startswith("mounted certificates")
    sds = SdsClient(str(mounted_settings.sds_socket_path))
    try:
        stream = sds.stream(["default"])
        response = await stream.recv()
        stream.ack(response, ["default"])
        second_serial = _kubernetes_volume(root, test_ca, clock, "2026_01_01_01_00_00.2")
        for _ in range(3):
            await clock.wait_for_sleepers(1)
            clock.advance(1)
        pushed = await stream.recv()
        chain = secrets_of(pushed)["default"].tls_certificate.certificate_chain.inline_bytes
        assert f"{parse_certificates_pem(chain)[0].serial_number:032x}" == second_serial
    finally:
        await sds.close()


@pytest.mark.parametrize(
    "damage",
    ["garbage-cert", "key-mismatch", "missing-key", "untrusted-root"],
)
async def test_bad_mounted_files_keep_last_good_with_log_and_metric(
    agent_factory: AgentFactory,
    mounted_settings: AgentSettings,
    test_ca: TestCA,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    root = mounted_settings.mounted_certs_dir
    good_serial = _write_mounted(root, test_ca, clock, timedelta(hours=1))
    agent = agent_factory(mounted_settings)
    await agent.start()
    with caplog.at_level(logging.ERROR):
        if damage == "garbage-cert":
            (root / "cert-chain.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
        elif damage == "key-mismatch":
            other = test_ca.issue_svid("spiffe://cluster.local/ns/x/sa/y", now=clock.now())
            (root / "key.pem").write_bytes(other.private_key_pem())
        elif damage == "missing-key":
            (root / "key.pem").unlink()
        else:
            (root / "root-cert.pem").write_bytes(TestCA().root_pem)
        for _ in range(3):
            await clock.wait_for_sleepers(1)
            clock.advance(1)
    snap = agent.store.snapshot()
    assert snap.workload is not None
    assert snap.workload.serial_hex == good_serial
    failures = agent.metrics.value(FILE_SECRET_FAILURES) + agent.metrics.value(
        FILE_WATCHER_FAILURES
    )
    assert failures >= 1
    assert "keeping serial" in caplog.text or "cannot watch" in caplog.text
    assert str(root) in caplog.text


async def test_expired_mounted_certificate_is_not_served(
    agent_factory: AgentFactory,
    mounted_settings: AgentSettings,
    test_ca: TestCA,
    clock: FakeClock,
) -> None:
    root = mounted_settings.mounted_certs_dir
    svid = test_ca.issue_svid(
        "spiffe://cluster.local/ns/default/sa/old",
        ttl=timedelta(hours=1),
        now=clock.now() - timedelta(hours=3),
    )
    root.mkdir(parents=True)
    (root / "cert-chain.pem").write_bytes(svid.cert_chain_pem())
    (root / "key.pem").write_bytes(svid.private_key_pem())
    (root / "root-cert.pem").write_bytes(test_ca.root_pem)
    agent = agent_factory(mounted_settings)
    await agent.start()
    assert agent.store.snapshot().workload is None
    assert agent.metrics.value(FILE_SECRET_FAILURES) == 1
    assert agent.status.readiness()[0] == 503


async def test_openssl_verify_accepts_written_files_with_intermediate(
    agent_factory: AgentFactory, settings: AgentSettings, sockdir: Path, clock: FakeClock
) -> None:
    inter = TestCA(now=clock.now() - timedelta(days=1)).intermediate("cluster1")
    ca_client = FakeCaClient(inter, "spiffe://cluster.local/ns/default/sa/httpbin", clock=clock)
    out = sockdir / "out"
    agent = agent_factory(replace(settings, output_certs=out), ca_client=ca_client)
    await agent.start()
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    result = await asyncio.to_thread(
        subprocess.run,
        ["openssl", "verify", "-CAfile", str(out / "root-cert.pem"), "-untrusted",
         str(out / "cert-chain.pem"), "-purpose", "sslclient", str(out / "cert-chain.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    assert len(parse_certificates_pem((out / "cert-chain.pem").read_bytes())) == 3
