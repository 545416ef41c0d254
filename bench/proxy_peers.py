"""The peers of ``bench/proxy.py``: what it starts and how it starts and stops it.

Holds the uvloop HTTP/1.1 app both proxies front (``APP``), the certificate material
(``write_material``), haproxy's configuration (``haproxy_config``, ``haproxy_maxconn``), the
``meshsec proxy run`` command line with the bench's mesh configuration (``CONFIG``,
``meshsec_proxy``), and the process helpers: every child in its own process group, all of them
stopped by ``stop_all``. The measurements are in ``bench/proxy_measure.py``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.testca import TestCA  # noqa: E402

CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256"
)
CLIENT_ID = "spiffe://cluster.local/ns/bench/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/bench/sa/server"

APP = r"""
import asyncio, sys, uvloop
BODY = b"x" * 1024
CHUNK = b"y" * (1 << 20)
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            if b" /big" in line:
                size = int(sys.argv[2]) << 20
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
                for _ in range(size >> 20):
                    writer.write(CHUNK)
                    await writer.drain()
            else:
                ka = line.endswith(b"HTTP/1.0") and b"keep-alive" in head.lower()
                writer.write(
                    b"HTTP/1.1 200 OK\r\n"
                    + (b"connection: keep-alive\r\n" if ka else b"")
                    + b"content-length: 1024\r\n\r\n" + BODY
                )
                await writer.drain()
            if line.endswith(b"HTTP/1.0") and b"keep-alive" not in head.lower():
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()
uvloop.run(main())
"""

CONFIG = """\
apiVersion: v1
kind: Namespace
metadata: {{name: istio-system}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata:
  name: server
  namespace: bench
  labels: {{app: server}}
spec:
  serviceAccount: server
  command: [python, app.py]
  ports:
  - {{port: {tcp}, protocol: tcp}}
  - {{port: {http}, protocol: http}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec:
  mtls: {{mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: bench-client-only, namespace: bench}}
spec:
  selector:
    matchLabels: {{app: server}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/bench/sa/client]
"""
ENTRY = "import sys; from meshsec.cli.main import entrypoint; sys.exit(entrypoint())"

_started: list[subprocess.Popen[bytes]] = []


def start(args: list[str], **kw: object) -> subprocess.Popen[bytes]:
    """A child in its own process group (stopped as a group, workers included)."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(args, start_new_session=True, **kw)  # type: ignore[call-overload]
    _started.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    _reap(proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a signalled group; SIGKILL it after 15 s."""
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stop_all() -> None:
    for proc in _started:  # signal every group first, so they stop in parallel
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in _started:
        _reap(proc)
    _started.clear()


def ensure_packages() -> None:
    missing = [
        p for p, exe in (("haproxy", "haproxy"), ("apache2-utils", "ab")) if not shutil.which(exe)
    ]
    if missing:
        subprocess.run(["apt-get", "update", "-q"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def meshsec_command(src: Path | None) -> tuple[list[str], dict[str, str]]:
    """The command (and environment) that runs ``meshsec`` from this tree or from ``src``."""
    env = {**os.environ, "MESHSEC_PROXY_INBOUND_HOST": "127.0.0.1"}
    if src is None:
        return [str(ROOT / ".venv/bin/meshsec")], env
    env["PYTHONPATH"] = str(src / "src")  # ahead of the venv's editable path to this tree
    return [sys.executable, "-c", ENTRY], env


def supports(flag: str, command: list[str], env: dict[str, str]) -> bool:
    out = subprocess.run(
        [*command, "proxy", "run", "--help"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
    ).stdout
    return flag in out


def write_material(d: Path) -> Path:
    ca = TestCA()
    server = ca.issue_svid(SERVER_ID)
    client = ca.issue_svid(CLIENT_ID)
    (d / "root.pem").write_bytes(ca.bundle.to_pem())
    (d / "client.pem").write_bytes(client.cert_chain_pem())
    (d / "client-key.pem").write_bytes(client.private_key_pem())
    (d / "client-bundle.pem").write_bytes(client.cert_chain_pem() + client.private_key_pem())
    certs = d / "certs"
    certs.mkdir()
    (certs / "cert-chain.pem").write_bytes(server.cert_chain_pem())
    (certs / "key.pem").write_bytes(server.private_key_pem())
    (certs / "root-cert.pem").write_bytes(ca.bundle.to_pem())
    (d / "haproxy.pem").write_bytes(server.cert_chain_pem() + server.private_key_pem())
    return certs


def haproxy_maxconn(idle: int) -> int:
    """haproxy's ``maxconn`` for ``idle`` held connections; raises this process's (and so its
    children's) open-file limit to hold it."""
    # haproxy needs 2 fds per connection and refuses a maxconn the fd limit cannot hold
    maxconn = max(idle * 2, 4000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, maxconn * 2 + 1000) if hard != resource.RLIM_INFINITY else maxconn * 2 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return min(maxconn, (want - 1000) // 2)


def haproxy_config(
    d: Path, *, maxconn: int, workers: int, tcp: int, http: int, app_port: int
) -> str:
    """haproxy with ``nbthread workers``: mTLS ``mode tcp`` on ``tcp`` and ``mode http`` on
    ``http``, both in front of the app; certificates from ``write_material(d)``."""
    return (
        f"global\n  maxconn {maxconn}\n  nbthread {workers}\n  ssl-default-bind-ciphers {CIPHERS}\n"
        "  ssl-default-bind-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3\n"
        "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 1h\n  timeout server 1h\n"
        f"frontend mtls\n  bind 127.0.0.1:{tcp} ssl crt {d / 'haproxy.pem'} "
        f"ca-file {d / 'root.pem'} verify required alpn istio-peer-exchange,istio,http/1.1\n"
        "  default_backend app\n"
        f"backend app\n  server app 127.0.0.1:{app_port}\n"
        # the L7 peer of meshsec's HTTP port: every request head parsed, an inbound XFCC
        # replaced by one built from the verified client certificate, denied without one
        f"frontend mtls_http\n  mode http\n  timeout http-request 10s\n  option http-keep-alive\n"
        f"  bind 127.0.0.1:{http} ssl crt {d / 'haproxy.pem'} "
        f"ca-file {d / 'root.pem'} verify required alpn istio-peer-exchange,istio,http/1.1\n"
        "  http-request deny deny_status 403 unless { ssl_c_used } { ssl_c_verify 0 }\n"
        "  http-request del-header x-forwarded-client-cert\n"
        '  http-request set-header x-forwarded-client-cert "Hash=%[ssl_c_sha1,hex];'
        'Subject=\\"%[ssl_c_s_dn]\\""\n'
        "  default_backend app_http\n"
        f"backend app_http\n  mode http\n  server app 127.0.0.1:{app_port}\n"
    )


class MeshsecProxy(NamedTuple):
    """One ``meshsec proxy run`` the bench starts, and what this build of it supports."""

    command: list[str]
    env: dict[str, str]
    policy: str  # the policy it enforces, in words for the recorded section
    concurrent: bool  # this build has ``--concurrency``: it runs the bench's worker count


def meshsec_proxy(
    src: Path | None, certs: Path, mesh: Path, *, tcp: int, http: int, app_port: int, workers: int
) -> MeshsecProxy:
    """``meshsec proxy run`` from this tree or ``src``: mTLS on ``tcp`` (TCP) and ``http`` (HTTP)
    in front of the app, with the bench's policy (``CONFIG``, written to ``mesh``) when the build
    has ``--config-dir``, and ``workers`` processes when it has ``--concurrency``."""
    cmd, env = meshsec_command(src)
    meshsec = [*cmd, "proxy", "run", "--cert-dir", str(certs)]
    meshsec += ["--admin-addr", "", "--log-level", "warning"]
    policy = "none (no --config-dir in this build: every request allowed by the no-policy hook)"
    if supports("--config-dir", cmd, env):
        mesh.mkdir()
        (mesh / "bench.yaml").write_text(CONFIG.format(tcp=tcp, http=http))
        meshsec += ["--config-dir", str(mesh), "--workload", "server.bench"]
        meshsec += ["--inbound", f"{tcp}:{app_port}:tcp"]
        meshsec += ["--inbound", f"{http}:{app_port}:http"]
        policy = "STRICT PeerAuthentication + AuthorizationPolicy ALLOW the client principal"
    else:
        meshsec += ["--inbound", f"{tcp}:{app_port}:STRICT"]
        meshsec += ["--inbound", f"{http}:{app_port}:STRICT:http"]
    concurrent = supports("--concurrency", cmd, env)
    if concurrent:
        meshsec += ["--concurrency", str(workers)]
    return MeshsecProxy(meshsec, env, policy, concurrent)
