"""``meshsec ca serve`` as a real multi-process server, driven through the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from meshsec.agent.caclient import CaClient
from meshsec.agent.errors import UpstreamError
from meshsec.ca.metrics import parse_metrics_text
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    KeySpec,
    build_csr,
    encode_csr_pem,
    encode_private_key_pem,
    generate_private_key,
    parse_certificates_pem,
)
from meshsec.core.pki.bundle import TrustBundle
from meshsec.core.pki.verify import verify_svid
from tests.fakes.ca_process import CaProcess, run_meshsec
from tests.testca import TestCA

pytestmark = pytest.mark.e2e
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clusters") / "cluster1"
    result = run_meshsec("cluster", "init", str(path), "--name", "cluster1")
    assert result.returncode == 0, result.stderr
    return path


def _token(cluster: Path, sa: str = "sleep") -> str:
    result = run_meshsec(
        "token", "mint", "--cluster", str(cluster), "--namespace", "default",
        "--service-account", sa,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _request(
    address: str,
    root: bytes,
    token: str | None,
    *,
    client: tuple[bytes, bytes] | None = None,
    ttl: timedelta | None = None,
) -> tuple[list[str], bytes]:
    key = generate_private_key(KeySpec.EC_P256)
    csr = encode_csr_pem(build_csr(key, SpiffeId.parse(SLEEP)))

    async def go() -> list[str]:
        async with CaClient(
            address,
            root_pem=root,
            client_key_pem=client[0] if client else None,
            client_chain_pem=client[1] if client else None,
        ) as ca:
            return await ca.fetch_certificate_chain(csr, token=token, ttl=ttl)

    return asyncio.run(go()), encode_private_key_pem(key)


@pytest.fixture
def running(tmp_path: Path, cluster: Path) -> Iterator[CaProcess]:
    ca = CaProcess.start(tmp_path / "data", "--cluster", str(cluster))
    try:
        yield ca
    finally:
        ca.stop()


def test_serve_issue_renew_record_and_stop(running: CaProcess, cluster: Path) -> None:
    assert running.fields["scheme"] == "tls"
    assert running.fields["workers"] == "2"
    root = run_meshsec("ca", "root", "--data-dir", str(running.data_dir)).stdout.encode()
    assert root == running.root_pem
    chain, key_pem = _request(running.address, root, _token(cluster))
    bundle = TrustBundle.parse_pem(root)
    leaf = parse_certificates_pem(chain[0])[0]
    from datetime import UTC, datetime

    assert str(verify_svid([leaf], bundle, now=datetime.now(UTC))) == SLEEP
    # Renewal: present the mesh certificate on the client-certificate port, no token.
    renewed, _ = _request(running.mtls_address, root, None, client=(key_pem, chain[0].encode()))
    renewed_leaf = parse_certificates_pem(renewed[0])[0]
    assert str(verify_svid([renewed_leaf], bundle, now=datetime.now(UTC))) == SLEEP
    # A failure, for the metrics.
    with pytest.raises(UpstreamError) as err:
        _request(running.address, root, "garbage-token")
    assert err.value.code == "UNAUTHENTICATED"

    metrics = parse_metrics_text(
        urllib.request.urlopen(running.metrics_url, timeout=10).read().decode()  # noqa: S310
    )
    assert metrics["citadel_server_csr_count"] == 3
    assert metrics["citadel_server_success_cert_issuance_count"] == 2
    assert metrics["citadel_server_authentication_failure_count"] == 1
    assert metrics["citadel_server_root_cert_expiry_seconds"] > 9 * 365 * 86400
    assert "citadel_server_cert_chain_expiry_seconds" not in metrics  # self-signed: Istio omits it

    assert running.stop() == 0  # SIGTERM: clean stop, ledger flushed
    listed = json.loads(
        run_meshsec("ca", "issued", "--data-dir", str(running.data_dir), "-o", "json").stdout
    )
    by_serial = {r["serial"]: r for r in listed}
    first = by_serial[f"{leaf.serial_number:032x}"]
    assert (first["spiffe_id"], first["authenticator"], first["cluster"]) == (
        SLEEP,
        "KubeJWTAuthenticator",
        "cluster1",
    )
    second = by_serial[f"{renewed_leaf.serial_number:032x}"]
    assert second["authenticator"] == "ClientCertAuthenticator"
    table = run_meshsec("ca", "issued", "--data-dir", str(running.data_dir))
    assert table.returncode == 0
    assert "default/sa/sleep" in table.stdout


def test_restart_with_same_data_dir_keeps_the_root(tmp_path: Path, cluster: Path) -> None:
    first = CaProcess.start(tmp_path / "data", "--cluster", str(cluster), workers=1)
    root_before = run_meshsec("ca", "root", "--data-dir", str(first.data_dir)).stdout
    chain, _ = _request(first.address, root_before.encode(), _token(cluster))
    assert first.stop() == 0
    second = CaProcess.start(tmp_path / "data", "--cluster", str(cluster), workers=1)
    try:
        root_after = run_meshsec("ca", "root", "--data-dir", str(second.data_dir)).stdout
        assert root_after == root_before
        assert second.fields["root"] == first.fields["root"]
        # A certificate issued before the restart still verifies against the root after it.
        bundle = TrustBundle.parse_pem(root_after)
        from datetime import UTC, datetime

        leaf = parse_certificates_pem(chain[0])[0]
        assert str(verify_svid([leaf], bundle, now=datetime.now(UTC))) == SLEEP
        again, _ = _request(second.address, root_after.encode(), _token(cluster))
        assert again[-1] == chain[-1]
    finally:
        second.stop()


def test_sigint_stops_cleanly(tmp_path: Path, cluster: Path) -> None:
    ca = CaProcess.start(tmp_path / "data", "--cluster", str(cluster), workers=1)
    assert ca.process is not None
    ca.process.send_signal(signal.SIGINT)
    assert ca.process.wait(timeout=30) == 0
    assert ca.stop() == 0


def test_plugged_in_intermediate_from_the_certs_tools(tmp_path: Path, cluster: Path) -> None:
    """Operator flow: meshsec certs root / intermediate -> ca serve --cacerts -> openssl verify."""
    import subprocess

    root_dir, inter_dir = tmp_path / "root", tmp_path / "cluster1-cacerts"
    made = run_meshsec("certs", "root", "--out", str(root_dir))
    assert made.returncode == 0, made.stderr
    made = run_meshsec(
        "certs", "intermediate", "--root", str(root_dir), "--name", "cluster1",
        "--out", str(inter_dir),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    ca = CaProcess.start(
        tmp_path / "data", "--cluster", str(cluster), "--cacerts", str(inter_dir), workers=1
    )
    try:
        root = run_meshsec("ca", "root", "--data-dir", str(ca.data_dir)).stdout
        assert root == (inter_dir / "root-cert.pem").read_text()
        chain, _ = _request(ca.address, root.encode(), _token(cluster))
    finally:
        assert ca.stop() == 0
    assert len(chain) == 4  # leaf, ca-cert, root (from cert-chain.pem), root bundle
    (tmp_path / "root.pem").write_text(root)
    (tmp_path / "untrusted.pem").write_text(chain[1])
    (tmp_path / "leaf.pem").write_text(chain[0])
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
         str(tmp_path / "untrusted.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        pytest.param(
            lambda d: (d / "cert-chain.pem").unlink(),
            "cert-chain.pem: incomplete signing CA bundle detected: missing cert-chain.pem",
            id="incomplete",
        ),
        pytest.param(
            lambda d: (d / "root-cert.pem").write_bytes(TestCA("other.mesh").root_pem),
            "cert-chain.pem: ca-cert.pem does not verify against root-cert.pem",
            id="inconsistent-root",
        ),
        pytest.param(
            lambda d: (d / "ca-key.pem").write_bytes(TestCA().key_pem),
            "ca-key.pem: signing key does not match",
            id="wrong-key",
        ),
    ],
)
def test_bad_cacerts_refuse_to_start_with_a_clear_message(
    tmp_path: Path, cluster: Path, damage: object, expected: str
) -> None:
    cacerts = TestCA().intermediate("cluster1").write_cacerts(tmp_path / "cacerts")
    damage(cacerts)  # type: ignore[operator]
    result = run_meshsec(
        "ca", "serve", "--data-dir", str(tmp_path / "data"), "--cacerts", str(cacerts),
        "--cluster", str(cluster), "--listen", "127.0.0.1:0", "--mtls-listen", "127.0.0.1:0",
        "--monitoring", "127.0.0.1:0",
    )  # fmt: skip
    assert result.returncode == 2
    assert expected in result.stderr
    assert "ready" not in result.stdout
    assert not (tmp_path / "data" / "root-cert.pem").exists()


def test_bad_cluster_dir_refuses_to_start(tmp_path: Path) -> None:
    result = run_meshsec(
        "ca", "serve", "--data-dir", str(tmp_path / "data"), "--cluster", str(tmp_path / "nope"),
        "--listen", "127.0.0.1:0", "--mtls-listen", "127.0.0.1:0", "--monitoring", "127.0.0.1:0",
    )  # fmt: skip
    assert result.returncode == 2
    assert "cluster.yaml: not found" in result.stderr


def test_plaintext_only_when_asked(tmp_path: Path, cluster: Path) -> None:
    ca = CaProcess.start(tmp_path / "data", "--cluster", str(cluster), "--plaintext", workers=1)
    try:
        assert ca.fields["scheme"] == "plaintext"
        assert "mtls" not in ca.fields

        async def go() -> list[str]:
            key = generate_private_key(KeySpec.EC_P256)
            async with CaClient(ca.address, plaintext=True) as client:
                return await client.fetch_certificate_chain(
                    encode_csr_pem(build_csr(key)), token=_token(cluster)
                )

        assert len(asyncio.run(go())) == 2
    finally:
        ca.stop()


def test_port_in_use_is_refused_not_shared(tmp_path: Path, cluster: Path) -> None:
    first = CaProcess.start(tmp_path / "a", "--cluster", str(cluster), workers=1)
    try:
        result = run_meshsec(
            "ca", "serve", "--data-dir", str(tmp_path / "b"), "--cluster", str(cluster),
            "--listen", first.address, "--mtls-listen", "127.0.0.1:0",
            "--monitoring", "127.0.0.1:0",
        )  # fmt: skip
        assert result.returncode == 2
        assert f"cannot listen on {first.address}" in result.stderr
    finally:
        first.stop()


def test_a_dead_worker_stops_the_ca_with_an_error(tmp_path: Path, cluster: Path) -> None:
    import os

    ca = CaProcess.start(tmp_path / "data", "--cluster", str(cluster), workers=2)
    assert ca.process is not None
    children = Path(f"/proc/{ca.process.pid}/task/{ca.process.pid}/children").read_text().split()
    # Workers are spawned interpreters; the resource tracker is the other child.
    workers = [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert workers, children
    os.kill(workers[-1], 9)
    assert ca.process.wait(timeout=30) == 1
    ca.stop()
    assert "exited with code -9; stopping" in ca.log()
