"""meshsec proxy vs haproxy, same mTLS termination, same app, same run, all cores on both sides.

    .venv/bin/python bench/proxy.py [--seconds 5] [--big-mib 1024] [--idle 2000] [--rate 1000]
                                    [--workers N] [--record]
                                    [--only handshakes,keepalive,...] [--baseline-src DIR]

Installs ``haproxy`` and ``apache2-utils`` (Debian packages) when missing. Both proxies terminate
mTLS (client certificate required, verified against the same root; TLS 1.2-1.3, the Istio cipher
list) in front of one uvloop HTTP/1.1 app. haproxy runs with ``nbthread N``, one ``mode tcp``
frontend (the peer of meshsec's TCP port) and one ``mode http`` frontend that replaces XFCC
from the verified client certificate (the peer of meshsec's HTTP port);
meshsec runs ``meshsec proxy run --concurrency N`` (N = CPUs) with **policy enforcement on**:
``--config-dir`` holding a mesh-wide STRICT PeerAuthentication and an AuthorizationPolicy that
ALLOWs the bench client's principal, one STRICT TCP port and one STRICT HTTP port (per-request
head parse, authorization, XFCC, metrics). Measures, per proxy:

* new mTLS connections/s: ``openssl s_time -new -www /`` (full handshake + one request), one
  client process per CPU;
* keep-alive 1 KiB requests/s: ``ab -k -E client.pem -c 32``;
* MB/s of one ``--big-mib`` download: ``curl --http1.1 --cert``;
* p50/p99 latency at a fixed request rate: an open-loop uvloop client (requests scheduled at
  ``--rate``/s over 32 keep-alive mTLS connections; latency counted from the scheduled time, so
  queueing is not hidden), the same client straight to the app (plaintext) in the same run gives
  the baseline; "added" = through the proxy minus direct;
* memory per idle mTLS connection: RSS delta of the proxy process(es) / ``--idle`` held
  connections (each did one request).

Prints one JSON line per proxy and ratio lines; ``--record`` also rewrites the "Proxy" section
of docs/benchmarks.md. Never part of the test run. Every process it starts is stopped on exit.

For iterating on one cost: ``--only handshakes`` (any of ``latency, handshakes, keepalive,
download, idle``, comma-separated) runs just those measurements; ``--baseline-src DIR`` also
runs the meshsec of another source tree (e.g. ``git worktree add /tmp/base <commit>``; its
``src`` is put first on the path) as ``base-tcp`` / ``base-http`` in the same interleaved rounds,
and prints current / baseline ratios next to the haproxy ones (an A/B under the same load).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
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


MEASUREMENTS = ("latency", "handshakes", "keepalive", "download", "idle")
ENTRY = "import sys; from meshsec.cli.main import entrypoint; sys.exit(entrypoint())"


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


def run(args: argparse.Namespace) -> dict[str, object]:
    d = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    certs = write_material(d)
    app_port, ms_tcp, ms_http, hp_port = free_port(), free_port(), free_port(), free_port()
    hp_http = free_port()
    workers = args.workers
    # haproxy needs 2 fds per connection and refuses a maxconn the fd limit cannot hold
    maxconn = max(args.idle * 2, 4000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, maxconn * 2 + 1000) if hard != resource.RLIM_INFINITY else maxconn * 2 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    maxconn = min(maxconn, (want - 1000) // 2)
    (d / "haproxy.cfg").write_text(
        f"global\n  maxconn {maxconn}\n  nbthread {workers}\n  ssl-default-bind-ciphers {CIPHERS}\n"
        "  ssl-default-bind-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3\n"
        "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 1h\n  timeout server 1h\n"
        f"frontend mtls\n  bind 127.0.0.1:{hp_port} ssl crt {d / 'haproxy.pem'} "
        f"ca-file {d / 'root.pem'} verify required alpn istio-peer-exchange,istio,http/1.1\n"
        "  default_backend app\n"
        f"backend app\n  server app 127.0.0.1:{app_port}\n"
        # the L7 peer of meshsec's HTTP port: every request head parsed, an inbound XFCC
        # replaced by one built from the verified client certificate, denied without one
        f"frontend mtls_http\n  mode http\n  timeout http-request 10s\n  option http-keep-alive\n"
        f"  bind 127.0.0.1:{hp_http} ssl crt {d / 'haproxy.pem'} "
        f"ca-file {d / 'root.pem'} verify required alpn istio-peer-exchange,istio,http/1.1\n"
        "  http-request deny deny_status 403 unless { ssl_c_used } { ssl_c_verify 0 }\n"
        "  http-request del-header x-forwarded-client-cert\n"
        '  http-request set-header x-forwarded-client-cert "Hash=%[ssl_c_sha1,hex];'
        'Subject=\\"%[ssl_c_s_dn]\\""\n'
        "  default_backend app_http\n"
        f"backend app_http\n  mode http\n  server app 127.0.0.1:{app_port}\n"
    )
    policy = ""
    procs = 1
    commands: dict[str, tuple[list[str], dict[str, str]]] = {}
    sources: list[tuple[str, Path | None]] = [("meshsec", None)]
    if args.baseline_src is not None:
        sources.append(("base", args.baseline_src))
    ports: dict[str, tuple[int, int]] = {}
    for label, src in sources:
        tcp, http = (ms_tcp, ms_http) if src is None else (free_port(), free_port())
        ports[label] = (tcp, http)
        cmd, env = meshsec_command(src)
        mesh = d / f"mesh-{label}"
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
        if supports("--concurrency", cmd, env):
            meshsec += ["--concurrency", str(workers)]
            procs = workers
        commands[label] = (meshsec, env)
    app = start([sys.executable, "-c", APP, str(app_port), str(args.big_mib)])
    haproxy_cmd = ["haproxy", "-f", str(d / "haproxy.cfg")]
    haproxy = start(haproxy_cmd)
    proxies = {label: start(cmd, env=env) for label, (cmd, env) in commands.items()}
    listening = [(app_port, app), (hp_port, haproxy), (hp_http, haproxy)]
    for label, proc in proxies.items():
        listening += [(ports[label][0], proc), (ports[label][1], proc)]
    for port, proc in listening:
        wait_port(port, proc)
    time.sleep(1)  # let every worker bind
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    targets = [
        ("haproxy", hp_port, haproxy.pid),
        ("haproxy-http", hp_http, haproxy.pid),
        ("meshsec-tcp", ms_tcp, proxies["meshsec"].pid),
        ("meshsec-http", ms_http, proxies["meshsec"].pid),
    ]
    if "base" in proxies:
        targets += [
            ("base-tcp", ports["base"][0], proxies["base"].pid),
            ("base-http", ports["base"][1], proxies["base"].pid),
        ]
    labels = {"haproxy": None, "haproxy-http": None, "meshsec-tcp": "meshsec"}
    labels |= {"meshsec-http": "meshsec", "base-tcp": "base", "base-http": "base"}
    if args.serve:  # start everything, say where, wait: for s_client / py-spy by hand
        where = {name: {"port": port, "pids": tree(pid)} for name, port, pid in targets}
        print(json.dumps({"serving": where, "dir": str(d)}), flush=True)
        time.sleep(args.serve)
        shutil.rmtree(d, ignore_errors=True)
        return {}
    # rounds interleave the proxies, so a load change on the shared machine hits all of them
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
    directs: list[dict[str, int]] = []
    for round_ in range(args.rounds):
        direct = {"p50_us": 0, "p99_us": 0}
        if "latency" in args.only:
            direct = latency(app_port, d, args.rate, args.seconds, tls=False)
        directs.append(direct)
        for name, port, root_pid in targets:
            sample = measure(args, d, port, tree(root_pid), direct)
            samples[name].append(sample)
            print(json.dumps({"round": round_, "proxy": name, **sample}), flush=True)
    results = {name: median_of(samples[name]) for name, _, _ in targets}
    direct = {k: int(v) for k, v in median_of(directs).items()}  # type: ignore[arg-type]
    # idle memory last, each in a freshly started proxy: a process that already served other
    # connections reuses their freed memory and would look cheaper than it is
    stop(haproxy)
    for proc in proxies.values():
        stop(proc)
    for name, port, _ in targets:
        if "idle" not in args.only:
            break
        label = labels[name]
        cmd, env = (haproxy_cmd, dict(os.environ)) if label is None else commands[label]
        fresh = start(cmd, env=env)
        wait_port(port, fresh)
        time.sleep(1)  # let every worker bind and settle
        results[name]["idle_KiB_per_conn"] = round(
            idle_memory(port, tree(fresh.pid), d, args.idle), 1
        )
        stop(fresh)
        print(json.dumps({"proxy": name, **results[name]}), flush=True)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    ratios: dict[str, dict[str, float | None]] = {}
    peers = {"meshsec-tcp": "haproxy", "meshsec-http": "haproxy-http"}
    peers |= {"base-tcp": "haproxy", "base-http": "haproxy-http"}
    for name, _, _ in targets:
        if name in peers:
            ratios[name] = ratio(results[name], results[peers[name]], cpu=False)
            with_cpu = ratio(results[name], results[peers[name]])
            print(json.dumps({"ratio_to_haproxy": name, **with_cpu}), flush=True)
    for name, base in (("meshsec-tcp", "base-tcp"), ("meshsec-http", "base-http")):
        if base in results:
            vs_base = ratio(results[name], results[base])
            print(json.dumps({"ratio_to_baseline": name, **vs_base}), flush=True)
    shutil.rmtree(d, ignore_errors=True)
    return {
        "results": results,
        "ratios": ratios,
        "direct": direct,
        "policy": policy,
        "workers": workers,
        "meshsec_processes": procs,
        "uptime": (uptime_before, uptime_after),
    }


def measure(
    args: argparse.Namespace, d: Path, port: int, pids: list[int], direct: dict[str, int]
) -> dict[str, float]:
    """The measurements ``args.only`` names, on one proxy port."""
    out: dict[str, float] = {}
    if "latency" in args.only:
        lat = latency(port, d, args.rate, args.seconds, tls=True)
        out["p50_added_us"] = lat["p50_us"] - direct["p50_us"]
        out["p99_added_us"] = lat["p99_us"] - direct["p99_us"]
    if "handshakes" in args.only:
        cpu0 = cpu_s(pids)
        hs_rate, hs_count = handshakes(port, d, args.seconds, args.workers)
        cpu1 = cpu_s(pids)
        out["handshakes_per_s"] = round(hs_rate, 1)
        out["cpu_us_per_handshake"] = round((cpu1 - cpu0) / max(hs_count, 1) * 1e6)
    if "keepalive" in args.only:
        cpu1 = cpu_s(pids)
        ka_rate, ka_count = keepalive(port, d, args.seconds)
        cpu2 = cpu_s(pids)
        out["keepalive_req_per_s"] = round(ka_rate, 1)
        out["cpu_us_per_request"] = round((cpu2 - cpu1) / max(ka_count, 1) * 1e6, 1)
    if "download" in args.only:
        out["download_MB_per_s"] = round(download(port, d), 1)
    out["load"] = float(load())
    return out


def ratio(
    result: dict[str, float], base: dict[str, float], *, cpu: bool = True
) -> dict[str, float | None]:
    """``result / base`` per figure (CPU per op only when ``cpu``; never load or latency)."""
    return {
        k: round(v / base[k], 2) if base.get(k) else None
        for k, v in result.items()
        if k not in ("load", "p50_added_us", "p99_added_us") and (cpu or not k.startswith("cpu_"))
    }


def median_of(samples: list[dict[str, float]] | list[dict[str, int]]) -> dict[str, float]:
    keys = samples[0].keys()
    return {k: statistics.median(s[k] for s in samples) for k in keys}  # type: ignore[misc]


def markdown(run_: dict[str, object], args: argparse.Namespace, command: str) -> str:
    res: dict[str, dict[str, float]] = run_["results"]  # type: ignore[assignment]
    ratios: dict[str, dict[str, float | None]] = run_["ratios"]  # type: ignore[assignment]
    direct: dict[str, int] = run_["direct"]  # type: ignore[assignment]
    before, after = run_["uptime"]  # type: ignore[misc]
    hp_version = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    hp_version = hp_version.splitlines()[0] if hp_version else "haproxy"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def cell(name: str, key: str, fmt: str = "{:,.0f}") -> str:
        value = fmt.format(res[name][key])
        ratio = ratios.get(name, {}).get(key)
        return f"{value} ({ratio:.2f}×)" if ratio is not None else value

    rows = [
        "| | handshakes/s (`s_time -new -www`) | keep-alive 1 KiB req/s (`ab -k -c 32`) "
        "| download MB/s (`curl --http1.1`) | idle KiB/conn | latency added p50 / p99 "
        f"at {args.rate:,.0f} req/s | CPU µs per handshake / per keep-alive request |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {
        "haproxy": f"haproxy `nbthread {run_['workers']}`, `mode tcp`",
        "meshsec-tcp": "meshsec STRICT TCP port (ratio to haproxy `mode tcp`)",
        "haproxy-http": "haproxy `mode http` (head parse, XFCC set, deny without a verified cert)",
        "meshsec-http": "meshsec STRICT HTTP port (head parse, authz, XFCC, metrics per request; "
        "ratio to haproxy `mode http`)",
    }
    for name in ("haproxy", "meshsec-tcp", "haproxy-http", "meshsec-http"):
        r = res[name]
        rows.append(
            f"| {labels[name]} | {cell(name, 'handshakes_per_s')} "
            f"| {cell(name, 'keepalive_req_per_s')} | {cell(name, 'download_MB_per_s')} "
            f"| {cell(name, 'idle_KiB_per_conn', '{:.1f}')} "
            f"| {r['p50_added_us']:,.0f} µs / {r['p99_added_us']:,.0f} µs "
            f"| {r['cpu_us_per_handshake']:,.0f} / {r['cpu_us_per_request']:,.1f} |"
        )
    table = "\n".join(rows)
    cpus = os.cpu_count() or 1
    peak = max(r["load"] for r in res.values())
    # the bench's own clients and proxies keep every CPU busy (load ≈ CPUs); well above that,
    # other jobs shared the machine
    warning = (
        f"\n**Not an acceptance run: the load average reached {peak:.1f} on {cpus} CPUs while it "
        "ran (other jobs on the machine besides the bench's own clients and proxies), so the "
        "rates and latencies are mostly noise; the CPU per handshake / request columns hold up "
        "best.**\n"
        if peak > 1.5 * cpus
        else ""
    )
    return f"""## Proxy

