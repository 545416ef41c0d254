"""An Envoy-style SDS client (xds-protos messages) against a real ``meshsec agent run`` process.

The agent serves FILE_MOUNTED_CERTS laid out like a Kubernetes Secret volume; rotation is the
kubelet's ``..data`` symlink swap. The client subscribes ``default`` and ``ROOTCA``, ACKs, NACKs,
and must get exactly one push with the new serial.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from meshsec.core.pki import TrustBundle, parse_certificates_pem, parse_private_key_pem
from tests.fakes.sds_client import SECRET_TYPE_URL, SdsClient, secrets_of
from tests.testca import TestCA

pytestmark = pytest.mark.interop


def _publish(root: Path, ca: TestCA, version: str) -> int:
    target = root / f"..{version}"
    target.mkdir(parents=True)
    svid = ca.issue_svid("spiffe://cluster.local/ns/default/sa/gateway", ttl=timedelta(hours=1))
    (target / "cert-chain.pem").write_bytes(svid.cert_chain_pem())
    (target / "key.pem").write_bytes(svid.private_key_pem())
    (target / "root-cert.pem").write_bytes(ca.root_pem)
    tmp = root / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, root / "..data")
    for name in ("cert-chain.pem", "key.pem", "root-cert.pem"):
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")
    return svid.leaf.serial_number


@pytest.fixture
def agent_process() -> Iterator[tuple[Path, TestCA]]:
    workdir = Path(tempfile.mkdtemp(prefix="msi-", dir="/tmp"))
    ca = TestCA().intermediate("cluster1")
    _publish(workdir / "certs", ca, "v1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshsec", "agent", "run", "--file-mounted-certs",
         "--mounted-certs-dir", str(workdir / "certs"), "--sds-socket", str(workdir / "sds.sock"),
         "--workload-socket", f"unix://{workdir / 'wl.sock'}", "--status", "127.0.0.1:0"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # bounded by the process: it either logs this or exits
            if "agent serving SDS" in line:
                break
        else:
            pytest.fail(f"agent did not start (exit {proc.wait()})")
        yield workdir, ca
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_envoy_style_client_ack_nack_and_rotation_push(
    agent_process: tuple[Path, TestCA],
) -> None:
    workdir, ca = agent_process
    client = SdsClient(str(workdir / "sds.sock"))
    try:
        stream = client.stream(["default", "ROOTCA"])
        first = await stream.recv()
        assert first.type_url == SECRET_TYPE_URL
        secrets = secrets_of(first)
        assert set(secrets) == {"default", "ROOTCA"}
        tls = secrets["default"].tls_certificate
        chain = parse_certificates_pem(tls.certificate_chain.inline_bytes)
        assert len(chain) == 2  # leaf + intermediate
        key = parse_private_key_pem(tls.private_key.inline_bytes)
        assert chain[0].public_key() == key.public_key()
        trusted = secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes
        assert TrustBundle.parse_pem(trusted).certificates == (ca.root_cert,)

        stream.nack(first, ["default", "ROOTCA"], "pretend Envoy rejected it")
        await stream.expect_silence(0.5)  # a NACK is not answered: no resend loop

        new_serial = _publish(workdir / "certs", ca, "v2")
        pushed = await stream.recv(within=15)
        assert set(secrets_of(pushed)) == {"default"}  # same roots: no ROOTCA push
        pushed_chain = secrets_of(pushed)["default"].tls_certificate.certificate_chain
        assert parse_certificates_pem(pushed_chain.inline_bytes)[0].serial_number == new_serial
        stream.ack(pushed, ["default", "ROOTCA"])
        await stream.expect_silence(0.5)
    finally:
        await client.close()
