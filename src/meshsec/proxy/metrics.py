"""The proxy's Prometheus metrics, named and labelled as Istio's standard metrics where they exist.

Istio (Envoy stats via the ``istio.stats`` filter): ``istio_requests_total``,
``istio_tcp_connections_opened_total``, ``istio_tcp_connections_closed_total``,
``istio_tcp_sent_bytes_total``, ``istio_tcp_received_bytes_total`` with ``reporter``
(``source`` on outbound, ``destination`` on inbound), ``source_principal``,
``destination_principal``, ``destination_service``, ``connection_security_policy``
(``mutual_tls`` | ``none``; Istio reports ``unknown`` on the client side) and, for requests,
``request_protocol``, ``response_code`` and ``response_flags`` (Envoy's short flags, ``-`` for
none; ``UC``: the upstream connection ended before a response head). meshsec-only counters are
prefixed ``meshsec_proxy_``. Label children are cached so the hot path does one dict lookup per
event.

Requests on an inbound HTTP connection are counted in plain ints (:class:`RequestTally`, one per
connection) and flushed into ``istio_requests_total`` when the connection closes, at most
:data:`FLUSH_INTERVAL` seconds after the first unflushed one (one loop timer per process, like
Envoy's periodic flush of its thread-local stats), and before any collection of this registry —
so a scrape of one process's registry is exact, and the ``--concurrency`` sum lags by at most
that interval. A counter update costs ~1.4 µs in multiprocess mode (a lock and an mmap write);
a tally update ~0.1 µs.

``--concurrency N`` (N > 1) uses prometheus_client's multiprocess mode so the admin port reports
the sum over every worker, as Envoy sums its worker threads' stats: the parent creates a private
directory (:func:`shared_metrics_dir`, 0700, removed on exit), each worker switches to per-pid
metric files in it before creating its first metric (:func:`record_to_shared_dir`), worker 0's
``/metrics`` reads all of them (:func:`build_aggregate_registry`) and the parent forgets a worker's
live gauges when it exits (:func:`forget_worker`). Counters are summed over workers. There is no
gauge today; one added here must pass ``multiprocess_mode`` (``livesum`` for counts of open
things such as connections, ``max``/``mostrecent`` for timestamps or versions). One worker (the
default, and ``meshsec up``'s sidecars) keeps the in-process registry: no files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

TCP_LABELS = (
    "reporter",
    "source_principal",
    "destination_principal",
    "destination_service",
    "connection_security_policy",
)
REQUEST_LABELS = (*TCP_LABELS, "request_protocol", "response_code", "response_flags")
UNKNOWN = "unknown"
NO_FLAGS = "-"
UPSTREAM_CONNECTION_TERMINATION = "UC"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it to place its files
FLUSH_INTERVAL = 1.0  # seconds: the longest a tallied request waits to reach the counters


@dataclass(frozen=True, slots=True)
class ConnectionLabels:
    reporter: str
    source_principal: str
    destination_principal: str
    destination_service: str
    connection_security_policy: str

    def values(self) -> tuple[str, ...]:
        return (
            self.reporter,
            self.source_principal or UNKNOWN,
            self.destination_principal or UNKNOWN,
            self.destination_service or UNKNOWN,
            self.connection_security_policy,
        )


class RequestTally:
    """One connection's requests by response code (no response flags), in plain ints until
    :meth:`flush`; :meth:`ProxyMetrics.request_tally` makes one."""

    __slots__ = ("_counts", "_metrics", "_values")

    def __init__(self, metrics: ProxyMetrics, labels: ConnectionLabels) -> None:
        self._metrics = metrics
        self._values = labels.values()
        self._counts: dict[int, int] = {}

    def add(self, response_code: int) -> None:
        counts = self._counts
        n = counts.get(response_code)
        if n is not None:
            counts[response_code] = n + 1
            return
        counts[response_code] = 1
        if len(counts) == 1:  # the first since the last flush
            self._metrics._pending(self)

    def flush(self) -> None:
        counts = self._counts
        if counts:
            self._metrics._flush_tally(self._values, counts)
            counts.clear()

    def flush_when_done(self, _done: object) -> None:
        """:meth:`flush` as a done-callback of the connection's end."""
        self.flush()


