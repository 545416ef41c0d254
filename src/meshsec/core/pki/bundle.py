"""Trust bundles: the set of root certificates a workload or the CA trusts.

A bundle may hold several roots (root rotation, multi-root meshes, Istio's ``root-cert.pem``).
Order is stable and duplicates (same DER) are dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshsec.core.pki.pem import encode_certificates_pem, parse_certificates_pem


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex (what ``openssl x509 -fingerprint`` shows)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class TrustBundle:
    certificates: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "certificates", _dedup(self.certificates))

    @classmethod
    def parse_pem(cls, data: bytes | str, *, what: str = "trust bundle") -> TrustBundle:
        """All certificates of a PEM bundle; InvalidPem (naming ``what``) if none or broken."""
        return cls(tuple(parse_certificates_pem(data, what=what)))

    def to_pem(self) -> bytes:
        return encode_certificates_pem(self.certificates)

    def merge(self, other: TrustBundle | Iterable[x509.Certificate]) -> TrustBundle:
        """This bundle's roots, then the other's that are new."""
        extra = other.certificates if isinstance(other, TrustBundle) else tuple(other)
        return TrustBundle((*self.certificates, *extra))

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(certificate_fingerprint(c) for c in self.certificates)

    def __contains__(self, cert: object) -> bool:
        return isinstance(cert, x509.Certificate) and cert in self.certificates

    def __iter__(self) -> Iterator[x509.Certificate]:
        return iter(self.certificates)

    def __len__(self) -> int:
        return len(self.certificates)

    def issuers_of(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
        """Roots whose subject is ``cert``'s issuer name (candidates for path building)."""
        return tuple(c for c in self.certificates if c.subject == cert.issuer)


def _dedup(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    out: list[x509.Certificate] = []
    for cert in certs:
        if cert not in out:
            out.append(cert)
    return tuple(out)
