"""Rotation timing, retries and CA outages, all on the fake clock (no sleeps)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import datetime, timedelta

import pytest

from meshsec.agent.errors import UpstreamError
from meshsec.agent.metrics import (
    NUM_FAILED_OUTGOING_REQUESTS,
    NUM_OUTGOING_REQUESTS,
    NUM_OUTGOING_RETRIES,
)
from meshsec.agent.server import Agent
from meshsec.config.agent import AgentSettings
from tests.fakes.agent_harness import TTL, AgentFactory, rotate, wait_for_snapshot
from tests.fakes.ca_client import FakeCaClient
from tests.fakes.clock import FakeClock
from tests.fakes.sds_client import SdsClient, secrets_of


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _run_clock_until(clock: FakeClock, target: datetime, step: float = 5.0) -> None:
    while clock.now() < target:
        await clock.wait_for_sleepers(1)
        clock.advance(min(timedelta(seconds=step), target - clock.now()))
        await _settle()


async def test_first_certificate_uses_fresh_local_key_and_requested_ttl(
    agent: Agent, ca_client: FakeCaClient
) -> None:
    call = ca_client.signed[0]
    assert call.ttl == TTL
    assert call.csr.requested_uris == ("spiffe://cluster.local/ns/default/sa/httpbin",)
    workload = agent.store.snapshot().workload
    assert workload is not None
    assert workload.leaf.public_key() == call.csr.public_key


@pytest.mark.parametrize(
    ("rand", "fraction"),
    [(0.5, 0.5), (0.0, 0.51), (1.0, 0.49)],
    ids=["centre", "jitter-late", "jitter-early"],
)
async def test_rotates_at_grace_ratio_with_jitter_and_a_new_key(
    agent_factory: AgentFactory,
    settings: AgentSettings,
    ca_client: FakeCaClient,
    clock: FakeClock,
    rand: float,
    fraction: float,
) -> None:
    agent = agent_factory(settings, rand=lambda: rand)
    await agent.start()
    first = (await wait_for_snapshot(agent, lambda s: s.workload is not None)).workload
    assert first is not None
    life = first.not_after - first.created_at
    due = first.created_at + life * fraction
    await clock.wait_for_sleepers(1)
    clock.advance(due - clock.now() - timedelta(seconds=2))
    await _settle()
    assert len(ca_client.calls) == 1
    clock.advance(timedelta(seconds=3))
    second = (await wait_for_snapshot(agent, lambda s: s.workload is not first)).workload
    assert second is not None
    assert len(ca_client.calls) == 2
    assert second.serial_hex != first.serial_hex
    assert second.leaf.public_key() != first.leaf.public_key()  # fresh key every rotation


async def test_retryable_codes_are_retried_with_exponential_backoff(
    agent_factory: AgentFactory, settings: AgentSettings, ca_client: FakeCaClient, clock: FakeClock
) -> None:
    ca_client.fail_next = [
        UpstreamError("UNAVAILABLE", "connection refused"),
        UpstreamError("INTERNAL", "ca not ready"),
        UpstreamError("RESOURCE_EXHAUSTED", "slow down"),
    ]
    agent = agent_factory(settings)
    await agent.start()
    for expected_delay in (0.1, 0.2, 0.4):  # 100 ms doubling (rand=0.5 → no jitter)
        await clock.wait_for_sleepers(1)
        clock.advance(expected_delay - 0.001)
        await _settle()
        assert agent.store.snapshot().workload is None
        clock.advance(0.001)
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    assert [c.outcome for c in ca_client.calls] == [
        "UNAVAILABLE",
        "INTERNAL",
        "RESOURCE_EXHAUSTED",
        "signed",
    ]
    m = agent.metrics
    assert m.value(NUM_OUTGOING_REQUESTS, request_type="csr") == 4
    assert m.value(NUM_FAILED_OUTGOING_REQUESTS, request_type="csr") == 3
    assert m.value(NUM_OUTGOING_RETRIES, request_type="csr") == 3


@pytest.mark.parametrize("code", ["UNAUTHENTICATED", "INVALID_ARGUMENT", "PERMISSION_DENIED"])
async def test_non_retryable_codes_are_not_retried_at_call_level(
    agent_factory: AgentFactory,
    settings: AgentSettings,
    ca_client: FakeCaClient,
    clock: FakeClock,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca_client.fail_next = [UpstreamError(code, "rejected")]
    agent = agent_factory(settings)
    with caplog.at_level(logging.WARNING):
        await agent.start()
        await ca_client.wait_for_calls(1)
        await clock.wait_for_sleepers(1)
    assert agent.metrics.value(NUM_OUTGOING_RETRIES, request_type="csr") == 0
    assert f"ca request failed: {code}: rejected" in caplog.text
    assert "no certificate yet" in caplog.text
    clock.advance(0.5)  # outer backoff (500 ms base) then success
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    assert len(ca_client.calls) == 2


async def test_ca_outage_keeps_serving_until_expiry_then_recovers(
    agent: Agent, ca_client: FakeCaClient, clock: FakeClock
) -> None:
    first = agent.store.snapshot().workload
    assert first is not None
    sds = SdsClient(str(agent.settings.sds_socket_path))
    try:
        stream = sds.stream(["default"])
        initial = await stream.recv()
        stream.ack(initial, ["default"])
        ca_client.down = True

        # through the rotation point and most of the remaining life: still served, still ready
        await _run_clock_until(clock, first.not_after - timedelta(seconds=10))
        assert agent.status.readiness()[0] == 200
        assert agent.store.snapshot().workload is first
        failing = [c for c in ca_client.calls if c.outcome == "UNAVAILABLE"]
        assert len(failing) > 12
        # backoff grows: gaps between renewal attempts (each = 1 call + 5 retries) increase
        attempts = [c.at for c in failing[::6]]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(attempts)]
        assert gaps[-1] > gaps[0]
        # capped at 60 s (+ the call-level retries, + this loop's 5 s clock steps per sleep)
        assert max(gaps) <= 60.0 + 6 * 5.0
        await stream.expect_silence(0.1)  # nothing new to push, nothing expired pushed

        # actually expired: not ready, not served
        await _run_clock_until(clock, first.not_after + timedelta(seconds=1))
        code, text = agent.status.readiness()
        assert code == 503
        assert "expired" in text

        ca_client.down = False
        await _run_clock_until(clock, clock.now() + timedelta(seconds=70))
        recovered = await wait_for_snapshot(
            agent, lambda s: s.workload is not None and s.workload is not first
        )
        assert recovered.workload is not None
        assert agent.status.readiness()[0] == 200
        pushed = await stream.recv()
        assert "default" in secrets_of(pushed)
    finally:
        await sds.close()


async def test_ca_returning_a_certificate_for_another_key_is_rejected(
    agent_factory: AgentFactory,
    settings: AgentSettings,
    ca_client: FakeCaClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original_sign = ca_client.sign
    calls = 0

    async def sign_with_wrong_key(csr_pem: bytes, ttl: timedelta) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            other = ca_client.ca.issue_svid(ca_client.spiffe_id, now=clock.now())
            pem = other.cert_chain_pem().decode()
            return [pem, ca_client.ca.bundle.to_pem().decode()]
        return await original_sign(csr_pem, ttl)

    ca_client.sign = sign_with_wrong_key  # type: ignore[method-assign]
    agent = agent_factory(settings)
    with caplog.at_level(logging.WARNING):
        await agent.start()
        await clock.wait_for_sleepers(1)
    assert agent.store.snapshot().workload is None
    assert "does not carry the agent's public key" in caplog.text
    clock.advance(1)
    await wait_for_snapshot(agent, lambda s: s.workload is not None)


async def test_rotation_helper_sanity(agent: Agent, clock: FakeClock) -> None:
    before = agent.store.snapshot().workload
    after = (await rotate(agent, clock)).workload
    assert before is not None
    assert after is not None
    assert after.serial_hex != before.serial_hex


def test_backoff_stays_capped_after_thousands_of_failures(agent: Agent) -> None:
    rotator = agent.rotator
    assert rotator is not None
    delays = [rotator.renewal_backoff(n) for n in (1, 2, 8, 2000)]
    assert delays[0] < delays[1] < delays[2] == delays[3] == pytest.approx(45.0)
