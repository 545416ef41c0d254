"""CA throughput: meshsec's CA vs cfssl and a minimal gRPC CA; same CA key, CSR and load.

Run:  .venv/bin/python bench/ca_throughput.py [--duration 10] [--rounds 3] [--record]

What it does, in one run on this machine:
* installs `golang-cfssl` (the peer) and `nghttp2-client` (h2load, the load generator) from
  Debian if they are missing;
* makes one EC P-256 CA (root + intermediate in Istio's ``cacerts`` layout), one workload CSR and
  one P-256 TLS serving certificate for the peers that need one;
* serves that CA with
  - ``cfssl serve`` (HTTP/1.1 JSON; plain HTTP, and with ``-tls-cert/-tls-key`` for the TLS rows),
  - ``meshsec ca serve --cacerts`` (gRPC, one process per core; TLS, and ``--plaintext``),
  - a **minimal** grpc.aio CA (this file, ``--serve-minimal``): same proto, same number of
    processes (SO_REUSEPORT), same transport; per call it only parses the CSR, checks its
    signature, signs a leaf with the same extensions and returns the chain — no authentication,
    no ledger, no metrics. It is the floor of "Python + grpc.aio + cryptography" on this machine;
  - the same minimal CA on other Python serving stacks, each on uvloop (``--only`` names them;
    not in the default set except ``minimal-grpclib``): ``minimal-grpclib`` (grpclib, pure-Python
    gRPC over the ``h2`` library), ``minimal-h2`` (unary gRPC written by hand on bare ``h2``),
    and ``h2-echo`` (bare ``h2`` answering every request with one chain signed at start: the
    floor of pure-Python HTTP/2, no crypto per request);
* drives every server with h2load, the same number of requests in flight for each (HTTP/1.1:
  that many keep-alive connections; gRPC: ``--clients`` connections x ``--streams`` streams), for
  ``--duration`` seconds; rounds are interleaved (round 1 of every peer, then round 2 ...) so a
  change in the machine's load hits every peer alike, and ratios are taken within a round;
* counts a meshsec request as signed only if the CA's own success counter moved by the same
  amount (h2load cannot see gRPC status trailers, so HTTP 200 alone proves nothing); the minimal
  peers count their replies in a shared file, and each is called once with grpcio before the
  rounds (the leaf must be signed by the intermediate for the CSR's key; a CSR with a broken
  signature must get INVALID_ARGUMENT);
* measures each peer's server CPU per certificate (user + system time of all its processes
  over the round / certificates returned): steadier than certs/s on a shared machine;
* prints one JSON line per measurement and a summary line with medians and the ratios
  meshsec/cfssl, meshsec/minimal and each other minimal stack/minimal per transport (certs/s
  and CPU per cert, each the median of the per-round ratios); ``--record`` rewrites the
  "CA throughput" section of docs/benchmarks.md.

A/B against another revision in the same run: ``git archive <rev> src | tar -x -C /tmp/base``
then ``--baseline-src /tmp/base/src`` adds that meshsec as peer "baseline" (and the ratios
meshsec/baseline). ``--only`` (repeatable) and ``--transport`` narrow the run.

Both servers and the load generator share the machine's cores, as they would on one node. The
comparison is of throughput only: Debian's cfssl ignores URI SANs, so certificate contents differ.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ca_minimal import (
    GRPC_PATH,
    MINIMAL_STACKS,
    ROOT,
    open_reply_counter,
    read_reply_counters,
    serve_minimal,
)

MESHSEC = [sys.executable, "-m", "meshsec"]
SECTION = "## CA throughput"
TRANSPORTS = ("tls", "plaintext")


def ensure_tools() -> None:
    missing = [
        pkg
        for tool, pkg in (("cfssl", "golang-cfssl"), ("h2load", "nghttp2-client"))
        if shutil.which(tool) is None
    ]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(work: Path) -> Path:
    """EC P-256 root + intermediate in Istio's cacerts layout (as tools/certs would lay it out)."""
    d = work / "cacerts"
    d.mkdir()
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root-key.pem", cwd=d)
    openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "root-key.pem",
        "-subj",
        "/O=cluster.local/CN=Root CA",
        "-days",
        "3650",
        "-out",
        "root-cert.pem",
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca-key.pem", cwd=d)
    openssl(
        "req",
        "-new",
        "-key",
        "ca-key.pem",
        "-subj",
        "/O=cluster.local/CN=Intermediate CA",
        "-out",
        "ca.csr",
        cwd=d,
    )
    (d / "ext.cnf").write_text(
        "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        "subjectAltName=DNS:istiod.istio-system.svc\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        "root-cert.pem",
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "ext.cnf",
        "-out",
        "ca-cert.pem",
        cwd=d,
    )
    (d / "cert-chain.pem").write_bytes(
        (d / "ca-cert.pem").read_bytes() + (d / "root-cert.pem").read_bytes()
    )
    for extra in ("root-key.pem", "ca.csr", "ext.cnf", "root-cert.srl"):
        (d / extra).unlink(missing_ok=True)
    os.chmod(d / "ca-key.pem", 0o600)
    return d


