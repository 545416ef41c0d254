"""A CA client that signs for real with ``tests.testca.TestCA``, scriptable to fail.

Implements the agent's ``CaClient`` Protocol (``meshsec.agent.rotation.CaClient``). ``down``
simulates an unreachable CA (UNAVAILABLE on every call); ``fail_next`` queues errors for the next
calls. Every call is recorded so tests can assert on keys, CSRs and TTLs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from meshsec.agent.errors import UpstreamError
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import ParsedCsr, parse_csr
from meshsec.runtime.clock import Clock
from tests.testca import TestCA


@dataclass(frozen=True)
class SignCall:
    csr: ParsedCsr
    ttl: timedelta
    at: datetime
    outcome: str  # "signed" or the gRPC code name


class FakeCaClient:
    def __init__(
        self,
        ca: TestCA,
        spiffe_id: str | SpiffeId = "spiffe://cluster.local/ns/default/sa/default",
        *,
        clock: Clock,
        max_ttl: timedelta | None = None,
    ) -> None:
        self.ca = ca
        self.spiffe_id = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        self.clock = clock
        self.max_ttl = max_ttl
        self.down = False
        self.fail_next: list[UpstreamError] = []
        self.calls: list[SignCall] = []
        self._called = asyncio.Event()

    @property
    def signed(self) -> list[SignCall]:
        return [c for c in self.calls if c.outcome == "signed"]

    async def wait_for_calls(self, count: int, within: float = 5.0) -> None:
        """Wait (real time, bounded) until at least ``count`` sign calls were made."""

        async def _wait() -> None:
            while len(self.calls) < count:
                self._called.clear()
                await self._called.wait()

        await asyncio.wait_for(_wait(), within)

    async def sign(self, csr_pem: bytes, ttl: timedelta) -> list[str]:
        parsed = parse_csr(csr_pem)
        now = self.clock.now()
        error: UpstreamError | None = None
        if self.down:
            error = UpstreamError("UNAVAILABLE", "connection refused (fake CA is down)")
        elif self.fail_next:
            error = self.fail_next.pop(0)
        self.calls.append(SignCall(parsed, ttl, now, "signed" if error is None else error.code))
        self._called.set()
        if error is not None:
            raise error
        if self.max_ttl is not None:
            ttl = min(ttl, self.max_ttl)
        return self.ca.sign_csr(csr_pem, self.spiffe_id, ttl, now=now)
