"""Status HTTP server (readiness, /debug/secrets, /metrics) and Unix socket handling."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from meshsec.agent.errors import SocketInUseError
from meshsec.agent.server import Agent
from meshsec.config.agent import AgentSettings
from tests.fakes.agent_harness import AgentFactory, wait_for_snapshot
from tests.fakes.ca_client import FakeCaClient
from tests.fakes.clock import FakeClock

EXPIRY_DEFAULT = 'istio_agent_cert_expiry_seconds{resource_name="default"}'


async def http_get(agent: Agent, path: str, method: str = "GET") -> tuple[int, str]:
    assert agent.endpoints is not None
    host, port = agent.endpoints.status
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert f"Content-Length: {len(body)}".encode() in head
    return status, body.decode()


async def test_ready_only_while_valid_certificate_held(
    agent: Agent, clock: FakeClock, ca_client: FakeCaClient
) -> None:
    assert await http_get(agent, "/healthz/ready") == (200, "ready\n")
    ca_client.down = True
    workload = agent.store.snapshot().workload
    assert workload is not None
    clock.advance(workload.not_after - clock.now())
    status, body = await http_get(agent, "/healthz/ready")
    assert status == 503
    assert f"serial {workload.serial_hex} expired" in body


async def test_not_ready_before_first_certificate(
    agent_factory: AgentFactory, settings: AgentSettings, ca_client: FakeCaClient
) -> None:
    ca_client.down = True
    agent = agent_factory(settings)
    await agent.start()
    status, body = await http_get(agent, "/healthz/ready")
    assert status == 503
    assert "no workload certificate yet" in body


async def test_debug_secrets_json_has_no_key_material(agent: Agent) -> None:
    status, body = await http_get(agent, "/debug/secrets")
    assert status == 200
    data = json.loads(body)
    default, root = data["resources"]
    workload = agent.store.snapshot().workload
    assert workload is not None
    assert default["resource_name"] == "default"
    assert default["serial"] == workload.serial_hex
    assert default["valid"] is True
    assert default["not_after"] == workload.not_after.isoformat()
    assert root["resource_name"] == "ROOTCA"
    assert "PRIVATE KEY" not in body


async def test_metrics_use_istio_agent_names(agent: Agent) -> None:
    status, body = await http_get(agent, "/metrics")
    assert status == 200
    assert 'istio_agent_num_outgoing_requests{request_type="csr"} 1' in body
    assert "# TYPE istio_agent_num_outgoing_requests counter" in body
    assert 'istio_agent_num_failed_outgoing_requests{request_type="csr"}' not in body
    line = next(x for x in body.splitlines() if x.startswith(EXPIRY_DEFAULT))
    assert 3500 < float(line.split()[-1]) <= 3600
    for name in (
        "istio_agent_outgoing_latency",
        "istio_agent_num_outgoing_retries",
        "istio_agent_num_file_watcher_failures_total",
        "istio_agent_num_file_secret_failures_total",
        "istio_agent_token_read_failures_total",
    ):
        assert f"# TYPE {name} " in body


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [("GET", "/nope", 404), ("POST", "/healthz/ready", 405)],
    ids=["unknown-path", "wrong-method"],
)
async def test_status_rejects_bad_requests(
    agent: Agent, method: str, path: str, expected: int
) -> None:
    status, _ = await http_get(agent, path, method)
    assert status == expected


async def test_live_socket_is_a_clear_error_and_left_alone(
    agent: Agent, agent_factory: AgentFactory, settings: AgentSettings
) -> None:
    second = agent_factory(replace(settings, workload_socket=None))
    with pytest.raises(SocketInUseError, match="already in use by a running server"):
        await second.start()
    assert settings.sds_socket_path.exists()  # the first agent's socket was not removed


async def test_stale_socket_replaced_and_sockets_removed_on_stop(
    agent_factory: AgentFactory, settings: AgentSettings
) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(settings.sds_socket_path))
    stale.close()  # a socket file with nobody listening (crashed agent)
    agent = agent_factory(settings)
    await agent.start()
    await wait_for_snapshot(agent, lambda s: s.workload is not None)
    await agent.stop()
    assert not settings.sds_socket_path.exists()
    assert settings.workload_socket is not None
    assert not settings.workload_socket.exists()


async def test_regular_file_at_socket_path_is_refused(
    agent_factory: AgentFactory, settings: AgentSettings
) -> None:
    settings.sds_socket_path.write_text("not a socket")
    with pytest.raises(SocketInUseError, match="not a socket"):
        await agent_factory(settings).start()
    assert settings.sds_socket_path.read_text() == "not a socket"


def test_socket_path_too_long_is_refused(tmp_path: Path) -> None:
    from meshsec.agent.sockets import prepare_socket_path

    with pytest.raises(SocketInUseError, match="longer than"):
        prepare_socket_path(tmp_path / ("x" * 120))


async def test_debug_secrets_marks_an_expired_certificate(
    agent: Agent, clock: FakeClock, ca_client: FakeCaClient
) -> None:
    ca_client.down = True
    workload = agent.store.snapshot().workload
    assert workload is not None
    clock.advance(workload.not_after - clock.now())
    _, body = await http_get(agent, "/debug/secrets")
    default = json.loads(body)["resources"][0]
    assert default["status"] == "EXPIRED"
    assert default["valid"] is False
