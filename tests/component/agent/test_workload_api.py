"""SPIFFE Workload API over the agent's Unix socket (our own stub; py-spiffe in tests/interop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_der_private_key

from meshsec._proto import spiffe_workload_pb2 as pb
from meshsec._proto import spiffe_workload_pb2_grpc as pb_grpc
from meshsec.agent.server import Agent
from meshsec.config.agent import AgentSettings
from tests.fakes.agent_harness import AgentFactory, rotate
from tests.fakes.ca_client import FakeCaClient
from tests.fakes.clock import FakeClock
from tests.testca import TestCA

HEADER = (("workload.spiffe.io", "true"),)


@pytest.fixture
async def stub(settings: AgentSettings) -> AsyncIterator[pb_grpc.SpiffeWorkloadAPIStub]:
    channel = grpc.aio.insecure_channel(f"unix:{settings.workload_socket}")
    yield pb_grpc.SpiffeWorkloadAPIStub(channel)
    await channel.close()


async def _first(call: object) -> object:
    return await asyncio.wait_for(call.read(), 5)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "metadata",
    [(), (("workload.spiffe.io", "false"),), (("workload.spiffe.io", "True "),)],
    ids=["missing", "false", "not-exactly-true"],
)
async def test_calls_without_security_header_are_invalid_argument(
    agent: Agent, stub: pb_grpc.SpiffeWorkloadAPIStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    call = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _first(call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "workload.spiffe.io" in (info.value.details() or "")


async def test_no_identity_yet_is_permission_denied(
    agent_factory: AgentFactory,
    settings: AgentSettings,
    ca_client: FakeCaClient,
    stub: pb_grpc.SpiffeWorkloadAPIStub,
) -> None:
    ca_client.down = True
    agent = agent_factory(settings)
    await agent.start()
    for method, request in (
        (stub.FetchX509SVID, pb.X509SVIDRequest()),
        (stub.FetchX509Bundles, pb.X509BundlesRequest()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _first(method(request, metadata=HEADER))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_x509_svid_message_and_push_after_rotation(
    agent: Agent, stub: pb_grpc.SpiffeWorkloadAPIStub, clock: FakeClock, test_ca: TestCA
) -> None:
    call = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER)
    first = await _first(call)
    assert isinstance(first, pb.X509SVIDResponse)
    assert len(first.svids) == 1
    svid = first.svids[0]
    assert svid.spiffe_id == "spiffe://cluster.local/ns/default/sa/httpbin"
    leaf = x509.load_der_x509_certificate(svid.x509_svid)  # leaf only (root CA): exact DER
    key = load_der_private_key(svid.x509_svid_key, password=None)  # PKCS#8 DER
    assert leaf.public_key() == key.public_key()
    assert x509.load_der_x509_certificate(svid.bundle) == test_ca.root_cert

    await rotate(agent, clock)
    second = await _first(call)
    assert isinstance(second, pb.X509SVIDResponse)
    assert len(second.svids) == 1  # a complete message, never empty
    new_leaf = x509.load_der_x509_certificate(second.svids[0].x509_svid)
    assert new_leaf.serial_number != leaf.serial_number
    call.cancel()


async def test_x509_bundles_keyed_by_trust_domain_id(
    agent: Agent, stub: pb_grpc.SpiffeWorkloadAPIStub, test_ca: TestCA
) -> None:
    call = stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=HEADER)
    first = await _first(call)
    assert isinstance(first, pb.X509BundlesResponse)
    assert dict(first.bundles) == {
        "spiffe://cluster.local": test_ca.root_cert.public_bytes(Encoding.DER)
    }
    call.cancel()


async def test_jwt_methods_are_unimplemented(
    agent: Agent, stub: pb_grpc.SpiffeWorkloadAPIStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["x"]), metadata=HEADER, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ValidateJWTSVID(
            pb.ValidateJWTSVIDRequest(audience="x", svid="y"), metadata=HEADER, timeout=5
        )
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _first(stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=HEADER))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_expired_identity_is_never_served(
    agent: Agent, stub: pb_grpc.SpiffeWorkloadAPIStub, clock: FakeClock, ca_client: FakeCaClient
) -> None:
    ca_client.down = True
    workload = agent.store.snapshot().workload
    assert workload is not None
    clock.advance(workload.not_after - clock.now())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _first(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bundles_stream_pushes_only_when_the_bundle_changes(
    agent: Agent,
    stub: pb_grpc.SpiffeWorkloadAPIStub,
    clock: FakeClock,
    ca_client: FakeCaClient,
) -> None:
    call = stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=HEADER)
    await _first(call)
    pending = asyncio.ensure_future(call.read())
    await rotate(agent, clock)  # same root: nothing to send
    done, _ = await asyncio.wait({pending}, timeout=0.3)
    assert not done
    new_ca = TestCA(now=clock.now() - timedelta(days=1))
    ca_client.ca = new_ca
    await rotate(agent, clock)
    message = await asyncio.wait_for(pending, 5)
    assert isinstance(message, pb.X509BundlesResponse)
    assert dict(message.bundles) == {
        "spiffe://cluster.local": new_ca.root_cert.public_bytes(Encoding.DER)
    }
    call.cancel()
