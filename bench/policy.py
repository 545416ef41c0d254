"""Benchmark: effective PeerAuthentication for 1,000 namespaces x 10 workloads, 10,000 policies.

Run:  PYTHONPATH=src python bench/policy.py [--runs 5] [--namespaces 1000] [--workloads 10]

Measures (median of --runs, each on freshly built inputs):
* ``index_s``   build the per-namespace index once (PeerAuthenticationIndex)
* ``compose_s`` compose the effective mode of every workload (10,000) plus the namespace mode of
  every namespace (1,000)
* ``total_s``   index + compose — the number held against the 1 s target
* ``floor_s``   the physical baseline measured in the same run: touching each of the 10,000
  policies once (read namespace, selector and mode) — no algorithm can do less
* ``naive_s``   the per-workload full scan this design avoids, extrapolated from a sample
Prints one JSON line with the medians and the ratios total/floor and naive/total.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass

from meshsec.core.policy.model import (
    FrozenMap,
    MeshConfig,
    MtlsMode,
    ObjectMeta,
    Origin,
    PeerAuthentication,
    WorkloadSelector,
)
from meshsec.core.policy.peer_authn import PeerAuthenticationIndex, compose_peer_authentication

MODES = (MtlsMode.UNSET, MtlsMode.DISABLE, MtlsMode.PERMISSIVE, MtlsMode.STRICT)


@dataclass(frozen=True)
class Inputs:
    policies: list[PeerAuthentication]
    workloads: list[tuple[str, FrozenMap[str, str]]]
    namespaces: list[str]


def build_inputs(namespaces: int, per_namespace: int, total_policies: int, seed: int) -> Inputs:
    """``total_policies`` spread over the namespaces: a namespace policy each (some with a newer
    duplicate), the rest workload-level (some with port-level entries, some not matching any
    workload), plus a mesh policy and ignored selector policies in the root namespace."""
    rng = random.Random(seed)
    mesh_root = "istio-system"
    names = [f"ns-{i:04d}" for i in range(namespaces)]
    workloads = [
        (ns, FrozenMap({"app": f"app-{j}", "version": f"v{j % 3}"}))
        for ns in names
        for j in range(per_namespace)
    ]
    order = 0
    policies: list[PeerAuthentication] = []

    def add(
        ns: str, name: str, selector: dict[str, str] | None, ports: dict[int, MtlsMode]
    ) -> None:
        nonlocal order
        policies.append(
            PeerAuthentication(
                meta=ObjectMeta(name=name, namespace=ns),
                origin=Origin(order=order),
                selector=WorkloadSelector(FrozenMap(selector)) if selector else None,
                mtls=rng.choice(MODES),
                port_level_mtls=FrozenMap(ports),
            )
        )
        order += 1

    add(mesh_root, "default", None, {})
    for i in range(4):
        add(mesh_root, f"root-selector-{i}", {"app": f"app-{i}"}, {})
    remaining = total_policies - len(policies)
    per_ns, extra = divmod(remaining, namespaces)
    for index, ns in enumerate(names):
        count = per_ns + (1 if index < extra else 0)
        add(ns, "default", None, {})
        for k in range(1, count):
            if k == 1 and index % 10 == 0:
                add(ns, "duplicate", None, {})  # ignored: newer selector-less
                continue
            app = f"app-{rng.randrange(per_namespace + 2)}"  # some match no workload
            ports = {8000 + k: rng.choice(MODES)} if k % 3 == 0 else {}
            add(ns, f"wl-{k}", {"app": app}, ports)
    assert len(policies) == total_policies, len(policies)
    return Inputs(policies, workloads, names)


def run_indexed(inputs: Inputs, mesh: MeshConfig) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    index = PeerAuthenticationIndex(inputs.policies, mesh)
    t1 = time.perf_counter()
    strict = 0
    for ns, labels in inputs.workloads:
        if index.compose(ns, labels).mode is MtlsMode.STRICT:
            strict += 1
    for ns in inputs.namespaces:
        index.namespace_mode(ns)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, strict


def run_floor(inputs: Inputs) -> float:
    t0 = time.perf_counter()
    seen = 0
    for p in inputs.policies:
        if p.namespace and p.selector is not None and p.mtls is MtlsMode.STRICT:
            seen += 1
    return time.perf_counter() - t0


def run_naive_sample(inputs: Inputs, mesh: MeshConfig, sample: int) -> float:
    """Scan all policies for each of ``sample`` workloads; extrapolate to every workload."""
    chosen = inputs.workloads[:: max(1, len(inputs.workloads) // sample)][:sample]
    t0 = time.perf_counter()
    for ns, labels in chosen:
        compose_peer_authentication(ns, labels, inputs.policies, mesh)
    elapsed = time.perf_counter() - t0
    return elapsed / len(chosen) * len(inputs.workloads)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--workloads", type=int, default=10, help="per namespace")
    parser.add_argument("--policies", type=int, default=10_000)
    parser.add_argument("--naive-sample", type=int, default=20)
    parser.add_argument("--target", type=float, default=1.0, help="seconds for total_s")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3 (medians of >= 3)")

    mesh = MeshConfig()
    index_s: list[float] = []
    compose_s: list[float] = []
    total_s: list[float] = []
    floor_s: list[float] = []
    naive_s: list[float] = []
    strict = 0
    for run in range(args.runs):
        inputs = build_inputs(args.namespaces, args.workloads, args.policies, seed=run)
        i, c, strict = run_indexed(inputs, mesh)
        index_s.append(i)
        compose_s.append(c)
        total_s.append(i + c)
        floor_s.append(run_floor(inputs))
        naive_s.append(run_naive_sample(inputs, mesh, args.naive_sample))

    total = median(total_s)
    floor = median(floor_s)
    naive = median(naive_s)
    result = {
        "bench": "policy.compose_peer_authentication",
        "namespaces": args.namespaces,
        "workloads": args.namespaces * args.workloads,
        "policies": args.policies,
        "runs": args.runs,
        "index_s": round(median(index_s), 4),
        "compose_s": round(median(compose_s), 4),
        "total_s": round(total, 4),
        "floor_s": round(floor, 5),
        "naive_s": round(naive, 2),
        "total_over_floor": round(total / floor, 1) if floor else None,
        "naive_over_total": round(naive / total, 1) if total else None,
        "per_workload_us": round(median(compose_s) / (args.namespaces * args.workloads) * 1e6, 1),
        "strict_workloads_last_run": strict,
        "target_s": args.target,
        "meets_target": total <= args.target,
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return 0 if total <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
