"""Agent test harness (fixtures + helpers) shared by component, interop and e2e tests: a real
Agent (gRPC on temp UDS, status on port 0) with a FakeCaClient signing for real with TestCA,
driven by a FakeClock (no sleeps). Import with ``from tests.fakes.agent_harness import *``."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meshsec.agent.rotation import RetryPolicy
from meshsec.agent.server import Agent
from meshsec.agent.store import Snapshot
from meshsec.config.agent import AgentSettings
from tests.fakes.ca_client import FakeCaClient
from tests.fakes.clock import FakeClock
from tests.testca import TestCA

SPIFFE_ID = "spiffe://cluster.local/ns/default/sa/httpbin"
TTL = timedelta(hours=1)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="msa-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    return TestCA(now=datetime.now(UTC) - timedelta(days=1))


@pytest.fixture
def ca_client(test_ca: TestCA, clock: FakeClock) -> FakeCaClient:
    return FakeCaClient(test_ca, SPIFFE_ID, clock=clock)


def make_settings(sockdir: Path, **overrides: Any) -> AgentSettings:
    base = AgentSettings(
        sds_socket=sockdir / "sds.sock",
        workload_socket=sockdir / "wl.sock",
        status="127.0.0.1:0",
        token_file=None,
        ecc_signature_algorithm="ECDSA",
        secret_ttl=TTL,
        service_account="httpbin",
    )
    return replace(base, **overrides)


@pytest.fixture
def settings(sockdir: Path) -> AgentSettings:
    return make_settings(sockdir)


AgentFactory = Callable[..., Agent]


@pytest.fixture
async def agent_factory(
    clock: FakeClock, ca_client: FakeCaClient
) -> AsyncIterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def build(settings: AgentSettings, **kwargs: Any) -> Agent:
        kwargs.setdefault("ca_client", None if settings.file_mounted_certs else ca_client)
        kwargs.setdefault("rand", lambda: 0.5)
        kwargs.setdefault("retry", RetryPolicy())
        agent = Agent(settings, clock=clock, **kwargs)
        agents.append(agent)
        return agent

    yield build
    for agent in agents:
        await agent.stop(grace=0)


@pytest.fixture
async def agent(agent_factory: AgentFactory, settings: AgentSettings) -> Agent:
    """A started agent that already holds its first certificate."""
    agent = agent_factory(settings)
    await agent.start()
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    return agent


async def wait_for_snapshot(
    agent: Agent, predicate: Callable[[Snapshot], bool], within: float = 5.0
) -> Snapshot:
    async def _wait() -> Snapshot:
        snapshot = agent.store.snapshot()
        while not predicate(snapshot):
            snapshot = await agent.store.wait_for_change(snapshot.generation)
        return snapshot

    return await asyncio.wait_for(_wait(), within)


async def rotate(agent: Agent, clock: FakeClock) -> Snapshot:
    """Advance the fake clock to the rotation point and wait for the new certificate."""
    before = agent.store.snapshot()
    assert before.workload is not None
    await clock.wait_for_sleepers(1)
    due = before.workload.created_at + (before.workload.not_after - before.workload.created_at) / 2
    clock.advance(due - clock.now() + timedelta(seconds=1))
    return await wait_for_snapshot(
        agent,
        lambda s: s.workload is not None and s.workload.serial_hex != before.workload.serial_hex,  # type: ignore[union-attr]
    )
