"""The agent's Prometheus metrics, exposed with Istio's exact names (contract §6.3).

Istio exports agent metrics through OpenTelemetry without a ``_total`` suffix on counters
(``istio_agent_num_outgoing_requests``), which ``prometheus_client`` cannot produce, so this
module renders the text exposition format itself. It is small on purpose: counters and gauges with
labels, plus gauges computed at scrape time (certificate expiry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

CSR = "csr"


@dataclass
class _Family:
    name: str
    kind: str  # counter | gauge
    help: str
    values: dict[Labels, float] = field(default_factory=dict)


class AgentMetrics:
    """Counters of one agent process; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._collectors: list[Callable[[], Iterable[tuple[str, Labels, float]]]] = []
        for name, kind, text in _CATALOG:
            self._families[name] = _Family(name, kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        family = self._families[name]
        key = tuple(sorted(labels.items()))
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._families[name].values[tuple(sorted(labels.items()))] = value

    def value(self, name: str, **labels: str) -> float:
        """Current value (0 if never touched); collected gauges included."""
        key = tuple(sorted(labels.items()))
        for sample_name, sample_labels, sample in self._collected():
            if sample_name == name and sample_labels == key:
                return sample
        return self._families[name].values.get(key, 0.0)

    def add_collector(self, collect: Callable[[], Iterable[tuple[str, Labels, float]]]) -> None:
        """Register a callback producing (family name, labels, value) samples at scrape time."""
        self._collectors.append(collect)

    def _collected(self) -> list[tuple[str, Labels, float]]:
        return [sample for collect in self._collectors for sample in collect()]

    def render(self) -> str:
        collected: dict[str, dict[Labels, float]] = {}
        for name, labels, value in self._collected():
            collected.setdefault(name, {})[labels] = value
        lines: list[str] = []
        for family in self._families.values():
            values = {**family.values, **collected.get(family.name, {})}
            lines.append(f"# HELP {family.name} {family.help}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in sorted(values.items()):
                lines.append(f"{family.name}{_format_labels(labels)} {_format_value(value)}")
        return "\n".join(lines) + "\n"


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


OUTGOING_LATENCY = "istio_agent_outgoing_latency"
NUM_OUTGOING_REQUESTS = "istio_agent_num_outgoing_requests"
NUM_FAILED_OUTGOING_REQUESTS = "istio_agent_num_failed_outgoing_requests"
NUM_OUTGOING_RETRIES = "istio_agent_num_outgoing_retries"
CERT_EXPIRY_SECONDS = "istio_agent_cert_expiry_seconds"
FILE_WATCHER_FAILURES = "istio_agent_num_file_watcher_failures_total"
FILE_SECRET_FAILURES = "istio_agent_num_file_secret_failures_total"  # noqa: S105 (a name)
TOKEN_READ_FAILURES = "istio_agent_token_read_failures_total"  # noqa: S105 (a name)
SDS_PUSHES = "istio_agent_sds_pushes_total"
SDS_NACKS = "istio_agent_sds_nacks_total"

_CATALOG: tuple[tuple[str, str, str], ...] = (
    (OUTGOING_LATENCY, "counter", "Total time spent on outgoing requests to the CA, in ms."),
    (NUM_OUTGOING_REQUESTS, "counter", "Outgoing requests (request_type=csr)."),
    (NUM_FAILED_OUTGOING_REQUESTS, "counter", "Outgoing requests that failed."),
    (NUM_OUTGOING_RETRIES, "counter", "Retries of outgoing requests."),
    (CERT_EXPIRY_SECONDS, "gauge", "Seconds until the served certificate expires."),
    (FILE_WATCHER_FAILURES, "counter", "Failures watching mounted certificate files."),
    (FILE_SECRET_FAILURES, "counter", "Mounted certificate files that could not be used."),
    (TOKEN_READ_FAILURES, "counter", "Token file missing, empty, unreadable or expired (reason)."),
    (SDS_PUSHES, "counter", "SDS responses sent (resource_name)."),
    (SDS_NACKS, "counter", "SDS NACKs received (resource_name)."),
)
