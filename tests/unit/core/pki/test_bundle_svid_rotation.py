"""Trust bundles, the X509Svid value, and renewal timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    ChainFailure,
    ChainVerificationError,
    InvalidPem,
    PkiError,
    TrustBundle,
    X509Svid,
    certificate_fingerprint,
    generate_private_key,
    parse_svid_chain,
    rotation_delay,
)
from tests.testca import TestCA

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA(now=NOW)


@pytest.fixture(scope="module")
def other() -> TestCA:
    return TestCA("other.org", now=NOW)


# --- TrustBundle ----------------------------------------------------------------------------


def test_bundle_pem_round_trip_and_dedup(ca: TestCA, other: TestCA) -> None:
    pem = ca.root_pem + other.root_pem + ca.root_pem
    bundle = TrustBundle.parse_pem(pem)
    assert bundle.certificates == (ca.root_cert, other.root_cert)
    assert TrustBundle.parse_pem(bundle.to_pem()) == bundle
    assert len(bundle) == 2
    assert ca.root_cert in bundle
    assert "x" not in bundle
    assert list(bundle) == [ca.root_cert, other.root_cert]


def test_bundle_merge_keeps_order(ca: TestCA, other: TestCA) -> None:
    merged = ca.bundle.merge(other.bundle).merge([ca.root_cert])
    assert merged.certificates == (ca.root_cert, other.root_cert)
    assert merged.fingerprints == (
        certificate_fingerprint(ca.root_cert),
        certificate_fingerprint(other.root_cert),
    )
    assert len(merged.fingerprints[0]) == 64


def test_bundle_parse_error_names_what() -> None:
    with pytest.raises(InvalidPem, match=r"invalid root-cert\.pem: empty"):
        TrustBundle.parse_pem(b"", what="root-cert.pem")


# --- X509Svid -------------------------------------------------------------------------------


def test_svid_properties_and_pem_round_trip(ca: TestCA) -> None:
    inter = ca.intermediate("c1")
    svid = inter.issue_svid(SLEEP)
    assert svid.serial_hex == f"{svid.leaf.serial_number:032x}"
    assert len(svid.serial_hex) == 32
    assert svid.intermediates == (inter.cert,)
    back = X509Svid.from_pem(svid.cert_chain_pem(), svid.private_key_pem())
    assert back.spiffe_id == svid.spiffe_id
    assert back.chain == svid.chain


def test_svid_rejects_mismatched_key(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP)
    with pytest.raises(PkiError, match="private key does not match"):
        X509Svid(svid.spiffe_id, svid.chain, generate_private_key())


def test_svid_rejects_wrong_id(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP)
    with pytest.raises(PkiError, match=r"not spiffe://cluster\.local/ns/x/sa/y"):
        X509Svid(SpiffeId.parse("spiffe://cluster.local/ns/x/sa/y"), svid.chain, svid.private_key)


def test_svid_rejects_empty_chain(ca: TestCA) -> None:
    with pytest.raises(PkiError, match="at least its leaf"):
        X509Svid(SpiffeId.parse(SLEEP), (), generate_private_key())


def test_parse_svid_chain_of_a_ca_cert(ca: TestCA) -> None:
    with pytest.raises(ChainVerificationError, match="no SubjectAlternativeName") as e:
        parse_svid_chain([ca.root_cert])
    assert e.value.kind is ChainFailure.BAD_SAN


# --- rotation_delay (Istio rotateTime) --------------------------------------------------------

ISSUED = datetime(2026, 3, 1, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(hours=24)


@pytest.mark.parametrize(
    ("now", "rand", "kwargs", "expected"),
    [
        (ISSUED, 0.5, {}, timedelta(hours=12)),
        (ISSUED, 0.0, {}, timedelta(hours=12) + timedelta(hours=24) * 0.01),
        (ISSUED, 1.0, {}, timedelta(hours=12) - timedelta(hours=24) * 0.01),
        (ISSUED + timedelta(hours=11), 0.5, {}, timedelta(hours=1)),
        (ISSUED + timedelta(hours=13), 0.5, {}, timedelta(0)),
        (EXPIRES + timedelta(hours=1), 0.5, {}, timedelta(0)),
        (ISSUED, 0.5, {"ratio": 0.2}, timedelta(hours=24) * 0.8),
        (ISSUED, 1.0, {"ratio": 0.995, "jitter": 0.01}, timedelta(0)),
        (ISSUED, 0.0, {"ratio": 0.005, "jitter": 0.01}, timedelta(hours=24)),
    ],
    ids=[
        "half-life",
        "min-jitter",
        "max-jitter",
        "partway",
        "overdue",
        "expired",
        "ratio-0.2",
        "clamp-to-1",
        "clamp-to-0",
    ],
)
def test_rotation_delay(
    now: datetime, rand: float, kwargs: dict[str, float], expected: timedelta
) -> None:
    delay = rotation_delay(issued_at=ISSUED, not_after=EXPIRES, now=now, rand=rand, **kwargs)
    assert abs(delay - expected) < timedelta(milliseconds=1)


def test_rotation_delay_rand_out_of_range() -> None:
    with pytest.raises(ValueError, match="rand must be in"):
        rotation_delay(issued_at=ISSUED, not_after=EXPIRES, now=ISSUED, rand=1.5)
