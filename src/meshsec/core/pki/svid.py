"""X.509-SVIDs: a SPIFFE ID, its certificate chain (leaf first, no root) and private key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshsec.core.identity import InvalidSpiffeId, SpiffeId
from meshsec.core.pki.errors import ChainFailure, ChainVerificationError, PkiError
from meshsec.core.pki.keys import (
    PrivateKey,
    encode_private_key_der,
    encode_private_key_pem,
    parse_private_key_pem,
    public_keys_equal,
)
from meshsec.core.pki.pem import encode_certificates_pem, parse_certificates_pem


@dataclass(frozen=True)
class X509Svid:
    """An SVID as the agent holds it; construction checks the ID, the chain and the key agree."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey

    def __post_init__(self) -> None:
        if not self.chain:
            raise PkiError("an SVID needs at least its leaf certificate")
        found = parse_svid_chain(self.chain)
        if found != self.spiffe_id:
            raise PkiError(f"leaf certificate is for {found}, not {self.spiffe_id}")
        if not public_keys_equal(self.private_key.public_key(), self.chain[0].public_key()):  # type: ignore[arg-type]
            raise PkiError("private key does not match the leaf certificate")

    @classmethod
    def from_pem(cls, chain_pem: bytes | str, key_pem: bytes | str) -> X509Svid:
        """Leaf-first PEM chain plus a PEM private key (the ID is read from the leaf)."""
        chain = tuple(parse_certificates_pem(chain_pem, what="certificate chain"))
        key = parse_private_key_pem(key_pem)
        return cls(parse_svid_chain(chain), chain, key)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return self.chain[1:]

    @property
    def not_before(self) -> datetime:
        return self.chain[0].not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.chain[0].not_valid_after_utc

    @property
    def serial_hex(self) -> str:
        return f"{self.chain[0].serial_number:032x}"

    def cert_chain_pem(self) -> bytes:
        return encode_certificates_pem(self.chain)

    def private_key_pem(self) -> bytes:
        return encode_private_key_pem(self.private_key)

    def cert_chain_der(self) -> bytes:
        """Concatenated DER certificates (SPIFFE Workload API ``x509_svid`` field)."""
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.chain)

    def private_key_der(self) -> bytes:
        """PKCS#8 DER (SPIFFE Workload API ``x509_svid_key`` field)."""
        return encode_private_key_der(self.private_key)


def parse_svid_chain(chain: Sequence[x509.Certificate]) -> SpiffeId:
    """The SPIFFE ID of the leaf (``chain[0]``): exactly one URI SAN, a SPIFFE ID with a path.

    Raises ChainVerificationError(kind=BAD_SAN) describing what is wrong.
    """
    if not chain:
        raise ChainVerificationError("empty certificate chain", ChainFailure.BAD_SAN)
    return spiffe_id_of(chain[0], require_path=True)


def spiffe_id_of(cert: x509.Certificate, *, require_path: bool = True) -> SpiffeId:
    """The single SPIFFE ID in ``cert``'s URI SAN, with the precise reason when there isn't one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ChainVerificationError(
            "leaf certificate has no SubjectAlternativeName (expected one SPIFFE ID URI SAN)",
            ChainFailure.BAD_SAN,
        ) from None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise ChainVerificationError(
            f"leaf certificate extensions are malformed: {exc}", ChainFailure.BAD_SAN
        ) from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise ChainVerificationError(
            "leaf certificate has no URI SAN (expected exactly one SPIFFE ID)", ChainFailure.BAD_SAN
        )
    if len(uris) > 1:
        raise ChainVerificationError(
            f"leaf certificate has {len(uris)} URI SANs (expected exactly one SPIFFE ID)",
            ChainFailure.BAD_SAN,
        )
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except InvalidSpiffeId as exc:
        raise ChainVerificationError(
            f"leaf URI SAN is not a valid SPIFFE ID: {exc.reason} ({uris[0][:200]!r})",
            ChainFailure.BAD_SAN,
        ) from None
    if require_path and not spiffe_id.path:
        raise ChainVerificationError(
            f"leaf SPIFFE ID {spiffe_id} is a trust domain ID (a workload path is required)",
            ChainFailure.BAD_SAN,
        )
    return spiffe_id
