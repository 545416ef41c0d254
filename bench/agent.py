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
import os
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
FLOORS = {  # reference processes measured in the same run; each imports a stack and does nothing
    # what any Python gRPC agent with real crypto must load
    "grpc": "import grpc, cryptography.x509, google.protobuf",
    # what an agent without grpcio (its own HTTP/2 + gRPC framing on asyncio) would start from
    "no_grpc": (
        "import asyncio, ssl, cryptography.x509, google.protobuf, "
        "envoy.service.secret.v3.sds_pb2, envoy.extensions.transport_sockets.tls.v3.secret_pb2"
    ),
}
FLOOR_TAIL = "; import signal; print('ready', flush=True); signal.pause()"
DOCS = ROOT / "docs" / "benchmarks.md"
RECORD_BEGIN = "<!-- bench/agent.py --record: begin -->"
RECORD_END = "<!-- bench/agent.py --record: end -->"
# RSS by what is mapped: shared objects by file name, the rest is anonymous memory
MAPPING_GROUPS = (
    ("grpc_core", ("cygrpc",)),  # grpc core + its statically linked BoringSSL
    ("cryptography", ("_rust.abi3",)),  # cryptography's Rust bindings + static OpenSSL
    ("libpython", ("libpython",)),
    ("protobuf_upb", ("_message.abi3",)),
    ("pydantic_core", ("_pydantic_core",)),
)


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS (shared library pages split between processes) and anonymous memory."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Anonymous"):
            values[key.lower()] = round(int(rest.split()[0]) / 1024.0, 1)
    return values


def rss_by_mapping(pid: int) -> dict[str, float]:
    """RSS in MB grouped: anonymous (Python objects, malloc heap, stacks), the big shared
    objects by name (``MAPPING_GROUPS``), and every other shared library together."""
    totals: dict[str, int] = {}
    group = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            name = fields[5] if len(fields) > 5 else ""
            group = "anon" if not name or name.startswith("[") else "other_libs"
            for label, needles in MAPPING_GROUPS:
                if any(needle in name for needle in needles):
                    group = label
        elif fields and fields[0] == "Rss:":
            totals[group] = totals.get(group, 0) + int(fields[1])
    return {key: round(value / 1024.0, 1) for key, value in sorted(totals.items())}


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


