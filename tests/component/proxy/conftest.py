"""Proxy component tests run on both event loops the proxy supports (uvloop in production)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from tests.component.proxy.harness import Identities, make_identities, release_all
from tests.testca import TestCA


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture(scope="session")
def mesh_ca() -> TestCA:
    return TestCA("cluster.local")


@pytest.fixture(scope="session")
def ids(mesh_ca: TestCA) -> Identities:
    return make_identities(mesh_ca)


@pytest.fixture(autouse=True)
async def cleanup() -> AsyncIterator[None]:
    """Abort whatever a test left open (listeners, apps, client connections), pass or fail."""
    yield
    await release_all()
