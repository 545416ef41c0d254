"""What the inbound side asks the policy engine: one call per connection or HTTP request.

The :class:`Authorizer` Protocol is owned here (by its consumer); the policy engine's
AuthorizationPolicy evaluator plugs in by implementing it. :class:`AllowAll` is the behaviour
of a workload with no policy (Istio: "no policy on a workload ⇒ allow all").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

from meshsec.proxy.tls import PeerIdentity


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """The downstream peer as authorization sees it; identity fields are empty over plaintext."""

    address: str
    principal: str = ""
    namespace: str = ""
    service_account: str = ""
    trust_domain: str = ""

    @property
    def mtls(self) -> bool:
        return bool(self.principal)

    @classmethod
    def from_identity(cls, identity: PeerIdentity | None, address: str) -> PeerInfo:
        if identity is None:
            return cls(address)
        return cls(
            address,
            identity.principal,
            identity.namespace or "",
            identity.service_account or "",
            identity.trust_domain,
        )


@dataclass(frozen=True, slots=True)
class HttpRequestInfo:
    """The request attributes AuthorizationPolicy ``to.operation`` and ``when`` look at.

    Header fields are kept as received (lower-case names, bytes) and decoded only when asked
    for: most requests are decided on principal, method and path alone.
    """

    method: str
    path: str
    host: str
    raw_headers: Sequence[tuple[bytes, bytes]] = ()

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw_headers)

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.raw_headers:
            if key == wanted:
                return value.decode("latin-1")
        return None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOWED = Decision(True, "allowed")


class Authorizer(Protocol):
    """Decide one connection (``request=None``, TCP ports) or one HTTP request."""

    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        """Must be fast and must not block: it runs on the event loop for every request."""
        ...


@runtime_checkable
class ConnectionScopedAuthorizer(Protocol):
    """Optional for an :class:`Authorizer`: decide a whole HTTP connection when possible."""

    @property
    def version(self) -> object:
        """Changes whenever any decision may change (policy snapshot, blocked state, ...)."""
        ...

    def connection_decision(self, peer: PeerInfo, port: int) -> Decision | None:
        """The decision every HTTP request from ``peer`` on ``port`` gets under ``version``,
        or None when the applicable policies depend on request attributes."""
        ...


_SCOPED_TYPES: dict[type, bool] = {}


def is_connection_scoped(authorizer: object) -> TypeGuard[ConnectionScopedAuthorizer]:
    """``isinstance(authorizer, ConnectionScopedAuthorizer)``, answered once per class.

    A check against a runtime-checkable Protocol inspects every member (~20 µs on CPython
    3.11); it runs per connection, and implementers define the members on the class.
    """
    cls = type(authorizer)
    scoped = _SCOPED_TYPES.get(cls)
    if scoped is None:
        scoped = _SCOPED_TYPES[cls] = isinstance(authorizer, ConnectionScopedAuthorizer)
    return scoped


class AllowAll:
    """No AuthorizationPolicy applies to this workload: everything is allowed."""

    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        return ALLOWED
