"""Errors of the sidecar proxy.

::

    MeshsecError
    └── ProxyError
        ├── TlsMaterialError     certificates/keys/bundle cannot be turned into a TLS context
        ├── PeerRejected         a verified peer failed an identity check (trust domain, SAN shape)
        │   └── SecureNamingError  the server's SPIFFE ID is not one the service may run as
        ├── HttpError            an HTTP/1.1 message broke the protocol (status to answer with)
        └── UpstreamUnavailable  no endpoint, connect or handshake failure towards a destination
"""

from __future__ import annotations

from collections.abc import Sequence

from meshsec.errors import MeshsecError


class ProxyError(MeshsecError):
    """Root of the proxy's errors."""


class ListenError(ProxyError):
    """A listener's address could not be bound (in use, not local, no permission)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(f"cannot listen on {shown}:{port}: {reason}")


class TlsMaterialError(ProxyError):
    """An SVID, key or bundle could not be loaded into an SSL context; ``reason`` says why."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class PeerRejected(ProxyError):
    """The peer's certificate verified but its identity is not acceptable here."""

    def __init__(self, reason: str, *, presented: str | None = None) -> None:
        self.reason = reason
        self.presented = presented
        super().__init__(reason)


class SecureNamingError(PeerRejected):
    """Outbound: the server presented an identity outside the destination's allowed SANs."""

    def __init__(self, destination: str, expected: Sequence[str], presented: str) -> None:
        self.destination = destination
        self.expected = tuple(expected)
        shown = ", ".join(self.expected) if self.expected else "(none)"
        super().__init__(
            f"secure naming failed for {destination}: server presented {presented}, "
            f"expected one of [{shown}]",
            presented=presented,
        )


class HttpError(ProxyError):
    """A request or response that we refuse to relay; ``status`` is what the client gets."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


class UpstreamUnavailable(ProxyError):
    """The destination could not be reached (resolution, connect or TLS handshake)."""

    def __init__(self, destination: str, reason: str) -> None:
        self.destination = destination
        self.reason = reason
        super().__init__(f"upstream {destination} unavailable: {reason}")
