"""What an authorization decision looks at: the connection's peer and, for HTTP, the request.

``source_principal`` is the peer certificate's URI SAN (``spiffe://td/ns/x/sa/y``) as the inbound
proxy verified it, or ``None`` for a plaintext connection (no peer identity). ``http`` is ``None``
for a TCP connection; Istio then evaluates policies with its TCP semantics (HTTP-only fields
cannot match an ALLOW rule and are ignored in a DENY rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshsec.core.policy.model import FrozenMap


def _no_headers() -> FrozenMap[str, str]:
    return FrozenMap()


@dataclass(frozen=True)
class HttpAttributes:
    """The HTTP request: method, path (query allowed; it is ignored by path matching),
    host (the ``:authority``) and headers (names are case-insensitive)."""

    method: str = "GET"
    path: str = "/"
    host: str | None = None
    headers: FrozenMap[str, str] = field(default_factory=_no_headers)

    @classmethod
    def build(
        cls,
        method: str = "GET",
        path: str = "/",
        host: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAttributes:
        """Normalise header names to lower case."""
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        return cls(method, path, host, FrozenMap(lowered))

    def header(self, name: str) -> str | None:
        """A header's value (``:method``, ``:path`` and ``:authority``/``host`` included)."""
        key = name.lower()
        if key == ":method":
            return self.method
        if key == ":path":
            return self.path
        if key in (":authority", "host"):
            return self.host if self.host is not None else self.headers.get(key)
        return self.headers.get(key)


@dataclass(frozen=True)
class AuthzRequest:
    """One connection (TCP) or request (HTTP) arriving at a workload port.

    ``remote_ip`` is the original client address (X-Forwarded-For / PROXY protocol); it defaults
    to ``source_ip``. ``sni`` is the requested server name of the TLS connection, if any.
    """

    destination_port: int
    source_principal: str | None = None
    source_ip: str | None = None
    http: HttpAttributes | None = None
    destination_ip: str | None = None
    remote_ip: str | None = None
    sni: str | None = None

    @property
    def is_tcp(self) -> bool:
        return self.http is None

    @property
    def effective_remote_ip(self) -> str | None:
        return self.remote_ip if self.remote_ip is not None else self.source_ip
