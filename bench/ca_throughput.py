"""CA throughput: meshsec's CA against cfssl, same CA key, same CSR, same load generator.

Run:  .venv/bin/python bench/ca_throughput.py [--duration 10] [--rounds 3] [--record]

What it does, in one run on this machine:
* installs `golang-cfssl` (the peer) and `nghttp2-client` (h2load, the load generator) from
  Debian if they are missing;
* makes one EC P-256 CA (root + intermediate in Istio's ``cacerts`` layout) and one workload CSR;
* serves that CA with ``cfssl serve`` (HTTP/1.1 JSON) and with ``meshsec ca serve --cacerts``
  (gRPC over TLS, all cores), and drives each with h2load for ``--duration`` seconds per round;
* counts a meshsec request as signed only if the CA's own success counter moved by the same
  amount (h2load cannot see gRPC status trailers, so HTTP 200 alone proves nothing);
* prints one JSON line per round and a summary line with medians and the ratio; ``--record``
  rewrites the "CA throughput" section of docs/benchmarks.md.

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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESHSEC = [sys.executable, "-m", "meshsec"]
SECTION = "## CA throughput"


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


def make_csr(work: Path) -> str:
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf-key.pem", cwd=work)
    openssl("req", "-new", "-key", "leaf-key.pem", "-subj", "/", "-out", "leaf.csr", cwd=work)
    return (work / "leaf.csr").read_text()


@dataclass
class Round:
    peer: str
    rps: float
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    seconds: float


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
        "--warm-up-time",
        "1",
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


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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


def run_cfssl(work: Path, cacerts: Path, csr: str, args: argparse.Namespace) -> list[Round]:
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
    proc = subprocess.Popen(
        [
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rounds = []
    try:
        wait_port(port, proc)
        for _ in range(args.rounds):
            rps, ok, failed, lat = h2load(
                f"http://127.0.0.1:{port}/api/v1/cfssl/sign",
                body,
                ["content-type: application/json"],
                h1=True,
                clients=args.clients,
                streams=1,
                duration=args.duration,
                log=work / "cfssl.log",
            )
            rounds.append(
                Round(
                    "cfssl",
                    rps,
                    ok,
                    failed,
                    percentile(lat, 0.5),
                    percentile(lat, 0.99),
                    args.duration,
                )
            )
    finally:
        stop(proc)
    return rounds


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


def run_meshsec(work: Path, cacerts: Path, csr: str, args: argparse.Namespace) -> list[Round]:
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
    body = work / "grpc-req.bin"
    body.write_bytes(grpc_frame(csr, 86400))
    port, mon = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *MESHSEC,
            "ca",
            "serve",
            "--data-dir",
            str(work / "ca-data"),
            "--listen",
            f"127.0.0.1:{port}",
            "--monitoring",
            f"127.0.0.1:{mon}",
            "--cluster",
            str(cluster),
            "--cacerts",
            str(cacerts),
            "--mtls-listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "meshsec-ca.log").open("wb"),
    )
    headers = ["content-type: application/grpc", "te: trailers", f"authorization: Bearer {token}"]
    rounds = []
    try:
        wait_port(port, proc)
        wait_port(mon, proc)
        for _ in range(args.rounds):
            before = issued_count(f"127.0.0.1:{mon}")
            rps, ok, failed, lat = h2load(
                f"https://127.0.0.1:{port}/istio.v1.auth.IstioCertificateService/CreateCertificate",
                body,
                headers,
                h1=False,
                clients=args.clients // 4 or 1,
                streams=args.streams,
                duration=args.duration,
                log=work / "meshsec.log",
            )
            signed = issued_count(f"127.0.0.1:{mon}") - before
            # h2load's count excludes the warm-up second; the CA's counter includes it.
            if signed < ok:
                raise RuntimeError(
                    f"h2load saw {ok} HTTP 200s but the CA signed only {signed:.0f}:"
                    f" see {work / 'meshsec-ca.log'}"
                )
            rounds.append(
                Round(
                    "meshsec",
                    rps,
                    ok,
                    failed,
                    percentile(lat, 0.5),
                    percentile(lat, 0.99),
                    args.duration,
                )
            )
    finally:
        stop(proc)
    return rounds


def record(summary: dict[str, object], command: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = (
        f"{SECTION}\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {os.cpu_count()} cores; servers and h2load share them. Same EC P-256 "
        "intermediate CA and the same CSR for both; h2load drives cfssl over HTTP/1.1 keep-alive "
        "and meshsec over gRPC/TLS (HTTP/2). A meshsec request counts only if the CA's "
        "`citadel_server_success_cert_issuance_count` moved with it.\n\n"
        "| peer | certs/s (median) | p50 ms | p99 ms |\n|---|---|---|---|\n"
        f"| cfssl serve | {summary['cfssl_rps']:.0f} | {summary['cfssl_p50_ms']:.2f} | "
        f"{summary['cfssl_p99_ms']:.2f} |\n"
        f"| meshsec ca serve | {summary['meshsec_rps']:.0f} | {summary['meshsec_p50_ms']:.2f} | "
        f"{summary['meshsec_p99_ms']:.2f} |\n\n"
        f"Ratio meshsec / cfssl: **{summary['ratio']:.2f}×** (target ≥ 1.0×).\n"
    )
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(section + "\n", text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + section)
    )
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--streams", type=int, default=16, help="HTTP/2 streams per connection")
    parser.add_argument("--record", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--only", choices=["cfssl", "meshsec"])
    args = parser.parse_args()
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="meshsec-bench-") as tmp:
        work = Path(tmp)
        cacerts = make_ca(work)
        csr = make_csr(work)
        rounds: list[Round] = []
        if args.only in (None, "cfssl"):
            rounds += run_cfssl(work, cacerts, csr, args)
        if args.only in (None, "meshsec"):
            rounds += run_meshsec(work, cacerts, csr, args)
    for r in rounds:
        print(json.dumps({"bench": "ca_throughput", **r.__dict__}))
    summary: dict[str, object] = {"bench": "ca_throughput_summary"}
    for peer in ("cfssl", "meshsec"):
        mine = [r for r in rounds if r.peer == peer]
        if mine:
            summary[f"{peer}_rps"] = statistics.median(r.rps for r in mine)
            summary[f"{peer}_p50_ms"] = statistics.median(r.p50_ms for r in mine)
            summary[f"{peer}_p99_ms"] = statistics.median(r.p99_ms for r in mine)
    if "cfssl_rps" in summary and "meshsec_rps" in summary:
        summary["ratio"] = float(summary["meshsec_rps"]) / float(summary["cfssl_rps"])  # type: ignore[arg-type]
    print(json.dumps(summary))
    if args.record and "ratio" in summary:
        record(summary, "python bench/ca_throughput.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