def make_serving_cert(work: Path, cacerts: Path) -> tuple[Path, Path]:
    """A P-256 TLS certificate for 127.0.0.1 signed by the intermediate (cfssl and the minimal CA;
    meshsec issues its own, also P-256)."""
    d = work / "tls"
    d.mkdir()
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "key.pem", cwd=d)
    openssl("req", "-new", "-key", "key.pem", "-subj", "/CN=127.0.0.1", "-out", "req.csr", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:istiod.istio-system.svc\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        str(cacerts / "ca-cert.pem"),
        "-CAkey",
        str(cacerts / "ca-key.pem"),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
        cwd=d,
    )
    return d / "cert.pem", d / "key.pem"


def make_csr(work: Path) -> str:
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf-key.pem", cwd=work)
    openssl("req", "-new", "-key", "leaf-key.pem", "-subj", "/", "-out", "leaf.csr", cwd=work)
    return (work / "leaf.csr").read_text()


@dataclass
class Round:
    peer: str  # cfssl | meshsec | minimal
    transport: str  # tls | plaintext
    round: int
    rps: float
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    seconds: float
    cpu_us: float  # server CPU time (every process of the peer) per successful request
    load1: float  # 1-minute load average just before the round


def h2load(
    url: str,
    body: Path,
    headers: list[str],
    *,
    h1: bool,
    clients: int,
    streams: int,
    duration: int,
    log: Path,
) -> tuple[float, int, int, list[float]]:
    cmd = [
        "h2load",
        "-c",
        str(clients),
        "-t",
        "1",
        "-D",
        str(duration),
        "-d",
        str(body),
        f"--log-file={log}",
    ]
    cmd += ["--h1"] if h1 else ["-m", str(streams)]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    m = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out
    )
    assert m, out
    durations_ms = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "200":
            durations_ms.append(int(parts[2]) / 1000.0)
    return rps, int(m.group(2)), int(m.group(3)), durations_ms


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_port(port: int, procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tree_cpu_seconds(roots: list[int]) -> float:
    """utime + stime of ``roots`` and all their descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    wanted = set(roots)
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in wanted} - wanted
        grew = bool(more)
        wanted |= more
    return sum(ticks.get(pid, 0) for pid in wanted) / os.sysconf("SC_CLK_TCK")


@contextmanager
def running(*procs: subprocess.Popen[bytes]) -> Iterator[list[subprocess.Popen[bytes]]]:
    try:
        yield list(procs)
    finally:
        for proc in procs:
            stop(proc)


@dataclass
class Peer:
    """One server under test and how h2load drives it."""

    peer: str
    transport: str
    url: str
    body: Path
    headers: list[str]
    h1: bool
    pids: list[int]  # the server's processes (their descendants are counted too)
    check: Callable[[int], None] | None = None  # gets h2load's OK count after each round
    before: Callable[[], None] | None = None


def start_cfssl(
    work: Path, cacerts: Path, csr: str, tls: tuple[Path, Path] | None, stack: ExitStack
) -> Peer:
    cfg = work / "cfssl.json"
    cfg.write_text(
        json.dumps(
            {
                "signing": {
                    "default": {
                        "expiry": "24h",
                        "usages": [
                            "digital signature",
                            "key encipherment",
                            "server auth",
                            "client auth",
                        ],
                    }
                }
            }
        )
    )
    body = work / "cfssl-req.json"
    body.write_text(json.dumps({"certificate_request": csr}))
    port = free_port()
    cmd = [
        "cfssl",
        "serve",
        "-ca",
        str(cacerts / "ca-cert.pem"),
        "-ca-key",
        str(cacerts / "ca-key.pem"),
        "-config",
        str(cfg),
        "-address",
        "127.0.0.1",
        "-port",
        str(port),
        "-loglevel",
        "5",
    ]
    if tls is not None:
        cmd += ["-tls-cert", str(tls[0]), "-tls-key", str(tls[1])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.enter_context(running(proc))
    wait_port(port, [proc])
    scheme = "https" if tls is not None else "http"
    return Peer(
        "cfssl",
        "tls" if tls is not None else "plaintext",
        f"{scheme}://127.0.0.1:{port}/api/v1/cfssl/sign",
        body,
        ["content-type: application/json"],
        h1=True,
        pids=[proc.pid],
    )


def grpc_frame(csr: str, ttl_seconds: int) -> bytes:
    sys.path.insert(0, str(ROOT / "src"))
    from meshsec._proto import istio_ca_pb2

    msg = istio_ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=ttl_seconds)
    payload = msg.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def issued_count(monitoring: str) -> float:
    text = urllib.request.urlopen(f"http://{monitoring}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("citadel_server_success_cert_issuance_count") and not line.startswith(
            "#"
        ):
            total += float(line.split()[-1])
    return total


GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"]


def mint_bench_token(work: Path) -> tuple[Path, str]:
    cluster = work / "cluster1"
    subprocess.run(
        [*MESHSEC, "cluster", "init", str(cluster), "--name", "cluster1"],
        check=True,
        capture_output=True,
    )
    token = subprocess.run(
        [
            *MESHSEC,
            "token",
            "mint",
            "--cluster",
            str(cluster),
            "--namespace",
            "default",
            "--service-account",
            "bench",
            "--ttl",
            "2h",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return cluster, token


def start_meshsec(
    work: Path,
    cacerts: Path,
    body: Path,
    cluster: Path,
    token: str,
    transport: str,
    args: argparse.Namespace,
    stack: ExitStack,
    *,
    name: str = "meshsec",
    src: Path | None = None,
) -> Peer:
    port, mon = free_port(), free_port()
    cmd = [
        *MESHSEC,
        "ca",
        "serve",
        "--data-dir",
        str(work / f"ca-data-{name}-{transport}"),
        "--listen",
        f"127.0.0.1:{port}",
        "--monitoring",
        f"127.0.0.1:{mon}",
        "--cluster",
        str(cluster),
        "--cacerts",
        str(cacerts),
        "--workers",
        str(args.workers),
    ]
    cmd += ["--plaintext"] if transport == "plaintext" else ["--mtls-listen", "127.0.0.1:0"]
    log = work / f"{name}-ca-{transport}.log"
    # The in-flight limit is overload protection (RESOURCE_EXHAUSTED, clients retry); the bench
    # measures throughput, so no worker may refuse the bench's own concurrency.
    env = dict(os.environ, MESHSEC_CA_MAX_IN_FLIGHT=str(max(128, args.clients * args.streams)))
    if src is not None:  # another checkout's meshsec (A/B against a baseline revision)
        env["PYTHONPATH"] = str(src)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env)
    stack.enter_context(running(proc))
    wait_port(port, [proc])
    wait_port(mon, [proc])
    monitoring = f"127.0.0.1:{mon}"
    mark = [0.0]

    def before() -> None:
        mark[0] = issued_count(monitoring)

    def check(ok: int) -> None:
        signed = issued_count(monitoring) - mark[0]
        if signed < ok:
            raise RuntimeError(
                f"h2load saw {ok} HTTP 200s but the CA signed only {signed:.0f}: see {log}"
            )

    scheme = "https" if transport == "tls" else "http"
    return Peer(
        name,
        transport,
        f"{scheme}://127.0.0.1:{port}{GRPC_PATH}",
        body,
        [*GRPC_HEADERS, f"authorization: Bearer {token}"],
        h1=False,
        pids=[proc.pid],
        check=check,
        before=before,
    )


def start_minimal(
    name: str,
    cacerts: Path,
    body: Path,
    csr_path: Path,
    tls: tuple[Path, Path] | None,
    args: argparse.Namespace,
    stack: ExitStack,
    work: Path,
) -> Peer:
    """``args.workers`` processes of the minimal CA on the serving stack ``name`` names."""
    port = free_port()
    transport = "tls" if tls is not None else "plaintext"
    counters = work / f"{name}-{transport}.replies"
    counters.write_bytes(bytes(8 * args.workers))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-minimal",
        str(port),
        "--stack",
        MINIMAL_STACKS[name],
        "--cacerts",
        str(cacerts),
        "--csr",
        str(csr_path),
        "--counters",
        str(counters),
    ]
    if tls is not None:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    procs = [subprocess.Popen([*cmd, "--slot", str(i)]) for i in range(args.workers)]
    stack.enter_context(running(*procs))
    wait_port(port, procs)
    time.sleep(1.0)  # every worker bound (they share the port with SO_REUSEPORT)
    verify_minimal(name, port, cacerts, csr_path.read_text(), tls is not None)
    mark = [0]

    def before() -> None:
        mark[0] = read_reply_counters(counters)

    def check(ok: int) -> None:
        replied = read_reply_counters(counters) - mark[0]
        if replied < ok:
            raise RuntimeError(f"h2load saw {ok} HTTP 200s but {name} replied only {replied}")

    scheme = "https" if tls is not None else "http"
    return Peer(
        name,
        transport,
        f"{scheme}://127.0.0.1:{port}{GRPC_PATH}",
        body,
        GRPC_HEADERS,
        h1=False,
        pids=[p.pid for p in procs],
        check=check,
        before=before,
    )


def verify_minimal(name: str, port: int, cacerts: Path, csr_pem: str, tls: bool) -> None:
    """One call with grpcio before the rounds: the chain comes back, its leaf is signed by the
    intermediate for the CSR's key; a CSR with a broken signature gets INVALID_ARGUMENT."""
    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from meshsec._proto import istio_ca_pb2, istio_ca_pb2_grpc

    target = f"127.0.0.1:{port}"
    if tls:
        roots = (cacerts / "ca-cert.pem").read_bytes() + (cacerts / "root-cert.pem").read_bytes()
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(roots))
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        stub = istio_ca_pb2_grpc.IstioCertificateServiceStub(channel)
        reply = stub.CreateCertificate(
            istio_ca_pb2.IstioCertificateRequest(csr=csr_pem, validity_duration=3600), timeout=10
        )
        leaf = x509.load_pem_x509_certificate(reply.cert_chain[0].encode())
        intermediate = x509.load_pem_x509_certificate((cacerts / "ca-cert.pem").read_bytes())
        leaf.verify_directly_issued_by(intermediate)
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if leaf.public_key() != csr.public_key() or len(reply.cert_chain) != 4:
            raise RuntimeError(f"{name}: wrong certificate or chain in the reply")
        if name == "h2-echo":  # not a CA: it answers everything with the same chain
            return
        der = bytearray(csr.public_bytes(Encoding.DER))
        der[-1] ^= 0x01  # last byte of the signature
        broken = x509.load_der_x509_csr(bytes(der)).public_bytes(Encoding.PEM).decode()
        try:
            stub.CreateCertificate(istio_ca_pb2.IstioCertificateRequest(csr=broken), timeout=10)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return
            raise
        raise RuntimeError(f"{name} signed a CSR with a broken signature")