### `bench/proxy.py` — side by side with haproxy (same run, same app, same certificates)

`{command}` — recorded {when}; {hp_version.strip()}.
Load: before `{before}`; after `{after}`.
{warning}
Both sides use every core: haproxy `nbthread {run_["workers"]}`; meshsec
`meshsec proxy run --concurrency {run_["workers"]}` ({run_["meshsec_processes"]} worker
process(es) on SO_REUSEPORT listeners). Both terminate mTLS with `verify required`, the same
root, ciphers and ALPN. Policy enforcement on the meshsec side: {run_["policy"]}.
Medians of {args.rounds} interleaved rounds of {args.seconds} s per measurement.
Ratios are meshsec / its haproxy peer — the TCP port to `mode tcp`, the HTTP port to
`mode http`, which does per-request work of the same kind (higher is better, except memory:
lower is better; target ≥ 1.0× on the three rates, ≤ 1.5× memory).

{table}

Latency: an open-loop client (`--rate` requests/s scheduled over 32 keep-alive mTLS connections,
latency counted from the scheduled send time) measured straight to the app (plaintext) in the
same run: p50 {direct["p50_us"]:,} µs, p99 {direct["p99_us"]:,} µs; "added" is through the proxy
minus that, so it includes the client's own TLS work. Idle memory: RSS delta of all proxy
processes / {args.idle} connections that each completed one request. CPU per handshake /
request: user+system CPU of the proxy process(es) over the `s_time` / `ab` run divided by
the connections / requests completed — less sensitive to the machine's load than the rates.

