"""Certificate PEM parsing and encoding."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshsec.core.pki import (
    InvalidPem,
    encode_certificates_pem,
    encode_private_key_pem,
    parse_certificate_der,
    parse_certificate_pem,
    parse_certificates_pem,
)

# cryptography still loads such certificates, with this warning; the parser then refuses them
_NON_POSITIVE_SERIAL_WARNING = (
    "ignore:Parsed a serial number which wasn't positive:"
    "cryptography.utils.CryptographyDeprecationWarning"
)


def _cert(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def two(ec_key: ec.EllipticCurvePrivateKey) -> list[x509.Certificate]:
    return [_cert(ec_key, "a"), _cert(ec_key, "b")]


def test_round_trip_chain(two: list[x509.Certificate]) -> None:
    pem = encode_certificates_pem(two)
    assert pem.count(b"-----BEGIN CERTIFICATE-----") == 2
    assert pem.endswith(b"\n")
    assert parse_certificates_pem(pem) == two
    assert parse_certificates_pem(pem.decode()) == two


def test_single_and_der(two: list[x509.Certificate]) -> None:
    pem = encode_certificates_pem(two[:1])
    assert parse_certificate_pem(pem) == two[0]
    assert parse_certificate_der(two[0].public_bytes(serialization.Encoding.DER)) == two[0]
    with pytest.raises(InvalidPem, match="expected exactly one certificate, found 2"):
        parse_certificate_pem(encode_certificates_pem(two))


def test_surrounding_text_is_tolerated(two: list[x509.Certificate]) -> None:
    pem = b"subject=O=a\n" + encode_certificates_pem(two) + b"\n# trailing comment\n"
    assert len(parse_certificates_pem(pem)) == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "invalid root bundle: empty"),
        (b"garbage", "no PEM CERTIFICATE block found"),
        (b"\x30\x82\x01\x00", "looks like DER"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "malformed certificate",
        ),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "malformed certificate"),
    ],
    ids=["empty", "garbage", "der", "bad-body", "truncated"],
)
def test_garbage(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidPem, match=reason):
        parse_certificates_pem(data, what="root bundle")


def test_key_in_cert_file_is_named(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(InvalidPem, match="expected a CERTIFICATE PEM block, found 'PRIVATE KEY'"):
        parse_certificates_pem(encode_private_key_pem(ec_key))


def test_key_mixed_into_chain_is_named(
    two: list[x509.Certificate], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    pem = encode_certificates_pem(two) + encode_private_key_pem(ec_key)
    with pytest.raises(InvalidPem, match="unexpected 'PRIVATE KEY' PEM block"):
        parse_certificates_pem(pem)


def test_bad_der() -> None:
    with pytest.raises(InvalidPem, match="malformed DER certificate"):
        parse_certificate_der(b"\x30\x00")


@pytest.mark.filterwarnings(_NON_POSITIVE_SERIAL_WARNING)
def test_mutated_certificates_raise_only_invalid_pem(two: list[x509.Certificate]) -> None:
    import base64

    from hypothesis import given, settings
    from hypothesis import strategies as st

    der = two[0].public_bytes(serialization.Encoding.DER)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, len(der) - 1), st.integers(0, 255)), min_size=1, max_size=4
        )
    )
    def check(changes: list[tuple[int, int]]) -> None:
        mutated = bytearray(der)
        for i, b in changes:
            mutated[i] = b
        pem = (
            b"-----BEGIN CERTIFICATE-----\n"
            + base64.encodebytes(bytes(mutated))
            + b"-----END CERTIFICATE-----\n"
        )
        for parse in (
            lambda: parse_certificates_pem(pem),
            lambda: parse_certificate_der(bytes(mutated)),
        ):
            with contextlib.suppress(InvalidPem):
                parse()

    check()


@pytest.mark.filterwarnings(_NON_POSITIVE_SERIAL_WARNING)
@pytest.mark.parametrize(("content", "value"), [(b"\x00", 0), (b"\xff", -1), (b"\x80", -128)])
def test_a_certificate_with_a_non_positive_serial_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, content: bytes, value: int
) -> None:
    good = _cert(ec_key, "serial").public_bytes(serialization.Encoding.DER)
    version_and_serial = b"\xa0\x03\x02\x01\x02" + b"\x02\x01\x01"  # v3, serial 1
    assert good.count(version_and_serial) == 1
    der = good.replace(version_and_serial, version_and_serial[:-1] + content)
    pem = _pem(good) + _pem(der)
    with pytest.raises(InvalidPem) as raised:
        parse_certificates_pem(pem)
    assert raised.value.reason == (
        f"certificate 2: serial number {value} is not positive (RFC 5280 §4.1.2.2)"
    )
    with pytest.raises(InvalidPem, match=f"serial number {value} is not positive"):
        parse_certificate_der(der)
    assert parse_certificate_der(good).serial_number == 1


def _pem(der: bytes) -> bytes:
    return (
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    )
