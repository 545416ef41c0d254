"""The CA's Prometheus metrics, with istiod's ``citadel_server_*`` names (no ``_total`` suffix).

Worker processes count into a shared-memory table (one row per worker, so every slot has a
single writer); the supervisor's collector sums the rows at scrape time and adds the expiry
gauges. Counters are exposed untyped so the names stay exactly Istio's (the Python client would
otherwise rename a counter to ``<name>_total``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableSequence
from datetime import datetime
from multiprocessing.sharedctypes import RawArray
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from meshsec.ca.material import CaMaterial

SIGN_ERROR_LABELS = ("CA_NOT_READY", "CSR_ERROR", "TTL_ERROR", "CERT_GEN_ERROR", "UNKNOWN")

_COUNTERS: tuple[tuple[str, str], ...] = (
    ("citadel_server_csr_count", "The number of CSRs received by Citadel server."),
    (
        "citadel_server_authentication_failure_count",
        "The number of authentication failures.",
    ),
    ("citadel_server_csr_parsing_err_count", "The number of errors occurred when parsing the CSR."),
    (
        "citadel_server_id_extraction_err_count",
        "The number of errors occurred when extracting the ID from CSR.",
    ),
    (
        "citadel_server_success_cert_issuance_count",
        "The number of certificates issuances that have succeeded.",
    ),
)
_SIGN_ERR = "citadel_server_csr_sign_err_count"
# Multi-cluster (istio:pkg/kube/multicluster/secretcontroller.go): secret events by `event`
# (Istio's add / update / delete, plus meshsec's `invalid`: a secret refused), the managed
# clusters gauge, and TokenReviews that could not reach a cluster's API server.
SECRET_EVENTS = "remote_cluster_secret_events_total"  # noqa: S105 - a metric name
SECRET_EVENT_LABELS = ("add", "update", "delete", "invalid")
MANAGED_CLUSTERS = "istiod_managed_clusters"
CLUSTER_TYPES = ("local", "remote")
TOKENREVIEW_UNAVAILABLE = "meshsec_ca_tokenreview_unavailable_count"
SLOTS: tuple[str, ...] = (
    tuple(name for name, _ in _COUNTERS)
    + tuple(f"{_SIGN_ERR}:{label}" for label in SIGN_ERROR_LABELS)
    + tuple(f"{SECRET_EVENTS}:{label}" for label in SECRET_EVENT_LABELS)
    + tuple(f"{MANAGED_CLUSTERS}:{label}" for label in CLUSTER_TYPES)
    + (TOKENREVIEW_UNAVAILABLE,)
)
_INDEX = {name: i for i, name in enumerate(SLOTS)}


def allocate_counter_table(workers: int) -> MutableSequence[int]:
    """Shared memory for ``workers`` rows of counters (inherited by spawned workers)."""
    table: MutableSequence[int] = RawArray("Q", workers * len(SLOTS))
    return table


class CaCounters:
    """One worker's row of the shared table. Thread-safe within the worker."""

    def __init__(self, table: MutableSequence[int] | None = None, worker: int = 0) -> None:
        self._table: MutableSequence[int] = (
            table if table is not None else allocate_counter_table(1)
        )
        self._base = worker * len(SLOTS)
        self._lock = threading.Lock()

    def inc(self, name: str) -> None:
        index = self._base + _INDEX[name]
        with self._lock:
            self._table[index] += 1

    def set(self, name: str, value: int) -> None:
        """A gauge slot (written by one worker only)."""
        with self._lock:
            self._table[self._base + _INDEX[name]] = max(0, value)

    def sign_error(self, label: str) -> None:
        self.inc(f"{_SIGN_ERR}:{label}")

    def value(self, name: str) -> int:
        return int(self._table[self._base + _INDEX[name]])


class CaCollector(Collector):
    """Sums every worker's counters; reports root and chain expiry (unix seconds and remaining)."""

    def __init__(
        self,
        table: MutableSequence[int],
        workers: int,
        *,
        root_not_after: datetime,
        chain_not_after: datetime | None,
        now: Callable[[], datetime],
        multicluster: bool = False,
    ) -> None:
        self._multicluster = multicluster  # remote secrets configured: export those metrics
        self._table = table
        self._workers = workers
        self._root_not_after = root_not_after
        self._chain_not_after = chain_not_after
        self._now = now

    def _sum(self, slot: str) -> int:
        i, width = _INDEX[slot], len(SLOTS)
        return sum(int(self._table[w * width + i]) for w in range(self._workers))

    def collect(self) -> Iterator[Metric]:
        for name, doc in _COUNTERS:
            metric = Metric(name, doc, "unknown")
            metric.add_sample(name, {}, float(self._sum(name)))
            yield metric
        errors = Metric(_SIGN_ERR, "The number of errors occurred when signing the CSR.", "unknown")
        for label in SIGN_ERROR_LABELS:
            errors.add_sample(_SIGN_ERR, {"error": label}, float(self._sum(f"{_SIGN_ERR}:{label}")))
        yield errors
        if self._multicluster:
            yield from self._collect_multicluster()
        now = self._now().timestamp()
        expiries: list[tuple[str, datetime | None]] = [
            ("root_cert", self._root_not_after),
            ("cert_chain", self._chain_not_after),
        ]
        for stem, not_after in expiries:
            if not_after is None:
                continue
            ts = not_after.timestamp()
            yield GaugeMetricFamily(
                f"citadel_server_{stem}_expiry_timestamp",
                f"The unix timestamp, in seconds, when the {stem.replace('_', ' ')} will expire.",
                value=ts,
            )
            yield GaugeMetricFamily(
                f"citadel_server_{stem}_expiry_seconds",
                f"The time remaining, in seconds, before the {stem.replace('_', ' ')} will expire.",
                value=ts - now,
            )

    def _collect_multicluster(self) -> Iterator[Metric]:
        events = Metric(SECRET_EVENTS, "Number of remote cluster secret events.", "unknown")
        for label in SECRET_EVENT_LABELS:
            events.add_sample(
                SECRET_EVENTS, {"event": label}, float(self._sum(f"{SECRET_EVENTS}:{label}"))
            )
        yield events
        clusters = GaugeMetricFamily(
            MANAGED_CLUSTERS, "Number of clusters managed by istiod", labels=["cluster_type"]
        )
        for label in CLUSTER_TYPES:
            clusters.add_metric([label], float(self._sum(f"{MANAGED_CLUSTERS}:{label}")))
        yield clusters
        unavailable = Metric(
            TOKENREVIEW_UNAVAILABLE,
            "TokenReviews that failed because the cluster's API server could not be reached.",
            "unknown",
        )
        unavailable.add_sample(
            TOKENREVIEW_UNAVAILABLE, {}, float(self._sum(TOKENREVIEW_UNAVAILABLE))
        )
        yield unavailable


def reported_chain_not_after(material: CaMaterial) -> datetime | None:
    """Istio exports ``citadel_server_cert_chain_expiry_*`` only for a plugged-in CA; for the
    self-signed root the chain is the root itself (``citadel_server_root_cert_expiry_*``)."""
    return material.chain_not_after if material.mode == "plugged-in" else None


def build_registry(collector: CaCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def parse_metrics_text(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for tests and tools reading /metrics."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        values[key] = float(value)
    return values


__all__: list[Any] = [
    "SIGN_ERROR_LABELS",
    "CaCollector",
    "CaCounters",
    "allocate_counter_table",
    "build_registry",
    "parse_metrics_text",
]
