"""The file sets operators hand to a CA, by name and content (no I/O here).

* Root, like Istio's ``tools/certs`` ``root-ca`` target: ``root-cert.pem``, ``root-key.pem``.
* Plug-in CA directory (Istio's ``cacerts`` Secret): ``ca-cert.pem`` (signing cert),
  ``ca-key.pem``, ``cert-chain.pem`` (signing cert, the intermediates above it, then the root),
  ``root-cert.pem`` (the root bundle, possibly several roots).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from meshsec.core.pki.keys import PrivateKey, encode_private_key_pem
from meshsec.core.pki.pem import encode_certificate_pem, encode_certificates_pem

ROOT_CERT = "root-cert.pem"
ROOT_KEY = "root-key.pem"
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CERT_CHAIN = "cert-chain.pem"
CACERTS_FILES = (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT)
KEY_FILES = frozenset({ROOT_KEY, CA_KEY})


@dataclass(frozen=True)
class MaterialFile:
    name: str
    data: bytes
    secret: bool


def compose_root_files(cert: x509.Certificate, key: PrivateKey) -> tuple[MaterialFile, ...]:
    return (
        MaterialFile(ROOT_CERT, encode_certificate_pem(cert), secret=False),
        MaterialFile(ROOT_KEY, encode_private_key_pem(key), secret=True),
    )


def compose_cacerts_files(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    *,
    intermediates_above: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> tuple[MaterialFile, ...]:
    """Istio's plug-in CA layout; ``cert-chain.pem`` = ca-cert + intermediates + first root."""
    chain = (ca_cert, *intermediates_above, *roots[:1])
    return (
        MaterialFile(CA_CERT, encode_certificate_pem(ca_cert), secret=False),
        MaterialFile(CA_KEY, encode_private_key_pem(ca_key), secret=True),
        MaterialFile(CERT_CHAIN, encode_certificates_pem(chain), secret=False),
        MaterialFile(ROOT_CERT, encode_certificates_pem(roots), secret=False),
    )
