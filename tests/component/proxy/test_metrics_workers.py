"""``--concurrency``'s metrics: forked workers record to a shared directory, one registry sums
them (prometheus_client's multiprocess mode), the directory is private and removed."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from prometheus_client import Gauge, generate_latest, values

from meshsec.proxy import metrics as metrics_module
from meshsec.proxy.metrics import (
    REQUEST_LABELS,
    ConnectionLabels,
    ProxyMetrics,
    build_aggregate_registry,
    forget_worker,
    record_to_shared_dir,
    shared_metrics_dir,
)
from meshsec.proxy.workers import run_workers

LABELS = ConnectionLabels(
    "destination",
    "spiffe://cluster.local/ns/frontend/sa/client",
    "spiffe://cluster.local/ns/backend/sa/server",
    "server.backend.svc.cluster.local",
    "mutual_tls",
)


def _sample(path: Path, name: str, labels: dict[str, str] | None = None) -> float:
    wanted = (labels or {}).items()
    return sum(
        sample.value
        for metric in build_aggregate_registry(path).collect()
        for sample in metric.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted)
    )


def test_the_aggregate_registry_sums_every_workers_counters() -> None:
    reaped: list[int] = []
    with shared_metrics_dir() as path:

        def serve(index: int) -> int:
            record_to_shared_dir(path)
            metrics = ProxyMetrics()
            for _ in range(index + 2):  # worker 0: 2, worker 1: 3, worker 2: 4
                metrics.connection_opened(LABELS)
                metrics.request(LABELS, 200)
                metrics.connection_closed(LABELS, sent=10, received=100)
            metrics.request(LABELS, 403)
            metrics.rejected("inbound", "handshake")
            return 0 if metrics.sample("istio_requests_total") == index + 3 else 9

        assert run_workers(3, serve, exited=reaped.append) == 0
        assert len(reaped) == 3
        assert os.getpid() not in reaped
        assert len({p.name for p in path.iterdir()}) == 3  # one counter file per worker pid

        assert _sample(path, "istio_requests_total") == 9 + 3
        assert _sample(path, "istio_requests_total", {"response_code": "200"}) == 9
        assert _sample(path, "istio_requests_total", {"response_code": "403"}) == 3
        assert _sample(path, "istio_tcp_connections_opened_total") == 9
        assert _sample(path, "istio_tcp_connections_closed_total") == 9
        assert _sample(path, "istio_tcp_sent_bytes_total") == 90
        assert _sample(path, "istio_tcp_received_bytes_total") == 900
        assert (
            _sample(path, "meshsec_proxy_connections_rejected_total", {"reason": "handshake"}) == 3
        )
        # labels survive the merge; no per-pid label on counters
        text = {
            tuple(sorted(sample.labels))
            for metric in build_aggregate_registry(path).collect()
            for sample in metric.samples
            if sample.name == "istio_requests_total"
        }
        assert all("pid" not in labels and "source_principal" in labels for labels in text)
    assert not path.exists()


def test_the_shared_directory_is_private_empty_and_removed() -> None:
    with shared_metrics_dir() as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert list(path.iterdir()) == []
        (path / "counter_1.db").write_bytes(b"")
    assert not path.exists()


def test_a_reaped_workers_live_gauges_are_forgotten() -> None:
    with shared_metrics_dir() as path:

        def serve(index: int) -> int:
            record_to_shared_dir(path)
            gauge = Gauge("open_things", "open things", multiprocess_mode="livesum")
            gauge.set(index + 1)
            return 0

        pids: list[int] = []
        assert run_workers(2, serve, exited=pids.append) == 0
        assert _sample(path, "open_things") == 3
        forget_worker(path, pids[0])
        assert _sample(path, "open_things") in (1, 2)
        forget_worker(path, pids[1])
        assert _sample(path, "open_things") == 0


def test_one_process_keeps_the_in_process_registry() -> None:
    """Forked workers switched themselves; this process (like ``--concurrency 1``) did not."""
    metrics = ProxyMetrics()
    metrics.request(LABELS, 200)
    assert metrics.sample("istio_requests_total") == 1
    assert values.ValueClass is values.MutexValue


async def test_tallied_requests_are_in_every_scrape() -> None:
    """A connection's tally is flushed before the registry is collected: a scrape is exact."""
    metrics = ProxyMetrics()
    tally = metrics.request_tally(LABELS)
    for code in (200, 200, 503):
        tally.add(code)
    assert metrics.sample("istio_requests_total", {"response_code": "200"}) == 2
    assert metrics.sample("istio_requests_total", {"response_code": "503"}) == 1
    tally.add(200)
    text = generate_latest(metrics.registry).decode()
    line = next(x for x in text.splitlines() if 'response_code="200"' in x)
    assert line.startswith("istio_requests_total{")
    assert line.endswith(" 3.0")
    for label, value in zip(REQUEST_LABELS, (*LABELS.values(), "http", "200", "-"), strict=True):
        assert f'{label}="{value}"' in line


def _tally_in_worker(path: Path, count: int, *, close: bool) -> int:
    """In a forked worker: tally ``count`` requests on a loop, then either wait for the flush
    timer or flush as a closing connection does (and stop the timer); never collect."""
    record_to_shared_dir(path)
    metrics_module.FLUSH_INTERVAL = 0.05  # this process only

    async def main() -> int:
        loop = asyncio.get_running_loop()
        metrics = ProxyMetrics()
        tally = metrics.request_tally(LABELS)
        for _ in range(count):
            tally.add(200)
        timer = metrics._flush_timer
        if timer is None:
            return 7
        if close:
            tally.flush()
            timer.cancel()
            return 0
        fired = loop.create_future()
        loop.call_at(timer.when() + 0.01, fired.set_result, None)
        await asyncio.wait_for(fired, 10)
        return 0

    return asyncio.run(main())


@pytest.mark.parametrize("close", [False, True], ids=["flush-timer", "connection-close"])
def test_a_workers_tally_reaches_the_shared_files(close: bool) -> None:
    with shared_metrics_dir() as path:
        assert run_workers(2, lambda index: _tally_in_worker(path, index + 1, close=close)) == 0
        assert _sample(path, "istio_requests_total", {"response_code": "200"}) == 1 + 2
