"""py-spiffe (the unmodified ``spiffe`` package) against the agent's Workload API."""

from __future__ import annotations

import asyncio
import threading

import pytest
from spiffe import WorkloadApiClient, X509Source

from meshsec.agent.server import Agent
from tests.fakes.agent_harness import *  # noqa: F403 (fixtures)
from tests.fakes.agent_harness import rotate
from tests.fakes.clock import FakeClock
from tests.testca import TestCA

pytestmark = pytest.mark.interop


def _socket_uri(agent: Agent) -> str:
    return f"unix://{agent.settings.workload_socket}"


async def test_pyspiffe_fetches_svid_and_bundle(agent: Agent, test_ca: TestCA) -> None:
    def fetch() -> tuple[str, int, int, str]:
        with WorkloadApiClient(socket_path=_socket_uri(agent)) as client:
            svid = client.fetch_x509_svid()
            bundles = client.fetch_x509_bundles()
            bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
            assert bundle is not None
            context = client.fetch_x509_context()
            assert context.default_svid.spiffe_id == svid.spiffe_id
            return (
                str(svid.spiffe_id),
                svid.leaf.serial_number,
                len(bundle.x509_authorities),
                str(svid.spiffe_id.trust_domain),
            )

    spiffe_id, serial, authorities, td = await asyncio.to_thread(fetch)
    assert spiffe_id == "spiffe://cluster.local/ns/default/sa/httpbin"
    assert td == "cluster.local"
    assert authorities == 1
    workload = agent.store.snapshot().workload
    assert workload is not None
    assert workload.leaf.serial_number == serial


async def test_x509_source_follows_rotation(agent: Agent, clock: FakeClock) -> None:
    source = await asyncio.to_thread(
        X509Source, socket_path=_socket_uri(agent), timeout_in_seconds=5
    )
    try:
        first_serial = source.get_x509_context().default_svid.leaf.serial_number
        updated = threading.Event()
        source.subscribe_for_updates(updated.set)
        await rotate(agent, clock)
        assert await asyncio.to_thread(updated.wait, 5)
        workload = agent.store.snapshot().workload
        assert workload is not None
        assert (
            source.get_x509_context().default_svid.leaf.serial_number
            == workload.leaf.serial_number
            != first_serial
        )
        assert (
            source.get_x509_context().default_svid.private_key.public_key()
            == workload.leaf.public_key()
        )
    finally:
        await asyncio.to_thread(source.close)
