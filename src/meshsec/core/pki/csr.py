"""Certificate signing requests: building them (agent side) and checking them (CA side).

The CA takes only the public key from a CSR: the identity it issues comes from the authenticated
caller. ``parse_csr`` is the edge where untrusted bytes are turned into a :class:`ParsedCsr`; any
problem is an :class:`InvalidCsr` (or :class:`KeyPolicyError` for a disallowed key).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from meshsec.core.identity import SpiffeId
from meshsec.core.pki.errors import InvalidCsr
from meshsec.core.pki.keys import PrivateKey, PublicKey, check_public_key, signature_hash

MAX_CSR_BYTES = 16 * 1024
_BEGIN_CSR = (b"-----BEGIN CERTIFICATE REQUEST-----", b"-----BEGIN NEW CERTIFICATE REQUEST-----")


def build_csr(
    key: PrivateKey, spiffe_id: SpiffeId | None = None, *, org: str | None = None
) -> x509.CertificateSigningRequest:
    """A CSR like Istio's agent makes: subject ``O=<org>`` (or empty), optional URI SAN.

    The SAN is informational only: the CA overwrites it with the caller's identity.
    """
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if spiffe_id is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
            critical=not attrs,
        )
    return builder.sign(key, signature_hash(key))


def encode_csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class ParsedCsr:
    """What the CA may use from a checked CSR."""

    public_key: PublicKey
    requested_uris: tuple[str, ...]
    requested_dns: tuple[str, ...]
    subject_cn: str | None


def parse_csr(pem: bytes | str) -> ParsedCsr:
    """Check an untrusted CSR (PEM, or DER) and return its public key and requested names.

    Checks, in order: size ≤ MAX_CSR_BYTES, parses, self-signature valid, key policy
    (RSA ≥ 2048, P-256/P-384), SAN extension well-formed.
    """
    if isinstance(pem, str):
        try:
            raw = pem.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidCsr("contains non-ASCII characters") from None
    else:
        raw = pem
    if len(raw) > MAX_CSR_BYTES:
        raise InvalidCsr(f"{len(raw)} bytes is larger than the limit of {MAX_CSR_BYTES}")
    if not raw.strip():
        raise InvalidCsr("empty")
    csr = _load(raw)
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidCsr(f"cannot check the signature: {_first_line(exc)}") from None
    if not signature_ok:
        raise InvalidCsr("signature does not match the public key")
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidCsr(f"unreadable public key: {_first_line(exc)}") from None
    check_public_key(public_key)
    assert isinstance(public_key, PublicKey)  # check_public_key admits only these
    uris, dns = _requested_names(csr)
    return ParsedCsr(
        public_key=public_key,
        requested_uris=uris,
        requested_dns=dns,
        subject_cn=_subject_cn(csr),
    )


def _load(raw: bytes) -> x509.CertificateSigningRequest:
    stripped = raw.lstrip()
    try:
        if any(marker in raw for marker in _BEGIN_CSR):
            return x509.load_pem_x509_csr(raw)
        if stripped.startswith(b"-----BEGIN"):
            label = stripped[11:].split(b"-----", 1)[0].decode("ascii", "replace")[:40]
            raise InvalidCsr(f"expected a CERTIFICATE REQUEST PEM block, found {label!r}")
        if stripped[:1] == b"\x30":
            return x509.load_der_x509_csr(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        raise InvalidCsr(f"malformed: {_first_line(exc)}") from None
    raise InvalidCsr("not a PEM or DER certificate request")


def _requested_names(
    csr: x509.CertificateSigningRequest,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return (), ()
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise InvalidCsr(f"malformed extensions: {_first_line(exc)}") from None
    san = ext.value
    uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    dns = tuple(san.get_values_for_type(x509.DNSName))
    return uris, dns


def _subject_cn(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (ValueError, TypeError) as exc:
        raise InvalidCsr(f"malformed subject: {_first_line(exc)}") from None
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
