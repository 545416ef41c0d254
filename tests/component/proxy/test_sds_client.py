"""The proxy takes its certificates from the real node agent over SDS (UDS): first fetch,
rotation push, and a secret it cannot use is NACKed while the current one stays in force."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from meshsec.agent.server import Agent
from meshsec.core.pki import TrustBundle, X509Svid
from meshsec.proxy.sds import SdsSecretSource, build_svid
from meshsec.proxy.tls import TlsContexts
from tests.fakes.agent_harness import *  # noqa: F403 (agent fixtures)
from tests.fakes.agent_harness import SPIFFE_ID, rotate
from tests.fakes.clock import FakeClock
from tests.testca import TestCA

ON_STDLIB_LOOP = pytest.mark.asyncio(loop_factories=["asyncio"])  # grpc.aio needs it


class Applied:
    """Collects what the SDS source applies; tests wait on it without sleeping."""

    def __init__(self) -> None:
        self.tls = TlsContexts()
        self.updated = asyncio.Event()

    def apply(self, svid: X509Svid, bundle: TrustBundle) -> None:
        self.tls.update(svid, bundle)
        self.updated.set()

    async def wait_for(self, serial: str | None = None) -> None:
        async def _wait() -> None:
            while not self.tls.ready or (
                serial is not None and self.tls.current.svid.serial_hex != serial
            ):
                self.updated.clear()
                await self.updated.wait()

        await asyncio.wait_for(_wait(), 5)


@pytest.fixture
async def source(agent: Agent, clock: FakeClock) -> AsyncIterator[tuple[SdsSecretSource, Applied]]:
    applied = Applied()
    sds = SdsSecretSource(agent.settings.sds_socket_path, applied.apply, clock=clock)
    task = asyncio.ensure_future(sds.run())
    yield sds, applied
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@ON_STDLIB_LOOP
async def test_first_fetch_and_rotation_push(
    agent: Agent, clock: FakeClock, source: tuple[SdsSecretSource, Applied], test_ca: TestCA
) -> None:
    sds, applied = source
    await applied.wait_for()
    first = applied.tls.current
    assert str(first.svid.spiffe_id) == SPIFFE_ID
    assert first.bundle.certificates == (test_ca.root_cert,)
    assert all(c.subject != c.issuer for c in first.svid.chain)  # root not sent as chain
    snapshot = await rotate(agent, clock)
    assert snapshot.workload is not None
    await applied.wait_for(snapshot.workload.serial_hex)
    assert applied.tls.current.generation == first.generation + 1
    assert sds.nacked == 0


def test_build_svid_rejects_mismatched_key(test_ca: TestCA) -> None:
    a = test_ca.issue_svid(SPIFFE_ID)
    b = test_ca.issue_svid(SPIFFE_ID)
    with pytest.raises(Exception, match="does not match"):
        build_svid(a.cert_chain_pem() + test_ca.root_pem, b.private_key_pem())


@ON_STDLIB_LOOP
async def test_proxy_server_serves_strict_port_with_sds_certificates(
    agent: Agent, clock: FakeClock, test_ca: TestCA
) -> None:
    from meshsec.config.load import load_settings
    from meshsec.config.proxy import ProxySettings
    from meshsec.proxy.server import ProxyServer
    from tests.component.proxy.apps import LineApp
    from tests.component.proxy.harness import client_context, exchange, open_tls, peer_serial

    app = await LineApp().start()
    settings = load_settings(
        ProxySettings,
        env={},
        flags={
            "sds_socket": f"unix://{agent.settings.sds_socket_path}",
            "inbound": (f"0:{app.port}:STRICT",),
            "inbound_host": "127.0.0.1",
            "admin_addr": "",
        },
    )
    server = ProxyServer(settings, clock=clock)
    await server.start()
    try:
        await asyncio.wait_for(server.certificates_applied.wait(), 5)
        client = test_ca.issue_svid(
            "spiffe://cluster.local/ns/default/sa/sleep", now=datetime.now(UTC)
        )
        reader, writer = await open_tls(
            server.inbound[0].bound_port, client_context(client, test_ca.bundle)
        )
        assert peer_serial(writer) == int(server.tls.current.svid.serial_hex, 16)
        assert await exchange(reader, writer, b"sds\n") == b"echo:sds\n"
        writer.close()
    finally:
        await server.shutdown()
