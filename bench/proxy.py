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

``--floor`` also runs ``bench/proxy_minimal.py``'s two minimal Python mTLS relays (uvloop's SSL
transport; ``ssl.MemoryBIO`` on uvloop, as meshsec does) with the same worker count: no policy,
metrics, timers or drain, just TLS and bytes. They are the floor for a Python proxy on this
machine: what meshsec costs above them is its own work, what they cost above haproxy is Python's.

For iterating on one cost: ``--only handshakes`` (any of ``latency, handshakes, keepalive,
download, idle``, comma-separated) runs just those measurements; ``--baseline-src DIR`` also
runs the meshsec of another source tree (e.g. ``git worktree add /tmp/base <commit>``; its
``src`` is put first on the path) as ``base-tcp`` / ``base-http`` in the same interleaved rounds,
and prints current / baseline ratios next to the haproxy ones (an A/B under the same load).

This file is the driver (rounds, medians, ratios, the recorded section); what it starts is in
``bench/proxy_peers.py``, the measurements in ``bench/proxy_measure.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxy_measure import cpu_s, download, handshakes, idle_memory, keepalive, latency, load, tree
from proxy_peers import (
    APP,
    ROOT,
    ensure_packages,
    free_port,
    haproxy_config,
    haproxy_maxconn,
    meshsec_proxy,
    start,
    stop,
    stop_all,
    wait_port,
    write_material,
)

MEASUREMENTS = ("latency", "handshakes", "keepalive", "download", "idle")
FLOOR_KINDS = ("uvloop-ssl", "memory-bio")  # bench/proxy_minimal.py


def run(args: argparse.Namespace) -> dict[str, object]:
    d = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    certs = write_material(d)
    app_port, ms_tcp, ms_http, hp_port = free_port(), free_port(), free_port(), free_port()
    hp_http = free_port()
    workers = args.workers
    maxconn = haproxy_maxconn(args.idle)
    (d / "haproxy.cfg").write_text(
        haproxy_config(
            d, maxconn=maxconn, workers=workers, tcp=hp_port, http=hp_http, app_port=app_port
        )
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
        mesh = d / f"mesh-{label}"
        peer = meshsec_proxy(
            src, certs, mesh, tcp=tcp, http=http, app_port=app_port, workers=workers
        )
        policy = peer.policy
        if peer.concurrent:
            procs = workers
        commands[label] = (peer.command, peer.env)
    floors = {
        f"floor-{kind}": (
            free_port(),
            [sys.executable, str(ROOT / "bench/proxy_minimal.py"), kind],
        )
        for kind in (FLOOR_KINDS if args.floor else ())
    }
    for name, (port, cmd) in floors.items():
        commands[name] = ([*cmd, str(port), str(app_port), str(d), str(workers)], dict(os.environ))
    app = start([sys.executable, "-c", APP, str(app_port), str(args.big_mib)])
    haproxy_cmd = ["haproxy", "-f", str(d / "haproxy.cfg")]
    haproxy = start(haproxy_cmd)
    proxies = {label: start(cmd, env=env) for label, (cmd, env) in commands.items()}
    listening = [(app_port, app), (hp_port, haproxy), (hp_http, haproxy)]
    for label, proc in proxies.items():
        if label in floors:
            listening.append((floors[label][0], proc))
        else:
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
    targets += [(name, port, proxies[name].pid) for name, (port, _) in floors.items()]
    labels: dict[str, str | None] = {"haproxy": None, "haproxy-http": None}
    labels |= {"meshsec-tcp": "meshsec", "meshsec-http": "meshsec"}
    labels |= {"base-tcp": "base", "base-http": "base"} | {name: name for name in floors}
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
    peers |= {"base-tcp": "haproxy", "base-http": "haproxy-http"} | dict.fromkeys(floors, "haproxy")
    for name, _, _ in targets:
        if name in peers:
            ratios[name] = ratio(results[name], results[peers[name]], cpu=False)
            with_cpu = ratio(results[name], results[peers[name]])
            print(json.dumps({"ratio_to_haproxy": name, **with_cpu}), flush=True)
    for name, base in (("meshsec-tcp", "base-tcp"), ("meshsec-http", "base-http")):
        if base in results:
            vs_base = ratio(results[name], results[base])
            print(json.dumps({"ratio_to_baseline": name, **vs_base}), flush=True)
    for floor in floors:
        vs_floor = ratio(results["meshsec-tcp"], results[floor])
        print(json.dumps({"ratio_to_floor": "meshsec-tcp", "floor": floor, **vs_floor}), flush=True)
    shutil.rmtree(d, ignore_errors=True)
    return {
        "results": results,
        "ratios": ratios,
        "direct": direct,
        "policy": policy,
        "workers": workers,
        "meshsec_processes": procs,
        "floors": list(floors),
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
        "floor-uvloop-ssl": "floor: minimal Python relay, uvloop's SSL transport (ratio to "
        "haproxy `mode tcp`)",
        "floor-memory-bio": "floor: minimal Python relay, `ssl.MemoryBIO` on uvloop (ratio to "
        "haproxy `mode tcp`)",
    }
    floors: list[str] = run_["floors"]  # type: ignore[assignment]
    for name in ("haproxy", "meshsec-tcp", "haproxy-http", "meshsec-http", *floors):
        r = res[name]
        rows.append(
            f"| {labels[name]} | {cell(name, 'handshakes_per_s')} "
            f"| {cell(name, 'keepalive_req_per_s')} | {cell(name, 'download_MB_per_s')} "
            f"| {cell(name, 'idle_KiB_per_conn', '{:.1f}')} "
            f"| {r['p50_added_us']:,.0f} µs / {r['p99_added_us']:,.0f} µs "
            f"| {r['cpu_us_per_handshake']:,.0f} / {r['cpu_us_per_request']:,.1f} |"
        )
    table = "\n".join(rows)
    floor_note = (
        "\n\nFloors (`--floor`, `bench/proxy_minimal.py`): the least a Python mTLS relay on\n"
        "uvloop does, with the same certificates, ciphers, ALPN and worker count (SO_REUSEPORT)\n"
        "and nothing else — no policy, metrics, timers, half-close, alerts or drain. What\n"
        "meshsec's TCP port costs above them is its own work; what they cost above haproxy is\n"
        "Python's."
        if floors
        else ""
    )
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
process(es) accepting on the same listening sockets, the least-loaded worker taking each new
connection). Both terminate mTLS with `verify required`, the same
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
by the clients too; compare ratios, not absolute figures.{floor_note}
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
        "--floor",
        action="store_true",
        help="also run bench/proxy_minimal.py's minimal Python relays (no policy, no metrics)",
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
