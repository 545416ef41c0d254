"""Fakes for the outbound side: a service registry and a client TLS policy, both plain tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from meshsec.proxy.upstream import ClientTlsMode, ClientTlsSettings, Endpoint


@dataclass
class FakeResolver:
    """``services[(host, port)]`` → endpoints; records every lookup."""

    services: dict[tuple[str, int], list[Endpoint]] = field(default_factory=dict)
    lookups: list[tuple[str, int]] = field(default_factory=list)

    def add(self, host: str, port: int, *endpoints: Endpoint) -> None:
        self.services[(host, port)] = list(endpoints)

    def resolve(self, host: str, port: int) -> Sequence[Endpoint]:
        self.lookups.append((host, port))
        return self.services.get((host, port), [])


@dataclass
class FakeClientTlsPolicy:
    """Per-host settings; every other host gets ``default`` (ISTIO_MUTUAL, as auto mTLS would)."""

    per_host: dict[str, ClientTlsSettings] = field(default_factory=dict)
    default: ClientTlsSettings = field(
        default_factory=lambda: ClientTlsSettings(ClientTlsMode.ISTIO_MUTUAL, auto=True)
    )

    def client_tls(self, host: str, port: int) -> ClientTlsSettings:
        return self.per_host.get(host, self.default)
