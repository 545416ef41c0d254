"""The assembled sidecar: cert-dir loading and watching (fake clock), admin, drain, settings."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings
from meshsec.config.proxy import (
    ProxySettings,
    parse_endpoint_spec,
    parse_inbound_spec,
    parse_outbound_spec,
)
from meshsec.core.pki import X509Svid
from meshsec.proxy import listener
from meshsec.proxy.balance import WorkerLoad
from meshsec.proxy.certdir import load_cert_dir
from meshsec.proxy.errors import TlsMaterialError
from meshsec.proxy.server import ProxyServer
from meshsec.proxy.tls import derive_ticket_keys, ticket_epoch
from meshsec.proxy.tls_openssl import ticket_keys
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, write_atomic
from tests.component.proxy.apps import LineApp
from tests.component.proxy.harness import (
    SERVER_ID,
    Identities,
    client_context,
    close,
    exchange,
    open_tls,
    peer_serial,
    track,
)
from tests.fakes.clock import FakeClock
from tests.testca import TestCA


def _write_cert_dir(directory: Path, svid: X509Svid, root_pem: bytes) -> None:
    directory.mkdir(exist_ok=True)
    write_atomic(directory / "cert-chain.pem", svid.cert_chain_pem(), PUBLIC_MODE)
    write_atomic(directory / "key.pem", svid.private_key_pem(), KEY_MODE)
    write_atomic(directory / "root-cert.pem", root_pem, PUBLIC_MODE)


def _strict_port(certs: Path, app_port: int, **flags: str) -> ProxySettings:
    """A sidecar with one STRICT port in front of ``app_port``, certificates from ``certs``."""
    return load_settings(
        ProxySettings,
        env={},
        flags={
            "cert_dir": certs,
            "inbound": (f"0:{app_port}:STRICT",),
            "inbound_host": "127.0.0.1",
            **flags,
        },
    )


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("15006:8080:STRICT", (15006, 8080, "STRICT", False)),
        ("15006:8080:permissive:http", (15006, 8080, "PERMISSIVE", True)),
        ("0:1:DISABLE:tcp", (0, 1, "DISABLE", False)),
        ("15006:8080:http", (15006, 8080, None, True)),
        ("15006:8080", (15006, 8080, None, False)),
    ],
    ids=["strict", "permissive-http", "disable-tcp", "policy-http", "policy-tcp"],
)
def test_parse_inbound_spec(spec: str, parsed: tuple[object, ...]) -> None:
    s = parse_inbound_spec(spec)
    assert (s.port, s.app_port, s.mode, s.http) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("15006", "expected PORT:APPPORT"),
        ("1:2:STRICT:http:x", "expected PORT:APPPORT"),
        ("15006:8080:LOOSE", "mode 'LOOSE'"),
        ("x:8080:STRICT", "port 'x'"),
        ("1:99999:STRICT", "application port '99999'"),
        ("1:2:STRICT:grpc", "protocol 'grpc'"),
    ],
    ids=["short", "long", "bad-mode", "bad-port", "port-range", "bad-protocol"],
)
def test_parse_inbound_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_inbound_spec(spec)


def test_parse_outbound_and_endpoint_specs() -> None:
    out = parse_outbound_spec("9080:reviews.default.svc.cluster.local:9080")
    assert (out.listen_port, out.host, out.port) == (
        9080,
        "reviews.default.svc.cluster.local",
        9080,
    )
    ep = parse_endpoint_spec(
        "reviews:9080=10.0.0.5:15006#spiffe://cluster.local/ns/default/sa/reviews"
    )
    assert (ep.host, ep.port, ep.address, ep.address_port) == ("reviews", 9080, "10.0.0.5", 15006)
    assert ep.sans == ("spiffe://cluster.local/ns/default/sa/reviews",)
    with pytest.raises(ValueError, match="not allowed"):
        parse_endpoint_spec("r:1=a:2#spiffe://Bad/x")
    with pytest.raises(ValueError, match="LISTENPORT:HOST:PORT"):
        parse_outbound_spec("9080")


def test_settings_report_every_bad_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            ProxySettings,
            env={
                "MESHSEC_PROXY_INBOUND": "1:2:NOPE,3:4:STRICT",
                "TRUST_DOMAIN": "Bad Domain",
                "MESHSEC_MIN_TLS_VERSION": "1.1",
            },
        )
    text = str(info.value)
    assert "mode 'NOPE'" in text
    assert "--trust-domain" in text
    assert "1.1" in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"inbound": ("1:2",)}, "no MODE"),
        ({"workload": "w.ns"}, "--workload: only with --config-dir"),
        ({"config_dir": Path("x")}, "--workload NAME.NAMESPACE is required"),
        ({"config_dir": Path("x"), "workload": "w"}, "is not NAME.NAMESPACE"),
        (
            {"config_dir": Path("x"), "workload": "w.ns", "inbound": ("1:2:STRICT",)},
            "drop ':STRICT'",
        ),
        (
            {"config_dir": Path("x"), "workload": "w.ns", "endpoints": ("a:1=b:2",)},
            "--endpoint: not with --config-dir",
        ),
        ({"concurrency": -1}, "--concurrency"),
        ({"concurrency": 2, "inbound": ("0:2:STRICT",)}, "listens on port 0"),
        ({"concurrency": 0, "http_proxy_port": 0}, "--http-proxy-port 0 listens on port 0"),
    ],
    ids=[
        "static-needs-mode",
        "workload-alone",
        "config-needs-workload",
        "bad-workload",
        "mode-with-config",
        "endpoint-with-config",
        "concurrency",
        "concurrency-port-0",
        "concurrency-proxy-port-0",
    ],
)
def test_policy_settings_are_checked(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(ProxySettings, env={}, flags=flags)


def test_load_cert_dir_names_the_broken_file(tmp_path: Path, ids: Identities) -> None:
    _write_cert_dir(tmp_path, ids.server, ids.ca.bundle.to_pem())
    (tmp_path / "root-cert.pem").write_text("garbage")
    with pytest.raises(TlsMaterialError, match=r"root-cert\.pem"):
        load_cert_dir(tmp_path)
    (tmp_path / "key.pem").write_bytes(ids.client.private_key_pem())
    with pytest.raises(TlsMaterialError, match="does not match"):
        load_cert_dir(tmp_path)


async def test_server_watches_cert_dir_serves_admin_and_drains(
    tmp_path: Path, ids: Identities
) -> None:
    certs = tmp_path / "certs"
    _write_cert_dir(certs, ids.server, ids.ca.bundle.to_pem())
    app = await LineApp().start()
    settings = _strict_port(
        certs, app.port, admin_addr="127.0.0.1:0", cert_watch_interval="1s", drain_duration="5s"
    )
    clock = FakeClock()
    server = ProxyServer(settings, clock=clock)
    await server.start()
    track(server.admin)
    port = server.inbound[0].bound_port
    assert server.admin is not None
    status, body = await _get(server.admin.bound_port, "/ready")
    assert (status, body) == (200, b"LIVE\n")
    status, body = await _get(server.admin.bound_port, "/config_dump")
    dump = json.loads(body)
    assert dump["secrets"][0]["serial_number"] == ids.server.serial_hex
    assert dump["secrets"][0]["spiffe_id"] == SERVER_ID
    assert dump["listeners"][0]["mode"] == "STRICT"
    assert len(dump["secrets"][1]["roots"]) == 1

    ctx = client_context(ids.client, ids.ca.bundle)
    old_reader, old_writer = await open_tls(port, ctx)
    assert peer_serial(old_writer) == ids.server.leaf.serial_number

    # the agent writes new files (new key, new root added): the watcher applies them
    new_root = TestCA("cluster.local")
    rotated = ids.ca.issue_svid(SERVER_ID)
    _write_cert_dir(certs, rotated, ids.ca.bundle.merge(new_root.bundle).to_pem())
    await clock.wait_for_sleepers(1)
    clock.advance(1)
    await clock.wait_for_sleepers(1)  # the watcher went round once more: update applied
    _reader, writer = await open_tls(port, ctx)
    assert peer_serial(writer) == rotated.leaf.serial_number
    await close(writer)
    assert await exchange(old_reader, old_writer, b"old\n") == b"echo:old\n"
    status, body = await _get(server.admin.bound_port, "/config_dump")
    dump = json.loads(body)
    assert dump["secrets"][0]["serial_number"] == rotated.serial_hex
    assert len(dump["secrets"][1]["roots"]) == 2

    # a broken write is ignored: the current certificate stays
    (certs / "key.pem").write_bytes(b"not a key")
    clock.advance(1)
    await clock.wait_for_sleepers(1)
    assert server.tls.current.svid.serial_hex == rotated.serial_hex

    status, body = await _get(server.admin.bound_port, "/stats/prometheus")
    assert b"istio_tcp_connections_opened_total" in body

    # SIGTERM path: readiness drops, the open connection may finish, then it is closed
    drained = asyncio.ensure_future(server.shutdown())
    await close(old_writer)
    await asyncio.wait_for(drained, 5)
    assert not server.ready()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_shared_ticket_keys_change_at_the_epoch(tmp_path: Path, ids: Identities) -> None:
    certs = tmp_path / "certs"
    _write_cert_dir(certs, ids.server, ids.ca.bundle.to_pem())
    app = await LineApp().start()
    settings = _strict_port(certs, app.port, cert_watch_interval="1h")
    clock = FakeClock(datetime(2026, 1, 1, 0, 59, tzinfo=UTC))  # a minute before an epoch
    secret = b"k" * 32
    server = ProxyServer(settings, clock=clock, admin=False, ticket_secret=secret)
    await server.start()
    try:
        await clock.wait_for_sleepers(2)  # the certificate watcher and the ticket-key rotation
        first = ticket_keys(server.tls.current.server_tcp)
        assert first == derive_ticket_keys(secret, ids.ca.bundle, "tcp", ticket_epoch(clock.now()))
        clock.advance(59)
        await asyncio.sleep(0)
        assert ticket_keys(server.tls.current.server_tcp) == first
        clock.advance(1)
        await clock.wait_for_sleepers(2)  # it changed them and waits for the next epoch
        epoch = ticket_epoch(clock.now())
        for http, kind in ((False, "tcp"), (True, "http")):
            keys = ticket_keys(server.tls.current.server_context(http=http))
            assert keys == derive_ticket_keys(secret, ids.ca.bundle, kind, epoch)
        assert ticket_keys(server.tls.current.server_tcp) != first
    finally:
        await server.shutdown()


async def test_a_worker_is_deferred_to_only_while_it_serves(
    tmp_path: Path, ids: Identities
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()  # the agent has not written the certificates yet
    app = await LineApp().start()
    settings = _strict_port(certs, app.port, cert_watch_interval="1h", drain_duration="1s")
    load = WorkerLoad(2)
    other_worker = load.for_worker(1)
    listener._LOAD = load  # worker 0 of a --concurrency 2 run
    server = ProxyServer(settings, clock=FakeClock(), admin=False)
    try:
        await server.start()
        assert not server.ready()
        assert not other_worker.accepting(0)  # it would refuse every mTLS connection
        server.apply(ids.server, ids.ca.bundle)
        assert server.ready()
        assert other_worker.accepting(0)
    finally:
        await server.shutdown()
        listener._LOAD = None
    assert not other_worker.accepting(0)  # drained
    assert listener._BEAT is None


async def test_the_ticket_key_epoch_is_rechecked_every_minute_and_a_failure_is_survived(
    tmp_path: Path, ids: Identities, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "certs"
    _write_cert_dir(certs, ids.server, ids.ca.bundle.to_pem())
    app = await LineApp().start()
    settings = _strict_port(certs, app.port, cert_watch_interval="1h")
    clock = FakeClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))  # the next epoch in 59.5 min
    server = ProxyServer(settings, clock=clock, admin=False, ticket_secret=b"k" * 32)
    calls: list[datetime] = []

    def rotate(now: datetime) -> bool:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("libssl went away")
        return False

    monkeypatch.setattr(server.tls, "rotate_ticket_keys", rotate)
    await server.start()
    try:
        await clock.wait_for_sleepers(2)  # the certificate watcher and the ticket keys
        for minute in (1, 2):
            clock.advance(60)  # long before the epoch ends: the wall clock may have jumped
            await clock.wait_for_sleepers(2)
            assert len(calls) == minute  # checked, and the first one's failure was survived
    finally:
        await server.shutdown()