class _FlushFirst:
    """Registered before the counters: a collection of the registry first flushes the tallies."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        self._flush()
        return ()


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._unflushed: list[RequestTally] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        r.register(_FlushFirst(self.flush))
        self._opened = Counter(
            "istio_tcp_connections_opened", "TCP connections opened", TCP_LABELS, registry=r
        )
        self._closed = Counter(
            "istio_tcp_connections_closed", "TCP connections closed", TCP_LABELS, registry=r
        )
        self._sent = Counter(
            "istio_tcp_sent_bytes", "bytes sent towards the destination", TCP_LABELS, registry=r
        )
        self._received = Counter(
            "istio_tcp_received_bytes",
            "bytes from the destination",
            TCP_LABELS,
            registry=r,
        )
        self._requests = Counter("istio_requests", "HTTP requests", REQUEST_LABELS, registry=r)
        self._rejected = Counter(
            "meshsec_proxy_connections_rejected",
            "connections refused before forwarding (handshake, identity, policy, upstream)",
            ("direction", "reason"),
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Counter, values: tuple[str, ...]) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*values)
            self._children[key] = child
        return child

    def connection_opened(self, labels: ConnectionLabels) -> None:
        self._child(self._opened, labels.values()).inc()

    def connection_closed(self, labels: ConnectionLabels, sent: int, received: int) -> None:
        values = labels.values()
        self._child(self._closed, values).inc()
        if sent:
            self._child(self._sent, values).inc(sent)
        if received:
            self._child(self._received, values).inc(received)

    def request(
        self, labels: ConnectionLabels, response_code: int, response_flags: str = NO_FLAGS
    ) -> None:
        values = (*labels.values(), "http", str(response_code), response_flags)
        self._child(self._requests, values).inc()

    def request_tally(self, labels: ConnectionLabels) -> RequestTally:
        """Counts for one connection's requests (no response flags); flushed into
        ``istio_requests_total`` by :meth:`RequestTally.flush` (call it when the connection
        closes), by the process's flush timer and before every collection."""
        return RequestTally(self, labels)

    def _pending(self, tally: RequestTally) -> None:
        """``tally`` has its first unflushed count: flush it within FLUSH_INTERVAL."""
        self._unflushed.append(tally)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to flush it later: now
            self.flush()
            return
        if self._flush_timer is None or self._flush_loop is not loop:  # (a test's new loop)
            self._flush_loop = loop
            self._flush_timer = loop.call_later(FLUSH_INTERVAL, self.flush)

    def _flush_tally(self, values: tuple[str, ...], counts: dict[int, int]) -> None:
        for code, n in counts.items():
            self._child(self._requests, (*values, "http", str(code), NO_FLAGS)).inc(n)

    def flush(self) -> None:
        """Move every tallied request into the counters."""
        timer, self._flush_timer = self._flush_timer, None
        if timer is not None:
            timer.cancel()
        unflushed, self._unflushed = self._unflushed, []
        for tally in unflushed:
            tally.flush()

    def rejected(self, direction: str, reason: str) -> None:
        self._child(self._rejected, (direction, reason)).inc()

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The sum of a counter's samples whose labels include ``labels`` (labels not given are
        summed over); 0.0 when none was incremented."""
        wanted = (labels or {}).items()
        return sum(
            (
                sample.value
                for metric in self.registry.collect()
                for sample in metric.samples
                if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted)
            ),
            0.0,
        )


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """The parent's private directory for its workers' metric files: created empty (mode 0700,
    so no other user reads or plants metric files), removed with its files on exit."""
    path = Path(tempfile.mkdtemp(prefix="meshsec-proxy-metrics-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def record_to_shared_dir(path: Path) -> None:
    """In a forked worker, before its first metric: every metric created from now on keeps its
    value in this process's per-pid files under ``path`` (prometheus_client's multiprocess mode;
    the library picks its value class from the environment once, at import, so it is chosen
    again here)."""
    os.environ[MULTIPROC_DIR_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def build_aggregate_registry(path: Path) -> CollectorRegistry:
    """A registry whose collection merges every worker's files under ``path``: counters summed,
    gauges by their ``multiprocess_mode``. Separate from any worker's own registry, which would
    report that worker's values twice."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return registry


def forget_worker(path: Path, pid: int) -> None:
    """A worker exited: drop its live gauges (its counters stay in the sums)."""
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
