"""The policy model's small behaviours: immutability, selectors, ordering, line lookup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.model import (
    ZERO_TIME,
    FrozenMap,
    ObjectMeta,
    Origin,
    PeerAuthentication,
    Service,
    ServicePort,
    WorkloadSelector,
)
from meshsec.core.policy.snapshot import PolicySnapshot


def test_frozen_map_is_an_immutable_hashable_mapping() -> None:
    m = FrozenMap({"a": "1", "b": "2"})
    assert m == {"a": "1", "b": "2"}
    assert m == FrozenMap([("b", "2"), ("a", "1")])
    assert hash(m) == hash(FrozenMap({"b": "2", "a": "1"}))
    assert list(m) == ["a", "b"]
    assert len(m) == 2
    with pytest.raises(TypeError):
        m["c"] = "3"  # type: ignore[index]
    assert (m == 5) is False


@pytest.mark.parametrize(
    ("match", "labels", "expected"),
    [
        ({}, {}, True),
        ({}, {"app": "x"}, True),
        ({"app": "x"}, {"app": "x", "v": "1"}, True),
        ({"app": "x"}, {"app": "y"}, False),
        ({"app": "x", "v": "1"}, {"app": "x"}, False),
        ({"app": ""}, {"app": ""}, True),
        ({"app": ""}, {}, False),
    ],
    ids=[
        "empty-empty",
        "empty-any",
        "subset",
        "value-differs",
        "missing-key",
        "empty-value",
        "absent",
    ],
)
def test_workload_selector_matches_subset(
    match: dict[str, str], labels: dict[str, str], expected: bool
) -> None:
    selector = WorkloadSelector(FrozenMap(match))
    assert selector.matches(labels) is expected
    assert selector.is_empty is (not match)


def _pa(
    name: str, ts: datetime | None, order: int, selector: dict[str, str] | None = None
) -> PeerAuthentication:
    return PeerAuthentication(
        meta=ObjectMeta(name, "ns", ts),
        origin=Origin("f.yaml", order, 0, order),
        selector=WorkloadSelector(FrozenMap(selector)) if selector is not None else None,
    )


def test_precedence_key_oldest_then_input_order() -> None:
    t1 = datetime(2024, 1, 1, tzinfo=UTC)
    t2 = datetime(2024, 1, 2, tzinfo=UTC)
    policies = [_pa("late", t2, 1), _pa("tie-b", t1, 3), _pa("tie-a", t1, 2), _pa("none", None, 4)]
    ordered = sorted(policies, key=lambda p: p.precedence_key)
    assert [p.name for p in ordered] == ["none", "tie-a", "tie-b", "late"]
    assert policies[3].precedence_key == (ZERO_TIME, 4)


def test_has_selector_treats_empty_match_labels_as_none() -> None:
    assert not _pa("a", None, 1).has_selector
    assert not _pa("a", None, 1, {}).has_selector
    assert _pa("a", None, 1, {"app": "x"}).has_selector


def test_origin_line_lookup_falls_back_to_parents() -> None:
    origin = Origin(
        "f.yaml",
        3,
        0,
        1,
        FrozenMap({"spec": 5, "spec.rules": 6, "spec.rules[0]": 7, "spec.rules[0].from": 8}),
    )
    assert origin.line_of("spec.rules[0].from") == 8
    assert origin.line_of("spec.rules[0].from[2].source") == 8
    assert origin.line_of("spec.rules[1]") == 6
    assert origin.line_of("metadata.name") == 3
    assert origin.line_of("") == 3
    assert str(origin) == "f.yaml:3"
    assert str(Origin()) == "<input>"
    assert origin == Origin("f.yaml", 3, 0, 1)  # line map is not part of identity


def test_service_port_defaults_and_selection() -> None:
    port = ServicePort(80)
    assert (port.protocol, port.effective_target_port) == ("TCP", 80)
    svc = Service(meta=ObjectMeta("web", "foo"), origin=Origin(), selector=None)
    assert not svc.selects({"app": "web"})
    assert svc.hostname == "web.foo.svc.cluster.local"


def test_snapshot_has_errors_and_empty_indexes() -> None:
    snap = PolicySnapshot()
    assert not snap.has_errors
    assert snap.root_namespace == "istio-system"
    assert snap.namespace("x") is None
    err = PolicySnapshot(diagnostics=(Diagnostic("MS0101", Level.ERROR, "bad"),))
    assert err.has_errors
    assert str(err.diagnostics[0]) == "<input>: Error [MS0101]: bad"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("web.foo.svc.cluster.local", ["foo/web"]),
        ("WEB.foo.svc.cluster.local", ["foo/web"]),
        ("*.foo.svc.cluster.local", ["foo/web", "foo/db"]),
        ("*.local", ["foo/web", "foo/db", "bar/web"]),
        ("*", ["foo/web", "foo/db", "bar/web"]),
        ("web.baz.svc.cluster.local", []),
    ],
    ids=["exact", "case", "namespace-wildcard", "suffix-wildcard", "star", "none"],
)
def test_services_for_host(host: str, expected: list[str]) -> None:
    services = tuple(
        Service(meta=ObjectMeta(name, ns), origin=Origin())
        for ns, name in (("foo", "web"), ("foo", "db"), ("bar", "web"))
    )
    snap = PolicySnapshot(services=services)
    assert [s.meta.key for s in snap.services_for_host(host)] == expected
