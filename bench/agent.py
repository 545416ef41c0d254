"""Agent footprint and push latency: RSS with one identity and with 100 SDS streams, and the time
from a certificate rotation to the SDS push arriving at Envoy-style clients.

Run:  .venv/bin/python bench/agent.py [--rounds 3] [--rotations 5] [--streams 100]

Everything is real processes on this machine: ``meshsec ca serve`` (1 worker) signs,
``meshsec agent run`` gets its identity over TLS with a projected-style token and rotates with
a short ``SECRET_TTL`` (3 s: a rotation every ~1.5 s), and this script is the SDS client
(xds-protos messages over the agent's Unix socket, ACKing every response, in its own process).

* RSS = VmRSS of the agent process, after its first certificate (one identity) and again with
  ``--streams`` SDS streams open, each subscribed to ``default`` and ``ROOTCA`` (PSS and
  anonymous memory are printed too: most of the RSS is shared library text). The physical floor
  measured in the same run is a bare Python interpreter that imports grpc, cryptography and
  protobuf (what any Python gRPC agent with real crypto must load) and does nothing.
* push latency = wall time the client received the new ``default`` minus the wall time the agent
  logged that serial (the log line is written right after the new secret is published, before
  any push is sent), per stream and rotation, with 1 stream and with ``--streams`` streams.

Prints one JSON line per round and a summary line (medians over rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meshsec.core.pki import parse_certificates_pem  # noqa: E402
from tests.fakes.sds_client import SdsClient, SdsStream, secrets_of  # noqa: E402

MESHSEC = [sys.executable, "-m", "meshsec"]
LOG_SERIAL = re.compile(
    r"^(\S+)Z INFO\s+meshsec\.agent\.rotation workload certificate \S+ serial=([0-9a-f]+)"
)
FLOOR_SCRIPT = (  # the stack any Python gRPC agent with real crypto needs, doing nothing
    "import signal, grpc, cryptography.x509, google.protobuf; "
    "print('ready', flush=True); signal.pause()"
)


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS (shared library pages split between processes) and anonymous memory."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Anonymous"):
            values[key.lower()] = round(int(rest.split()[0]) / 1024.0, 1)
    return values


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for {pid}")


class LogWatcher:
    """Collects the agent's stderr; maps certificate serial → wall time it was published."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.published: dict[str, float] = {}
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                match = LOG_SERIAL.match(line)
                if match:
                    stamp = datetime.fromisoformat(match.group(1) + "+00:00").timestamp()
                    self.published[match.group(2)] = stamp
                self.cond.notify_all()

    def wait(self, predicate: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        with self.cond:
            while not any(predicate in line for line in self.lines):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(
                        "agent did not log " + predicate + ":\n" + "".join(self.lines)
                    )
                self.cond.wait(0.5)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def start_ca(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    def run(*args: str) -> str:
        return subprocess.run(
            [*MESHSEC, *args], cwd=workdir, check=True, capture_output=True, text=True
        ).stdout

    run("cluster", "init", "cl1", "--name", "Kubernetes")
    token = run(
        "token", "mint", "--cluster", "cl1", "--namespace", "bench",
        "--service-account", "agent", "--audience", "istio-ca", "--ttl", "2h",
    )  # fmt: skip
    (workdir / "istio-token").write_text(token.strip() + "\n")
    env = {"MESHSEC_CA_MTLS_LISTEN": "", "PATH": "/usr/bin:/bin"}
    ca = subprocess.Popen(
        [*MESHSEC, "ca", "serve", "--data-dir", "ca", "--listen", "127.0.0.1:0",
         "--monitoring", "127.0.0.1:0", "--cluster", "cl1", "--workers", "1"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert ca.stdout is not None
    for line in ca.stdout:
        match = re.search(r"listening on (\S+) \(tls\)", line)
        if match:
            (workdir / "root-cert.pem").write_text(run("ca", "root", "--data-dir", "ca"))
            threading.Thread(target=lambda: [None for _ in ca.stdout], daemon=True).start()  # type: ignore[union-attr]
            return ca, match.group(1)
    raise RuntimeError(f"CA did not start (exit {ca.wait()})")


def start_agent(workdir: Path, ca_addr: str, ttl: str) -> tuple[subprocess.Popen[str], LogWatcher]:
    env = {
        "PATH": "/usr/bin:/bin",
        "POD_NAMESPACE": "bench",
        "SERVICE_ACCOUNT": "agent",
        "ECC_SIGNATURE_ALGORITHM": "ECDSA",
        "SECRET_TTL": ttl,
    }
    agent = subprocess.Popen(
        [*MESHSEC, "agent", "run", "--ca-addr", ca_addr, "--ca-root", "root-cert.pem",
         "--token-file", "istio-token", "--sds-socket", str(workdir / "sds.sock"),
         "--workload-socket", f"unix://{workdir / 'wl.sock'}", "--status", "127.0.0.1:0"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    logs = LogWatcher(agent)
    logs.wait("workload certificate")
    return agent, logs


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def floor_rss() -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    try:
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


async def open_streams(socket_path: Path, count: int) -> tuple[SdsClient, list[SdsStream]]:
    client = SdsClient(str(socket_path))
    streams = [client.stream(["default", "ROOTCA"]) for _ in range(count)]
    for stream in streams:
        first = await stream.recv(within=30)
        stream.ack(first, ["default", "ROOTCA"])
    return client, streams


async def push_latencies(logs: LogWatcher, streams: list[SdsStream], rotations: int) -> list[float]:
    """Receive ``rotations`` pushes on every stream; latency per (stream, push) in ms."""
    latencies: list[float] = []

    async def follow(stream: SdsStream) -> None:
        for _ in range(rotations):
            while True:
                response = await stream.recv(within=30)
                received = time.time()
                stream.ack(response, ["default", "ROOTCA"])
                secrets = secrets_of(response)
                if "default" in secrets:
                    break
            chain = secrets["default"].tls_certificate.certificate_chain.inline_bytes
            serial = f"{parse_certificates_pem(chain)[0].serial_number:032x}"
            for _ in range(50):  # the log line may be parsed a moment after the push
                if serial in logs.published:
                    break
                await asyncio.sleep(0.01)
            latencies.append((received - logs.published[serial]) * 1000.0)

    await asyncio.gather(*(follow(s) for s in streams))
    return latencies


async def one_round(workdir: Path, ca_addr: str, streams: int, rotations: int) -> dict[str, object]:
    agent, logs = start_agent(workdir, ca_addr, "3s")
    try:
        await asyncio.sleep(1.0)  # settle after start-up imports and the first CSR
        rss_one = rss_mb(agent.pid)
        mem_one = memory_mb(agent.pid)
        client, single = await open_streams(workdir / "sds.sock", 1)
        lat_one = await push_latencies(logs, single, rotations)
        await client.close()
        client, many = await open_streams(workdir / "sds.sock", streams)
        rss_many = rss_mb(agent.pid)
        lat_many = await push_latencies(logs, many, rotations)
        rss_many = max(rss_many, rss_mb(agent.pid))
        await client.close()
    finally:
        stop(agent)
    return {
        "rss_mb_one_identity": round(rss_one, 1),
        "pss_mb_one_identity": mem_one["pss"],
        "anon_mb_one_identity": mem_one["anonymous"],
        f"rss_mb_{streams}_streams": round(rss_many, 1),
        "push_ms_1_stream": {
            "median": round(statistics.median(lat_one), 2),
            "p99": round(percentile(lat_one, 99), 2),
            "samples": len(lat_one),
        },
        f"push_ms_{streams}_streams": {
            "median": round(statistics.median(lat_many), 2),
            "p99": round(percentile(lat_many, 99), 2),
            "samples": len(lat_many),
        },
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rotations", type=int, default=5)
    parser.add_argument("--streams", type=int, default=100)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))
    ca, ca_addr = start_ca(workdir)
    try:
        floor = floor_rss()
        results = []
        for index in range(args.rounds):
            result: dict[str, object] = {
                "bench": "agent",
                "round": index + 1,
                "python_floor_rss_mb": round(floor, 1),
            }
            result.update(await one_round(workdir, ca_addr, args.streams, args.rotations))
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        stop(ca)
        shutil.rmtree(workdir, ignore_errors=True)
    many = f"push_ms_{args.streams}_streams"
    rss_many = f"rss_mb_{args.streams}_streams"

    def med(key: str, sub: str | None = None) -> float:
        values = [float(r[key][sub] if sub else r[key]) for r in results]  # type: ignore[index]
        return round(statistics.median(values), 2)

    summary = {
        "bench": "agent",
        "summary": True,
        "rounds": len(results),
        "python_floor_rss_mb": round(floor, 1),
        "rss_mb_one_identity": med("rss_mb_one_identity"),
        rss_many: med(rss_many),
        "rss_over_floor_mb": round(med("rss_mb_one_identity") - floor, 1),
        "pss_mb_one_identity": med("pss_mb_one_identity"),
        "anon_mb_one_identity": med("anon_mb_one_identity"),
        "push_ms_1_stream_median": med("push_ms_1_stream", "median"),
        "push_ms_1_stream_p99": med("push_ms_1_stream", "p99"),
        f"{many}_median": med(many, "median"),
        f"{many}_p99": med(many, "p99"),
        "targets": {"rss_mb": 40, "push_ms": 50},
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
