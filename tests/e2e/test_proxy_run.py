"""``meshsec proxy run --config-dir DIR --workload NAME.NAMESPACE`` as a real process.

Two workers (``--concurrency 2``) in front of a small HTTP application, certificates from a cert
directory, policy from a directory of Istio YAML: mTLS callers allowed or denied by principal,
a session ticket resuming on either worker, a PeerAuthentication edit applied by every worker,
a broken edit rejected with the last good policy kept, ``/metrics`` summed over both workers,
SIGTERM stops the parent and its workers with exit code 0 and removes the workers' shared
metrics directory.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.process_wait import wait_while_running
from tests.fakes.ca_process import MESHSEC, run_meshsec
from tests.testca import TestCA

pytestmark = pytest.mark.e2e

SERVER_ID = "spiffe://cluster.local/ns/backend/sa/server"
CLIENT_ID = "spiffe://cluster.local/ns/frontend/sa/client"
CONFIG = """
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {{name: server, namespace: backend, labels: {{app: server}}}}
spec: {{serviceAccount: server, ports: [{{port: {port}, protocol: http}}]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: callers, namespace: backend}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/frontend/sa/client]}}}}]
"""
PEER_AUTHN = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: backend}}
spec: {{mtls: {{mode: {mode}}}}}
"""


class _App(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"xfcc={self.headers.get('x-forwarded-client-cert', '')}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _admin(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _get(port: int, ctx: ssl.SSLContext | None) -> tuple[int, str]:
    """One request over a fresh connection; (0, error) when the connection fails."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="server") if ctx else raw as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: server\r\nconnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except (OSError, ssl.SSLError) as exc:
        return 0, str(exc)
    if not data:
        return 0, "closed without a response"
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def _session(port: int, ctx: ssl.SSLContext) -> ssl.SSLSession:
    """The TLS 1.3 session (ticket) of one request's connection."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="server") as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nhost: server\r\nconnection: close\r\n\r\n")
        while sock.recv(65536):  # the ticket comes with the response
            pass
        session = sock.session
    assert session is not None
    assert session.has_ticket
    return session


def _resumes(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession) -> bool:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="server", session=session) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nhost: server\r\nconnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
        return sock.session_reused


def _context(ca: TestCA, spiffe_id: str, tmp: Path) -> ssl.SSLContext:
    svid = ca.issue_svid(spiffe_id)
    chain, key = tmp / f"{svid.serial_hex}.pem", tmp / f"{svid.serial_hex}.key"
    chain.write_bytes(svid.cert_chain_pem())
    key.write_bytes(svid.private_key_pem())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # mesh certificates carry SPIFFE IDs, not host names
    ctx.load_verify_locations(cadata=ca.root_pem.decode())
    ctx.load_cert_chain(chain, key)
    return ctx


