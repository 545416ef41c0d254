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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter

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


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
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
