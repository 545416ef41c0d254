"""The shared TestCA issues what the real CA issues, in Istio's layouts."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
import spiffe

from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    IssuanceError,
    KeySpec,
    build_csr,
    encode_csr_pem,
    generate_private_key,
    leaf_contract_problems,
    parse_certificates_pem,
    parse_private_key_pem,
    public_keys_equal,
    verify_chain,
    verify_svid,
)
from tests.testca import TestCA

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def test_root_ca_svid_verifies(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP)
    assert svid.spiffe_id == SpiffeId.parse(SLEEP)
    assert len(svid.chain) == 1
    assert leaf_contract_problems(svid.leaf, svid.spiffe_id) == []
    assert verify_svid(svid.chain, ca.bundle, now=ca.now) == svid.spiffe_id
    assert svid.not_after - svid.leaf.not_valid_before_utc == timedelta(hours=1, minutes=2)


def test_intermediate_svid_carries_intermediate(ca: TestCA) -> None:
    inter = ca.intermediate("cluster1")
    assert inter.root_cert == ca.root_cert
    assert inter.bundle == ca.bundle
    svid = inter.issue_svid(SLEEP, key_spec=KeySpec.EC_P384)
    assert svid.chain == (svid.leaf, inter.cert)
    verified = verify_chain(svid.leaf, svid.intermediates, ca.bundle, now=ca.now)
    assert verified.path == (svid.leaf, inter.cert, ca.root_cert)
    parsed = spiffe.X509Svid.parse_raw(svid.cert_chain_der(), svid.private_key_der())
    assert str(parsed.spiffe_id) == SLEEP


def test_nested_intermediates() -> None:
    ca = TestCA("example.org")
    mid = ca.intermediate("region", path_length=1)
    leaf_ca = mid.intermediate("zone")
    assert leaf_ca.intermediates == (leaf_ca.cert, mid.cert)
    svid = leaf_ca.issue_svid("spiffe://example.org/w")
    assert verify_svid(svid.chain, ca.bundle, now=ca.now) == SpiffeId.parse(
        "spiffe://example.org/w"
    )
    with pytest.raises(IssuanceError, match="path length 0"):
        leaf_ca.intermediate("too-deep")


@pytest.mark.parametrize("with_intermediate", [False, True], ids=["root", "intermediate"])
def test_sign_csr_istio_layout(ca: TestCA, with_intermediate: bool) -> None:
    signer = ca.intermediate("c1") if with_intermediate else ca
    key = generate_private_key()
    # The CSR asks for another identity: the CA must issue the one it was told.
    csr = encode_csr_pem(build_csr(key, SpiffeId.parse("spiffe://cluster.local/ns/x/sa/admin")))
    chain = signer.sign_csr(csr, SLEEP, timedelta(minutes=30))
    assert len(chain) == (3 if with_intermediate else 2)
    assert chain[-1] == ca.root_pem.decode()
    certs = [parse_certificates_pem(p)[0] for p in chain]
    assert public_keys_equal(certs[0].public_key(), key.public_key())  # type: ignore[arg-type]
    assert leaf_contract_problems(certs[0], SpiffeId.parse(SLEEP)) == []
    assert verify_chain(certs[0], certs[1:-1], ca.bundle, now=ca.now).root == ca.root_cert


def test_write_cacerts_layout(ca: TestCA, tmp_path: Path) -> None:
    inter = ca.intermediate("cluster2")
    out = inter.write_cacerts(tmp_path / "cacerts")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    assert stat.S_IMODE((out / "ca-key.pem").stat().st_mode) == 0o600
    assert parse_certificates_pem((out / "cert-chain.pem").read_bytes()) == [
        inter.cert,
        ca.root_cert,
    ]
    assert parse_certificates_pem((out / "ca-cert.pem").read_bytes()) == [inter.cert]
    assert parse_certificates_pem((out / "root-cert.pem").read_bytes()) == [ca.root_cert]
    key = parse_private_key_pem((out / "ca-key.pem").read_bytes())
    assert public_keys_equal(key.public_key(), inter.cert.public_key())  # type: ignore[arg-type]


def test_rsa_test_ca() -> None:
    ca = TestCA("rsa.test", key_spec=KeySpec.RSA_2048)
    svid = ca.issue_svid("spiffe://rsa.test/ns/a/sa/b", key_spec=KeySpec.RSA_2048)
    assert verify_svid(svid.chain, ca.bundle, now=ca.now).trust_domain.name == "rsa.test"
