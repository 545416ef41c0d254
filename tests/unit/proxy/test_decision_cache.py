"""CachedDecisions: connection decisions remembered per peer, never past a policy change."""

from __future__ import annotations

import pytest

from meshsec.proxy import decision_cache
from meshsec.proxy.authz import AllowAll, Decision, HttpRequestInfo, PeerInfo
from meshsec.proxy.decision_cache import CachedDecisions, cache_decisions

ALICE = PeerInfo("10.0.0.1", "spiffe://cluster.local/ns/a/sa/alice", "a", "alice", "cluster.local")
BOB = PeerInfo("10.0.0.2", "spiffe://cluster.local/ns/b/sa/bob", "b", "bob", "cluster.local")
ALICE_ELSEWHERE = PeerInfo("10.0.0.9", ALICE.principal, "a", "alice", "cluster.local")


class CountingPolicy:
    """Allows ``allowed`` principals; counts every evaluation; ``version`` bumps on edits."""

    def __init__(self, *allowed: str, scoped: bool = True) -> None:
        self.allowed = set(allowed)
        self.scoped = scoped
        self.calls = 0
        self._version = object()

    @property
    def version(self) -> object:
        return self._version

    def edit(self, *allowed: str) -> None:
        self.allowed = set(allowed)
        self._version = object()

    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        self.calls += 1
        return Decision(peer.principal in self.allowed, f"{peer.principal} on {port}")

    def connection_decision(self, peer: PeerInfo, port: int) -> Decision | None:
        if not self.scoped:
            self.calls += 1
            return None
        return self.authorize(peer, port, None)


def test_a_connection_decision_is_evaluated_once_per_peer_and_port() -> None:
    policy = CountingPolicy(ALICE.principal)
    cached = CachedDecisions(policy)
    assert cached.authorize(ALICE, 80, None).allowed
    assert cached.authorize(ALICE, 80, None).allowed
    assert not cached.authorize(BOB, 80, None).allowed
    assert cached.authorize(ALICE, 81, None).allowed  # another port: evaluated
    assert cached.authorize(ALICE_ELSEWHERE, 80, None).allowed  # another address: evaluated
    assert policy.calls == 4


def test_a_policy_edit_drops_every_cached_decision() -> None:
    policy = CountingPolicy(ALICE.principal)
    cached = CachedDecisions(policy)
    assert cached.authorize(ALICE, 80, None).allowed
    assert cached.connection_decision(ALICE, 80) == Decision(True, f"{ALICE.principal} on 80")
    policy.edit(BOB.principal)  # alice revoked
    assert not cached.authorize(ALICE, 80, None).allowed
    decision = cached.connection_decision(ALICE, 80)
    assert decision is not None
    assert not decision.allowed
    assert cached.version is policy.version


def test_per_request_decisions_are_never_cached() -> None:
    policy = CountingPolicy(ALICE.principal)
    cached = CachedDecisions(policy)
    request = HttpRequestInfo("GET", "/", "svc")
    for _ in range(3):
        assert cached.authorize(ALICE, 80, request).allowed
    assert policy.calls == 3


def test_no_connection_decision_is_remembered_as_such() -> None:
    policy = CountingPolicy(ALICE.principal, scoped=False)
    cached = CachedDecisions(policy)
    assert cached.connection_decision(ALICE, 80) is None
    assert cached.connection_decision(ALICE, 80) is None
    assert policy.calls == 1


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decision_cache, "MAX_ENTRIES", 2)
    policy = CountingPolicy(ALICE.principal)
    cached = CachedDecisions(policy)
    for peer in (ALICE, BOB, ALICE_ELSEWHERE):  # the third starts the dict over
        cached.authorize(peer, 80, None)
    assert cached.authorize(ALICE, 80, None).allowed
    assert policy.calls == 4


def test_only_versioned_authorizers_are_wrapped() -> None:
    allow_all = AllowAll()
    assert cache_decisions(allow_all) is allow_all  # nothing tells when it would go stale
    assert isinstance(cache_decisions(CountingPolicy()), CachedDecisions)


def test_connection_scope_is_recognised_per_class() -> None:
    from meshsec.proxy.authz import is_connection_scoped

    assert is_connection_scoped(CountingPolicy())
    assert is_connection_scoped(CachedDecisions(CountingPolicy()))
    assert not is_connection_scoped(AllowAll())
    assert is_connection_scoped(CountingPolicy())  # answered from the per-class memo
    assert not is_connection_scoped(AllowAll())
