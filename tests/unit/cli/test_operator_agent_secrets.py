"""The agent's real ``/debug/secrets`` document read by ``proxy-config secret``: the serial shown
is the one ``openssl x509 -serial`` prints for the certificate the agent writes out."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from meshsec.agent.metrics import AgentMetrics
from meshsec.agent.secret import WorkloadSecret
from meshsec.agent.status import StatusServer
from meshsec.agent.store import SecretStore
from meshsec.cli.proxy_config import build_secret_rows, root_identity
from meshsec.core.pki import TrustBundle
from tests.fakes.clock import FakeClock
from tests.testca import TestCA

NOW = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def make_status(ca: TestCA | None) -> tuple[StatusServer, WorkloadSecret | None]:
    store = SecretStore(monotonic=lambda: 0.0)
    secret = None
    if ca is not None:
        svid = ca.issue_svid("spiffe://cluster.local/ns/photo-ns/sa/photo-frontend", now=NOW)
        secret = WorkloadSecret(
            svid=svid,
            roots=TrustBundle.parse_pem(ca.root_pem),
            cert_chain_pem=svid.leaf.public_bytes(Encoding.PEM),
            created_at=NOW,
            source="ca",
        )
        store.publish(secret)
    clock = FakeClock(NOW + timedelta(minutes=1))
    return StatusServer(store, clock, AgentMetrics()), secret


def test_rows_from_a_real_agent_document() -> None:
    ca = TestCA(now=NOW - timedelta(days=1))
    status, secret = make_status(ca)
    assert secret is not None
    default, root = build_secret_rows(status.debug_secrets())
    assert (default.resource_name, default.type, default.status) == (
        "default",
        "Cert Chain",
        "ACTIVE",
    )
    assert default.valid_cert is True
    assert int(default.serial_number, 16) == secret.leaf.serial_number
    assert len(default.serial_number) == 32
    assert default.created_at == "2026-11-23T05:00:00Z"
    assert default.not_after.endswith("Z")
    assert (root.resource_name, root.type, root.status) == ("ROOTCA", "CA", "ACTIVE")
    assert root_identity([default, root]) == {root.fingerprint}


def test_agent_without_certificate_shows_warming() -> None:
    status, _ = make_status(None)
    (row,) = build_secret_rows(status.debug_secrets())
    assert (row.resource_name, row.status, row.valid_cert, row.serial_number) == (
        "default",
        "WARMING",
        False,
        "",
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_serial_matches_openssl(tmp_path: Path) -> None:
    ca = TestCA(now=NOW - timedelta(days=1))
    status, secret = make_status(ca)
    assert secret is not None
    cert = tmp_path / "cert-chain.pem"
    cert.write_bytes(secret.cert_chain_pem)
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-serial"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    openssl_serial = int(out.strip().removeprefix("serial="), 16)
    default = build_secret_rows(status.debug_secrets())[0]
    assert int(default.serial_number, 16) == openssl_serial
