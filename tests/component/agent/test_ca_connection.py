"""The agent against a real gRPC CA over TLS: token per call, clusterid, client-cert renewal,
token problems, CA outage and return (fake clock; the CA is tests/fakes/ca_server.py)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from meshsec.agent.metrics import TOKEN_READ_FAILURES
from meshsec.agent.server import Agent
from meshsec.config.agent import AgentSettings
from tests.fakes.agent_harness import SPIFFE_ID, AgentFactory, rotate, wait_for_snapshot
from tests.fakes.ca_server import FakeCaServer
from tests.fakes.clock import FakeClock
from tests.testca import TestCA

TOKEN = "token-for-httpbin"


@pytest.fixture
async def ca_server(test_ca: TestCA, clock: FakeClock) -> AsyncIterator[FakeCaServer]:
    server = FakeCaServer(test_ca, tokens={TOKEN: SPIFFE_ID}, clock=clock)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def grpc_settings(
    settings: AgentSettings, ca_server: FakeCaServer, test_ca: TestCA, sockdir: Path
) -> AgentSettings:
    root = sockdir / "root-cert.pem"
    root.write_bytes(test_ca.root_pem)
    token = sockdir / "istio-token"
    token.write_text(TOKEN + "\n")
    return replace(
        settings,
        ca_addr=ca_server.address,
        ca_mtls_addr=ca_server.mtls_address,
        ca_root=root,
        token_file=token,
        cluster_id="cluster-east",
        cert_signer="",
    )


def _grpc_agent(agent_factory: AgentFactory, settings: AgentSettings) -> Agent:
    return agent_factory(settings, ca_client=None)  # the real gRPC client


async def test_token_and_cluster_id_sent_and_token_reread_each_call(
    agent_factory: AgentFactory,
    grpc_settings: AgentSettings,
    ca_server: FakeCaServer,
    clock: FakeClock,
) -> None:
    agent = _grpc_agent(agent_factory, grpc_settings)
    await agent.start()
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    first = ca_server.calls[0]
    assert first.authorization == f"Bearer {TOKEN}"  # whitespace trimmed
    assert first.cluster_id == "cluster-east"
    assert first.ttl_seconds == 3600
    assert first.peer_identity is None  # no certificate to present yet
    assert first.cert_signer is None  # ISTIO_META_CERT_SIGNER unset: no CertSigner metadata

    ca_server.tokens["rotated-token"] = SPIFFE_ID
    assert grpc_settings.token_file is not None
    grpc_settings.token_file.write_text("rotated-token")
    await rotate(agent, clock)
    assert ca_server.calls[-1].authorization == "Bearer rotated-token"


async def test_cert_signer_metadata_sent_when_configured(
    agent_factory: AgentFactory, grpc_settings: AgentSettings, ca_server: FakeCaServer
) -> None:
    agent = _grpc_agent(agent_factory, replace(grpc_settings, cert_signer="istio-system/signer"))
    await agent.start()
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    assert ca_server.calls[0].cert_signer == "istio-system/signer"


async def test_renewal_with_current_certificate_when_no_token(
    agent_factory: AgentFactory,
    grpc_settings: AgentSettings,
    ca_server: FakeCaServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = _grpc_agent(agent_factory, grpc_settings)
    await agent.start()
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    assert grpc_settings.token_file is not None
    grpc_settings.token_file.unlink()  # token gone: renew with the client certificate
    with caplog.at_level(logging.WARNING):
        await rotate(agent, clock)
    last = ca_server.calls[-1]
    assert last.authorization is None
    assert last.peer_identity == SPIFFE_ID
    assert last.outcome == "signed"
    assert agent.metrics.value(TOKEN_READ_FAILURES, reason="missing") >= 1
    assert f"token file {grpc_settings.token_file}: does not exist" in caplog.text


async def test_missing_token_without_certificate_logs_counts_and_recovers(
    agent_factory: AgentFactory,
    grpc_settings: AgentSettings,
    ca_server: FakeCaServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert grpc_settings.token_file is not None
    grpc_settings.token_file.unlink()
    agent = _grpc_agent(agent_factory, grpc_settings)
    with caplog.at_level(logging.WARNING):
        await agent.start()
        await clock.wait_for_sleepers(1)
        while not ca_server.calls:
            await clock.wait_for_sleepers(1)
    assert ca_server.calls[0].outcome == "UNAUTHENTICATED"
    assert agent.metrics.value(TOKEN_READ_FAILURES, reason="missing") >= 1
    assert "does not exist; calling the CA without a token" in caplog.text
    assert "UNAUTHENTICATED" in caplog.text
    assert TOKEN not in caplog.text
    assert not agent.crashed.is_set()

    grpc_settings.token_file.write_text(TOKEN)  # the kubelet projects the token: recovery
    for _ in range(20):
        if agent.store.snapshot().workload is not None:
            break
        await clock.wait_for_sleepers(1)
        clock.advance(60)
        await wait_briefly(agent)
    assert agent.store.snapshot().workload is not None


async def test_expired_token_is_logged_and_counted(
    agent_factory: AgentFactory,
    grpc_settings: AgentSettings,
    ca_server: FakeCaServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    expired = jwt.encode(
        {"sub": "system:serviceaccount:default:httpbin", "exp": int(time.time()) - 3600},
        "k" * 32,
        algorithm="HS256",
    )
    assert grpc_settings.token_file is not None
    grpc_settings.token_file.write_text(expired)
    agent = _grpc_agent(agent_factory, grpc_settings)
    with caplog.at_level(logging.WARNING):
        await agent.start()
        while not ca_server.calls:
            await clock.wait_for_sleepers(1)
    assert agent.metrics.value(TOKEN_READ_FAILURES, reason="expired") >= 1
    assert "token expired at" in caplog.text
    assert expired not in caplog.text
    assert ca_server.calls[0].outcome == "UNAUTHENTICATED"  # the CA does not know it


async def test_ca_stopped_before_rotation_then_back(
    agent_factory: AgentFactory,
    grpc_settings: AgentSettings,
    ca_server: FakeCaServer,
    clock: FakeClock,
) -> None:
    agent = _grpc_agent(agent_factory, grpc_settings)
    await agent.start()
    first = (await wait_for_snapshot(agent, lambda s: s.workload is not None)).workload
    assert first is not None
    await ca_server.stop()
    await clock.wait_for_sleepers(1)
    clock.advance(first.not_after - first.created_at - timedelta(minutes=29))  # past half-life
    for _ in range(10):  # a few failing attempts (real connection refused)
        await clock.wait_for_sleepers(1)
        clock.advance(30)
    assert agent.store.snapshot().workload is first
    assert agent.status.readiness()[0] == 200
    await ca_server.start()  # same port
    for _ in range(30):
        if agent.store.snapshot().workload is not first:
            break
        await clock.wait_for_sleepers(1)
        clock.advance(60)
        await wait_briefly(agent)
    assert agent.store.snapshot().workload is not first


async def wait_briefly(agent: Agent) -> None:
    """Let a real gRPC call in flight complete (bounded real-time wait on the store)."""
    snapshot = agent.store.snapshot()
    with contextlib.suppress(TimeoutError):
        await wait_for_snapshot(agent, lambda s: s.generation > snapshot.generation, within=0.5)


async def test_prov_cert_authenticates_the_first_csr_without_a_token(
    agent_factory: AgentFactory,
    grpc_settings: AgentSettings,
    ca_server: FakeCaServer,
    test_ca: TestCA,
    sockdir: Path,
    clock: FakeClock,
) -> None:
    prov = sockdir / "prov"
    prov.mkdir()
    svid = test_ca.issue_svid(SPIFFE_ID, now=clock.now())  # e.g. a VM's provisioning cert
    (prov / "key.pem").write_bytes(svid.private_key_pem())
    (prov / "cert-chain.pem").write_bytes(svid.cert_chain_pem() + test_ca.root_pem)
    agent = _grpc_agent(agent_factory, replace(grpc_settings, token_file=None, prov_cert=prov))
    await agent.start()
    workload = (await wait_for_snapshot(agent, lambda s: s.workload is not None)).workload
    assert workload is not None
    first = ca_server.calls[0]
    assert first.authorization is None
    assert first.peer_identity == SPIFFE_ID
    assert workload.serial_hex != svid.serial_hex  # a new key and certificate, not PROV_CERT's


class _RecordingCaServer(FakeCaServer):
    """The fake CA, also keeping every call's gRPC metadata."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.metadata: list[dict[str, str]] = []

    async def CreateCertificate(self, request: object, context: object) -> object:
        self.metadata.append(dict(context.invocation_metadata() or ()))  # type: ignore[attr-defined]
        return await super().CreateCertificate(request, context)  # type: ignore[arg-type]


async def test_ca_header_env_vars_are_sent_on_every_call(
    agent_factory: AgentFactory, grpc_settings: AgentSettings, test_ca: TestCA, clock: FakeClock
) -> None:
    from meshsec.config.agent import parse_ca_headers

    recording = _RecordingCaServer(test_ca, tokens={TOKEN: SPIFFE_ID}, clock=clock)
    await recording.start()
    try:
        headers = parse_ca_headers({"CA_HEADER_X_TENANT": "blue", "CA_HEADER_ROUTE": "east-1"})
        settings = replace(grpc_settings, ca_addr=recording.address, ca_headers=headers)
        agent = _grpc_agent(agent_factory, settings)
        await agent.start()
        await wait_for_snapshot(agent, lambda s: s.workload is not None)
        await rotate(agent, clock)
        assert len(recording.metadata) == 2
        for metadata in recording.metadata:
            assert metadata["x_tenant"] == "blue"
            assert metadata["route"] == "east-1"
            assert metadata["authorization"] == f"Bearer {TOKEN}"  # not displaced
            assert metadata["clusterid"] == "cluster-east"
    finally:
        await recording.stop()
