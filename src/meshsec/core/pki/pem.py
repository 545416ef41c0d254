"""PEM encoding and decoding of certificates (single certificates and chains)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshsec.core.pki.errors import InvalidPem

_BEGIN_CERT = b"-----BEGIN CERTIFICATE-----"
_END_CERT = b"-----END CERTIFICATE-----"


def parse_certificates_pem(
    data: bytes | str, *, what: str = "certificate"
) -> list[x509.Certificate]:
    """All certificates in a PEM text, in order; InvalidPem if there are none or one is broken.

    Non-certificate PEM blocks (keys, CSRs) are an error, so a key pasted into a certificate file is
    reported instead of silently skipped.
    """
    raw = data.encode() if isinstance(data, str) else data
    if not raw.strip():
        raise InvalidPem(what, "empty")
    if _BEGIN_CERT not in raw:
        if b"-----BEGIN" in raw:
            label = raw.split(b"-----BEGIN", 1)[1].split(b"-----", 1)[0].strip()
            found = label.decode("ascii", "replace")[:40]
            raise InvalidPem(what, f"expected a CERTIFICATE PEM block, found {found!r}")
        if raw[:1] == b"\x30":
            raise InvalidPem(what, "looks like DER; expected PEM (-----BEGIN CERTIFICATE-----)")
        raise InvalidPem(what, "no PEM CERTIFICATE block found")
    other = _other_block_label(raw)
    if other is not None:
        raise InvalidPem(what, f"unexpected {other!r} PEM block among certificates")
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except (ValueError, x509.InvalidVersion) as exc:
        raise InvalidPem(what, f"malformed certificate: {_first_line(exc)}") from None
    if not certs:
        raise InvalidPem(what, "no PEM CERTIFICATE block found")
    if len(certs) != raw.count(_BEGIN_CERT):
        raise InvalidPem(what, "a CERTIFICATE block could not be decoded")
    for index, cert in enumerate(certs):
        _check_serial(cert, what, index if len(certs) > 1 else None)
    return certs


def parse_certificate_pem(data: bytes | str, *, what: str = "certificate") -> x509.Certificate:
    """Exactly one certificate."""
    certs = parse_certificates_pem(data, what=what)
    if len(certs) != 1:
        raise InvalidPem(what, f"expected exactly one certificate, found {len(certs)}")
    return certs[0]


def parse_certificates_any(data: bytes, *, what: str = "certificate") -> list[x509.Certificate]:
    """Certificates from a file a person points us at: PEM (other blocks such as keys are
    skipped) or a single DER certificate. InvalidPem if it holds no certificate."""
    if _BEGIN_CERT in data:
        blocks = [
            _BEGIN_CERT + chunk.split(_END_CERT, 1)[0] + _END_CERT + b"\n"
            for chunk in data.split(_BEGIN_CERT)[1:]
        ]
        return parse_certificates_pem(b"".join(blocks), what=what)
    if data[:1] == b"\x30":
        return [parse_certificate_der(data, what=what)]
    return parse_certificates_pem(data, what=what)


def parse_certificate_der(data: bytes, *, what: str = "certificate") -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise InvalidPem(what, f"malformed DER certificate: {_first_line(exc)}") from None
    _check_serial(cert, what, None)
    return cert


def encode_certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def encode_certificates_pem(certs: Sequence[x509.Certificate]) -> bytes:
    """Concatenated PEM blocks, each ending in a newline."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _check_serial(cert: x509.Certificate, what: str, index: int | None) -> None:
    """RFC 5280 §4.1.2.2: the serial number is a positive integer. cryptography still loads
    zero and negative ones (with a deprecation warning; a later release refuses them) and Go's
    crypto/x509, which Istio uses, refuses negative ones: so do we, for every certificate a
    person or a peer hands meshsec as PEM or DER here (files, cacerts, CSR answers). Peers'
    certificates in a TLS handshake are checked by OpenSSL against the bundle instead."""
    if cert.serial_number <= 0:
        where = "" if index is None else f"certificate {index + 1}: "
        raise InvalidPem(
            what, f"{where}serial number {cert.serial_number} is not positive (RFC 5280 §4.1.2.2)"
        )


def _other_block_label(raw: bytes) -> str | None:
    for chunk in raw.split(b"-----BEGIN ")[1:]:
        label = chunk.split(b"-----", 1)[0].strip()
        if label != b"CERTIFICATE":
            return label.decode("ascii", "replace")[:40]
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
