"""A real, in-memory test CA for every test suite (in the spirit of trustme).

    ca = TestCA()                                   # self-signed root, trust domain cluster.local
    svid = ca.issue_svid("spiffe://cluster.local/ns/default/sa/sleep")
    inter = ca.intermediate("cluster1")             # child CA; its SVIDs carry it in the chain
    chain = inter.sign_csr(csr_pem, spiffe_id, timedelta(hours=1))  # Istio response layout
    inter.write_cacerts(tmp_path / "cacerts")       # Istio plug-in CA directory

Everything is signed for real with ``meshsec.core.pki``; nothing is mocked. ECDSA P-256 by
default because it is fast.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from meshsec.core.identity import SpiffeId, TrustDomain
from meshsec.core.pki import (
    Issuer,
    KeySpec,
    PrivateKey,
    TrustBundle,
    WorkloadCertRequest,
    X509Svid,
    build_self_signed_root,
    encode_certificate_pem,
    encode_certificates_pem,
    encode_private_key_pem,
    generate_private_key,
    issue_intermediate,
    issue_workload_certificate,
    parse_csr,
    random_serial,
)
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, write_atomic


class TestCA:
    """A root CA (or, from :meth:`intermediate`, a child CA) that issues real certificates."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        trust_domain: str | TrustDomain = "cluster.local",
        *,
        key_spec: KeySpec = KeySpec.EC_P256,
        now: datetime | None = None,
        ttl: timedelta = timedelta(days=3650),
        _parent: TestCA | None = None,
        _issuer: Issuer | None = None,
    ) -> None:
        self.trust_domain = (
            trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain(trust_domain)
        )
        self.key_spec = key_spec
        self.now = now if now is not None else datetime.now(UTC)
        self.parent = _parent
        if _issuer is not None:
            assert _parent is not None
            self.issuer = _issuer
            self.root_cert: x509.Certificate = _parent.root_cert
            self.root_key: PrivateKey = _parent.root_key
            self.bundle: TrustBundle = _parent.bundle
            return
        self.root_key = generate_private_key(key_spec)
        self.root_cert = build_self_signed_root(
            self.root_key,
            trust_domain=self.trust_domain,
            now=self.now,
            ttl=ttl,
            serial=_serial(),
            common_name="meshsec test root",
        )
        self.issuer = Issuer(self.root_cert, self.root_key)
        self.bundle = TrustBundle((self.root_cert,))

    # --- the CA's material -------------------------------------------------------------------

    @property
    def root_pem(self) -> bytes:
        return encode_certificate_pem(self.root_cert)

    @property
    def cert(self) -> x509.Certificate:
        """This CA's signing certificate (the root for a root CA)."""
        return self.issuer.certificate

    @property
    def key(self) -> PrivateKey:
        return self.issuer.private_key

    @property
    def cert_pem(self) -> bytes:
        return encode_certificate_pem(self.issuer.certificate)

    @property
    def key_pem(self) -> bytes:
        return encode_private_key_pem(self.issuer.private_key)

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """What goes between a leaf and the root: () for the root CA."""
        return self.issuer.intermediates

    @property
    def cert_chain_pem(self) -> bytes:
        """Istio ``cert-chain.pem``: signing cert, the intermediates above it, then the root."""
        return encode_certificates_pem((*self.issuer.intermediates, self.root_cert))

    def intermediate(
        self,
        name: str = "cluster1",
        *,
        key_spec: KeySpec | None = None,
        ttl: timedelta = timedelta(days=365),
        path_length: int | None = 0,
    ) -> TestCA:
        """A child CA (``O=<td>, L=<name>``) signed by this one; it shares the root bundle."""
        spec = key_spec or self.key_spec
        key = generate_private_key(spec)
        cert = issue_intermediate(
            key.public_key(),
            self.issuer,
            name=name,
            trust_domain=self.trust_domain,
            now=self.now,
            ttl=ttl,
            serial=_serial(),
            path_length=path_length,
            dns_names=("istiod.istio-system.svc",),
        )
        issuer = Issuer(cert, key, chain=self.issuer.intermediates)
        return TestCA(self.trust_domain, key_spec=spec, now=self.now, _parent=self, _issuer=issuer)

    # --- issuing -----------------------------------------------------------------------------

    def issue_svid(
        self,
        spiffe_id: str | SpiffeId,
        *,
        ttl: timedelta = timedelta(hours=1),
        now: datetime | None = None,
        key_spec: KeySpec = KeySpec.EC_P256,
        dns_names: tuple[str, ...] = (),
    ) -> X509Svid:
        """A fresh key and a leaf for it; the SVID's chain is leaf + intermediates (no root)."""
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        key = generate_private_key(key_spec)
        leaf = issue_workload_certificate(
            WorkloadCertRequest(sid, key.public_key(), ttl, dns_names),
            self.issuer,
            now=now if now is not None else self.now,
            serial=_serial(),
        )
        return X509Svid(sid, (leaf, *self.issuer.intermediates), key)

    def sign_csr(
        self,
        csr_pem: bytes | str,
        spiffe_id: str | SpiffeId,
        ttl: timedelta = timedelta(hours=1),
        *,
        now: datetime | None = None,
    ) -> list[str]:
        """Sign a CSR for ``spiffe_id`` and answer like Istio's CA.

        Returns ``[leaf, *intermediates (one per element), root bundle]``, each PEM string.
        """
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        parsed = parse_csr(csr_pem)
        leaf = issue_workload_certificate(
            WorkloadCertRequest(sid, parsed.public_key, ttl),
            self.issuer,
            now=now if now is not None else self.now,
            serial=_serial(),
        )
        return [
            encode_certificate_pem(leaf).decode(),
            *(encode_certificate_pem(c).decode() for c in self.issuer.intermediates),
            self.bundle.to_pem().decode(),
        ]

    # --- files -------------------------------------------------------------------------------

    def write_cacerts(self, directory: str | os.PathLike[str]) -> Path:
        """Istio plug-in CA files: ca-cert.pem, ca-key.pem (0600), cert-chain.pem, root-cert.pem."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "ca-cert.pem", self.cert_pem, PUBLIC_MODE)
        write_atomic(out / "ca-key.pem", self.key_pem, KEY_MODE)
        write_atomic(out / "cert-chain.pem", self.cert_chain_pem, PUBLIC_MODE)
        write_atomic(out / "root-cert.pem", self.bundle.to_pem(), PUBLIC_MODE)
        return out

    def write_root(self, path: str | os.PathLike[str]) -> Path:
        """The root bundle PEM (what agents get as ``root-cert.pem``)."""
        write_atomic(path, self.bundle.to_pem(), PUBLIC_MODE)
        return Path(path)


def _serial() -> int:
    return random_serial(os.urandom(16))
