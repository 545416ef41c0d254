"""``meshsec proxy run --config-dir DIR --workload NAME.NAMESPACE``: the policy-aware sidecar.

Two sidecars in the test's loop read one directory of Istio YAML: ``server.backend`` (an HTTP
port and a TCP port in front of two apps) and ``client.frontend`` (its HTTP proxy is how the
application reaches ``server.backend.svc.cluster.local``). Everything goes over real mTLS
connections with certificates from the test CA; the directory is edited while they run, and
each edit is applied by the sidecar's own watcher logic (two identical reads, then apply).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings
from meshsec.config.proxy import ProxySettings
from meshsec.core.pki import X509Svid
from meshsec.proxy import listener
from meshsec.proxy.balance import WorkerLoad
from meshsec.proxy.inbound import PortMode
from meshsec.proxy.server import ProxyServer
from tests.component.proxy.apps import HttpApp, LineApp
from tests.component.proxy.harness import (
    CLIENT_ID,
    SERVER_ID,
    Identities,
    client_context,
    close,
    exchange,
    http_request,
    open_plain,
    open_tls,
)
from tests.fakes.clock import FakeClock
from tests.testca import TestCA

SERVERS: list[ProxyServer] = []

BASE = """
apiVersion: v1
kind: Namespace
metadata: {{name: backend}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: frontend}}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata:
  name: server
  namespace: backend
  labels: {{app: server}}
  annotations: {{meshsec.io/address: 127.0.0.1}}
spec:
  serviceAccount: server
  ports:
  - {{port: {http}, protocol: http, name: http}}
  - {{port: {tcp}, protocol: tcp, name: tcp}}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {{name: client, namespace: frontend, labels: {{app: client}}}}
spec: {{serviceAccount: client}}
---
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: backend}}
spec:
  selector: {{app: server}}
  ports:
  - {{name: http, port: 80, targetPort: {http}}}
  - {{name: tcp, port: 9000, targetPort: {tcp}}}
"""

PEER_AUTHN = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: backend}}
spec:
  mtls: {{mode: {mode}}}
"""

