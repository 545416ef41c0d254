"""meshsec proxy vs haproxy, same mTLS termination, same app, same run.

    .venv/bin/python bench/proxy.py [--big-mib 1024] [--seconds 5] [--idle 2000]

Installs ``haproxy`` and ``apache2-utils`` (Debian packages) when missing. Both proxies terminate
mTLS (client certificate required, verified against the same root; TLS 1.2-1.3, the Istio cipher
list) in front of one uvloop HTTP/1.1 app, meshsec on a STRICT TCP port and a STRICT HTTP port
(per-request parsing, authorization hook, XFCC), haproxy in ``mode tcp``. Measures:

* new mTLS connections/s: ``openssl s_time -new -www /`` (full handshake + one request), one
  client process per core;
* keep-alive 1 KiB requests/s: ``ab -k -E client.pem -c 32``;
* MB/s of one large download: ``curl --cert`` of ``--big-mib`` MiB;
* memory per idle mTLS connection: RSS delta of the proxy process(es) / N held connections.

Prints one JSON line per proxy and a ratio line; never part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.testca import TestCA  # noqa: E402

CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256"
)

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

IDLE = r"""
import asyncio, ssl, sys, uvloop
n, port, cert, key, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False
ctx.load_verify_locations(root); ctx.load_cert_chain(cert, key)
async def main():
    held = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        w.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"); await w.drain()
        await r.readuntil(b"\r\n\r\n"); await r.readexactly(1024)
        held.append(w)
    print("open", flush=True)
    await asyncio.sleep(3600)
uvloop.run(main())
"""


def ensure_packages() -> None:
    missing = [
        p for p, exe in (("haproxy", "haproxy"), ("apache2-utils", "ab")) if not shutil.which(exe)
    ]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def handshakes(port: int, d: Path, seconds: int) -> float:
    procs = [
        subprocess.Popen(
            [
                "openssl",
                "s_time",
                "-connect",
                f"127.0.0.1:{port}",
                "-new",
                "-www",
                "/",
                "-time",
                str(seconds),
                "-cert",
                str(d / "client.pem"),
                "-key",
                str(d / "client-key.pem"),
                "-CAfile",
                str(d / "root.pem"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(os.cpu_count() or 1)
    ]
    total = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=seconds * 10 + 30)
        m = re.search(r"(\d+) connections in (\d+) real seconds", out)
        if m:
            total += int(m.group(1)) / max(int(m.group(2)), 1)
    return total


def keepalive(port: int, d: Path, seconds: int) -> float:
    out = subprocess.run(
        [
            "ab",
            "-q",
            "-k",
            "-c",
            "32",
            "-t",
            str(seconds),
            "-n",
            "10000000",
            "-E",
            str(d / "client-bundle.pem"),
            f"https://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds * 10 + 30,
    ).stdout
    m = re.search(r"Requests per second:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def download(port: int, d: Path) -> float:
    out = subprocess.run(
        [
            "curl",
            "-sk",
            "--http1.1",
            "--cert",
            str(d / "client.pem"),
            "--key",
            str(d / "client-key.pem"),
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download}",
            f"https://127.0.0.1:{port}/big",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    return float(out or 0) / 1e6


def idle_memory(port: int, pids: list[int], d: Path, n: int) -> float:
    before = rss_kib(pids)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            IDLE,
            str(n),
            str(port),
            str(d / "client.pem"),
            str(d / "client-key.pem"),
            str(d / "root.pem"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(1)
    after = rss_kib(pids)
    proc.terminate()
    proc.wait()
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--idle", type=int, default=2000)
    args = parser.parse_args()
    ensure_packages()
    d = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    ca = TestCA()
    server = ca.issue_svid("spiffe://cluster.local/ns/bench/sa/server")
    client = ca.issue_svid("spiffe://cluster.local/ns/bench/sa/client")
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

    app_port, ms_tcp, ms_http, hp_port = free_port(), free_port(), free_port(), free_port()
    (d / "haproxy.cfg").write_text(
        f"global\n  maxconn 8000\n  nbthread 1\n  ssl-default-bind-ciphers {CIPHERS}\n"
        "  ssl-default-bind-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3\n"
        "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 1h\n  timeout server 1h\n"
        f"frontend mtls\n  bind 127.0.0.1:{hp_port} ssl crt {d / 'haproxy.pem'} "
        f"ca-file {d / 'root.pem'} verify required alpn istio-peer-exchange,istio,http/1.1\n"
        "  default_backend app\n"
        f"backend app\n  server app 127.0.0.1:{app_port}\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", APP, str(app_port), str(args.big_mib)]),
        subprocess.Popen(["haproxy", "-f", str(d / "haproxy.cfg")]),
        subprocess.Popen(
            [
                str(ROOT / ".venv/bin/meshsec"),
                "proxy",
                "run",
                "--cert-dir",
                str(certs),
                "--inbound",
                f"{ms_tcp}:{app_port}:STRICT",
                "--inbound",
                f"{ms_http}:{app_port}:STRICT:http",
                "--admin-addr",
                "",
                "--log-level",
                "warning",
            ],
            env={**os.environ, "MESHSEC_PROXY_INBOUND_HOST": "127.0.0.1"},
        ),
    ]
    try:
        for port in (app_port, hp_port, ms_tcp, ms_http):
            wait_port(port)
        results = {}
        for name, port, pids in (
            ("haproxy", hp_port, [procs[1].pid, *children(procs[1].pid)]),
            ("meshsec-tcp", ms_tcp, [procs[2].pid]),
            ("meshsec-http", ms_http, [procs[2].pid]),
        ):
            results[name] = {
                "handshakes_per_s": round(handshakes(port, d, args.seconds), 1),
                "keepalive_req_per_s": round(keepalive(port, d, args.seconds), 1),
                "download_MB_per_s": round(download(port, d), 1),
                "idle_KiB_per_conn": round(idle_memory(port, pids, d, args.idle), 1),
            }
            print(json.dumps({"proxy": name, **results[name]}), flush=True)
        base = results["haproxy"]
        for name in ("meshsec-tcp", "meshsec-http"):
            print(
                json.dumps(
                    {
                        "ratio_to_haproxy": name,
                        **{
                            k: round(v / base[k], 2) if base[k] else None
                            for k, v in results[name].items()
                        },
                    }
                )
            )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