def measure_floor(imports: str) -> dict[str, object]:
    proc = subprocess.Popen(
        [sys.executable, "-c", imports + FLOOR_TAIL], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    try:
        return {"rss_mb": round(rss_mb(proc.pid), 1), "by_mapping": rss_by_mapping(proc.pid)}
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
    """Receive ``rotations`` pushes on every stream; latency per (stream, push) in ms.

    On the receive path the client only timestamps, ACKs and keeps the chain: parsing the
    certificate to find its serial happens after all pushes arrived, so with many streams in this
    one client process the measurement does not include the client's own parsing of the others.
    """
    arrivals: list[tuple[float, bytes]] = []

    async def follow(stream: SdsStream) -> None:
        for _ in range(rotations):
            while True:
                response = await stream.recv(within=30)
                received = time.time()
                stream.ack(response, ["default", "ROOTCA"])
                secrets = secrets_of(response)
                if "default" in secrets:
                    break
            arrivals.append(
                (received, secrets["default"].tls_certificate.certificate_chain.inline_bytes)
            )

    await asyncio.gather(*(follow(s) for s in streams))
    latencies = []
    for received, chain in arrivals:
        serial = f"{parse_certificates_pem(chain)[0].serial_number:032x}"
        for _ in range(50):  # the log line may be parsed a moment after the push
            if serial in logs.published:
                break
            await asyncio.sleep(0.01)
        latencies.append((received - logs.published[serial]) * 1000.0)
    return latencies


async def one_round(workdir: Path, ca_addr: str, streams: int, rotations: int) -> dict[str, object]:
    agent, logs = start_agent(workdir, ca_addr, "3s")
    try:
        await asyncio.sleep(1.0)  # settle after start-up imports and the first CSR
        rss_one = rss_mb(agent.pid)
        mem_one = memory_mb(agent.pid)
        by_mapping = rss_by_mapping(agent.pid)
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
        "rss_by_mapping_one_identity": by_mapping,
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


def median_of(rows: list[dict[str, object]], *path: str) -> float:
    values = []
    for row in rows:
        value: object = row
        for key in path:
            value = value[key]  # type: ignore[index]
        values.append(float(value))  # type: ignore[arg-type]
    return round(statistics.median(values), 2)


def build_summary(results: list[dict[str, object]], streams: int) -> dict[str, object]:
    many = f"push_ms_{streams}_streams"
    rss_one = median_of(results, "rss_mb_one_identity")
    floor = median_of(results, "floor_grpc", "rss_mb")
    groups = sorted({g for r in results for g in r["rss_by_mapping_one_identity"]})  # type: ignore[attr-defined]
    floor_groups = sorted({g for r in results for g in r["floor_grpc"]["by_mapping"]})  # type: ignore[index]
    return {
        "bench": "agent",
        "summary": True,
        "rounds": len(results),
        "rss_mb_one_identity": rss_one,
        f"rss_mb_{streams}_streams": median_of(results, f"rss_mb_{streams}_streams"),
        "floor_grpc_rss_mb": floor,
        "floor_no_grpc_rss_mb": median_of(results, "floor_no_grpc", "rss_mb"),
        "rss_over_floor_mb": round(rss_one - floor, 1),
        "rss_over_floor_ratio": round(rss_one / floor, 2),
        "pss_mb_one_identity": median_of(results, "pss_mb_one_identity"),
        "anon_mb_one_identity": median_of(results, "anon_mb_one_identity"),
        "rss_by_mapping_one_identity": {
            g: median_of(results, "rss_by_mapping_one_identity", g) for g in groups
        },
        "rss_by_mapping_floor_grpc": {
            g: median_of(results, "floor_grpc", "by_mapping", g) for g in floor_groups
        },
        "push_ms_1_stream_median": median_of(results, "push_ms_1_stream", "median"),
        "push_ms_1_stream_p99": median_of(results, "push_ms_1_stream", "p99"),
        f"{many}_median": median_of(results, many, "median"),
        f"{many}_p99": median_of(results, many, "p99"),
        "loadavg_1m_start_end": results[0]["loadavg_1m_start_end"],
        "targets": {"rss_mb": 40, "push_ms": 50},
    }


def render_record(summary: dict[str, object], command: str, streams: int) -> str:
    """The measured block of the docs' Agent section (the prose around it is kept)."""
    s = summary

    def met(key: str, target: float) -> str:
        return "met" if float(str(s[key])) <= target else "**not met**"

    agent_map: dict[str, float] = s["rss_by_mapping_one_identity"]  # type: ignore[assignment]
    floor_map: dict[str, float] = s["rss_by_mapping_floor_grpc"]  # type: ignore[assignment]
    load: list[float] = s["loadavg_1m_start_end"]  # type: ignore[assignment]
    rows = "\n".join(
        f"| {g} | {agent_map.get(g, 0.0)} | {floor_map.get(g, 0.0)} | "
        f"{round(agent_map.get(g, 0.0) - floor_map.get(g, 0.0), 1):+} |"
        for g in sorted(set(agent_map) | set(floor_map))
    )
    return f"""{RECORD_BEGIN}
Command ({time.strftime("%Y-%m-%d", time.gmtime())}, {os.cpu_count()} CPUs, Python \
{sys.version.split()[0]}; 1-minute load average {load[0]} at start, {load[1]} at the end):

```sh
{command}
```

| metric | result | target | |
|---|---|---|---|
| RSS, one identity | **{s["rss_mb_one_identity"]} MB** | ≤ 40 MB | \
{met("rss_mb_one_identity", 40)} |
| RSS, {streams} SDS streams | {s[f"rss_mb_{streams}_streams"]} MB | — | |
| floor, same run: `python -c "import grpc, cryptography.x509, google.protobuf"` | \
{s["floor_grpc_rss_mb"]} MB | — | agent = {s["rss_over_floor_ratio"]}× floor \
(+{s["rss_over_floor_mb"]} MB) |
| floor without grpcio: asyncio, ssl, cryptography, protobuf, the Envoy Secret/SDS messages \
| {s["floor_no_grpc_rss_mb"]} MB | — | same run |
| PSS / anonymous, one identity | {s["pss_mb_one_identity"]} / {s["anon_mb_one_identity"]} MB \
| — | |
| rotation → SDS push, 1 stream, median / p99 | **{s["push_ms_1_stream_median"]} ms / \
{s["push_ms_1_stream_p99"]} ms** | ≤ 50 ms | {met("push_ms_1_stream_p99", 50)} |
| rotation → SDS push, {streams} streams, median / p99 | \
**{s[f"push_ms_{streams}_streams_median"]} ms / {s[f"push_ms_{streams}_streams_p99"]} ms** \
| ≤ 50 ms | {met(f"push_ms_{streams}_streams_p99", 50)} |

RSS by mapping (MB, medians; `anon` = Python objects, malloc heap and stacks; `grpc_core` =
grpcio's `cygrpc` with its BoringSSL; `cryptography` = its Rust/OpenSSL module):

| mapping | agent, one identity | grpc floor | agent − floor |
|---|---|---|---|
{rows}

Summary line:

```json
{json.dumps(s)}
```
{RECORD_END}"""


def record(block: str) -> None:
    text = DOCS.read_text()
    begin, end = text.find(RECORD_BEGIN), text.find(RECORD_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{DOCS}: the Agent section has no {RECORD_BEGIN} ... {RECORD_END} block")
    DOCS.write_text(text[:begin] + block + text[end + len(RECORD_END) :])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rotations", type=int, default=5)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument(
        "--record", action="store_true", help="write the results into docs/benchmarks.md (Agent)"
    )
    args = parser.parse_args()
    load_start = round(os.getloadavg()[0], 2)
    workdir = Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))
    ca, ca_addr = start_ca(workdir)
    results: list[dict[str, object]] = []
    try:
        for index in range(args.rounds):
            result: dict[str, object] = {"bench": "agent", "round": index + 1}
            for name, imports in FLOORS.items():
                result[f"floor_{name}"] = measure_floor(imports)
            result.update(await one_round(workdir, ca_addr, args.streams, args.rotations))
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        stop(ca)
        shutil.rmtree(workdir, ignore_errors=True)
    for result in results:
        result["loadavg_1m_start_end"] = [load_start, round(os.getloadavg()[0], 2)]
    summary = build_summary(results, args.streams)
    print(json.dumps(summary), flush=True)
    if args.record:
        command = ".venv/bin/python bench/agent.py " + " ".join(
            f"--{k} {getattr(args, k)}" for k in ("rounds", "rotations", "streams")
        )
        record(render_record(summary, command + " --record", args.streams))
        print(f"recorded in {DOCS}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
