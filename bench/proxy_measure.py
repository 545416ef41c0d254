"""The measurements of ``bench/proxy.py``, each against one proxy port.

The client programs it runs as child processes (``IDLE``: hold n mTLS connections;
``LATENCY``: an open-loop fixed-rate client), the load generators' runs (``openssl s_time``,
``ab``, ``curl``) and their parsing, and what is read from /proc: RSS, CPU time, a process tree,
the load average. The driver is ``bench/proxy.py``, what it starts ``bench/proxy_peers.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from proxy_peers import start

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

# Open-loop fixed-rate client: request i is due at t0 + i/rate; its latency runs from then.
LATENCY = r"""
import asyncio, json, ssl, sys, time, uvloop
port, rate, seconds, tls = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ctx = None
if tls != "-":
    cert, key, root = tls.split(",")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False
    ctx.load_verify_locations(root); ctx.load_cert_chain(cert, key)
REQ = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n"
async def main():
    idle = asyncio.Queue()
    for _ in range(32):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port, ssl=ctx))
    for _ in range(32):  # warm every connection once
        r, w = idle.get_nowait(); w.write(REQ)
        await r.readuntil(b"\r\n\r\n"); await r.readexactly(1024); idle.put_nowait((r, w))
    lat = []
    async def one(due):
        r, w = await idle.get()
        w.write(REQ)
        await r.readuntil(b"\r\n\r\n"); await r.readexactly(1024)
        lat.append(time.perf_counter() - due)
        idle.put_nowait((r, w))
    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.05
    tasks = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6
    print(json.dumps({"n": len(lat), "p50_us": round(q(0.50)), "p99_us": round(q(0.99))}))
uvloop.run(main())
"""


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    pids = [pid]
    for child in out.split():
        pids += tree(int(child))
    return pids


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (all threads) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def handshakes(port: int, d: Path, seconds: int, clients: int) -> tuple[float, int]:
    procs = [
        subprocess.Popen(
            [
                *("openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-www", "/"),
                *("-time", str(seconds), "-cert", str(d / "client.pem")),
                *("-key", str(d / "client-key.pem"), "-CAfile", str(d / "root.pem")),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(clients)
    ]
    total, count = 0.0, 0
    for p in procs:
        out, _ = p.communicate(timeout=seconds * 10 + 30)
        m = re.search(r"(\d+) connections in (\d+) real seconds", out)
        if m:
            total += int(m.group(1)) / max(int(m.group(2)), 1)
            count += int(m.group(1))
    return total, count


def keepalive(port: int, d: Path, seconds: int) -> tuple[float, int]:
    out = subprocess.run(
        [
            *("ab", "-q", "-k", "-c", "32", "-t", str(seconds), "-n", "10000000"),
            *("-E", str(d / "client-bundle.pem"), f"https://127.0.0.1:{port}/"),
        ],
        capture_output=True,
        text=True,
        timeout=seconds * 10 + 30,
    ).stdout
    m = re.search(r"Requests per second:\s+([\d.]+)", out)
    n = re.search(r"Complete requests:\s+(\d+)", out)
    return (float(m.group(1)) if m else 0.0), (int(n.group(1)) if n else 0)


def download(port: int, d: Path) -> float:
    out = subprocess.run(
        [
            *("curl", "-sk", "--http1.1", "--cert", str(d / "client.pem")),
            *("--key", str(d / "client-key.pem"), "-o", "/dev/null", "-w", "%{speed_download}"),
            f"https://127.0.0.1:{port}/big",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    ).stdout
    return float(out or 0) / 1e6


def latency(port: int, d: Path, rate: float, seconds: int, tls: bool) -> dict[str, int]:
    creds = ",".join(str(d / f) for f in ("client.pem", "client-key.pem", "root.pem"))
    out = subprocess.run(
        [sys.executable, "-c", LATENCY, str(port), str(rate), str(seconds), creds if tls else "-"],
        capture_output=True,
        text=True,
        timeout=seconds * 20 + 60,
    ).stdout
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def idle_memory(port: int, pids: list[int], d: Path, n: int) -> float:
    before = rss_kib(pids)
    proc = start(
        [
            *(sys.executable, "-c", IDLE, str(n), str(port)),
            *(str(d / "client.pem"), str(d / "client-key.pem"), str(d / "root.pem")),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(1)
    after = rss_kib(pids)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()
    time.sleep(1)
    return (after - before) / n
