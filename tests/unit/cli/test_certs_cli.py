"""``meshsec certs root|intermediate`` and ``meshsec cert inspect`` through the real CLI entry."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from meshsec.cli.main import main
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    Issuer,
    TrustBundle,
    WorkloadCertRequest,
    encode_certificates_pem,
    generate_private_key,
    issue_workload_certificate,
    parse_certificate_pem,
    parse_certificates_pem,
    parse_private_key_pem,
    public_keys_equal,
    verify_chain,
)
from tests.testca import TestCA

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def root_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ca") / "root"
    assert main(["certs", "root", "--out", str(out), "--trust-domain", "mesh.example"]) == 0
    return out


@pytest.fixture(scope="module")
def cacerts(root_dir: Path) -> Path:
    out = root_dir.parent / "cluster1"
    assert (
        main(
            [
                "certs",
                "intermediate",
                "--root",
                str(root_dir),
                "--name",
                "cluster1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


# --- certs root ---------------------------------------------------------------------------------


def test_root_files(root_dir: Path) -> None:
    assert sorted(p.name for p in root_dir.iterdir()) == ["root-cert.pem", "root-key.pem"]
    assert _mode(root_dir / "root-key.pem") == 0o600
    assert _mode(root_dir / "root-cert.pem") == 0o644
    cert = parse_certificate_pem((root_dir / "root-cert.pem").read_bytes())
    key = parse_private_key_pem((root_dir / "root-key.pem").read_bytes())
    assert public_keys_equal(key.public_key(), cert.public_key())  # type: ignore[arg-type]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "mesh.example"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=3650) <= life <= timedelta(days=3650, minutes=3)


def test_root_rsa_key_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["certs", "root", "--out", str(tmp_path), "--key-type", "rsa-2048", "--days", "30"])
    assert rc == 0
    assert "rsa-2048, 30 days" in capsys.readouterr().out
    key = parse_private_key_pem((tmp_path / "root-key.pem").read_bytes())
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


def test_root_refuses_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "root", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "root-key.pem").read_bytes()
    capsys.readouterr()
    assert main(["certs", "root", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "would overwrite root-cert.pem, root-key.pem" in err
    assert "--force" in err
    assert (tmp_path / "root-key.pem").read_bytes() == before
    assert main(["certs", "root", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "root-key.pem").read_bytes() != before
    assert _mode(tmp_path / "root-key.pem") == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trust-domain", "Bad_Domain"], "--trust-domain"),
        (["--key-type", "dsa-1024"], "unknown key type 'dsa-1024'"),
        (["--days", "0"], "--days"),
    ],
    ids=["bad-trust-domain", "bad-key-type", "zero-days"],
)
def test_root_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["certs", "root", "--out", str(tmp_path / "r"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# --- certs intermediate -------------------------------------------------------------------------


def test_cacerts_layout(cacerts: Path, root_dir: Path) -> None:
    names = sorted(p.name for p in cacerts.iterdir())
    assert names == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    assert _mode(cacerts / "ca-key.pem") == 0o600
    root = parse_certificate_pem((root_dir / "root-cert.pem").read_bytes())
    ca_cert = parse_certificate_pem((cacerts / "ca-cert.pem").read_bytes())
    assert parse_certificates_pem((cacerts / "cert-chain.pem").read_bytes()) == [ca_cert, root]
    assert parse_certificates_pem((cacerts / "root-cert.pem").read_bytes()) == [root]
    assert ca_cert.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == "cluster1"
    assert (
        ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "mesh.example"
    )
    bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    san = ca_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]


def test_cacerts_can_issue_verifiable_leaves(cacerts: Path) -> None:
    ca_cert = parse_certificate_pem((cacerts / "ca-cert.pem").read_bytes())
    issuer = Issuer(ca_cert, parse_private_key_pem((cacerts / "ca-key.pem").read_bytes()))
    key = generate_private_key()
    leaf = issue_workload_certificate(
        WorkloadCertRequest(
            SpiffeId.parse("spiffe://mesh.example/ns/a/sa/b"), key.public_key(), timedelta(hours=1)
        ),
        issuer,
        now=ca_cert.not_valid_before_utc + timedelta(minutes=5),
        serial=1,
    )
    bundle = TrustBundle.parse_pem((cacerts / "root-cert.pem").read_bytes())
    now = ca_cert.not_valid_before_utc + timedelta(minutes=10)
    assert verify_chain(leaf, issuer.intermediates, bundle, now=now).root == bundle.certificates[0]


@needs_openssl
def test_cacerts_verify_with_openssl(cacerts: Path) -> None:
    proc = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(cacerts / "root-cert.pem"),
            "-untrusted",
            str(cacerts / "cert-chain.pem"),
            str(cacerts / "ca-cert.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout.strip() == f"{cacerts / 'ca-cert.pem'}: OK", proc.stderr


def test_intermediate_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "certs",
            "intermediate",
            "--root",
            str(tmp_path / "nope"),
            "--name",
            "c",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope' / 'root-cert.pem'}: cannot read" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("root-key.pem", b"garbage", "root-key.pem: invalid private key: no PEM block found"),
        ("root-cert.pem", b"garbage", "root-cert.pem: invalid root certificate"),
        ("root-key.pem", None, "signing key does not match"),
    ],
    ids=["garbage-key", "garbage-cert", "mismatched-key"],
)
def test_intermediate_bad_root_material(
    root_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    file: str,
    content: bytes | None,
    message: str,
) -> None:
    bad = tmp_path / "root"
    shutil.copytree(root_dir, bad)
    if content is None:
        other = TestCA()
        content = other.key_pem
    (bad / file).write_bytes(content)
    rc = main(
        ["certs", "intermediate", "--root", str(bad), "--name", "c", "--out", str(tmp_path / "out")]
    )
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_intermediate_refuses_overwrite_and_writes_nothing(
    root_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cacerts"
    out.mkdir()
    (out / "ca-key.pem").write_bytes(b"precious")
    rc = main(["certs", "intermediate", "--root", str(root_dir), "--name", "c", "--out", str(out)])
    assert rc == 2
    assert "would overwrite ca-key.pem" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["ca-key.pem"]
    assert (out / "ca-key.pem").read_bytes() == b"precious"


# --- cert inspect -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def test_inspect_table(ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svid = ca.intermediate("c1").issue_svid(SLEEP, ttl=timedelta(hours=2))
    path = tmp_path / "chain.pem"
    path.write_bytes(encode_certificates_pem([*svid.chain, ca.root_cert]))
    assert main(["cert", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 certificate(s)" in out
    assert SLEEP in out
    assert svid.serial_hex in out
    assert "[0] leaf" in out
    assert "[1] intermediate CA" in out
    assert "[2] root CA" in out
    assert "ECDSA P-256" in out
    assert "yes (pathlen 0)" in out
    assert "chain order: ok" in out
    assert "1h5" in out  # expires in ~1h59m


def test_inspect_json(ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svid = ca.issue_svid(SLEEP)
    path = tmp_path / "leaf.pem"
    path.write_bytes(svid.cert_chain_pem())
    assert main(["cert", "inspect", str(path), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["file"] == str(path)
    assert doc["chain"] == {"ordered": True, "problems": []}
    [leaf] = doc["certificates"]
    assert leaf["spiffe_id"] == SLEEP
    assert leaf["serial"] == f"{svid.leaf.serial_number:032x}"
    assert leaf["is_ca"] is False
    assert leaf["subject"] == ""
    assert leaf["key_type"] == "ECDSA P-256"
    assert leaf["status"] == "valid"
    assert 0 < leaf["expires_in_seconds"] <= 3600


def test_inspect_misordered_chain(
    ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svid = ca.intermediate("c2").issue_svid(SLEEP)
    path = tmp_path / "chain.pem"
    path.write_bytes(encode_certificates_pem([svid.leaf, ca.root_cert, svid.chain[1]]))
    assert main(["cert", "inspect", str(path), "-o", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["chain"]["ordered"] is False
    assert "certificate 0 is issued by" in doc["chain"]["problems"][0]


def test_inspect_expired(ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svid = ca.issue_svid(SLEEP, now=ca.now - timedelta(days=3), ttl=timedelta(hours=1))
    path = tmp_path / "old.pem"
    path.write_bytes(svid.cert_chain_pem())
    assert main(["cert", "inspect", str(path)]) == 1
    out = capsys.readouterr().out
    assert "expired" in out
    assert "ago" in out


def test_inspect_der_and_pem_with_key(ca: TestCA, tmp_path: Path) -> None:
    svid = ca.issue_svid(SLEEP)
    der = tmp_path / "leaf.der"
    der.write_bytes(svid.leaf.public_bytes(serialization.Encoding.DER))
    assert main(["cert", "inspect", str(der)]) == 0
    combined = tmp_path / "combined.pem"
    combined.write_bytes(svid.private_key_pem() + svid.cert_chain_pem())
    assert main(["cert", "inspect", str(combined)]) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello", "no PEM CERTIFICATE block found"),
        (b"", "empty"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed"),
        (None, "cannot read"),
    ],
    ids=["garbage", "empty", "bad-body", "missing"],
)
def test_inspect_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.pem"
    if content is not None:
        path.write_bytes(content)
    assert main(["cert", "inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert message in err


def test_inspect_bad_output_format(
    ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "root.pem"
    path.write_bytes(ca.root_pem)
    assert main(["cert", "inspect", str(path), "-o", "yaml"]) == 2
    assert "'yaml' is not table or json" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    ["bad/name", "Cluster1", "-c", "c-", "a" * 64, "", "c 1", "c.1"],
    ids=["slash", "upper", "leading-dash", "trailing-dash", "too-long", "empty", "space", "dot"],
)
def test_intermediate_name_must_be_a_dns1123_label(
    root_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    out = tmp_path / "out"
    rc = main(["certs", "intermediate", "--root", str(root_dir), "--name", name, "--out", str(out)])
    assert rc == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())  # rich wraps the box
    assert "is not a DNS-1123 label" in err
    assert "--name" in err
    assert not out.exists()