# ------------------------------------------------------------------ driving and reporting


def measure(peer: Peer, index: int, args: argparse.Namespace, work: Path) -> Round:
    load1 = os.getloadavg()[0]
    if peer.before is not None:
        peer.before()
    in_flight = args.clients * args.streams
    cpu_before = tree_cpu_seconds(peer.pids)
    rps, ok, failed, lat = h2load(
        peer.url,
        peer.body,
        peer.headers,
        h1=peer.h1,
        clients=in_flight if peer.h1 else args.clients,
        streams=1 if peer.h1 else args.streams,
        duration=args.duration,
        log=work / f"{peer.peer}-{peer.transport}.log",
    )
    cpu = tree_cpu_seconds(peer.pids) - cpu_before
    if peer.check is not None:
        peer.check(ok)
    return Round(
        peer.peer,
        peer.transport,
        index,
        rps,
        ok,
        failed,
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        args.duration,
        cpu * 1e6 / ok if ok else float("nan"),
        load1,
    )


def summarize(rounds: list[Round]) -> dict[str, object]:
    summary: dict[str, object] = {"bench": "ca_throughput_summary"}
    for r in rounds:
        key = f"{r.peer}_{r.transport}"
        mine = [x for x in rounds if x.peer == r.peer and x.transport == r.transport]
        summary[f"{key}_rps"] = statistics.median(x.rps for x in mine)
        summary[f"{key}_p50_ms"] = statistics.median(x.p50_ms for x in mine)
        summary[f"{key}_p99_ms"] = statistics.median(x.p99_ms for x in mine)
        summary[f"{key}_cpu_us"] = statistics.median(x.cpu_us for x in mine)
    by_round: dict[tuple[str, int], dict[str, Round]] = {}
    for r in rounds:
        by_round.setdefault((r.transport, r.round), {})[r.peer] = r
    for transport in TRANSPORTS:
        for mine, other in RATIOS:
            pairs = [
                (peers[mine], peers[other])
                for (t, _), peers in sorted(by_round.items())
                if t == transport and mine in peers and other in peers
            ]
            if pairs:
                summary[f"ratio_{transport}_{mine}_{other}"] = statistics.median(
                    m.rps / o.rps for m, o in pairs
                )
                summary[f"cpu_ratio_{transport}_{mine}_{other}"] = statistics.median(
                    m.cpu_us / o.cpu_us for m, o in pairs
                )
    summary["load1"] = [round(r.load1, 2) for r in rounds]
    return summary