def _wait(predicate: Any, what: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> Any:
    return wait_while_running(
        predicate,
        what,
        proc,
        timeout=timeout,
        exited=lambda: f"proxy exited {proc.returncode} waiting for {what} (see its log)",
    )


def _requests(families: Iterable[Metric], code: str) -> float:
    """The sum of ``istio_requests_total`` samples with ``response_code`` ``code``."""
    return sum(
        float(s.value)
        for family in families
        for s in family.samples
        if s.name == "istio_requests_total" and s.labels.get("response_code") == code
    )


def _merge(counter_file: Path) -> Iterable[Metric]:
    """One worker's counters, read from its file as prometheus_client's collector reads them."""
    merged: Iterable[Metric] = MultiProcessCollector.merge([str(counter_file)])  # type: ignore[no-untyped-call]
    return merged


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _socket_inodes(pid: int) -> set[str]:
    fds = Path(f"/proc/{pid}/fd")
    links = (os.readlink(fd) for fd in fds.iterdir())
    return {link for link in links if link.startswith("socket:")}


def test_policy_aware_proxy_with_two_workers(tmp_path: Path, app: int) -> None:
    ca = TestCA("cluster.local")
    certs = tmp_path / "certs"
    certs.mkdir()
    svid = ca.issue_svid(SERVER_ID)
    (certs / "cert-chain.pem").write_bytes(svid.cert_chain_pem())
    (certs / "key.pem").write_bytes(svid.private_key_pem())
    (certs / "root-cert.pem").write_bytes(ca.root_pem)
    config = tmp_path / "config"
    config.mkdir()
    port, admin = _free_port(), _free_port()
    (config / "workloads.yaml").write_text(CONFIG.format(port=port))
    (config / "pa.yaml").write_text(PEER_AUTHN.format(mode="STRICT"))
    client = _context(ca, CLIENT_ID, tmp_path)
    intruder = _context(ca, "spiffe://cluster.local/ns/other/sa/intruder", tmp_path)

    scratch = tmp_path / "tmp"  # the proxy's TMPDIR: where its shared metrics directory goes
    scratch.mkdir()
    log_path = tmp_path / "proxy.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            *MESHSEC,
            "proxy",
            "run",
            "--config-dir",
            str(config),
            "--workload",
            "server.backend",
            "--cert-dir",
            str(certs),
            "--inbound",
            f"{port}:{app}:http",
            "--admin",
            f"127.0.0.1:{admin}",
            "--concurrency",
            "2",
            "--drain-duration",
            "2s",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            "MESHSEC_PROXY_CONFIG_POLL_INTERVAL": "200ms",
            "PATH": "/usr/bin:/bin",
            "TMPDIR": str(scratch),
        },
    )
    try:
        _wait(lambda: _admin(admin, "/ready")[0] == 200, "/ready", proc)
        assert len(_children(proc.pid)) == 2
        dump = json.loads(_admin(admin, "/config_dump")[1])
        assert dump["workload"] == "backend/server"
        assert dump["ports"] == [{"port": port, "mode": "STRICT", "protocol": "http"}]
        assert dump["secrets"][0]["serial_number"] == svid.serial_hex

        # both workers accept on the one listening socket the parent bound before forking
        # (whichever is free takes the next connection), not on two SO_REUSEPORT sockets
        first, second = (_socket_inodes(pid) for pid in _children(proc.pid))
        assert first & second, "the workers hold no listening socket in common"
        allowed, denied = 24, 6
        for _ in range(allowed):
            status, body = _get(port, client)
            assert status == 200
            assert f"URI={CLIENT_ID}" in body
        for _ in range(denied):
            assert _get(port, intruder)[0] == 403
        assert _get(port, None)[0] == 0  # STRICT: plaintext refused

        # /metrics is the sum over both workers (Envoy sums its worker threads), each of which
        # served some: its own counter file in the private shared directory says how many.
        # A worker tallies a connection's requests and writes them to its file when the
        # connection closes (and at most FLUSH_INTERVAL later while it stays open): the last
        # close may still be on its way when the client has read the response.
        (shared,) = scratch.glob("meshsec-proxy-metrics-*")
        assert stat.S_IMODE(shared.stat().st_mode) == 0o700

        def per_worker_counts() -> dict[int, float]:
            return {
                pid: _requests(_merge(shared / f"counter_{pid}.db"), "200")
                for pid in _children(proc.pid)
                if (shared / f"counter_{pid}.db").exists()
            }

        per_worker = _wait(
            lambda: (c := per_worker_counts()) and sum(c.values()) == allowed and c, "flush", proc
        )
        assert sum(per_worker.values()) == allowed, per_worker
        _wait(
            lambda: (
                _requests(text_string_to_metric_families(_admin(admin, "/metrics")[1]), "403")
                == denied
            ),
            "the 403s in /metrics",
            proc,
        )
        for path in ("/metrics", "/stats/prometheus"):
            status, text = _admin(admin, path)
            assert status == 200
            families = list(text_string_to_metric_families(text))
            assert _requests(families, "200") == allowed, text
            assert _requests(families, "403") == denied, text

        # one session ticket resumes on whichever worker takes the connection (the workers'
        # ticket keys come from one secret the parent made before forking)
        session = _session(port, client)
        assert all(_resumes(port, client, session) for _ in range(8))

        # PERMISSIVE: every worker applies it (plaintext then passes the mode; the
        # AuthorizationPolicy still wants the client's principal: 403, not a refused connection)
        (config / "pa.yaml").write_text(PEER_AUTHN.format(mode="PERMISSIVE"))
        _wait(lambda: all(_get(port, None)[0] == 403 for _ in range(6)), "PERMISSIVE", proc)

        # a broken edit is rejected (file:line in the dump) and the last good policy stays
        (config / "pa.yaml").write_text(PEER_AUTHN.format(mode="STRIKT"))
        rejected = _wait(
            lambda: json.loads(_admin(admin, "/config_dump")[1])["rejected_edit"], "reject", proc
        )
        assert "pa.yaml:" in rejected[0]
        assert _get(port, None)[0] == 403
        assert _get(port, client)[0] == 200
    finally:
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code: int | None
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        _kill_leftovers(proc, workers)
        log.close()
    assert code == 0, log_path.read_text()
    assert not [pid for pid in workers if _is_worker(pid)]
    assert list(scratch.iterdir()) == []  # the shared metrics directory is removed on exit


def _is_worker(pid: int) -> bool:
    try:
        return b"proxy" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_leftovers(proc: subprocess.Popen[str], workers: list[int]) -> None:
    """Whatever did not stop on SIGTERM (a failing test must not leave processes behind)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for pid in workers:
        if _is_worker(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_mode_in_inbound_with_config_dir_is_refused(tmp_path: Path) -> None:
    result = run_meshsec(
        "proxy",
        "run",
        "--config-dir",
        str(tmp_path),
        "--workload",
        "server.backend",
        "--inbound",
        "15006:8080:STRICT",
    )
    assert result.returncode == 2
    assert "drop ':STRICT'" in result.stderr
