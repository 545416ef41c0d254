"""Path validation and SPIFFE leaf rules: each failure has its own stable kind and message."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from cryptography.x509.verification import PolicyBuilder, Store

from meshsec.core.identity import SpiffeId, TrustDomain
from meshsec.core.pki import (
    ChainFailure,
    ChainVerificationError,
    TrustBundle,
    verify_chain,
    verify_svid,
)
from tests.testca import TestCA

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
Key = ec.EllipticCurvePrivateKey


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _craft(
    *,
    subject: str,
    key: Key,
    issuer: x509.Certificate | None,
    issuer_key: Key,
    ca: bool | None,
    path_length: int | None = None,
    uris: Sequence[str] = (),
    key_cert_sign: bool | None = None,
    digital_signature: bool = True,
    not_before: datetime = NOW - timedelta(hours=1),
    not_after: datetime = NOW + timedelta(hours=1),
    extra_critical: ObjectIdentifier | None = None,
) -> x509.Certificate:
    """Any certificate shape, including ones our issuer functions refuse to make."""
    name = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]) if subject else x509.Name([])
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if key_cert_sign is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=not subject,
        )
    if extra_critical is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(extra_critical, b"\x05\x00"), critical=True
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA(now=NOW)


@pytest.fixture(scope="module")
def root_key() -> Key:
    return _key()


@pytest.fixture(scope="module")
def root(root_key: Key) -> x509.Certificate:
    return _craft(
        subject="root",
        key=root_key,
        issuer=None,
        issuer_key=root_key,
        ca=True,
        key_cert_sign=True,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=1),
    )


def _leaf(issuer: x509.Certificate, issuer_key: Key, **kw: object) -> x509.Certificate:
    args: dict[str, object] = {
        "subject": "",
        "key": _key(),
        "issuer": issuer,
        "issuer_key": issuer_key,
        "ca": False,
        "uris": (SLEEP,),
        "key_cert_sign": False,
    }
    args.update(kw)
    return _craft(**args)  # type: ignore[arg-type]


# --- success paths --------------------------------------------------------------------------


def test_valid_direct(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP)
    verified = verify_chain(svid.leaf, (), ca.bundle, now=NOW)
    assert verified.path == (svid.leaf, ca.root_cert)
    assert verified.intermediates == ()
    assert verify_svid(svid.chain, ca.bundle, now=NOW) == SpiffeId.parse(SLEEP)


def test_valid_with_intermediates_and_noise(ca: TestCA) -> None:
    inter = ca.intermediate("c1", path_length=1).intermediate("c2")
    svid = inter.issue_svid(SLEEP)
    unrelated = TestCA("other.org", now=NOW).intermediate("x").cert
    chain = (svid.leaf, unrelated, *svid.intermediates, ca.root_cert)
    verified = verify_chain(chain[0], chain[1:], ca.bundle, now=NOW)
    assert verified.path == (svid.leaf, *svid.intermediates, ca.root_cert)


def test_second_root_in_bundle(ca: TestCA) -> None:
    other = TestCA("other.org", now=NOW)
    bundle = other.bundle.merge(ca.bundle)
    svid = ca.issue_svid(SLEEP)
    assert verify_chain(svid.leaf, (), bundle, now=NOW).root == ca.root_cert


def test_boundaries_are_inclusive(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP, ttl=timedelta(hours=1))
    verify_chain(svid.leaf, (), ca.bundle, now=svid.not_before)
    verify_chain(svid.leaf, (), ca.bundle, now=svid.not_after)


def test_agrees_with_cryptography_verifier(ca: TestCA) -> None:
    """cryptography's own (webpki-profile) client verifier accepts what we accept here."""
    inter = ca.intermediate("c9")
    svid = inter.issue_svid(SLEEP)
    verifier = PolicyBuilder().store(Store([ca.root_cert])).time(NOW).build_client_verifier()
    verified = verifier.verify(svid.leaf, list(svid.intermediates))
    assert verified.chain[-1] == ca.root_cert
    assert verify_chain(svid.leaf, svid.intermediates, ca.bundle, now=NOW).root == ca.root_cert


# --- each failure --------------------------------------------------------------------------


def test_expired_leaf(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP, ttl=timedelta(hours=1))
    with pytest.raises(
        ChainVerificationError, match=r"leaf 'spiffe://cluster.local.*expired at"
    ) as e:
        verify_svid(svid.chain, ca.bundle, now=NOW + timedelta(hours=2))
    assert e.value.kind is ChainFailure.EXPIRED


def test_not_yet_valid_leaf(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP, now=NOW + timedelta(hours=5))
    with pytest.raises(ChainVerificationError, match="is not valid before") as e:
        verify_svid(svid.chain, ca.bundle, now=NOW)
    assert e.value.kind is ChainFailure.NOT_YET_VALID


def test_expired_intermediate(root: x509.Certificate, root_key: Key) -> None:
    ikey = _key()
    inter = _craft(
        subject="inter",
        key=ikey,
        issuer=root,
        issuer_key=root_key,
        ca=True,
        key_cert_sign=True,
        not_after=NOW - timedelta(minutes=1),
    )
    leaf = _leaf(inter, ikey)
    with pytest.raises(ChainVerificationError, match=r"intermediate 'CN=inter'.*expired") as e:
        verify_chain(leaf, [inter], TrustBundle((root,)), now=NOW)
    assert e.value.kind is ChainFailure.EXPIRED


