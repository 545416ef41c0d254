"""Getting and renewing the workload certificate from the CA.

Loop: fresh key → CSR → ``CaClient.sign`` (retrying retryable gRPC codes up to 5 times with
exponential backoff from 100 ms and 10 % jitter, contract §1.6) → verify → publish → sleep until
the rotation point (``SECRET_GRACE_PERIOD_RATIO`` of the lifetime ± jitter, via
``core.pki.rotation_delay``) → repeat. When a whole attempt fails the loop backs off
exponentially (500 ms doubling, capped at 60 s, with jitter, never giving up) while the current
certificate keeps being served; the store never reports an expired certificate as valid.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from meshsec.agent.errors import CredentialError, UpstreamError
from meshsec.agent.metrics import (
    CSR,
    NUM_FAILED_OUTGOING_REQUESTS,
    NUM_OUTGOING_REQUESTS,
    NUM_OUTGOING_RETRIES,
    OUTGOING_LATENCY,
    AgentMetrics,
)
from meshsec.agent.secret import SecretRejected, WorkloadSecret, build_secret_from_ca_response
from meshsec.agent.store import SecretStore
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    KeySpec,
    PkiError,
    build_csr,
    encode_csr_pem,
    generate_private_key,
    rotation_delay,
)
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)


class CaClient(Protocol):
    """What the agent needs from a CA: sign a CSR, get Istio's ``cert_chain`` list back."""

    async def sign(self, csr_pem: bytes, ttl: timedelta) -> list[str]: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  # per CA call, retryable codes only
    initial_backoff: float = 0.1
    backoff_jitter: float = 0.1
    warm_initial: float = 0.5  # between failed renewal attempts
    warm_max: float = 60.0


@dataclass(frozen=True)
class RotationSettings:
    identity: SpiffeId
    ttl: timedelta
    key_spec: KeySpec
    grace_ratio: float = 0.5
    grace_jitter: float = 0.01


class CertificateRotator:
    def __init__(
        self,
        *,
        store: SecretStore,
        ca_client: CaClient,
        clock: Clock,
        settings: RotationSettings,
        metrics: AgentMetrics,
        retry: RetryPolicy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._ca = ca_client
        self._clock = clock
        self._settings = settings
        self._metrics = metrics
        self._retry = retry or RetryPolicy()
        self._rand = rand
        self.attempts = 0

    async def run(self) -> None:
        """Run forever (until cancelled): keep a valid certificate in the store."""
        failures = 0
        while True:
            try:
                secret = await self.renew()
            except (UpstreamError, SecretRejected, CredentialError, PkiError) as exc:
                failures += 1
                delay = self.renewal_backoff(failures)
                log.warning(
                    "failed to renew workload certificate (attempt %d): %s; %s; retrying in %.2fs",
                    failures,
                    exc,
                    self._serving_status(),
                    delay,
                )
                await self._clock.sleep(delay)
                continue
            failures = 0
            wait = rotation_delay(
                issued_at=secret.created_at,
                not_after=secret.not_after,
                now=self._clock.now(),
                ratio=self._settings.grace_ratio,
                jitter=self._settings.grace_jitter,
                rand=self._rand(),
            )
            log.info(
                "workload certificate %s serial=%s valid until %s; next rotation in %s",
                secret.spiffe_id,
                secret.serial_hex,
                secret.not_after.isoformat(),
                wait,
            )
            await self._clock.sleep(wait.total_seconds())

    async def renew(self) -> WorkloadSecret:
        """One renewal: new key, CSR, CA call (with retries), verify, publish."""
        key = generate_private_key(self._settings.key_spec)
        csr_pem = encode_csr_pem(build_csr(key, self._settings.identity))
        chain = await self._sign_with_retries(csr_pem)
        secret = build_secret_from_ca_response(chain, key, now=self._clock.now())
        self._store.publish(secret)
        return secret

    async def _sign_with_retries(self, csr_pem: bytes) -> list[str]:
        attempt = 0
        while True:
            self.attempts += 1
            self._metrics.inc(NUM_OUTGOING_REQUESTS, request_type=CSR)
            started = self._clock.monotonic()
            try:
                chain = await self._ca.sign(csr_pem, self._settings.ttl)
            except UpstreamError as exc:
                self._record_latency(started)
                self._metrics.inc(NUM_FAILED_OUTGOING_REQUESTS, request_type=CSR)
                if not exc.retryable or attempt >= self._retry.max_retries:
                    raise
                attempt += 1
                delay = self._retry_backoff(attempt)
                log.info("ca request failed, starting attempt %d in %.3fs: %s", attempt, delay, exc)
                self._metrics.inc(NUM_OUTGOING_RETRIES, request_type=CSR)
                await self._clock.sleep(delay)
                continue
            self._record_latency(started)
            return chain

    def _record_latency(self, started: float) -> None:
        elapsed_ms = (self._clock.monotonic() - started) * 1000.0
        self._metrics.inc(OUTGOING_LATENCY, elapsed_ms, request_type=CSR)

    def _retry_backoff(self, attempt: int) -> float:
        base = self._retry.initial_backoff * (2 ** (attempt - 1))
        return float(base * (1.0 + self._retry.backoff_jitter * (2.0 * self._rand() - 1.0)))

    def renewal_backoff(self, failures: int) -> float:
        exponent = min(failures - 1, 32)  # an outage of days must not overflow a float
        base = min(self._retry.warm_initial * (2**exponent), self._retry.warm_max)
        return float(base * (0.5 + 0.5 * self._rand()))

    def _serving_status(self) -> str:
        current = self._store.snapshot().workload
        if current is None:
            return "no certificate yet"
        now = self._clock.now()
        if current.is_valid(now):
            return (
                f"still serving serial {current.serial_hex} "
                f"valid until {current.not_after.isoformat()}"
            )
        return f"certificate serial {current.serial_hex} EXPIRED at {current.not_after.isoformat()}"