# the frontend's client may do anything; namespace "trusted" only GET /public/*; nobody else
AUTHZ = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-callers, namespace: backend}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/frontend/sa/client]}}]
  - from: [{source: {namespaces: [trusted]}}]
    to: [{operation: {methods: [GET], paths: [/public/*]}}]
"""

DESTINATION_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: server, namespace: frontend}}
spec:
  host: server.backend.svc.cluster.local
  trafficPolicy:
    tls: {tls}
"""


@dataclass
class Mesh:
    config: Path
    ids: Identities
    http_port: int
    tcp_port: int
    http_app: HttpApp
    tcp_app: LineApp

    def write(self, name: str, text: str) -> None:
        (self.config / name).write_text(text)

    async def sidecar(
        self, workload: str, svid: X509Svid, *, inbound: bool, http_proxy: bool = False
    ) -> ProxyServer:
        flags: dict[str, object] = {
            "config_dir": self.config,
            "workload": workload,
            "inbound_host": "127.0.0.1",
            "admin_addr": "127.0.0.1:0",
            "drain_duration": "0s",
        }
        if inbound:
            flags["inbound"] = (
                f"{self.http_port}:{self.http_app.port}:http",
                f"{self.tcp_port}:{self.tcp_app.port}",
            )
        if http_proxy:
            flags["http_proxy_port"] = 0
        server = ProxyServer(load_settings(ProxySettings, env={}, flags=flags), clock=FakeClock())
        server.apply(svid, self.ids.ca.bundle)
        await server.start()
        SERVERS.append(server)
        return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _settle(server: ProxyServer) -> bool:
    """What the watcher does on two consecutive ticks: read, read again, apply if settled."""
    assert server.policy is not None
    server.policy.poll()
    return server.policy.poll()


@pytest.fixture(autouse=True)
async def stop_servers() -> AsyncIterator[None]:
    yield
    while SERVERS:
        await SERVERS.pop().shutdown()


@pytest.fixture
async def mesh(tmp_path: Path, ids: Identities) -> Mesh:
    http_app = await HttpApp().start()
    tcp_app = await LineApp().start()
    m = Mesh(tmp_path / "config", ids, _free_port(), _free_port(), http_app, tcp_app)
    m.config.mkdir()
    m.write("base.yaml", BASE.format(http=m.http_port, tcp=m.tcp_port))
    m.write("pa.yaml", PEER_AUTHN.format(mode="STRICT"))
    m.write("authz.yaml", AUTHZ)
    return m


async def _get(port: int, ctx: object | None, path: str) -> tuple[int, bytes]:
    reader, writer = await (open_tls(port, ctx) if ctx is not None else open_plain(port))  # type: ignore[arg-type]
    try:
        return await http_request(
            reader, writer, f"GET {path} HTTP/1.1\r\nhost: server\r\n\r\n".encode()
        )
    finally:
        await close(writer)


@pytest.mark.parametrize(
    ("caller", "path", "status"),
    [
        (CLIENT_ID, "/anything", 200),
        ("spiffe://cluster.local/ns/trusted/sa/reader", "/public/photo", 200),
        ("spiffe://cluster.local/ns/trusted/sa/reader", "/private", 403),
        ("spiffe://cluster.local/ns/other/sa/intruder", "/public/photo", 403),
        ("spiffe://cluster.local/ns/frontend/sa/not-client", "/anything", 403),
    ],
    ids=["principal", "namespace-path", "namespace-other-path", "other-namespace", "other-sa"],
)
async def test_http_authorization_by_principal_and_namespace(
    mesh: Mesh, mesh_ca: TestCA, caller: str, path: str, status: int
) -> None:
    await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
    svid = mesh.ids.client if caller == CLIENT_ID else mesh_ca.issue_svid(caller)
    got, body = await _get(mesh.http_port, client_context(svid, mesh_ca.bundle), path)
    assert got == status
    if status == 403:
        assert body == b"RBAC: access denied"
        assert all(p != path for _, p, _ in mesh.http_app.requests)  # never reached the app
    else:
        assert f"URI={caller}".encode() in body  # XFCC as the application sees it


async def test_tcp_authorization_closes_denied_connections(mesh: Mesh, mesh_ca: TestCA) -> None:
    await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
    reader, writer = await open_tls(mesh.tcp_port, client_context(mesh.ids.client, mesh_ca.bundle))
    assert await exchange(reader, writer, b"hi\n") == b"echo:hi\n"
    intruder = mesh_ca.issue_svid("spiffe://cluster.local/ns/other/sa/intruder")
    reader, writer = await open_tls(mesh.tcp_port, client_context(intruder, mesh_ca.bundle))
    assert await exchange(reader, writer, b"hi\n") == b""
    assert mesh.tcp_app.lines == [b"hi\n"]


async def test_mode_follows_peer_authentication_edits_without_dropping_open_connections(
    mesh: Mesh, mesh_ca: TestCA
) -> None:
    server = await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
    mesh.write("authz.yaml", "")  # no AuthorizationPolicy: plaintext callers may connect
    assert _settle(server)
    ctx = client_context(mesh.ids.client, mesh_ca.bundle)
    old_reader, old_writer = await open_tls(mesh.tcp_port, ctx)
    assert await exchange(old_reader, old_writer, b"before\n") == b"echo:before\n"
    reader, writer = await open_plain(mesh.tcp_port)
    assert await exchange(reader, writer, b"plain\n") == b""  # STRICT refuses plaintext

    mesh.write("pa.yaml", PEER_AUTHN.format(mode="DISABLE"))
    assert server.policy is not None
    assert not server.policy.poll()  # first sighting: wait
    assert server.policy.poll()
    assert [x.mode for x in server.inbound] == [PortMode.DISABLE, PortMode.DISABLE]
    reader, writer = await open_plain(mesh.tcp_port)
    assert await exchange(reader, writer, b"plain\n") == b"echo:plain\n"
    # the mTLS connection opened under STRICT is still up
    assert await exchange(old_reader, old_writer, b"after\n") == b"echo:after\n"
    dump = server.config_dump()
    assert {p["mode"] for p in dump["ports"]} == {"DISABLE"}
    assert dump["policy_version"] == server.policy.view.version

    mesh.write(
        "pa.yaml",
        PEER_AUTHN.format(mode="PERMISSIVE")
        + f"""---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: server, namespace: backend}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  portLevelMtls:
    {mesh.tcp_port}: {{mode: STRICT}}
""",
    )
    assert _settle(server)
    assert [x.mode for x in server.inbound] == [PortMode.PERMISSIVE, PortMode.STRICT]
    assert await exchange(old_reader, old_writer, b"still\n") == b"echo:still\n"


async def test_a_broken_edit_keeps_the_last_good_snapshot(
    mesh: Mesh, mesh_ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    server = await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
    assert server.policy is not None
    version = server.policy.view.version
    intruder = mesh_ca.issue_svid("spiffe://cluster.local/ns/other/sa/intruder")
    # an edit meant to open the port to everyone, with a typo in the action
    mesh.write("authz.yaml", AUTHZ.replace("rules:", "action: ALOW\n  rules: [{}]\n  x:"))
    with caplog.at_level(logging.WARNING):
        assert not _settle(server)
    assert server.policy.view.version == version
    rejected = server.config_dump()["rejected_edit"]
    assert rejected
    assert "authz.yaml:" in rejected[0]  # file:line of the problem
    logged = [r.getMessage() for r in caplog.records if "authz.yaml:" in r.getMessage()]
    assert len(rejected) >= 2  # the action and the unknown field
    assert all(any(d in line for line in logged) for d in rejected)  # every one logged
    got, _ = await _get(mesh.http_port, client_context(intruder, mesh_ca.bundle), "/x")
    assert got == 403  # the last good policy is still enforced
    assert server.ready()

    mesh.write("authz.yaml", AUTHZ.replace("namespaces: [trusted]", "namespaces: [other]"))
    assert _settle(server)
    assert server.config_dump()["rejected_edit"] == []
    got, _ = await _get(mesh.http_port, client_context(intruder, mesh_ca.bundle), "/public/x")
    assert got == 200


async def _via_proxy(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await open_plain(port)
    host = "server.backend.svc.cluster.local"
    try:
        return await http_request(
            reader, writer, f"GET http://{host}/{path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
        )
    finally:
        await close(writer)


async def test_outbound_client_tls_follows_destination_rules(mesh: Mesh) -> None:
    mesh.write("pa.yaml", PEER_AUTHN.format(mode="PERMISSIVE"))
    mesh.write("authz.yaml", "")
    server = await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
    client = await mesh.sidecar("client.frontend", mesh.ids.client, inbound=False, http_proxy=True)
    proxy_port = client.outbound[0].bound_port

    status, body = await _via_proxy(proxy_port, "auto")  # no rule: auto mTLS
    assert status == 200
    assert f"URI={CLIENT_ID}".encode() in body

    mesh.write("dr.yaml", DESTINATION_RULE.format(tls="{mode: DISABLE}"))
    assert _settle(client)
    assert _settle(server)
    status, body = await _via_proxy(proxy_port, "disable")
    assert status == 200
    assert b"xfcc=\n" in body  # plaintext: the server saw no client certificate

    mesh.write("dr.yaml", DESTINATION_RULE.format(tls="{mode: ISTIO_MUTUAL}"))
    assert _settle(client)
    status, body = await _via_proxy(proxy_port, "istio-mutual")
    assert (status, f"URI={CLIENT_ID}".encode() in body) == (200, True)

    # secure naming: the rule says the service runs as another account: refused
    wrong = "{mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/backend/sa/other]}"
    mesh.write("dr.yaml", DESTINATION_RULE.format(tls=wrong))
    assert _settle(client)
    status, _ = await _via_proxy(proxy_port, "wrong-san")
    assert status == 503  # the sidecar refused the server and says so to the app
    assert [p for _, p, _ in mesh.http_app.requests] == ["/auto", "/disable", "/istio-mutual"]

    # a STRICT server refuses the plaintext a DISABLE rule sends
    mesh.write("dr.yaml", DESTINATION_RULE.format(tls="{mode: DISABLE}"))
    mesh.write("pa.yaml", PEER_AUTHN.format(mode="STRICT"))
    assert _settle(client)
    assert _settle(server)
    # (the server closes on the plaintext request: Envoy's 503 for an upstream connection that
    # ended before a response head, flag UC)
    assert await _via_proxy(proxy_port, "plain-into-strict") == (
        503,
        b"upstream connect error or disconnect/reset before headers."
        b" reset reason: connection termination",
    )
    assert len(mesh.http_app.requests) == 3


async def test_admin_reports_workload_ports_secrets_and_policy(mesh: Mesh) -> None:
    server = await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
    assert server.admin is not None
    reader, writer = await open_plain(server.admin.bound_port)
    _, body = await http_request(reader, writer, b"GET /config_dump HTTP/1.1\r\nhost: a\r\n\r\n")
    dump = json.loads(body)
    assert dump["workload"] == "backend/server"
    assert dump["spiffe_id"] == SERVER_ID
    assert dump["certificate"]["serial"] == mesh.ids.server.serial_hex
    assert dump["secrets"][0]["serial_number"] == mesh.ids.server.serial_hex
    assert dump["ports"] == [
        {"port": mesh.http_port, "mode": "STRICT", "protocol": "http"},
        {"port": mesh.tcp_port, "mode": "STRICT", "protocol": "tcp"},
    ]
    assert dump["policy"]["authorization_policies"] == [
        "AuthorizationPolicy backend/server-callers"
    ]
    assert dump["policy_version"] == dump["policy"]["version"] != ""
    reader, writer = await open_plain(server.admin.bound_port)
    status, body = await http_request(reader, writer, b"GET /ready HTTP/1.1\r\nhost: a\r\n\r\n")
    assert (status, body) == (200, b"LIVE\n")

    # Istio's metric names and labels for what the policy decided
    intruder = mesh.ids.ca.issue_svid("spiffe://cluster.local/ns/other/sa/intruder")
    assert (await _get(mesh.http_port, client_context(mesh.ids.client, mesh.ids.ca.bundle), "/"))[
        0
    ] == 200
    assert (await _get(mesh.http_port, client_context(intruder, mesh.ids.ca.bundle), "/"))[0] == 403
    reader, writer = await open_plain(server.admin.bound_port)
    _, metrics = await http_request(reader, writer, b"GET /metrics HTTP/1.1\r\nhost: a\r\n\r\n")
    text = metrics.decode()
    for code, principal in (
        ("200", CLIENT_ID),
        ("403", "spiffe://cluster.local/ns/other/sa/intruder"),
    ):
        assert any(
            line.startswith("istio_requests_total{")
            and f'response_code="{code}"' in line
            and f'source_principal="{principal}"' in line
            and 'connection_security_policy="mutual_tls"' in line
            and f'destination_principal="{SERVER_ID}"' in line
            for line in text.splitlines()
        ), (code, text)


async def test_an_unknown_workload_is_a_config_error(mesh: Mesh) -> None:
    with pytest.raises(ConfigError, match=r"--workload ghost\.backend: no Workload"):
        await mesh.sidecar("ghost.backend", mesh.ids.server, inbound=True)


async def test_errors_in_the_first_read_fail_closed(mesh: Mesh, mesh_ca: TestCA) -> None:
    mesh.write("authz.yaml", AUTHZ.replace("rules:", "action: ALOW\n  rules:"))
    server = await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
    assert not server.ready()
    assert "configuration not loaded" in server.not_ready_reason()
    got, body = await _get(mesh.http_port, client_context(mesh.ids.client, mesh_ca.bundle), "/x")
    assert (got, body) == (403, b"RBAC: access denied")
    mesh.write("authz.yaml", AUTHZ)
    assert _settle(server)
    assert server.ready()
    got, _ = await _get(mesh.http_port, client_context(mesh.ids.client, mesh_ca.bundle), "/x")
    assert got == 200


async def test_other_workers_defer_to_a_worker_only_while_its_configuration_is_complete(
    mesh: Mesh,
) -> None:
    load = WorkerLoad(2)
    other_worker = load.for_worker(1)
    listener._LOAD = load  # this sidecar is worker 0 of a --concurrency 2 run
    try:
        mesh.write("authz.yaml", AUTHZ.replace("rules:", "action: ALOW\n  rules:"))
        server = await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
        assert not server.ready()
        assert not other_worker.accepting(0)  # it denies every request: not waited for
        mesh.write("authz.yaml", AUTHZ)
        assert _settle(server)
        assert other_worker.accepting(0)
        mesh.write("authz.yaml", AUTHZ.replace("rules:", "action: ALOW\n  rules:"))
        assert not _settle(server)  # a broken edit is rejected: the last good one stays
        assert other_worker.accepting(0)
    finally:
        listener.set_worker_ready(False)
        listener._LOAD = None


async def test_an_authorization_edit_applies_to_the_next_request_on_an_open_connection(
    mesh: Mesh, mesh_ca: TestCA
) -> None:
    only_client = AUTHZ.split("  - from: [{source: {namespaces")[0]  # principals only
    mesh.write("authz.yaml", only_client)
    server = await mesh.sidecar("server.backend", mesh.ids.server, inbound=True)
    assert server.policy is not None
    assert server.policy.view.connection_scoped  # one decision per connection ...
    ctx = client_context(mesh.ids.client, mesh_ca.bundle)
    reader, writer = await open_tls(mesh.http_port, ctx)
    request = b"GET /a HTTP/1.1\r\nhost: server\r\n\r\n"
    assert (await http_request(reader, writer, request))[0] == 200
    assert (await http_request(reader, writer, request))[0] == 200
    mesh.write("authz.yaml", only_client.replace("sa/client", "sa/someone-else"))
    assert _settle(server)
    # ... until the policy version changes: the same keep-alive connection is now denied
    assert await http_request(reader, writer, request) == (403, b"RBAC: access denied")


async def test_a_certificate_of_another_identity_is_logged(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="meshsec.proxy"):
        await mesh.sidecar("server.backend", mesh.ids.client, inbound=True)
    assert any(
        f"certificate identity {CLIENT_ID} is not workload backend/server's {SERVER_ID}"
        in r.getMessage()
        for r in caplog.records
    )


def test_an_inbound_port_the_workload_does_not_declare_is_logged(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        ProxySettings,
        env={},
        flags={
            "config_dir": mesh.config,
            "workload": "server.backend",
            "inbound": (f"{mesh.http_port}:1:http", "1:2"),
        },
    )
    with caplog.at_level(logging.WARNING, logger="meshsec.proxy"):
        ProxyServer(settings, clock=FakeClock())
    messages = [r.getMessage() for r in caplog.records]
    assert any("--inbound port 1 is not a port of Workload backend/server" in m for m in messages)
    assert not any(f"--inbound port {mesh.http_port} " in m for m in messages)


async def test_the_protocol_comes_from_the_workload_unless_written(mesh: Mesh) -> None:
    settings = load_settings(
        ProxySettings,
        env={},
        flags={
            "config_dir": mesh.config,
            "workload": "server.backend",
            "inbound": (f"{mesh.http_port}:1", f"{mesh.tcp_port}:2:http"),
        },
    )
    server = ProxyServer(settings, clock=FakeClock())
    assert server.policy is not None
    # declared http, nothing written -> http; declared tcp, ":http" written -> http
    assert [b.protocol for b in server.policy.workload.ports] == ["http", "http"]
