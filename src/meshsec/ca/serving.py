"""The CA's own TLS identity: a certificate it issues to itself, renewed while it runs.

DNS SANs are istiod's (``istiod.istio-system.svc`` …, see :data:`SERVING_DNS_NAMES`), so Istio
clients that verify the CA as istiod accept it. A fresh P-256 key and certificate are made at
start and again once half of the lifetime has passed; gRPC picks the new one up for new
connections through its dynamic server credentials (existing connections keep theirs).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import grpc

from meshsec.ca.authority import CertificateAuthority
from meshsec.core.pki import KeySpec, encode_certificates_pem, encode_private_key_pem
from meshsec.core.pki import generate_private_key as _generate_key

log = logging.getLogger(__name__)


class ServingCertificates:
    """Issues and renews the serving certificate; builds gRPC credentials that follow it."""

    def __init__(
        self,
        authority: CertificateAuthority,
        *,
        ttl: timedelta,
        now: Callable[[], datetime],
    ) -> None:
        self._authority = authority
        self._ttl = ttl
        self._now = now
        self._lock = threading.Lock()
        self.client_ca_pem = authority.material.root_bundle_pem.encode()
        self.generation = 0
        self._issue()

    def _issue(self) -> None:
        now = self._now()
        key = _generate_key(KeySpec.EC_P256)
        chain = self._authority.issue_serving_certificate(key.public_key(), now=now, ttl=self._ttl)
        leaf = chain[0]
        self.key_pem = encode_private_key_pem(key)
        self.chain_pem = encode_certificates_pem(chain)
        self.serial = leaf.serial_number
        lifetime = leaf.not_valid_after_utc - now
        self.renew_at = now + lifetime / 2
        self.generation += 1
        log.info(
            "serving certificate %032x issued, valid until %s, renewal at %s",
            self.serial,
            leaf.not_valid_after_utc.isoformat(),
            self.renew_at.isoformat(),
        )

    def current(self) -> tuple[int, bytes, bytes]:
        """(generation, key PEM, chain PEM), renewing first if half the lifetime has passed."""
        with self._lock:
            if self._now() >= self.renew_at:
                self._issue()
            return self.generation, self.key_pem, self.chain_pem

    def credentials(self, *, require_client_auth: bool) -> Any:
        """Server credentials that switch to the renewed certificate for new connections.

        grpcio's Python API can either not ask for a client certificate or require and verify
        one (not Go's VerifyClientCertIfGiven); callers with a certificate get their own port.
        """
        client_ca = self.client_ca_pem if require_client_auth else None
        generation, key_pem, chain_pem = self.current()
        served = [generation]

        def config(key: bytes, chain: bytes) -> Any:
            return grpc.ssl_server_certificate_configuration(
                [(key, chain)], root_certificates=client_ca
            )

        def fetch() -> Any:
            latest, key, chain = self.current()
            if latest == served[0]:
                return None
            served[0] = latest
            return config(key, chain)

        return grpc.dynamic_ssl_server_credentials(
            config(key_pem, chain_pem),
            fetch,
            require_client_authentication=require_client_auth,
        )
