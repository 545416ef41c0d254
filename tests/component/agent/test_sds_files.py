"""SDS ``file-cert:`` / ``file-root:`` resources over the agent's socket: served from files,
watched (Kubernetes ``..data`` symlink swaps included) and pushed only to their subscribers."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from meshsec.agent.metrics import FILE_SECRET_FAILURES
from meshsec.agent.server import Agent
from meshsec.config.agent import AgentSettings
from meshsec.core.pki import encode_private_key_pem
from tests.fakes.agent_harness import AgentFactory, wait_for_snapshot
from tests.fakes.clock import FakeClock
from tests.fakes.sds_client import SdsClient, SdsStream, secrets_of
from tests.testca import TestCA


def _write_version(mount: Path, ca: TestCA, version: str) -> bytes:
    """A Kubernetes Secret volume: ``tls.crt`` / ``tls.key`` → ``..data/`` → ``..<version>/``."""
    svid = ca.issue_svid("spiffe://cluster.local/ns/gw/sa/ingress", dns_names=("shop.example",))
    target = mount / f"..{version}"
    target.mkdir()
    cert_pem = b"".join(c.public_bytes(Encoding.PEM) for c in svid.chain)
    (target / "tls.crt").write_bytes(cert_pem)
    (target / "tls.key").write_bytes(encode_private_key_pem(svid.private_key))
    (target / "ca.crt").write_bytes(ca.root_pem)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, mount / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    return cert_pem


@pytest.fixture
def mount(sockdir: Path) -> Path:
    path = sockdir / "gw-cert"
    path.mkdir()
    return path


@pytest.fixture
async def files_agent(agent_factory: AgentFactory, settings: AgentSettings) -> Agent:
    agent = agent_factory(settings, file_read_timeout=0.0)
    await agent.start()
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    return agent


@pytest.fixture
async def sds(files_agent: Agent) -> SdsClient:
    client = SdsClient(str(files_agent.settings.sds_socket_path))
    yield client  # type: ignore[misc]
    await client.close()


def _names(mount: Path) -> tuple[str, str]:
    return f"file-cert:{mount / 'tls.crt'}~{mount / 'tls.key'}", f"file-root:{mount / 'ca.crt'}"


async def _first(stream: SdsStream, names: list[str]) -> dict[str, object]:
    response = await stream.recv()
    stream.ack(response, names)
    return secrets_of(response)  # type: ignore[return-value]


async def _poll(agent: Agent, clock: FakeClock) -> None:
    """One turn of the file watcher: its poll sleep, then the debounce sleep."""
    await clock.wait_for_sleepers(2)  # the rotation timer + the file poller
    clock.advance(timedelta(seconds=1))
    await clock.wait_for_sleepers(2)
    clock.advance(agent.settings.file_debounce_duration)


async def test_file_cert_and_root_served_next_to_default(
    files_agent: Agent, sds: SdsClient, mount: Path, test_ca: TestCA
) -> None:
    cert_pem = _write_version(mount, test_ca, "v1")
    cert_name, root_name = _names(mount)
    names = ["default", cert_name, root_name]
    secrets = await _first(sds.stream(names), names)
    assert set(secrets) == set(names)
    tls = secrets[cert_name].tls_certificate  # type: ignore[attr-defined]
    assert tls.certificate_chain.inline_bytes == cert_pem
    assert tls.private_key.inline_bytes == (mount / "tls.key").read_bytes()
    trusted = secrets[root_name].validation_context.trusted_ca.inline_bytes  # type: ignore[attr-defined]
    assert trusted.strip() == test_ca.root_pem.strip()


async def test_symlink_swap_pushes_only_to_file_subscribers(
    files_agent: Agent, sds: SdsClient, mount: Path, test_ca: TestCA, clock: FakeClock
) -> None:
    _write_version(mount, test_ca, "v1")
    cert_name, _ = _names(mount)
    file_stream = sds.stream([cert_name])
    first = await file_stream.recv()
    file_stream.ack(first, [cert_name])
    default_stream = sds.stream(["default"])
    await _first(default_stream, ["default"])

    new_pem = _write_version(mount, test_ca, "v2")  # Kubernetes-style atomic ..data swap
    await _poll(files_agent, clock)

    pushed = await file_stream.recv()
    secret = secrets_of(pushed)[cert_name]
    assert secret.tls_certificate.certificate_chain.inline_bytes == new_pem
    assert pushed.version_info != first.version_info
    assert pushed.nonce != first.nonce
    await default_stream.expect_silence()


async def test_bad_update_keeps_the_last_good_secret(
    files_agent: Agent, sds: SdsClient, mount: Path, test_ca: TestCA, clock: FakeClock
) -> None:
    good = _write_version(mount, test_ca, "v1")
    cert_name, _ = _names(mount)
    stream = sds.stream([cert_name])
    await _first(stream, [cert_name])
    before = files_agent.metrics.value(FILE_SECRET_FAILURES)

    (mount / "..v1" / "tls.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n")
    await _poll(files_agent, clock)

    await stream.expect_silence()
    assert files_agent.metrics.value(FILE_SECRET_FAILURES) == before + 1
    assert files_agent.files.secret(cert_name) is not None
    assert (
        files_agent.files.secret(cert_name).tls_certificate.certificate_chain.inline_bytes == good
    )  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        ("file-cert:/nonexistent/tls.crt~/nonexistent/tls.key", "UNAVAILABLE", "does not exist"),
        ("file-cert:/only/one/path", "INVALID_ARGUMENT", "file-cert:<cert path>~<key path>"),
        ("file-root:/a~/b", "INVALID_ARGUMENT", "no '~'"),
    ],
    ids=["missing-files", "no-key-path", "root-with-tilde"],
)
async def test_unusable_file_resource_ends_the_stream_with_the_reason(
    files_agent: Agent, sds: SdsClient, name: str, code: str, reason: str
) -> None:
    error = await sds.stream(["default", name]).status()
    assert error.code() == getattr(grpc.StatusCode, code)
    assert f"failed to generate secret for {name}: " in (error.details() or "")
    assert reason in (error.details() or "")
    assert files_agent.files.secret(name) is None


async def test_watch_ends_with_the_last_subscriber(
    files_agent: Agent, sds: SdsClient, mount: Path, test_ca: TestCA
) -> None:
    _write_version(mount, test_ca, "v1")
    cert_name, _ = _names(mount)
    one, two = sds.stream([cert_name]), sds.stream([cert_name])
    await _first(one, [cert_name])
    await _first(two, [cert_name])
    one.close()
    await _until(lambda: files_agent.sds.active_streams == 1)
    assert files_agent.files.secret(cert_name) is not None
    two.close()
    await _until(lambda: files_agent.files.secret(cert_name) is None)


async def test_fetch_secrets_reads_files(
    files_agent: Agent, sds: SdsClient, mount: Path, test_ca: TestCA
) -> None:
    from envoy.service.discovery.v3 import discovery_pb2

    _write_version(mount, test_ca, "v1")
    _, root_name = _names(mount)
    response = await sds.stub.FetchSecrets(
        discovery_pb2.DiscoveryRequest(resource_names=[root_name])
    )
    assert set(secrets_of(response)) == {root_name}
    assert files_agent.files.secret(root_name) is None  # not kept after a unary fetch


async def _until(predicate: object, within: float = 5.0) -> None:
    """Bounded wait for the server's clean-up after a client cancel (no event exposes it)."""
    import asyncio

    async def _wait() -> None:
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(_wait(), within)