def test_expired_root(root_key: Key) -> None:
    old_root = _craft(
        subject="root",
        key=root_key,
        issuer=None,
        issuer_key=root_key,
        ca=True,
        key_cert_sign=True,
        not_after=NOW - timedelta(seconds=1),
    )
    leaf = _leaf(old_root, root_key)
    with pytest.raises(ChainVerificationError, match=r"root 'CN=root'.*expired") as e:
        verify_chain(leaf, [], TrustBundle((old_root,)), now=NOW)
    assert e.value.kind is ChainFailure.EXPIRED


def test_unknown_authority(ca: TestCA) -> None:
    stranger = TestCA("other.org", now=NOW).issue_svid("spiffe://other.org/ns/a/sa/b")
    with pytest.raises(
        ChainVerificationError, match="no certificate in the trust bundle issued"
    ) as e:
        verify_svid(stranger.chain, ca.bundle, now=NOW)
    assert e.value.kind is ChainFailure.UNKNOWN_AUTHORITY


def test_missing_intermediate_is_unknown_authority(ca: TestCA) -> None:
    svid = ca.intermediate("c3").issue_svid(SLEEP)
    with pytest.raises(ChainVerificationError, match="issuer 'CN=Intermediate CA") as e:
        verify_chain(svid.leaf, (), ca.bundle, now=NOW)
    assert e.value.kind is ChainFailure.UNKNOWN_AUTHORITY


def test_same_name_different_key_is_bad_signature(ca: TestCA) -> None:
    impostor = TestCA(now=NOW)  # same subject name as `ca`'s root, different key
    assert impostor.root_cert.subject == ca.root_cert.subject
    svid = impostor.issue_svid(SLEEP)
    with pytest.raises(ChainVerificationError, match="does not verify with the key") as e:
        verify_svid(svid.chain, ca.bundle, now=NOW)
    assert e.value.kind is ChainFailure.BAD_SIGNATURE


def test_tampered_leaf_is_bad_signature(ca: TestCA) -> None:
    from cryptography.hazmat.primitives import serialization

    svid = ca.issue_svid(SLEEP)
    der = bytearray(svid.leaf.public_bytes(serialization.Encoding.DER))
    sleep_at = der.find(b"sleep")
    der[sleep_at] = ord("S")  # the URI is inside the signed TBS
    tampered = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(ChainVerificationError) as e:
        verify_chain(tampered, (), ca.bundle, now=NOW)
    assert e.value.kind is ChainFailure.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("ca_flag", "key_cert_sign", "match"),
    [
        (False, True, "is not a CA"),
        (None, True, "is not a CA"),
        (True, False, "lacks the keyCertSign"),
    ],
    ids=["ca-false", "no-basic-constraints", "no-keycertsign"],
)
def test_issuer_not_ca(
    root: x509.Certificate, root_key: Key, ca_flag: bool | None, key_cert_sign: bool, match: str
) -> None:
    ikey = _key()
    inter = _craft(
        subject="not-a-ca",
        key=ikey,
        issuer=root,
        issuer_key=root_key,
        ca=ca_flag,
        key_cert_sign=key_cert_sign,
    )
    leaf = _leaf(inter, ikey)
    with pytest.raises(ChainVerificationError, match=match) as e:
        verify_chain(leaf, [inter], TrustBundle((root,)), now=NOW)
    assert e.value.kind is ChainFailure.ISSUER_NOT_CA


def test_leaf_signed_by_leaf(ca: TestCA) -> None:
    """A workload cannot mint certificates with its own (CA=false) SVID key."""
    svid = ca.issue_svid(SLEEP)
    forged = _craft(
        subject="",
        key=_key(),
        issuer=svid.leaf,
        issuer_key=svid.private_key,  # type: ignore[arg-type]
        ca=False,
        uris=("spiffe://cluster.local/ns/kube-system/sa/admin",),
        key_cert_sign=False,
    )
    with pytest.raises(ChainVerificationError) as e:
        verify_svid([forged, svid.leaf], ca.bundle, now=NOW)
    assert e.value.kind is ChainFailure.ISSUER_NOT_CA


def test_pathlen_exceeded(root: x509.Certificate, root_key: Key) -> None:
    k1, k2 = _key(), _key()
    i1 = _craft(
        subject="i1",
        key=k1,
        issuer=root,
        issuer_key=root_key,
        ca=True,
        path_length=0,
        key_cert_sign=True,
    )
    i2 = _craft(
        subject="i2", key=k2, issuer=i1, issuer_key=k1, ca=True, path_length=0, key_cert_sign=True
    )
    leaf = _leaf(i2, k2)
    with pytest.raises(ChainVerificationError, match=r"'CN=i1'.*allows 0 intermediate CA") as e:
        verify_chain(leaf, [i2, i1], TrustBundle((root,)), now=NOW)
    assert e.value.kind is ChainFailure.PATHLEN_EXCEEDED


