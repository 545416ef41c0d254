"""Certificate summaries, chain-order checks and the operator file sets."""

from __future__ import annotations

from datetime import timedelta

import pytest

from meshsec.core.pki import (
    CACERTS_FILES,
    InvalidPem,
    check_chain_order,
    compose_cacerts_files,
    compose_root_files,
    format_remaining,
    parse_certificates_any,
    parse_certificates_pem,
    summarize_certificate,
)
from tests.testca import TestCA

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=89, hours=23, minutes=5), "89d23h"),
        (timedelta(hours=5, minutes=12, seconds=9), "5h12m"),
        (timedelta(minutes=3, seconds=4), "3m4s"),
        (timedelta(seconds=42), "42s"),
        (timedelta(0), "0s"),
        (-timedelta(days=3, hours=2), "expired 3d2h ago"),
    ],
    ids=["days", "hours", "minutes", "seconds", "zero", "expired"],
)
def test_format_remaining(delta: timedelta, text: str) -> None:
    assert format_remaining(delta) == text


def test_summary_of_leaf_and_ca(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP, ttl=timedelta(hours=1), dns_names=("sleep.default.svc",))
    leaf = summarize_certificate(svid.leaf, now=ca.now, index=0)
    assert leaf.spiffe_id == SLEEP
    assert leaf.dns_names == ("sleep.default.svc",)
    assert leaf.subject == ""
    assert leaf.serial_hex == svid.serial_hex
    assert timedelta(minutes=59) < leaf.expires_in <= timedelta(hours=1)
    assert leaf.status == "valid"
    assert not leaf.is_ca
    assert leaf.key_type == "ECDSA P-256"
    root = summarize_certificate(ca.root_cert, now=ca.now, index=1)
    assert root.is_ca
    assert root.self_signed
    assert root.spiffe_id is None
    assert summarize_certificate(svid.leaf, now=ca.now + timedelta(hours=2)).status == "expired"
    early = summarize_certificate(svid.leaf, now=ca.now - timedelta(hours=1))
    assert early.status == "not yet valid"


def test_chain_order(ca: TestCA) -> None:
    inter = ca.intermediate("c1")
    svid = inter.issue_svid(SLEEP)
    assert check_chain_order([svid.leaf, inter.cert, ca.root_cert]) == []
    problems = check_chain_order([inter.cert, svid.leaf])
    assert len(problems) == 1
    assert "certificate 0 is issued by" in problems[0]
    impostor = TestCA()  # same subject as ca's root, other key
    bad = check_chain_order([inter.cert, impostor.root_cert])
    assert bad == ["certificate 0's signature does not verify with certificate 1's key"]


def test_compose_files(ca: TestCA) -> None:
    inter = ca.intermediate("c1")
    files = compose_cacerts_files(
        inter.cert, inter.key, intermediates_above=(), roots=[ca.root_cert]
    )
    assert tuple(f.name for f in files) == CACERTS_FILES
    by_name = {f.name: f for f in files}
    assert by_name["ca-key.pem"].secret
    assert not by_name["cert-chain.pem"].secret
    assert parse_certificates_pem(by_name["cert-chain.pem"].data) == [inter.cert, ca.root_cert]
    root_files = compose_root_files(ca.root_cert, ca.root_key)
    assert [(f.name, f.secret) for f in root_files] == [
        ("root-cert.pem", False),
        ("root-key.pem", True),
    ]


def test_parse_certificates_any(ca: TestCA) -> None:
    from cryptography.hazmat.primitives import serialization

    pem_with_key = ca.key_pem + ca.root_pem
    assert parse_certificates_any(pem_with_key) == [ca.root_cert]
    der = ca.root_cert.public_bytes(serialization.Encoding.DER)
    assert parse_certificates_any(der) == [ca.root_cert]
    with pytest.raises(InvalidPem, match="expected a CERTIFICATE PEM block"):
        parse_certificates_any(ca.key_pem, what="x.pem")
