"""What our certificates look like: lifetimes, the issuer, requests, serials, extension sets.

The extension sets follow Istio's CA (``genCertTemplateFromCSR``) and the SPIFFE X.509-SVID spec:

* workload leaf: empty subject, one URI SAN (critical), KeyUsage digitalSignature +
  keyEncipherment (critical), EKU serverAuth + clientAuth, BasicConstraints CA=false (critical),
  SKI + AKI;
* CA (root or intermediate): KeyUsage keyCertSign + cRLSign (critical), BasicConstraints CA=true
  (critical) with an optional path length, SKI (+ AKI).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from meshsec.core.identity import InvalidSpiffeId, SpiffeId
from meshsec.core.pki.errors import IssuanceError
from meshsec.core.pki.keys import (
    PrivateKey,
    PublicKey,
    public_keys_equal,
    signature_hash,
)

DEFAULT_WORKLOAD_TTL = timedelta(hours=24)
MAX_WORKLOAD_TTL = timedelta(days=90)
CLOCK_SKEW_GRACE = timedelta(minutes=2)
DEFAULT_ROOT_TTL = timedelta(days=3650)
SERIAL_BYTES = 16

LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
LEAF_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
LEAF_BASIC_CONSTRAINTS = x509.BasicConstraints(ca=False, path_length=None)


@dataclass(frozen=True)
class Issuer:
    """A signing CA: its certificate, its key, and the intermediates above it.

    ``chain`` holds the certificates above ``certificate`` up to but excluding the root(s) of the
    trust bundle; it is empty when ``certificate`` is the root itself or is signed by a root.
    Construction checks that ``certificate`` is a CA and that ``private_key`` matches it, and
    precomputes what every issuance needs (AKI, digest, subject, notAfter).
    """

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    _aki: x509.AuthorityKeyIdentifier = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        basic = basic_constraints_of(self.certificate)
        if basic is None or not basic.ca:
            raise IssuanceError(
                "signing certificate is not a CA (BasicConstraints CA=true missing)"
            )
        key_usage = key_usage_of(self.certificate)
        if key_usage is not None and not key_usage.key_cert_sign:
            raise IssuanceError("signing certificate lacks the keyCertSign key usage")
        if not public_keys_equal(self.private_key.public_key(), _public_key(self.certificate)):
            raise IssuanceError("signing key does not match the signing certificate")
        object.__setattr__(self, "_aki", _authority_key_id(self.certificate))

    @property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """AKI for certificates this issuer signs (computed once)."""
        return self._aki

    @cached_property
    def authority_key_identifier_extension(self) -> x509.Extension[x509.AuthorityKeyIdentifier]:
        """The AKI as a non-critical extension, ready for a certificate builder."""
        return x509.Extension(ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, self._aki)

    @cached_property
    def subject(self) -> x509.Name:
        """The signing certificate's subject (the issuer name of what it signs), parsed once."""
        return self.certificate.subject

    @cached_property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @cached_property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @cached_property
    def path_length(self) -> int | None:
        basic = basic_constraints_of(self.certificate)
        return basic.path_length if basic is not None else None

    @cached_property
    def is_self_signed(self) -> bool:
        return self.certificate.issuer == self.certificate.subject

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Certificates to send between a leaf and the root bundle: ``()`` for a root issuer."""
        if self.is_self_signed:
            return self.chain
        return (self.certificate, *self.chain)

    @cached_property
    def hash_algorithm(self) -> hashes.SHA256 | hashes.SHA384:
        return signature_hash(self.private_key)


@dataclass(frozen=True)
class WorkloadCertRequest:
    """What the CA decided to issue: identity (from the caller), public key (from the CSR), TTL."""

    spiffe_id: SpiffeId
    public_key: PublicKey
    ttl: timedelta
    dns_names: tuple[str, ...] = ()
    # Istio's dual-use rule: when the CSR's subject has a CN, the leaf's subject is CN=<first SAN>
    # (see compose_dual_use_common_name); None keeps the SPIFFE default, an empty subject.
    common_name: str | None = None


MAX_COMMON_NAME = 64  # X.520 ub-common-name


def compose_dual_use_common_name(names: Sequence[str | SpiffeId]) -> str:
    """Istio's ``DualUseCommonName``: the first SAN, refused above 64 characters."""
    if not names:
        raise IssuanceError("dual-use common name needs at least one SAN")
    first = str(names[0])
    if len(first) > MAX_COMMON_NAME:
        raise IssuanceError(
            f"dual-use common name {first[:80]!r} is longer than {MAX_COMMON_NAME} characters"
        )
    return first


def random_serial(entropy: bytes) -> int:
    """A positive serial from ``SERIAL_BYTES`` random bytes (the shell passes os.urandom(16))."""
    if len(entropy) < SERIAL_BYTES:
        raise IssuanceError(f"serial needs {SERIAL_BYTES} bytes of entropy, got {len(entropy)}")
    return int.from_bytes(entropy[:SERIAL_BYTES], "big") or 1


def build_san(names: Sequence[str | SpiffeId]) -> x509.SubjectAlternativeName:
    """Encode names as Istio does: IP address → iPAddress, ``spiffe://`` → URI, else DNS."""
    general: list[x509.GeneralName] = []
    for name in names:
        text = str(name)
        if isinstance(name, SpiffeId):
            general.append(x509.UniformResourceIdentifier(text))
            continue
        if text[: len("spiffe://")].lower() == "spiffe://":  # validated: SPIFFE:// is refused
            try:
                general.append(x509.UniformResourceIdentifier(str(SpiffeId.parse(text))))
            except InvalidSpiffeId as exc:
                raise IssuanceError(f"invalid SPIFFE ID {text[:64]!r}: {exc.reason}") from None
            continue
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            if not text or len(text) > 253:
                raise IssuanceError(f"invalid DNS name {text[:64]!r}") from None
            general.append(x509.DNSName(text))
    return x509.SubjectAlternativeName(general)


def basic_constraints_of(cert: x509.Certificate) -> x509.BasicConstraints | None:
    """The certificate's BasicConstraints, None when absent (issuing and verifying use this)."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def key_usage_of(cert: x509.Certificate) -> x509.KeyUsage | None:
    """The certificate's KeyUsage, None when absent (issuing and verifying use this)."""
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _public_key(cert: x509.Certificate) -> PublicKey:
    pub = cert.public_key()
    if not isinstance(pub, PublicKey):
        raise IssuanceError(f"unsupported signing key type {type(pub).__name__}")
    return pub


def _authority_key_id(cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(_public_key(cert))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