def test_root_pathlen_counts(root_key: Key) -> None:
    strict_root = _craft(
        subject="root0",
        key=root_key,
        issuer=None,
        issuer_key=root_key,
        ca=True,
        path_length=0,
        key_cert_sign=True,
    )
    k1 = _key()
    i1 = _craft(
        subject="i1", key=k1, issuer=strict_root, issuer_key=root_key, ca=True, key_cert_sign=True
    )
    with pytest.raises(ChainVerificationError) as e:
        verify_chain(_leaf(i1, k1), [i1], TrustBundle((strict_root,)), now=NOW)
    assert e.value.kind is ChainFailure.PATHLEN_EXCEEDED


def test_leaf_is_ca(root: x509.Certificate, root_key: Key) -> None:
    leaf = _leaf(root, root_key, ca=True, key_cert_sign=False)
    with pytest.raises(ChainVerificationError, match="is a CA certificate") as e:
        verify_svid([leaf], TrustBundle((root,)), now=NOW)
    assert e.value.kind is ChainFailure.LEAF_IS_CA


def test_leaf_with_key_cert_sign(root: x509.Certificate, root_key: Key) -> None:
    leaf = _leaf(root, root_key, key_cert_sign=True)
    with pytest.raises(ChainVerificationError, match="keyCertSign or cRLSign") as e:
        verify_svid([leaf], TrustBundle((root,)), now=NOW)
    assert e.value.kind is ChainFailure.LEAF_IS_CA


def test_leaf_without_digital_signature(root: x509.Certificate, root_key: Key) -> None:
    leaf = _leaf(root, root_key, key_cert_sign=False, digital_signature=False)
    with pytest.raises(ChainVerificationError, match="lacks the digitalSignature") as e:
        verify_svid([leaf], TrustBundle((root,)), now=NOW)
    assert e.value.kind is ChainFailure.BAD_KEY_USAGE


@pytest.mark.parametrize(
    ("uris", "match"),
    [
        ((SLEEP, "spiffe://cluster.local/ns/x/sa/y"), "has 2 URI SANs"),
        ((), "has no SubjectAlternativeName"),
        (("https://example.com/x",), "not a valid SPIFFE ID"),
        (("spiffe://cluster.local",), "is a trust domain ID"),
    ],
    ids=["multiple-uri", "no-san", "not-spiffe", "no-path"],
)
def test_bad_leaf_san(
    root: x509.Certificate, root_key: Key, uris: tuple[str, ...], match: str
) -> None:
    leaf = _leaf(root, root_key, uris=uris, subject="" if uris else "cn")
    with pytest.raises(ChainVerificationError, match=match) as e:
        verify_svid([leaf], TrustBundle((root,)), now=NOW)
    assert e.value.kind is ChainFailure.BAD_SAN


def test_wrong_trust_domain(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP)
    sid = verify_svid(svid.chain, ca.bundle, now=NOW, trust_domains=[TrustDomain("cluster.local")])
    assert sid == SpiffeId.parse(SLEEP)
    with pytest.raises(ChainVerificationError, match="not in an accepted trust domain") as e:
        verify_svid(svid.chain, ca.bundle, now=NOW, trust_domains=[TrustDomain("other.org")])
    assert e.value.kind is ChainFailure.WRONG_TRUST_DOMAIN


def test_unknown_critical_extension(root: x509.Certificate, root_key: Key) -> None:
    leaf = _leaf(root, root_key, extra_critical=ObjectIdentifier("1.3.6.1.4.1.99999.1"))
    with pytest.raises(ChainVerificationError, match="unsupported critical extension") as e:
        verify_chain(leaf, [], TrustBundle((root,)), now=NOW)
    assert e.value.kind is ChainFailure.UNSUPPORTED


def test_empty_inputs(ca: TestCA) -> None:
    svid = ca.issue_svid(SLEEP)
    with pytest.raises(ChainVerificationError, match="trust bundle is empty"):
        verify_chain(svid.leaf, (), TrustBundle(()), now=NOW)
    with pytest.raises(ChainVerificationError, match="empty certificate chain"):
        verify_svid([], ca.bundle, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_chain(svid.leaf, (), ca.bundle, now=datetime(2026, 1, 1))


def test_issuing_and_verifying_share_the_extension_lookups() -> None:
    """One helper each for BasicConstraints / KeyUsage, used by templates and verify alike."""
    from meshsec.core.pki import templates, verify
    from tests.testca import TestCA

    assert verify.basic_constraints_of is templates.basic_constraints_of
    assert verify.key_usage_of is templates.key_usage_of
    ca = TestCA()
    leaf = ca.issue_svid("spiffe://cluster.local/ns/a/sa/b").leaf
    root_bc = templates.basic_constraints_of(ca.root_cert)
    leaf_bc = templates.basic_constraints_of(leaf)
    assert root_bc is not None
    assert root_bc.ca
    assert leaf_bc is not None
    assert not leaf_bc.ca
    root_ku = templates.key_usage_of(ca.root_cert)
    assert root_ku is not None
    assert root_ku.key_cert_sign
