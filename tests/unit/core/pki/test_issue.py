"""Issuing: the workload leaf contract point by point, server certs, roots, intermediates."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

import pytest
import spiffe
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshsec.core.identity import SpiffeId, TrustDomain
from meshsec.core.pki import (
    CLOCK_SKEW_GRACE,
    IssuanceError,
    Issuer,
    KeyPolicyError,
    WorkloadCertRequest,
    X509Svid,
    build_self_signed_root,
    check_issued,
    issue_intermediate,
    issue_server_certificate,
    issue_workload_certificate,
    leaf_contract_problems,
    random_serial,
)
from meshsec.core.pki.templates import compose_dual_use_common_name

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TD = TrustDomain("cluster.local")
SLEEP = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/sleep")


@pytest.fixture(scope="module")
def root_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def root(root_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return build_self_signed_root(root_key, trust_domain=TD, now=NOW, serial=7)


@pytest.fixture(scope="module")
def issuer(root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey) -> Issuer:
    return Issuer(root, root_key)


@pytest.fixture(scope="module")
def leaf_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def leaf(issuer: Issuer, leaf_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    req = WorkloadCertRequest(SLEEP, leaf_key.public_key(), timedelta(hours=24))
    return issue_workload_certificate(req, issuer, now=NOW, serial=0xABC)


# --- the workload leaf contract, one rule per test -----------------------------------------


def test_leaf_has_exactly_one_uri_san_critical(leaf: x509.Certificate) -> None:
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(str(SLEEP))]


def test_leaf_subject_is_empty(leaf: x509.Certificate) -> None:
    assert len(leaf.subject) == 0


def test_leaf_key_usage(leaf: x509.Certificate) -> None:
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert ku.value.key_encipherment
    assert not (ku.value.key_cert_sign)
    assert not (ku.value.crl_sign)
    assert not (ku.value.content_commitment)


def test_leaf_extended_key_usage(leaf: x509.Certificate) -> None:
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_leaf_basic_constraints(leaf: x509.Certificate) -> None:
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False


def test_leaf_ski_and_aki(
    leaf: x509.Certificate, root: x509.Certificate, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key())
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest


def test_leaf_validity_and_serial(leaf: x509.Certificate, root: x509.Certificate) -> None:
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=2)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=24)
    assert leaf.serial_number == 0xABC
    assert leaf.issuer == root.subject


def test_leaf_signed_by_issuer(leaf: x509.Certificate, root: x509.Certificate) -> None:
    leaf.verify_directly_issued_by(root)


def test_leaf_passes_self_check_and_py_spiffe(
    leaf: x509.Certificate, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    check_issued(leaf, SLEEP)
    svid = X509Svid(SLEEP, (leaf,), leaf_key)
    parsed = spiffe.X509Svid.parse_raw(svid.cert_chain_der(), svid.private_key_der())
    assert str(parsed.spiffe_id) == str(SLEEP)


def test_not_after_clamped_to_issuer(issuer: Issuer, leaf_key: ec.EllipticCurvePrivateKey) -> None:
    near_end = issuer.not_after - timedelta(hours=1)
    req = WorkloadCertRequest(SLEEP, leaf_key.public_key(), timedelta(hours=24))
    cert = issue_workload_certificate(req, issuer, now=near_end, serial=1)
    assert cert.not_valid_after_utc == issuer.not_after


def test_dns_names_follow_the_uri(issuer: Issuer, leaf_key: ec.EllipticCurvePrivateKey) -> None:
    req = WorkloadCertRequest(SLEEP, leaf_key.public_key(), timedelta(hours=1), ("sleep.default",))
    cert = issue_workload_certificate(req, issuer, now=NOW, serial=1)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(SLEEP)]
    assert san.get_values_for_type(x509.DNSName) == ["sleep.default"]


def test_rsa_leaf_on_rsa_issuer(rsa_key: rsa.RSAPrivateKey) -> None:
    root = build_self_signed_root(rsa_key, trust_domain=TD, now=NOW, serial=1)
    cert = issue_workload_certificate(
        WorkloadCertRequest(SLEEP, rsa_key.public_key(), timedelta(hours=1)),
        Issuer(root, rsa_key),
        now=NOW,
        serial=2,
    )
    check_issued(cert, SLEEP)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"now": NOW + timedelta(days=3651)}, IssuanceError, "signing certificate has expired"),
        ({"ttl": timedelta(0)}, IssuanceError, "TTL must be positive"),
        ({"ttl": timedelta(seconds=-1)}, IssuanceError, "TTL must be positive"),
        ({"now": datetime(2026, 3, 1)}, IssuanceError, "timezone-aware"),
        ({"serial": 0}, IssuanceError, "serial must be a positive"),
        ({"serial": 1 << 159}, IssuanceError, "serial must be a positive"),
        ({"id": "spiffe://cluster.local"}, IssuanceError, "trust domain ID"),
        ({"weak": True}, KeyPolicyError, "1024 bits"),
    ],
    ids=[
        "issuer-expired",
        "zero-ttl",
        "negative-ttl",
        "naive-now",
        "zero-serial",
        "huge-serial",
        "no-path",
        "weak-key",
    ],
)
def test_workload_issue_refusals(
    issuer: Issuer,
    leaf_key: ec.EllipticCurvePrivateKey,
    rsa1024_key: rsa.RSAPrivateKey,
    change: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    pub = rsa1024_key.public_key() if change.get("weak") else leaf_key.public_key()
    sid = SpiffeId.parse(str(change.get("id", SLEEP)))
    ttl = change.get("ttl", timedelta(hours=1))
    assert isinstance(ttl, timedelta)
    now = change.get("now", NOW)
    assert isinstance(now, datetime)
    serial = change.get("serial", 5)
    assert isinstance(serial, int)
    with pytest.raises(error, match=match):
        issue_workload_certificate(
            WorkloadCertRequest(sid, pub, ttl), issuer, now=now, serial=serial
        )


# --- issuer construction ---------------------------------------------------------------------


def test_issuer_rejects_leaf_certificate(
    leaf: x509.Certificate, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(IssuanceError, match="not a CA"):
        Issuer(leaf, leaf_key)


def test_issuer_rejects_mismatched_key(
    root: x509.Certificate, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(IssuanceError, match="does not match"):
        Issuer(root, leaf_key)


def test_issuer_root_has_no_intermediates(issuer: Issuer) -> None:
    assert issuer.is_self_signed
    assert issuer.intermediates == ()


# --- roots, intermediates, server certificates -----------------------------------------------


def test_root_template(root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey) -> None:
    assert root.subject == x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")]
    )
    assert root.issuer == root.subject
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length is None
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert root.not_valid_after_utc - NOW == timedelta(days=3650)
    assert root.not_valid_before_utc == NOW - CLOCK_SKEW_GRACE
    root.verify_directly_issued_by(root)


def test_reissued_root_with_same_key_still_verifies_old_leaves(
    root_key: ec.EllipticCurvePrivateKey, leaf: x509.Certificate
) -> None:
    renewed = build_self_signed_root(
        root_key, trust_domain=TD, now=NOW + timedelta(days=3000), serial=8
    )
    leaf.verify_directly_issued_by(renewed)


def test_intermediate_template(issuer: Issuer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_intermediate(
        key.public_key(),
        issuer,
        name="cluster1",
        trust_domain=TD,
        now=NOW,
        ttl=timedelta(days=365),
        serial=3,
        dns_names=("istiod.istio-system.svc",),
    )
    assert cert.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == "cluster1"
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster.local"
    )
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca
    assert bc.path_length == 0
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    child = Issuer(cert, key)
    assert child.intermediates == (cert,)
    with pytest.raises(IssuanceError, match="path length 0 and cannot sign another CA"):
        issue_intermediate(
            key.public_key(),
            child,
            name="x",
            trust_domain=TD,
            now=NOW,
            ttl=timedelta(days=1),
            serial=4,
        )


def test_intermediate_path_length_clamped_below_issuer(issuer: Issuer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    mid = issue_intermediate(
        key.public_key(),
        issuer,
        name="a",
        trust_domain=TD,
        now=NOW,
        ttl=timedelta(days=10),
        serial=3,
        path_length=1,
    )
    sub = issue_intermediate(
        key.public_key(),
        Issuer(mid, key),
        name="b",
        trust_domain=TD,
        now=NOW,
        ttl=timedelta(days=10),
        serial=4,
        path_length=5,
    )
    assert sub.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_server_certificate(issuer: Issuer, leaf_key: ec.EllipticCurvePrivateKey) -> None:
    cert = issue_server_certificate(
        ["istiod.istio-system.svc", "127.0.0.1"],
        leaf_key.public_key(),
        issuer,
        now=NOW,
        ttl=timedelta(days=1),
        serial=9,
    )
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == "istiod.istio-system.svc"
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    assert san.get_values_for_type(x509.IPAddress) == [ip_address("127.0.0.1")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(IssuanceError, match="at least one"):
        issue_server_certificate(
            [], leaf_key.public_key(), issuer, now=NOW, ttl=timedelta(days=1), serial=9
        )


# --- self-check and serials --------------------------------------------------------------------


def test_check_issued_catches_wrong_identity(leaf: x509.Certificate) -> None:
    other = SpiffeId.parse("spiffe://cluster.local/ns/x/sa/y")
    with pytest.raises(IssuanceError, match="URI SAN is"):
        check_issued(leaf, other)


def test_leaf_contract_problems_on_a_ca(root: x509.Certificate) -> None:
    problems = leaf_contract_problems(root, None)
    assert "no SubjectAlternativeName" in problems
    assert "BasicConstraints CA=true on a leaf" in problems
    assert "KeyUsage lacks digitalSignature" in problems


def test_random_serial() -> None:
    serials = {random_serial(os.urandom(16)) for _ in range(100)}
    assert len(serials) == 100
    assert all(0 < s < 1 << 128 for s in serials)
    assert random_serial(b"\x00" * 16) == 1
    assert random_serial(b"\xff" * 16) == (1 << 128) - 1
    with pytest.raises(IssuanceError, match="16 bytes"):
        random_serial(b"short")


# --- Istio's dual-use rule: CN = first SAN when the CSR had a subject CN -----------------------


def test_dual_use_common_name_is_the_subject_cn(
    issuer: Issuer, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    cn = compose_dual_use_common_name([SLEEP, "sleep.default"])
    assert cn == str(SLEEP)
    req = WorkloadCertRequest(SLEEP, leaf_key.public_key(), timedelta(hours=1), common_name=cn)
    cert = issue_workload_certificate(req, issuer, now=NOW, serial=1)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [cn]
    assert len(cert.subject) == 1
    check_issued(cert, SLEEP)  # still a valid SVID (URI SAN unchanged)


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(["spiffe://cluster.local/ns/default/sa/" + "a" * 28], id="65-chars"),
        pytest.param([], id="no-san"),
    ],
)
def test_dual_use_common_name_refusals(names: list[str]) -> None:
    with pytest.raises(IssuanceError, match="dual-use common name"):
        compose_dual_use_common_name(names)


def test_dual_use_common_name_exactly_64_is_accepted() -> None:
    name = "spiffe://cluster.local/ns/default/sa/" + "a" * 27
    assert len(name) == 64
    assert compose_dual_use_common_name([name]) == name


def test_issue_refuses_an_overlong_common_name(
    issuer: Issuer, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    req = WorkloadCertRequest(
        SLEEP, leaf_key.public_key(), timedelta(hours=1), common_name="x" * 65
    )
    with pytest.raises(IssuanceError, match="longer than 64 characters"):
        issue_workload_certificate(req, issuer, now=NOW, serial=1)


@pytest.mark.parametrize("common_name", [None, str(SLEEP)], ids=["empty-subject", "dual-use-cn"])
def test_workload_leaf_is_what_the_builder_api_makes_step_by_step(
    issuer: Issuer, leaf_key: ec.EllipticCurvePrivateKey, common_name: str | None
) -> None:
    """The hot path hands the builder its extension list whole; the certificate it signs must be
    the one the step-by-step builder API makes (same fields, same extensions, same order)."""
    req = WorkloadCertRequest(
        SLEEP, leaf_key.public_key(), timedelta(hours=24), common_name=common_name
    )
    fast = issue_workload_certificate(req, issuer, now=NOW, serial=4242)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    )
    reference = (
        x509.CertificateBuilder()
        .issuer_name(issuer.certificate.subject)
        .subject_name(subject)
        .public_key(leaf_key.public_key())
        .serial_number(4242)
        .not_valid_before(NOW - CLOCK_SKEW_GRACE)
        .not_valid_after(NOW + timedelta(hours=24))
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),
            False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(SLEEP))]), True
        )
        .sign(issuer.private_key, issuer.hash_algorithm)
    )
    assert fast.tbs_certificate_bytes == reference.tbs_certificate_bytes
