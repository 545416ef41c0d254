"""The SPIFFE scheme is lower-case only (go-spiffe and Envoy compare URI SANs byte for byte).

Before, ``SPIFFE://td/...`` was read as ``spiffe://td/...``: a leaf carrying it verified as that
identity, and a name written so was encoded as a URI SAN without validation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from meshsec.core.pki import (
    ChainFailure,
    ChainVerificationError,
    IssuanceError,
    summarize_certificate,
    verify_svid,
)
from meshsec.core.pki.templates import build_san
from tests.testca import TestCA

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA(now=NOW)


def _with_uri(ca: TestCA, uri: str) -> x509.Certificate:
    """A copy of a valid SVID leaf whose URI SAN is ``uri``, signed by the same CA."""
    leaf = ca.issue_svid(SLEEP).chain[0]
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
    )
    for ext in leaf.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectAlternativeName):
            value = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
        builder = builder.add_extension(value, critical=ext.critical)
    return builder.sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]


def test_control_lower_case_leaf_verifies(ca: TestCA) -> None:
    assert str(verify_svid([_with_uri(ca, SLEEP)], ca.bundle, now=NOW)) == SLEEP


@pytest.mark.parametrize("scheme", ["SPIFFE", "Spiffe"])
def test_leaf_with_non_lower_case_scheme_is_refused(ca: TestCA, scheme: str) -> None:
    leaf = _with_uri(ca, scheme + SLEEP[len("spiffe") :])
    with pytest.raises(ChainVerificationError, match="scheme must be lower-case 'spiffe'") as e:
        verify_svid([leaf], ca.bundle, now=NOW)
    assert e.value.kind is ChainFailure.BAD_SAN
    assert summarize_certificate(leaf, now=NOW).spiffe_id is None


def test_build_san_refuses_upper_case_scheme_instead_of_encoding_it() -> None:
    with pytest.raises(IssuanceError, match="scheme must be lower-case 'spiffe'"):
        build_san(["SPIFFE://cluster.local/ns/x/sa/y"])
    with pytest.raises(IssuanceError, match="trust domains are lower-case"):
        build_san(["spiffe://Cluster.local/ns/x/sa/y"])
    (uri,) = build_san([SLEEP]).get_values_for_type(x509.UniformResourceIdentifier)
    assert uri == SLEEP


def test_issued_leaf_never_carries_an_upper_case_scheme(ca: TestCA) -> None:
    with pytest.raises(IssuanceError, match="lower-case"):
        ca.issue_svid(SLEEP, dns_names=("SPIFFE://cluster.local/ns/x/sa/y",), ttl=timedelta(1))
