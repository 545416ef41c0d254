"""Connection-level authorization decisions, remembered per peer while the policy is unchanged.

A sidecar sees the same few callers open connection after connection; evaluating every
AuthorizationPolicy rule again for each (~40 µs of Python per connection with one ALLOW rule)
is wasted when nothing it depends on changed. A connection-level decision (TCP ports; HTTP
ports whose policies read no request attribute) depends only on the peer — its address and
verified principal (namespace, service account and trust domain derive from the principal) —
and the port, under one policy :attr:`~ConnectionScopedAuthorizer.version`. So
:class:`CachedDecisions` wraps an authorizer that publishes a version and answers from a dict
keyed by ``(address, principal, port)``; the whole dict is dropped the moment the version
differs (new policy, configuration blocked or unblocked), so no decision outlives the policy
that made it. Per-request decisions (``request`` given) always go to the authorizer. Bounded:
past :data:`MAX_ENTRIES` peers the dict starts over.
"""

from __future__ import annotations

from meshsec.proxy.authz import (
    Authorizer,
    ConnectionScopedAuthorizer,
    Decision,
    HttpRequestInfo,
    PeerInfo,
    is_connection_scoped,
)

MAX_ENTRIES = 4096
_UNDECIDED = object()

Key = tuple[str, str, int]


class CachedDecisions:
    """An :class:`Authorizer` and :class:`ConnectionScopedAuthorizer` over ``inner``."""

    __slots__ = ("_connection", "_inner", "_tcp", "_version")

    def __init__(self, inner: ConnectionScopedAuthorizer) -> None:
        self._inner = inner
        self._version: object = _UNDECIDED
        self._tcp: dict[Key, Decision] = {}
        self._connection: dict[Key, Decision | None] = {}

    @property
    def version(self) -> object:
        return self._inner.version

    def _current(self) -> None:
        version = self._inner.version
        if version != self._version:
            self._version = version
            self._tcp.clear()
            self._connection.clear()

    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        inner: Authorizer = self._inner  # type: ignore[assignment]
        if request is not None:
            return inner.authorize(peer, port, request)
        self._current()
        key = (peer.address, peer.principal, port)
        decision = self._tcp.get(key)
        if decision is None:
            decision = inner.authorize(peer, port, None)
            if len(self._tcp) >= MAX_ENTRIES:
                self._tcp.clear()
            self._tcp[key] = decision
        return decision

    def connection_decision(self, peer: PeerInfo, port: int) -> Decision | None:
        self._current()
        key = (peer.address, peer.principal, port)
        found = self._connection.get(key, _UNDECIDED)
        if found is _UNDECIDED:
            decision = self._inner.connection_decision(peer, port)
            if len(self._connection) >= MAX_ENTRIES:
                self._connection.clear()
            self._connection[key] = decision
            return decision
        return found  # type: ignore[return-value]


def cache_decisions(authorizer: Authorizer) -> Authorizer:
    """``authorizer`` with connection decisions cached when it publishes a policy version
    (:class:`ConnectionScopedAuthorizer`); otherwise ``authorizer`` itself (nothing would tell
    when its decisions go stale)."""
    if is_connection_scoped(authorizer):
        return CachedDecisions(authorizer)
    return authorizer