# (peer, against): the ratios the summary reports, each the median of the per-round ratios
RATIOS = [
    ("meshsec", "cfssl"),
    ("meshsec", "minimal"),
    ("meshsec", "minimal-grpclib"),
    ("meshsec", "baseline"),
    ("minimal-grpclib", "minimal"),
    ("minimal-h2", "minimal"),
    ("h2-echo", "minimal"),
]

PEER_NAMES = {
    "baseline": "meshsec (--baseline-src)",
    "cfssl": "cfssl serve",
    "minimal": "minimal grpc.aio CA",
    "minimal-grpclib": "minimal grpclib CA (uvloop)",
    "minimal-h2": "minimal CA, gRPC by hand on bare h2 (uvloop)",
    "h2-echo": "bare h2 echo, no crypto (uvloop)",
    "meshsec": "meshsec ca serve",
}


def record(summary: dict[str, object], command: str, args: argparse.Namespace) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    loads = summary["load1"]
    assert isinstance(loads, list)
    in_flight = args.clients * args.streams
    rows = []
    for transport in TRANSPORTS:
        for peer in PEER_NAMES:
            key = f"{peer}_{transport}"
            if f"{key}_rps" not in summary:
                continue
            rows.append(
                f"| {PEER_NAMES[peer]} | {transport} | {summary[f'{key}_rps']:.0f} | "
                f"{summary[f'{key}_cpu_us']:.0f} | "
                f"{summary[f'{key}_p50_ms']:.2f} | {summary[f'{key}_p99_ms']:.2f} |"
            )
    ratios = []
    for transport in TRANSPORTS:
        parts = [
            f"{mine} / {other} **{summary[name]:.2f}×** (server CPU per cert "
            f"{summary[f'cpu_{name}']:.2f}×)"
            for mine, other in RATIOS
            if (name := f"ratio_{transport}_{mine}_{other}") in summary
        ]
        if parts:
            ratios.append(f"- {transport}: " + ", ".join(parts))
    section = (
        f"{SECTION}\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {os.cpu_count()} cores; servers and h2load share them; 1-minute load average "
        f"before the rounds: {min(loads):.2f}–{max(loads):.2f}. Same EC P-256 intermediate CA and "
        f"the same CSR for every peer, {in_flight} requests in flight for every peer (HTTP/1.1: "
        f"{in_flight} keep-alive connections; gRPC: {args.clients} connections × {args.streams} "
        f"streams), {args.workers} processes for each Python CA, rounds interleaved. TLS rows: "
        "P-256 serving certificates, h2load negotiating TLS 1.3. The minimal CAs (in the bench; "
        "grpc.aio, and on uvloop grpclib or gRPC by hand on bare `h2`) parse and check the CSR, "
        "sign and return the chain — no authentication, ledger or metrics; they count their "
        "replies, checked against h2load's. A meshsec request counts only if the CA's "
        "`citadel_server_success_cert_issuance_count` moved with it. Server CPU per cert is the "
        "user + system time of all the peer's processes during the round divided by the "
        "certificates it returned (less sensitive to other load on the machine than "
        "certs/s).\n\n"
        "| peer | transport | certs/s (median) | server CPU µs / cert | p50 ms | p99 ms |\n"
        "|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nRatios (median of the per-round ratios; target meshsec / cfssl ≥ 1.0×):\n\n"
        + "\n".join(ratios)
        + "\n"
    )
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section + "\n", text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + section)
    )
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16, help="gRPC connections")
    parser.add_argument("--streams", type=int, default=16, help="HTTP/2 streams per connection")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes per Python CA"
    )
    parser.add_argument("--transport", choices=[*TRANSPORTS, "both"], default="both")
    parser.add_argument("--record", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--only", choices=["cfssl", "meshsec", *MINIMAL_STACKS], action="append")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also run meshsec from this src/ directory (e.g. `git archive` of an older commit)",
    )
    parser.add_argument("--serve-minimal", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--cacerts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tls-cert", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tls-key", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stack", choices=MINIMAL_STACKS.values(), help=argparse.SUPPRESS)
    parser.add_argument("--csr", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--counters", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--slot", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_minimal is not None:
        serve_minimal(
            args.stack,
            args.serve_minimal,
            args.cacerts,
            args.csr,
            (args.tls_cert, args.tls_key) if args.tls_cert and args.tls_key else None,
            open_reply_counter(args.counters, args.slot),
        )
        return 0
    ensure_tools()
    transports = TRANSPORTS if args.transport == "both" else (args.transport,)
    wanted = args.only or ["cfssl", "minimal", "minimal-grpclib", "meshsec"]
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="meshsec-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        cacerts = make_ca(work)
        tls = make_serving_cert(work, cacerts)
        csr = make_csr(work)
        body = work / "grpc-req.bin"
        body.write_bytes(grpc_frame(csr, 86400))
        peers: list[Peer] = []
        if "meshsec" in wanted or args.baseline_src is not None:
            cluster, token = mint_bench_token(work)
        for transport in transports:
            peer_tls = tls if transport == "tls" else None
            if "cfssl" in wanted:
                peers.append(start_cfssl(work, cacerts, csr, peer_tls, stack))
            for name in MINIMAL_STACKS:
                if name in wanted:
                    peers.append(
                        start_minimal(
                            name, cacerts, body, work / "leaf.csr", peer_tls, args, stack, work
                        )
                    )
            if "meshsec" in wanted:
                peers.append(
                    start_meshsec(work, cacerts, body, cluster, token, transport, args, stack)
                )
            if args.baseline_src is not None:
                peers.append(
                    start_meshsec(
                        work,
                        *(cacerts, body, cluster, token, transport, args, stack),
                        name="baseline",
                        src=args.baseline_src.resolve(),
                    )
                )
        for index in range(1, args.rounds + 1):
            for peer in peers:
                r = measure(peer, index, args, work)
                print(json.dumps({"bench": "ca_throughput", **r.__dict__}), flush=True)
                rounds.append(r)
    summary = summarize(rounds)
    print(json.dumps(summary))
    if args.record:
        record(summary, "python bench/ca_throughput.py " + " ".join(sys.argv[1:]), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
