"""Credentials the local mesh hands to workloads, refreshed on a clock.

* :class:`ProjectedToken` — kubelet's projected service-account token: minted from the local
  cluster's signing key, written atomically (0600) to the workload's token file, and re-minted
  once 80% of its lifetime has passed (kubelet's rule), so the agent always reads a valid one.
* :class:`MountedSecret` — the old Citadel secret controller's ``istio.<serviceAccount>``
  secret, as a directory ``mounted/<ns>/istio.<sa>/`` holding ``key.pem`` (0600),
  ``cert-chain.pem`` and ``root-cert.pem``. There is no CSR: like Citadel, which ran this
  controller next to its signing key, the runtime signs with the CA's own material
  (``meshsec.ca.material``, the CA's data directory, which this same runtime owns), generating
  a fresh key each time, and rotates at half-life. Each issuance is recorded in the CA's ledger
  (authenticator ``secret-controller``), so ``meshsec ca issued`` lists it. The agent serves
  the files with ``FILE_MOUNTED_CERTS`` and picks up every rotation by polling them.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from meshsec.ca.ledger import IssuedRecord
from meshsec.ca.material import CaMaterial
from meshsec.cluster import ClusterSigner, TokenRequest, mint_token
from meshsec.core.identity import SpiffeId, TrustDomain
from meshsec.core.pki import (
    KeySpec,
    WorkloadCertRequest,
    encode_certificates_pem,
    encode_private_key_pem,
    generate_private_key,
    issue_workload_certificate,
    random_serial,
    rotation_delay,
)
from meshsec.runtime.clock import Clock
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, write_atomic

log = logging.getLogger(__name__)

TOKEN_REFRESH_RATIO = 0.8
# the ledger's authenticator column for mounted certificates (a name, not a secret)
SECRET_CONTROLLER = "secret-controller"  # noqa: S105


@dataclass
class ProjectedToken:
    signer: ClusterSigner
    path: Path
    namespace: str
    service_account: str
    pod_name: str
    ttl: timedelta
    clock: Clock
    refreshed: int = 0

    def refresh(self) -> datetime:
        """Mint and write a token now; returns when the next refresh is due."""
        now = self.clock.now()
        token = mint_token(
            self.signer,
            TokenRequest(
                self.namespace, self.service_account, ttl=self.ttl, pod_name=self.pod_name
            ),
            now=now,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, token.encode(), KEY_MODE)
        self.refreshed += 1
        log.info(
            "token for %s/%s written to %s (valid %ss)",
            self.namespace,
            self.service_account,
            self.path,
            int(self.ttl.total_seconds()),
        )
        return now + self.ttl * TOKEN_REFRESH_RATIO

    async def run(self) -> None:
        """Refresh forever (the first token is written by the caller before starting this)."""
        due = self.clock.now() + self.ttl * TOKEN_REFRESH_RATIO
        while True:
            await self.clock.sleep((due - self.clock.now()).total_seconds())
            due = self.refresh()


@dataclass
class MountedSecret:
    material: CaMaterial
    directory: Path
    namespace: str
    service_account: str
    trust_domain: str
    ttl: timedelta
    clock: Clock
    on_issued: Callable[[IssuedRecord], object] | None = None  # e.g. the CA's ledger
    cluster: str = ""  # the ledger's cluster column (where the workload runs)
    rand: Callable[[], float] = random.random
    entropy: Callable[[int], bytes] = os.urandom
    serial_hex: str = ""
    not_after: datetime | None = None
    rotations: int = 0

    @property
    def spiffe_id(self) -> SpiffeId:
        return SpiffeId.for_service_account(
            TrustDomain.parse(self.trust_domain), self.namespace, self.service_account
        )

    def issue(self) -> datetime:
        """Write a fresh key and certificate; returns when the next rotation is due."""
        now = self.clock.now()
        key = generate_private_key(KeySpec.EC_P256)
        issuer = self.material.issuer
        cert = issue_workload_certificate(
            WorkloadCertRequest(self.spiffe_id, key.public_key(), self.ttl),
            issuer,
            now=now,
            serial=random_serial(self.entropy(16)),
        )
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # key first, then the chain (the agent checks that they match before serving)
        write_atomic(self.directory / "key.pem", encode_private_key_pem(key), KEY_MODE)
        write_atomic(
            self.directory / "cert-chain.pem",
            encode_certificates_pem([cert, *issuer.intermediates]),
            PUBLIC_MODE,
        )
        write_atomic(
            self.directory / "root-cert.pem",
            self.material.root_bundle_pem.encode(),
            PUBLIC_MODE,
        )
        self.serial_hex = f"{cert.serial_number:032x}"
        self.not_after = cert.not_valid_after_utc
        self.rotations += 1
        if self.on_issued is not None:
            self.on_issued(
                IssuedRecord(
                    self.serial_hex,
                    str(self.spiffe_id),
                    cert.not_valid_before_utc,
                    self.not_after,
                    SECRET_CONTROLLER,
                    self.cluster,
                    now,
                )
            )
        log.info(
            "istio.%s in %s: issued serial %s for %s, valid until %s",
            self.service_account,
            self.namespace,
            self.serial_hex,
            self.spiffe_id,
            self.not_after.isoformat(),
        )
        delay = rotation_delay(
            issued_at=now, not_after=self.not_after, now=now, ratio=0.5, rand=self.rand()
        )
        return now + delay

    async def run(self) -> None:
        """Rotate forever (the first certificate is issued by the caller before this)."""
        assert self.not_after is not None
        now = self.clock.now()
        due = now + rotation_delay(
            issued_at=now, not_after=self.not_after, now=now, ratio=0.5, rand=self.rand()
        )
        while True:
            await self.clock.sleep((due - self.clock.now()).total_seconds())
            due = self.issue()


__all__ = ["SECRET_CONTROLLER", "TOKEN_REFRESH_RATIO", "MountedSecret", "ProjectedToken"]
