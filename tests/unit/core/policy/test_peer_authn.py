"""PeerAuthentication composition, written from Istio's documented rules (contracts §5.1)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsec.core.policy.model import (
    FrozenMap,
    MeshConfig,
    MtlsMode,
    ObjectMeta,
    Origin,
    PeerAuthentication,
    WorkloadSelector,
)
from meshsec.core.policy.peer_authn import (
    Level,
    NamespaceMtlsMode,
    build_peer_authentication_index,
    compose_namespace_mode,
    compose_peer_authentication,
)

S, P, D, U = MtlsMode.STRICT, MtlsMode.PERMISSIVE, MtlsMode.DISABLE, MtlsMode.UNSET
MESH = MeshConfig()
_order = itertools.count()


def ts(minute: int) -> datetime:
    return datetime(2024, 1, 1, 0, minute, tzinfo=UTC)


def pa(
    key: str,
    mode: MtlsMode = U,
    *,
    selector: dict[str, str] | None = None,
    created: datetime | None = None,
    ports: dict[int, MtlsMode] | None = None,
) -> PeerAuthentication:
    namespace, name = key.split("/")
    return PeerAuthentication(
        meta=ObjectMeta(name=name, namespace=namespace, creation_timestamp=created),
        origin=Origin(order=next(_order)),
        selector=None if selector is None else WorkloadSelector(FrozenMap(selector)),
        mtls=mode,
        port_level_mtls=FrozenMap(ports or {}),
    )


@dataclass
class Case:
    policies: list[PeerAuthentication]
    mode: MtlsMode
    decided_by: Level
    deciding: str | None
    applied: list[str]
    namespace: str = "foo"
    labels: dict[str, str] = field(default_factory=lambda: {"app": "web"})
    port_modes: dict[int, MtlsMode] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    mesh: MeshConfig = MESH


CASES = {
    "no-policy-default-permissive": Case([], P, Level.DEFAULT, None, []),
    "mesh-strict": Case(
        [pa("istio-system/default", S)],
        S,
        Level.MESH,
        "istio-system/default",
        ["istio-system/default"],
    ),
    "namespace-overrides-mesh": Case(
        [pa("istio-system/default", S), pa("foo/default", P)],
        P,
        Level.NAMESPACE,
        "foo/default",
        ["foo/default", "istio-system/default"],
    ),
    "workload-overrides-namespace": Case(
        [
            pa("istio-system/default", S),
            pa("foo/default", P),
            pa("foo/w", S, selector={"app": "web"}),
        ],
        S,
        Level.WORKLOAD,
        "foo/w",
        ["foo/w", "foo/default", "istio-system/default"],
    ),
    "selector-not-matching-is-not-candidate": Case(
        [pa("foo/default", P), pa("foo/w", S, selector={"app": "db"})],
        P,
        Level.NAMESPACE,
        "foo/default",
        ["foo/default"],
    ),
    "selector-subset-match": Case(
        [pa("foo/w", D, selector={"app": "web"})],
        D,
        Level.WORKLOAD,
        "foo/w",
        ["foo/w"],
        labels={"app": "web", "version": "v1"},
    ),
    "empty-match-labels-is-namespace-level": Case(
        [pa("foo/a", D, selector={}), pa("foo/b", S, selector={"app": "web"})],
        S,
        Level.WORKLOAD,
        "foo/b",
        ["foo/b", "foo/a"],
    ),
    "other-namespaces-do-not-apply": Case(
        [pa("bar/default", S), pa("bar/w", D, selector={"app": "web"})], P, Level.DEFAULT, None, []
    ),
    "unset-chain-inherits-mesh": Case(
        [
            pa("istio-system/default", S),
            pa("foo/default", U),
            pa("foo/w", U, selector={"app": "web"}),
        ],
        S,
        Level.MESH,
        "istio-system/default",
        ["foo/w", "foo/default", "istio-system/default"],
    ),
    "unset-chain-everywhere-permissive": Case(
        [
            pa("istio-system/default", U),
            pa("foo/default", U),
            pa("foo/w", U, selector={"app": "web"}),
        ],
        P,
        Level.DEFAULT,
        None,
        ["foo/w", "foo/default", "istio-system/default"],
    ),
    "unset-workload-inherits-namespace": Case(
        [
            pa("istio-system/default", S),
            pa("foo/default", D),
            pa("foo/w", U, selector={"app": "web"}),
        ],
        D,
        Level.NAMESPACE,
        "foo/default",
        ["foo/w", "foo/default", "istio-system/default"],
    ),
    "unset-namespace-mesh-disable": Case(
        [pa("istio-system/default", D), pa("foo/default", U)],
        D,
        Level.MESH,
        "istio-system/default",
        ["foo/default", "istio-system/default"],
    ),
    "oldest-workload-policy-wins": Case(
        [
            pa("foo/newer", D, selector={"app": "web"}, created=ts(5)),
            pa("foo/older", S, selector={"app": "web"}, created=ts(1)),
        ],
        S,
        Level.WORKLOAD,
        "foo/older",
        ["foo/older", "foo/newer"],
    ),
    "equal-timestamps-first-in-input-wins": Case(
        [
            pa("foo/first", D, selector={"app": "web"}, created=ts(1)),
            pa("foo/second", S, selector={"app": "web"}, created=ts(1)),
        ],
        D,
        Level.WORKLOAD,
        "foo/first",
        ["foo/first", "foo/second"],
    ),
    "no-timestamps-first-in-input-wins": Case(
        [pa("foo/first", S, selector={"app": "web"}), pa("foo/second", D, selector={"app": "web"})],
        S,
        Level.WORKLOAD,
        "foo/first",
        ["foo/first", "foo/second"],
    ),
    "missing-timestamp-is-oldest": Case(
        [
            pa("foo/stamped", D, selector={"app": "web"}, created=ts(0)),
            pa("foo/unstamped", S, selector={"app": "web"}),
        ],
        S,
        Level.WORKLOAD,
        "foo/unstamped",
        ["foo/unstamped", "foo/stamped"],
    ),
    "oldest-wins-even-if-unset": Case(
        [
            pa("istio-system/default", S),
            pa("foo/older", U, selector={"app": "web"}, created=ts(1)),
            pa("foo/newer", D, selector={"app": "web"}, created=ts(2)),
        ],
        S,
        Level.MESH,
        "istio-system/default",
        ["foo/older", "foo/newer", "istio-system/default"],
    ),
    "duplicate-namespace-policies-oldest-kept": Case(
        [pa("foo/newer", D, created=ts(9)), pa("foo/older", S, created=ts(1))],
        S,
        Level.NAMESPACE,
        "foo/older",
        ["foo/older"],
        ignored=["foo/newer"],
    ),
    "duplicate-mesh-policies-oldest-kept": Case(
        [pa("istio-system/a", S, created=ts(1)), pa("istio-system/b", D, created=ts(1))],
        S,
        Level.MESH,
        "istio-system/a",
        ["istio-system/a"],
        ignored=["istio-system/b"],
    ),
    "root-namespace-selector-ignored": Case(
        [pa("istio-system/default", P), pa("istio-system/w", D, selector={"app": "web"})],
        P,
        Level.MESH,
        "istio-system/default",
        ["istio-system/default"],
        ignored=["istio-system/w"],
    ),
    "workload-in-root-namespace-only-mesh": Case(
        [pa("istio-system/default", S), pa("istio-system/w", D, selector={"app": "web"})],
        S,
        Level.MESH,
        "istio-system/default",
        ["istio-system/default"],
        namespace="istio-system",
        ignored=["istio-system/w"],
    ),
    "custom-root-namespace": Case(
        [pa("istio-system/default", D), pa("mesh-root/default", S)],
        S,
        Level.MESH,
        "mesh-root/default",
        ["mesh-root/default"],
        mesh=MeshConfig(root_namespace="mesh-root"),
    ),
    "port-level-from-workload-policy": Case(
        [pa("foo/w", S, selector={"app": "web"}, ports={8080: D, 9090: U, 7070: P})],
        S,
        Level.WORKLOAD,
        "foo/w",
        ["foo/w"],
        port_modes={8080: D, 9090: S, 7070: P},
    ),
    "port-level-unset-inherits-resolved-mode": Case(
        [
            pa("istio-system/default", S),
            pa("foo/w", U, selector={"app": "web"}, ports={80: P, 81: U}),
        ],
        S,
        Level.MESH,
        "istio-system/default",
        ["foo/w", "istio-system/default"],
        port_modes={80: P, 81: S},
    ),
    "port-level-only-from-chosen-policy": Case(
        [
            pa("foo/older", S, selector={"app": "web"}, created=ts(1)),
            pa("foo/newer", S, selector={"app": "web"}, created=ts(2), ports={80: D}),
        ],
        S,
        Level.WORKLOAD,
        "foo/older",
        ["foo/older", "foo/newer"],
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_compose(case: Case) -> None:
    result = compose_peer_authentication(case.namespace, case.labels, case.policies, case.mesh)
    assert result.mode is case.mode
    assert result.decided_by is case.decided_by
    assert (result.deciding_policy.meta.key if result.deciding_policy else None) == case.deciding
    assert [p.meta.key for p in result.applied] == case.applied
    assert dict(result.port_modes) == case.port_modes
    assert sorted(i.policy.meta.key for i in result.ignored) == sorted(case.ignored)
    assert result.reason  # every decision carries its reason


def test_seed_scenario_legacy_disable_in_strict_namespace() -> None:
    policies = [
        pa("istio-system/default", P),
        pa("sensitive/default", S),
        pa("sensitive/legacy-service", D, selector={"app": "legacy"}),
    ]
    legacy = compose_peer_authentication("sensitive", {"app": "legacy"}, policies, MESH)
    other = compose_peer_authentication("sensitive", {"app": "api"}, policies, MESH)
    assert (legacy.mode, legacy.decided_by) == (D, Level.WORKLOAD)
    assert "sensitive/legacy-service sets DISABLE" in legacy.reason
    assert (other.mode, other.decided_by) == (S, Level.NAMESPACE)
    assert [p.meta.key for p in legacy.applied] == [
        "sensitive/legacy-service",
        "sensitive/default",
        "istio-system/default",
    ]


def test_explain_port_levels() -> None:
    policies = [
        pa("istio-system/default", S),
        pa("foo/w", U, selector={"app": "web"}, ports={80: D, 81: U}),
    ]
    result = compose_peer_authentication("foo", {"app": "web"}, policies, MESH)
    explicit, inherited, other = (result.explain_port(p) for p in (80, 81, 443))
    assert (explicit.mode, explicit.level, explicit.policy) == (D, Level.PORT, policies[1])
    assert (inherited.mode, inherited.level) == (S, Level.MESH)
    assert "inherits" in inherited.reason
    assert (other.mode, other.level, other.policy) == (S, Level.MESH, policies[0])
    assert result.mode_for_port(80) is D
    assert result.mode_for_port(443) is S


def test_reason_names_unset_inheritance() -> None:
    policies = [pa("istio-system/default", S), pa("foo/default", U)]
    result = compose_peer_authentication("foo", {}, policies, MESH)
    reasons = [level.reason for level in result.levels]
    assert reasons == [
        "mesh policy istio-system/default sets STRICT",
        "namespace policy foo/default is UNSET: inherits STRICT from istio-system/default",
    ]


def test_index_is_reusable_across_workloads() -> None:
    policies = [pa("foo/default", S), pa("bar/default", D), pa("bar/w", P, selector={"app": "x"})]
    index = build_peer_authentication_index(policies, MESH)
    assert index.compose("foo", {"app": "x"}).mode is S
    assert index.compose("bar", {"app": "y"}).mode is D
    assert index.compose("bar", {"app": "x"}).mode is P
    assert index.compose("baz", {"app": "x"}).mode is P


NS_CASES = {
    "nothing-unknown": ([], NamespaceMtlsMode.UNKNOWN, None),
    "mesh-only": (
        [pa("istio-system/default", S)],
        NamespaceMtlsMode.STRICT,
        "istio-system/default",
    ),
    "mesh-unset-permissive": (
        [pa("istio-system/default", U)],
        NamespaceMtlsMode.PERMISSIVE,
        "istio-system/default",
    ),
    "namespace-overrides-mesh": (
        [pa("istio-system/default", S), pa("foo/default", D)],
        NamespaceMtlsMode.DISABLE,
        "foo/default",
    ),
    "namespace-unset-inherits-mesh": (
        [pa("istio-system/default", S), pa("foo/default", U)],
        NamespaceMtlsMode.STRICT,
        "foo/default",
    ),
    "namespace-unset-no-mesh-permissive": (
        [pa("foo/default", U)],
        NamespaceMtlsMode.PERMISSIVE,
        "foo/default",
    ),
    "workload-policies-not-consulted": (
        [pa("foo/w", S, selector={"app": "web"})],
        NamespaceMtlsMode.UNKNOWN,
        None,
    ),
    "root-selector-policies-not-consulted": (
        [pa("istio-system/w", S, selector={"app": "web"})],
        NamespaceMtlsMode.UNKNOWN,
        None,
    ),
    "oldest-namespace-policy-counts": (
        [pa("foo/b", S, created=ts(2)), pa("foo/a", D, created=ts(1))],
        NamespaceMtlsMode.DISABLE,
        "foo/a",
    ),
}


@pytest.mark.parametrize(
    ("policies", "mode", "deciding"), list(NS_CASES.values()), ids=list(NS_CASES)
)
def test_namespace_mode(
    policies: list[PeerAuthentication], mode: NamespaceMtlsMode, deciding: str | None
) -> None:
    result = compose_namespace_mode("foo", policies, MESH)
    assert result.mode is mode
    assert (result.policy.meta.key if result.policy else None) == deciding
    assert result.reason


def test_namespace_mode_of_root_namespace_is_mesh_mode() -> None:
    policies = [pa("istio-system/default", S)]
    assert compose_namespace_mode("istio-system", policies, MESH).mode is NamespaceMtlsMode.STRICT


# --- property: the index agrees with a brute-force reading of the rules -------------------------

_NAMESPACES = ("istio-system", "foo", "bar")
_LABELS = ({"app": "web"}, {"app": "db"}, {"app": "web", "v": "1"})


@st.composite
def _policies(draw: st.DrawFn) -> list[PeerAuthentication]:
    out = []
    for i in range(draw(st.integers(0, 8))):
        ns = draw(st.sampled_from(_NAMESPACES))
        selector = draw(st.sampled_from([None, {}, {"app": "web"}, {"app": "db"}, {"v": "1"}]))
        ports = draw(
            st.dictionaries(st.sampled_from([80, 443]), st.sampled_from([U, D, P, S]), max_size=2)
        )
        out.append(
            pa(
                f"{ns}/p{i}",
                draw(st.sampled_from([U, D, P, S])),
                selector=selector,
                created=draw(st.sampled_from([None, ts(1), ts(2)])),
                ports=ports if selector else None,
            )
        )
    return out


def _brute_force(
    namespace: str, labels: dict[str, str], policies: list[PeerAuthentication]
) -> tuple[MtlsMode, dict[int, MtlsMode]]:
    def oldest(items: list[PeerAuthentication]) -> PeerAuthentication | None:
        best = None
        for p in items:  # strict "<": on ties the earlier one in input order stays
            if best is None or p.precedence_key[0] < best.precedence_key[0]:
                best = p
        return best

    def selectorless(ns: str) -> PeerAuthentication | None:
        return oldest(
            [
                p
                for p in policies
                if p.namespace == ns and not (p.selector and p.selector.match_labels)
            ]
        )

    mesh = selectorless("istio-system")
    nsp = selectorless(namespace) if namespace != "istio-system" else None
    wl = None
    if namespace != "istio-system":
        wl = oldest(
            [
                p
                for p in policies
                if p.namespace == namespace
                and p.selector is not None
                and p.selector.match_labels
                and all(labels.get(k) == v for k, v in p.selector.match_labels.items())
            ]
        )
    mode = P
    for level in (mesh, nsp, wl):
        if level is not None and level.mtls is not U:
            mode = level.mtls
    ports = (
        {} if wl is None else {k: (mode if v is U else v) for k, v in wl.port_level_mtls.items()}
    )
    return mode, ports


@given(
    policies=_policies(), namespace=st.sampled_from(_NAMESPACES), labels=st.sampled_from(_LABELS)
)
def test_compose_agrees_with_brute_force(
    policies: list[PeerAuthentication], namespace: str, labels: dict[str, str]
) -> None:
    result = build_peer_authentication_index(policies, MESH).compose(namespace, labels)
    mode, ports = _brute_force(namespace, labels, policies)
    assert result.mode is mode
    assert dict(result.port_modes) == ports
    assert result.mode is not U
    assert not {id(i.policy) for i in result.ignored} & {id(p) for p in result.applied}
    if result.deciding_policy is not None:
        assert result.deciding_policy in result.applied
