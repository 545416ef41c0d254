"""Our certificates as the ``openssl`` CLI sees them: chains verify, leaves are SPIFFE-shaped."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from meshsec.core.pki import KeySpec, encode_certificates_pem
from tests.testca import TestCA

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed"),
]

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


def _verify(tmp: Path, root: bytes, untrusted: bytes | None, leaf: bytes, *extra: str) -> str:
    (tmp / "root.pem").write_bytes(root)
    (tmp / "leaf.pem").write_bytes(leaf)
    args = ["openssl", "verify", "-CAfile", str(tmp / "root.pem"), *extra]
    if untrusted:
        (tmp / "untrusted.pem").write_bytes(untrusted)
        args += ["-untrusted", str(tmp / "untrusted.pem")]
    args.append(str(tmp / "leaf.pem"))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("key_spec", [KeySpec.EC_P256, KeySpec.RSA_2048], ids=["ec", "rsa"])
def test_chain_with_two_intermediates_verifies(tmp_path: Path, key_spec: KeySpec) -> None:
    ca = TestCA(key_spec=key_spec)
    inter = ca.intermediate("region", path_length=1).intermediate("zone")
    svid = inter.issue_svid(SLEEP, key_spec=key_spec)
    out = _verify(
        tmp_path,
        ca.root_pem,
        encode_certificates_pem(svid.intermediates),
        encode_certificates_pem([svid.leaf]),
        "-purpose",
        "sslclient",
    )
    assert out.strip().endswith(": OK"), out


def test_server_purpose_also_ok(tmp_path: Path) -> None:
    ca = TestCA()
    svid = ca.intermediate("c1").issue_svid(SLEEP)
    out = _verify(
        tmp_path,
        ca.root_pem,
        encode_certificates_pem(svid.intermediates),
        encode_certificates_pem([svid.leaf]),
        "-purpose",
        "sslserver",
    )
    assert out.strip().endswith(": OK"), out


def test_missing_intermediate_fails(tmp_path: Path) -> None:
    ca = TestCA()
    svid = ca.intermediate("c1").issue_svid(SLEEP)
    out = _verify(tmp_path, ca.root_pem, None, encode_certificates_pem([svid.leaf]))
    assert "unable to get local issuer certificate" in out


def test_other_root_fails(tmp_path: Path) -> None:
    svid = TestCA().issue_svid(SLEEP)
    out = _verify(tmp_path, TestCA().root_pem, None, encode_certificates_pem([svid.leaf]))
    assert ": OK" not in out
    assert "error" in out


def test_expired_leaf_fails(tmp_path: Path) -> None:
    ca = TestCA()
    svid = ca.issue_svid(SLEEP, now=ca.now - timedelta(days=2), ttl=timedelta(hours=1))
    out = _verify(tmp_path, ca.root_pem, None, encode_certificates_pem([svid.leaf]))
    assert "certificate has expired" in out


def test_openssl_reads_leaf_fields(tmp_path: Path) -> None:
    ca = TestCA()
    svid = ca.issue_svid(SLEEP)
    (tmp_path / "leaf.pem").write_bytes(encode_certificates_pem([svid.leaf]))
    proc = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    text = proc.stdout
    assert f"URI:{SLEEP}" in text
    assert "X509v3 Subject Alternative Name: critical" in text
    assert "CA:FALSE" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "Digital Signature, Key Encipherment" in text


def test_cacerts_directory_verifies(tmp_path: Path) -> None:
    ca = TestCA()
    out_dir = ca.intermediate("cluster1").write_cacerts(tmp_path / "cacerts")
    proc = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(out_dir / "root-cert.pem"),
            "-untrusted",
            str(out_dir / "cert-chain.pem"),
            str(out_dir / "ca-cert.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout.strip().endswith(": OK"), proc.stdout + proc.stderr