Notes. The TLS layer is `meshsec.proxy.tls_transport` (OpenSSL through `ssl.MemoryBIO` on plain
uvloop transports): it sends OpenSSL's alert when a handshake fails and supports TLS half-close,
which the loop's own SSL transport does not. `curl` needs `--http1.1`: the TCP port advertises
`h2` in ALPN (the contract's server list), so an h2-capable client would negotiate HTTP/2 with
an HTTP/1.1 app. `ab` and `s_time` run on the same cores as the proxies, so rates are bounded
by the clients too; compare ratios, not absolute figures.
"""


MARKER = "<!-- bench/proxy.py --record writes above this line -->"


def record(section: str) -> None:
    """Replace the generated part of the Proxy section (up to MARKER; hand-written notes below
    the marker stay), or the whole section when it has no marker yet."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text()
    start_ = text.index("## Proxy\n")
    nxt = text.find("\n## ", start_ + 1)
    end = len(text) if nxt < 0 else nxt + 1
    marker = text.find(MARKER, start_, end)
    if marker >= 0:
        keep_from = marker
        tail = ""
    else:
        keep_from = end
        tail = MARKER + "\n\n"
    generated = section.rstrip("\n") + "\n\n" + tail
    path.write_text(text[:start_] + generated + text[keep_from:])


def parse_only(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated subset of {', '.join(MEASUREMENTS)}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000.0, help="latency test, requests/s")
    parser.add_argument("--rounds", type=int, default=3, help="median of interleaved rounds")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--record", action="store_true", help="rewrite docs/benchmarks.md Proxy")
    parser.add_argument(
        "--only",
        type=parse_only,
        default=MEASUREMENTS,
        help=f"comma-separated subset of {','.join(MEASUREMENTS)} (default: all)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also run the meshsec of this source tree (A/B in the same rounds)",
    )
    parser.add_argument(
        "--serve",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="only start the proxies and the app, print their ports and pids, wait SECONDS",
    )
    args = parser.parse_args()
    partial = set(args.only) != set(MEASUREMENTS) or args.baseline_src is not None
    if args.record and (partial or args.serve):
        parser.error("--record needs every measurement and no --baseline-src or --serve")
    if args.baseline_src is not None and not (args.baseline_src / "src" / "meshsec").is_dir():
        parser.error(f"--baseline-src {args.baseline_src}: no src/meshsec in it")
    ensure_packages()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = run(args)
    finally:
        stop_all()
    if args.record:
        command = ".venv/bin/python bench/proxy.py " + " ".join(sys.argv[1:])
        record(markdown(result, args, command.strip()))
        print("recorded in docs/benchmarks.md", flush=True)


if __name__ == "__main__":
    main()
