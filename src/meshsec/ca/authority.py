"""The certificate authority proper: TTL rules, signing, and Istio's response chain layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshsec.ca.errors import TtlError
from meshsec.ca.material import CaMaterial
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import ParsedCsr
from meshsec.core.pki.issue import issue_server_certificate, issue_workload_certificate
from meshsec.core.pki.templates import (
    WorkloadCertRequest,
    compose_dual_use_common_name,
    random_serial,
)

# istiod's own DNS names (istio-contracts §3.5) plus loopback for local use.
SERVING_DNS_NAMES = (
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod-remote.istio-system.svc",
    "istio-pilot.istio-system.svc",
    "localhost",
    "127.0.0.1",
)
SERVER_NAME = SERVING_DNS_NAMES[0]


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    leaf_pem: bytes
    tail: tuple[str, ...]  # each intermediate, then the root bundle (the CA's, not per call)
    serial_hex: str

    @property
    def cert_chain(self) -> list[str]:
        """The response elements: leaf, each intermediate, root bundle last."""
        return [self.leaf_pem.decode("ascii"), *self.tail]


class CertificateAuthority:
    """Signs workload certificates for identities decided elsewhere (the authenticated caller)."""

    def __init__(
        self,
        material: CaMaterial,
        *,
        default_ttl: timedelta,
        max_ttl: timedelta,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.material = material
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._entropy = entropy
        self.tail: tuple[str, ...] = (*material.chain_pems, material.root_bundle_pem)

    def resolve_ttl(self, requested_seconds: int) -> timedelta:
        """Istio's rule: <= 0 means the default; above the maximum is an error."""
        if requested_seconds <= 0:
            return self.default_ttl
        # Compare the raw integer first: int64 seconds overflow timedelta (2**62 would).
        if requested_seconds > self.max_ttl.total_seconds():
            raise TtlError(requested_seconds, self.max_ttl)
        return timedelta(seconds=requested_seconds)

    def sign(
        self, csr: ParsedCsr, identity: SpiffeId, *, requested_seconds: int, now: datetime
    ) -> IssuedCertificate:
        ttl = self.resolve_ttl(requested_seconds)
        # Istio's dual-use rule: a CSR with a subject CN gets CN = the first SAN (the caller's ID).
        common_name = compose_dual_use_common_name([identity]) if csr.subject_cn else None
        req = WorkloadCertRequest(
            spiffe_id=identity, public_key=csr.public_key, ttl=ttl, common_name=common_name
        )
        serial = random_serial(self._entropy(16))
        cert = issue_workload_certificate(req, self.material.issuer, now=now, serial=serial)
        leaf = cert.public_bytes(serialization.Encoding.PEM)
        return IssuedCertificate(cert, leaf, self.tail, f"{serial:032x}")

    def issue_serving_certificate(
        self, public_key: object, *, now: datetime, ttl: timedelta
    ) -> list[x509.Certificate]:
        """The CA's own TLS certificate (DNS SANs istiod.istio-system.svc ...) + intermediates."""
        cert = issue_server_certificate(
            SERVING_DNS_NAMES,
            public_key,  # type: ignore[arg-type]
            self.material.issuer,
            now=now,
            ttl=ttl,
            serial=random_serial(self._entropy(16)),
        )
        return [cert, *self.material.issuer.intermediates]
