"""CSR building and the CA-side checks of untrusted CSRs."""

from __future__ import annotations

import contextlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    MAX_CSR_BYTES,
    InvalidCsr,
    KeyPolicyError,
    PkiError,
    build_csr,
    encode_csr_pem,
    parse_csr,
    public_keys_equal,
)

ID = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/sleep")


def test_build_and_parse_round_trip(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = encode_csr_pem(build_csr(ec_key, ID))
    assert pem.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    parsed = parse_csr(pem)
    assert public_keys_equal(parsed.public_key, ec_key.public_key())
    assert parsed.requested_uris == (str(ID),)
    assert parsed.requested_dns == ()
    assert parsed.subject_cn is None


def test_parse_accepts_str_and_der(rsa_key: rsa.RSAPrivateKey) -> None:
    csr = build_csr(rsa_key, None, org="cluster.local")
    assert parse_csr(encode_csr_pem(csr).decode()).requested_uris == ()
    der = csr.public_bytes(serialization.Encoding.DER)
    assert public_keys_equal(parse_csr(der).public_key, rsa_key.public_key())


def test_build_csr_org_subject(ec_key: ec.EllipticCurvePrivateKey) -> None:
    csr = build_csr(ec_key, ID, org="cluster.local")
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster.local"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical  # subject is not empty


def test_build_csr_empty_subject_has_critical_san(ec_key: ec.EllipticCurvePrivateKey) -> None:
    csr = build_csr(ec_key, ID)
    assert len(csr.subject) == 0
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_subject_cn_and_dns_reported(ec_key: ec.EllipticCurvePrivateKey) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dual-use")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("a.example"), x509.UniformResourceIdentifier("spiffe://x/y")]
            ),
            critical=False,
        )
        .sign(ec_key, hashes.SHA256())
    )
    parsed = parse_csr(encode_csr_pem(csr))
    assert parsed.subject_cn == "dual-use"
    assert parsed.requested_dns == ("a.example",)
    assert parsed.requested_uris == ("spiffe://x/y",)


def test_bad_signature_rejected(ec_key: ec.EllipticCurvePrivateKey) -> None:
    der = build_csr(ec_key, None, org="aaaaaaaa").public_bytes(serialization.Encoding.DER)
    tampered = der.replace(b"aaaaaaaa", b"aaaaaaab")
    assert tampered != der
    with pytest.raises(InvalidCsr, match="signature does not match the public key"):
        parse_csr(tampered)


def test_rsa_1024_rejected(rsa1024_key: rsa.RSAPrivateKey) -> None:
    pem = encode_csr_pem(build_csr(rsa1024_key, ID))
    with pytest.raises(KeyPolicyError, match="1024 bits is below the minimum of 2048"):
        parse_csr(pem)


def test_p521_rejected() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA512())
    )
    with pytest.raises(KeyPolicyError, match="secp521r1"):
        parse_csr(encode_csr_pem(csr))


def test_ed25519_rejected() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, None)
    with pytest.raises(KeyPolicyError, match="Ed25519"):
        parse_csr(encode_csr_pem(csr))


def test_oversized_rejected_before_parsing(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = encode_csr_pem(build_csr(ec_key, ID))
    padded = pem + b"\n" * (MAX_CSR_BYTES + 1 - len(pem))
    with pytest.raises(InvalidCsr, match=f"larger than the limit of {MAX_CSR_BYTES}"):
        parse_csr(padded)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        ("   \n", "empty"),
        (b"hello world", "not a PEM or DER certificate request"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "malformed",
        ),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "found 'CERTIFICATE'"),
        (b"\x30\x03\x02\x01\x00", "malformed"),
        ("ключ", "non-ASCII"),
    ],
    ids=["empty", "blank", "text", "bad-body", "certificate-block", "bad-der", "non-ascii"],
)
def test_garbage_rejected(data: bytes | str, reason: str) -> None:
    with pytest.raises(InvalidCsr, match=reason):
        parse_csr(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_pki_errors(data: bytes) -> None:
    with contextlib.suppress(PkiError):
        parse_csr(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_pem_body_raises_only_pki_errors(body: bytes) -> None:
    import base64

    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(body)
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with contextlib.suppress(PkiError):
        parse_csr(pem)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_valid_csr_raises_only_pki_errors(data: st.DataObject) -> None:
    der = bytearray(_VALID_DER)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(PkiError):
        parse_csr(bytes(der))


_VALID_DER = build_csr(ec.generate_private_key(ec.SECP256R1()), ID).public_bytes(
    serialization.Encoding.DER
)
