"""Analyzers over random but valid configurations: never raise, and every finding is about a
resource that exists and could have caused it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.analyze import analyze_snapshot
from meshsec.core.policy.model import (
    AuthorizationAction,
    AuthorizationPolicy,
    ClientTLSSettings,
    Condition,
    DestinationRule,
    FrozenMap,
    MtlsMode,
    Namespace,
    ObjectMeta,
    Origin,
    PeerAuthentication,
    PortSelector,
    PortTrafficPolicy,
    Rule,
    RuleOperation,
    RuleSource,
    Service,
    ServiceAccount,
    ServicePort,
    Subset,
    TlsMode,
    TrafficPolicy,
    Workload,
    WorkloadSelector,
)
from meshsec.core.policy.snapshot import PolicySnapshot

NAMESPACES = ["a", "b", "istio-system"]
PORTS = [80, 8080, 9090]
labels = st.dictionaries(st.sampled_from(["app", "v"]), st.sampled_from(["x", "y"]), max_size=2)
counter = iter(range(10**9))


def meta(ns: str, name: str) -> ObjectMeta:
    return ObjectMeta(name, ns)


def origin() -> Origin:
    return Origin("gen.yaml", 1, 0, next(counter))


selectors = st.one_of(st.none(), labels.map(lambda d: WorkloadSelector(FrozenMap(d))))
tls = st.one_of(
    st.none(),
    st.builds(
        ClientTLSSettings,
        mode=st.sampled_from(TlsMode),
        ca_certificates=st.sampled_from([None, "/ca.pem"]),
        credential_name=st.sampled_from([None, "secret"]),
    ),
)
traffic = st.one_of(
    st.none(),
    st.builds(
        TrafficPolicy,
        tls=tls,
        port_level_settings=st.lists(
            st.builds(
                PortTrafficPolicy,
                port=st.sampled_from(PORTS).map(PortSelector),
                tls=tls,
            ),
            max_size=2,
        ).map(tuple),
    ),
)


@st.composite
def snapshots(draw: st.DrawFn) -> PolicySnapshot:
    pas = [
        PeerAuthentication(
            meta=meta(draw(st.sampled_from(NAMESPACES)), f"pa{i}"),
            origin=origin(),
            selector=draw(selectors),
            mtls=draw(st.sampled_from(MtlsMode)),
            port_level_mtls=FrozenMap(
                draw(st.dictionaries(st.sampled_from(PORTS), st.sampled_from(MtlsMode), max_size=2))
            ),
        )
        for i in range(draw(st.integers(0, 4)))
    ]
    drs = [
        DestinationRule(
            meta=meta(draw(st.sampled_from(NAMESPACES)), f"dr{i}"),
            origin=origin(),
            host=draw(st.sampled_from(["s0", "s1.a.svc.cluster.local", "*.local", "*", "ext.com"])),
            workload_selector=draw(selectors),
            traffic_policy=draw(traffic),
            subsets=tuple(
                Subset(f"v{j}", FrozenMap(draw(labels)), draw(traffic))
                for j in range(draw(st.integers(0, 2)))
            ),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    sources = st.builds(
        RuleSource,
        principals=st.lists(
            st.sampled_from(["cluster.local/ns/a/sa/s0", "other/ns/a/sa/x", "*"]), max_size=2
        ).map(tuple),
        namespaces=st.lists(st.sampled_from(["a", "zzz", "*"]), max_size=2).map(tuple),
        service_accounts=st.lists(st.sampled_from(["s0", "a/nope"]), max_size=2).map(tuple),
    )
    ops = st.builds(
        RuleOperation, ports=st.lists(st.sampled_from(["80", "8080"]), max_size=2).map(tuple)
    )
    conds = st.builds(
        Condition,
        key=st.sampled_from(["destination.port", "source.namespace", "source.principal"]),
        values=st.lists(st.sampled_from(["80", "a", "x/ns/y/sa/z"]), min_size=1, max_size=2).map(
            tuple
        ),
    )
    aps = [
        AuthorizationPolicy(
            meta=meta(draw(st.sampled_from(NAMESPACES)), f"ap{i}"),
            origin=origin(),
            selector=draw(selectors),
            action=draw(st.sampled_from(AuthorizationAction)),
            rules=tuple(
                Rule(
                    tuple(draw(st.lists(sources, max_size=2))),
                    tuple(draw(st.lists(ops, max_size=2))),
                    tuple(draw(st.lists(conds, max_size=2))),
                    j,
                )
                for j in range(draw(st.integers(0, 2)))
            ),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    services = [
        Service(
            meta=meta(draw(st.sampled_from(NAMESPACES)), f"s{i}"),
            origin=origin(),
            selector=draw(st.one_of(st.none(), labels.map(FrozenMap))),
            ports=tuple(
                ServicePort(p, target_port=draw(st.sampled_from([None, 8080, 9090, "http"])))
                for p in draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True))
            ),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    workloads = [
        Workload(
            meta=meta(draw(st.sampled_from(NAMESPACES)), f"w{i}"),
            origin=origin(),
            labels=FrozenMap(draw(labels)),
            service_account=draw(st.sampled_from(["default", "s0"])),
            ports=tuple(draw(st.lists(st.sampled_from(PORTS), max_size=2))),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    namespaces = [Namespace(meta=ObjectMeta(n), origin=origin()) for n in NAMESPACES]
    accounts = [ServiceAccount(meta=meta("a", "s0"), origin=origin())]
    with_registry = draw(st.booleans())
    return PolicySnapshot(
        peer_authentications=tuple(pas),
        destination_rules=tuple(drs),
        authorization_policies=tuple(aps),
        services=tuple(services),
        workloads=tuple(workloads),
        namespaces=tuple(namespaces) if with_registry else (),
        service_accounts=tuple(accounts) if with_registry else (),
    )


def _explicit_modes(rule: DestinationRule) -> set[TlsMode]:
    policies = [rule.traffic_policy, *(s.traffic_policy for s in rule.subsets)]
    modes: set[TlsMode] = set()
    for policy in policies:
        if policy is None:
            continue
        if policy.tls is not None:
            modes.add(policy.tls.mode)
        modes.update(e.tls.mode for e in policy.port_level_settings if e.tls is not None)
    return modes


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_analyzers_never_raise_and_blame_real_resources(snapshot: PolicySnapshot) -> None:
    refs = {
        r.ref
        for group in (
            snapshot.peer_authentications,
            snapshot.destination_rules,
            snapshot.authorization_policies,
        )
        for r in group
    }
    codes = {c.code for c in dg.CATALOG}
    rules = {r.ref: r for r in snapshot.destination_rules}
    for diag in analyze_snapshot(snapshot):
        assert diag.code in codes
        assert diag.resource in refs or diag.code == "MS0304"
        if diag.code == "MS0301":
            modes = _explicit_modes(rules[diag.resource])
            assert modes & {TlsMode.DISABLE, TlsMode.ISTIO_MUTUAL}
        if diag.code in ("IST0128", "IST0129"):
            assert _explicit_modes(rules[diag.resource]) & {TlsMode.SIMPLE, TlsMode.MUTUAL}
