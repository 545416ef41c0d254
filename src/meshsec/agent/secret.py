"""The identity the agent serves, and how it is built from a CA response or mounted files.

A :class:`WorkloadSecret` is checked before it is ever served: the leaf must carry our public key
and chain to the returned roots with the SPIFFE leaf rules, so a CA (or a file) handing us
something else is an error, not an outage for the workload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from meshsec.agent.errors import AgentError
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    PkiError,
    PrivateKey,
    TrustBundle,
    X509Svid,
    encode_private_key_pem,
    fingerprint,
    parse_certificates_pem,
    public_keys_equal,
    verify_svid,
)

DEFAULT = "default"
ROOTCA = "ROOTCA"
RESOURCE_NAMES = (DEFAULT, ROOTCA)


class SecretRejected(AgentError):
    """Certificates the agent refuses to serve (bad CA response, inconsistent files)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True)
class WorkloadSecret:
    """A verified SVID (leaf first, no root), its roots, and Envoy's view of the chain."""

    svid: X509Svid
    roots: TrustBundle
    cert_chain_pem: bytes
    created_at: datetime
    source: str

    @property
    def spiffe_id(self) -> SpiffeId:
        return self.svid.spiffe_id

    @property
    def leaf(self) -> x509.Certificate:
        return self.svid.leaf

    @property
    def not_before(self) -> datetime:
        return self.svid.leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.svid.not_after

    @property
    def serial_hex(self) -> str:
        return self.svid.serial_hex

    @property
    def key_pem(self) -> bytes:
        return encode_private_key_pem(self.svid.private_key, pkcs8=True)

    @property
    def key_fingerprint(self) -> str:
        return fingerprint(self.svid.private_key.public_key())

    def is_valid(self, now: datetime) -> bool:
        return self.not_before <= now < self.not_after


def build_secret_from_ca_response(
    chain_pems: Sequence[str], key: PrivateKey, *, now: datetime, source: str = "ca"
) -> WorkloadSecret:
    """Istio response layout: ``[leaf, *intermediates, root bundle]``; Envoy gets all of it."""
    if len(chain_pems) <= 1:
        raise SecretRejected(source, "invalid empty CertChain (need leaf and root bundle)")
    try:
        certs = [c for pem in chain_pems[:-1] for c in parse_certificates_pem(pem)]
        roots = TrustBundle.parse_pem(chain_pems[-1].encode())
    except PkiError as exc:
        raise SecretRejected(source, f"unparsable certificate chain: {exc}") from None
    joined = "\n".join(pem.strip() for pem in chain_pems) + "\n"
    return _build(certs, key, roots, joined.encode(), now=now, source=source)


def build_secret_from_files(
    cert_chain_pem: bytes,
    key: PrivateKey,
    root_pem: bytes,
    *,
    now: datetime,
    source: str,
) -> WorkloadSecret:
    """Mounted ``cert-chain.pem`` (leaf first, may end with the root) + ``root-cert.pem``."""
    try:
        certs = parse_certificates_pem(cert_chain_pem, what="cert-chain.pem")
        roots = TrustBundle.parse_pem(root_pem)
    except PkiError as exc:
        raise SecretRejected(source, str(exc)) from None
    chain = [c for c in certs if c not in roots.certificates] or certs[:1]
    return _build(chain, key, roots, cert_chain_pem, now=now, source=source)


def _build(
    certs: Sequence[x509.Certificate],
    key: PrivateKey,
    roots: TrustBundle,
    cert_chain_pem: bytes,
    *,
    now: datetime,
    source: str,
) -> WorkloadSecret:
    if not certs:
        raise SecretRejected(source, "no leaf certificate")
    leaf = certs[0]
    if not public_keys_equal(leaf.public_key(), key.public_key()):  # type: ignore[arg-type]
        raise SecretRejected(source, "leaf certificate does not carry the agent's public key")
    try:
        spiffe_id = verify_svid(list(certs), roots, now=now)
    except PkiError as exc:
        raise SecretRejected(source, f"certificate chain does not verify: {exc}") from None
    svid = X509Svid(spiffe_id=spiffe_id, chain=tuple(certs), private_key=key)
    return WorkloadSecret(
        svid=svid, roots=roots, cert_chain_pem=cert_chain_pem, created_at=now, source=source
    )
