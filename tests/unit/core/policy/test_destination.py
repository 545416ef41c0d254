"""DestinationRule client TLS, auto mTLS and secure naming (contracts §5.2-§5.4)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from meshsec.core.policy.destination import (
    Scope,
    TlsSource,
    build_service_sans,
    build_sni,
    compose_client_tls,
    compose_service_accounts,
    host_matches,
    infer_service_mtls_mode,
    is_exported_to,
    resolve_client_tls,
    resolve_rule_host,
    select_destination_rule,
)
from meshsec.core.policy.model import (
    ClientTLSSettings,
    DestinationRule,
    FrozenMap,
    MeshConfig,
    ObjectMeta,
    Origin,
    PortSelector,
    PortTrafficPolicy,
    Service,
    Subset,
    TlsMode,
    TrafficPolicy,
    Workload,
    WorkloadSelector,
)
from meshsec.core.policy.peer_authn import NamespaceMtlsMode

MESH = MeshConfig()
HOST = "reviews.bookinfo.svc.cluster.local"
IM, SIMPLE, MUTUAL, OFF = TlsMode.ISTIO_MUTUAL, TlsMode.SIMPLE, TlsMode.MUTUAL, TlsMode.DISABLE
NS_STRICT, NS_PERM = NamespaceMtlsMode.STRICT, NamespaceMtlsMode.PERMISSIVE
NS_OFF, NS_UNKNOWN = NamespaceMtlsMode.DISABLE, NamespaceMtlsMode.UNKNOWN
_order = itertools.count()


def tls(mode: TlsMode, **kw: object) -> ClientTLSSettings:
    return ClientTLSSettings(mode=mode, **kw)  # type: ignore[arg-type]


def dr(
    key: str,
    host: str = HOST,
    tls_: ClientTLSSettings | None = None,
    *,
    ports: dict[int, ClientTLSSettings | None] | None = None,
    subsets: tuple[Subset, ...] = (),
    export_to: tuple[str, ...] = (),
    selector: dict[str, str] | None = None,
    created: datetime | None = None,
    no_policy: bool = False,
    passthrough: bool = False,
) -> DestinationRule:
    namespace, name = key.split("/")
    policy = None
    if not no_policy:
        policy = TrafficPolicy(
            tls=tls_,
            port_level_settings=tuple(
                PortTrafficPolicy(PortSelector(p), t) for p, t in (ports or {}).items()
            ),
            load_balancer_simple="PASSTHROUGH" if passthrough else None,
        )
    return DestinationRule(
        meta=ObjectMeta(name=name, namespace=namespace, creation_timestamp=created),
        origin=Origin(order=next(_order)),
        host=host,
        export_to=export_to,
        workload_selector=None if selector is None else WorkloadSelector(FrozenMap(selector)),
        traffic_policy=policy,
        subsets=subsets,
    )


def subset(
    name: str,
    tls_: ClientTLSSettings | None = None,
    ports: dict[int, ClientTLSSettings | None] | None = None,
) -> Subset:
    policy = None
    if tls_ is not None or ports is not None:
        policy = TrafficPolicy(
            tls=tls_,
            port_level_settings=tuple(
                PortTrafficPolicy(PortSelector(p), t) for p, t in (ports or {}).items()
            ),
        )
    return Subset(name=name, traffic_policy=policy)


@pytest.mark.parametrize(
    ("host", "namespace", "fqdn"),
    [
        ("reviews", "bookinfo", HOST),
        (HOST, "other", HOST),
        ("*.local", "x", "*.local"),
        ("*", "x", "*"),
        ("Reviews", "bookinfo", HOST),
    ],
    ids=["short-name-in-rule-namespace", "fqdn-kept", "wildcard-kept", "star", "lower-cased"],
)
def test_resolve_rule_host(host: str, namespace: str, fqdn: str) -> None:
    assert resolve_rule_host(host, namespace) == fqdn


@pytest.mark.parametrize(
    ("rule_host", "host", "expected"),
    [
        (HOST, HOST, True),
        ("*.local", HOST, True),
        ("*.bookinfo.svc.cluster.local", HOST, True),
        ("*.other.svc.cluster.local", HOST, False),
        ("*", HOST, True),
        ("ratings.bookinfo.svc.cluster.local", HOST, False),
    ],
    ids=["exact", "wildcard-local", "wildcard-namespace", "wildcard-miss", "star", "other-host"],
)
def test_host_matches(rule_host: str, host: str, expected: bool) -> None:
    assert host_matches(rule_host, host) is expected


@pytest.mark.parametrize(
    ("export_to", "namespace", "selector", "expected"),
    [
        ((), "client", None, True),
        (("*",), "client", None, True),
        ((".",), "client", None, False),
        ((".",), "svc", None, True),
        (("client",), "client", None, True),
        (("other",), "client", None, False),
        (("~",), "client", None, False),
        (("*",), "client", {"app": "x"}, False),
    ],
    ids=[
        "default-everywhere",
        "star",
        "dot-other-ns",
        "dot-own-ns",
        "named",
        "named-other",
        "tilde",
        "selector-private",
    ],
)
def test_is_exported_to(
    export_to: tuple[str, ...], namespace: str, selector: dict[str, str] | None, expected: bool
) -> None:
    rule = dr("svc/r", export_to=export_to, selector=selector)
    assert is_exported_to(rule, namespace) is expected


@dataclass
class Sel:
    rules: list[DestinationRule]
    chosen: str | None
    scope: Scope | None = None
    client_ns: str = "client"
    labels: dict[str, str] | None = None


SELECT = {
    "none": Sel([], None),
    "service-namespace": Sel([dr("bookinfo/r")], "bookinfo/r", Scope.SERVICE_NAMESPACE),
    "client-namespace-first": Sel(
        [dr("bookinfo/svc"), dr("client/mine"), dr("istio-system/root")],
        "client/mine",
        Scope.CLIENT_NAMESPACE,
    ),
    "service-before-root": Sel(
        [dr("istio-system/root"), dr("bookinfo/svc")], "bookinfo/svc", Scope.SERVICE_NAMESPACE
    ),
    "root-namespace-last": Sel(
        [dr("istio-system/root", "*.local")], "istio-system/root", Scope.ROOT_NAMESPACE
    ),
    "other-namespaces-ignored": Sel([dr("elsewhere/r")], None),
    "not-exported-skipped": Sel(
        [dr("bookinfo/private", export_to=(".",)), dr("istio-system/root", "*.local")],
        "istio-system/root",
        Scope.ROOT_NAMESPACE,
    ),
    "client-namespace-visible-even-if-not-exported": Sel(
        [dr("client/mine", export_to=("~",))], "client/mine", Scope.CLIENT_NAMESPACE
    ),
    "exact-beats-wildcard-in-namespace": Sel(
        [dr("bookinfo/wild", "*.local"), dr("bookinfo/exact", "reviews")],
        "bookinfo/exact",
        Scope.SERVICE_NAMESPACE,
    ),
    "longest-wildcard": Sel(
        [dr("bookinfo/wide", "*.local"), dr("bookinfo/narrow", "*.bookinfo.svc.cluster.local")],
        "bookinfo/narrow",
        Scope.SERVICE_NAMESPACE,
    ),
    "client-wildcard-beats-service-exact": Sel(
        [dr("bookinfo/exact"), dr("client/wild", "*.local")], "client/wild", Scope.CLIENT_NAMESPACE
    ),
    "short-host-relative-to-rule-namespace": Sel([dr("client/short", "reviews")], None),
    "selector-rule-for-selected-client": Sel(
        [dr("client/plain"), dr("client/sel", selector={"app": "web"})],
        "client/sel",
        Scope.CLIENT_NAMESPACE,
        labels={"app": "web"},
    ),
    "selector-rule-not-for-other-client": Sel(
        [dr("client/plain"), dr("client/sel", selector={"app": "web"})],
        "client/plain",
        Scope.CLIENT_NAMESPACE,
        labels={"app": "db"},
    ),
    "oldest-duplicate-is-primary": Sel(
        [
            dr("bookinfo/new", created=datetime(2024, 2, 1, tzinfo=UTC)),
            dr("bookinfo/old", created=datetime(2024, 1, 1, tzinfo=UTC)),
        ],
        "bookinfo/old",
        Scope.SERVICE_NAMESPACE,
    ),
}


@pytest.mark.parametrize("case", list(SELECT.values()), ids=list(SELECT))
def test_select_destination_rule(case: Sel) -> None:
    selected = select_destination_rule(
        HOST,
        client_namespace=case.client_ns,
        service_namespace="bookinfo",
        rules=case.rules,
        mesh=MESH,
        client_labels=case.labels,
    )
    assert (selected.rule.meta.key if selected else None) == case.chosen
    assert (selected.scope if selected else None) == case.scope


def test_duplicate_rules_merge_policy_and_subsets() -> None:
    first = dr(
        "bookinfo/a",
        no_policy=True,
        subsets=(subset("v1", tls(SIMPLE)),),
        created=datetime(2024, 1, 1, tzinfo=UTC),
    )
    second = dr(
        "bookinfo/b",
        tls_=tls(IM),
        subsets=(subset("v1", tls(OFF)), subset("v2")),
        created=datetime(2024, 1, 2, tzinfo=UTC),
    )
    selected = select_destination_rule(
        HOST,
        client_namespace="client",
        service_namespace="bookinfo",
        rules=[second, first],
        mesh=MESH,
    )
    assert selected is not None
    assert selected.rules == (first, second)
    assert selected.traffic_policy is second.traffic_policy
    assert [s.name for s in selected.subsets] == ["v1", "v2"]
    assert selected.subset("v1") is first.subsets[0]


@dataclass
class Tls:
    rules: list[DestinationRule]
    mode: TlsMode
    auto: bool
    source: TlsSource
    port: int = 9080
    subset: str | None = None
    service_mode: NamespaceMtlsMode = NS_STRICT
    mesh: MeshConfig = MESH
    endpoints: int | None = None
    external: bool = False


TLS = {
    "no-rule-auto-mtls-strict": Tls([], IM, True, TlsSource.AUTO),
    "no-rule-auto-mtls-permissive": Tls([], IM, True, TlsSource.AUTO, service_mode=NS_PERM),
    "no-rule-auto-disable-namespace": Tls([], OFF, True, TlsSource.AUTO, service_mode=NS_OFF),
    "no-rule-unknown-namespace-assumed-permissive": Tls(
        [], IM, True, TlsSource.AUTO, service_mode=NS_UNKNOWN
    ),
    "passthrough-without-endpoints-plaintext": Tls(
        [dr("bookinfo/r", passthrough=True)], OFF, True, TlsSource.AUTO, endpoints=0
    ),
    "passthrough-with-endpoints-namespace-mode": Tls(
        [dr("bookinfo/r", passthrough=True)], IM, True, TlsSource.AUTO, endpoints=2
    ),
    "mesh-external-plaintext": Tls([], OFF, True, TlsSource.AUTO, external=True),
    "mesh-external-explicit-tls-kept": Tls(
        [dr("bookinfo/r", tls_=tls(SIMPLE))], SIMPLE, False, TlsSource.DESTINATION, external=True
    ),
    "auto-mtls-off": Tls([], OFF, True, TlsSource.AUTO, mesh=MeshConfig(enable_auto_mtls=False)),
    "rule-without-tls-is-auto": Tls([dr("bookinfo/r")], IM, True, TlsSource.AUTO),
    "destination-istio-mutual": Tls(
        [dr("bookinfo/r", tls_=tls(IM))], IM, False, TlsSource.DESTINATION
    ),
    "destination-istio-mutual-even-if-namespace-unknown": Tls(
        [dr("bookinfo/r", tls_=tls(IM))],
        IM,
        False,
        TlsSource.DESTINATION,
        service_mode=NS_UNKNOWN,
    ),
    "destination-disable-wins-over-auto": Tls(
        [dr("bookinfo/r", tls_=tls(OFF))], OFF, False, TlsSource.DESTINATION
    ),
    "destination-simple": Tls(
        [dr("bookinfo/r", tls_=tls(SIMPLE))], SIMPLE, False, TlsSource.DESTINATION
    ),
    "port-level-replaces": Tls(
        [dr("bookinfo/r", tls_=tls(IM), ports={9080: tls(OFF)})], OFF, False, TlsSource.PORT
    ),
    "port-level-other-port-keeps-destination": Tls(
        [dr("bookinfo/r", tls_=tls(OFF), ports={9090: tls(IM)})], OFF, False, TlsSource.DESTINATION
    ),
    "port-level-without-tls-replaces-with-auto": Tls(
        [dr("bookinfo/r", tls_=tls(OFF), ports={9080: None})], IM, True, TlsSource.AUTO
    ),
    "port-level-without-tls-auto-plaintext-for-disable-namespace": Tls(
        [dr("bookinfo/r", tls_=tls(IM), ports={9080: None})],
        OFF,
        True,
        TlsSource.AUTO,
        service_mode=NS_OFF,
    ),
    "subset-overrides-destination": Tls(
        [dr("bookinfo/r", tls_=tls(IM), subsets=(subset("v1", tls(OFF)),))],
        OFF,
        False,
        TlsSource.SUBSET,
        subset="v1",
    ),
    "subset-without-tls-keeps-port-level": Tls(
        [dr("bookinfo/r", tls_=tls(OFF), ports={9080: tls(SIMPLE)}, subsets=(subset("v1"),))],
        SIMPLE,
        False,
        TlsSource.PORT,
        subset="v1",
    ),
    "subset-port-level-replaces": Tls(
        [
            dr(
                "bookinfo/r",
                tls_=tls(IM),
                subsets=(subset("v1", tls(SIMPLE), ports={9080: tls(MUTUAL)}),),
            )
        ],
        MUTUAL,
        False,
        TlsSource.SUBSET_PORT,
        subset="v1",
    ),
    "subset-port-level-without-tls-is-auto": Tls(
        [dr("bookinfo/r", tls_=tls(OFF), subsets=(subset("v1", tls(SIMPLE), ports={9080: None}),))],
        IM,
        True,
        TlsSource.AUTO,
        subset="v1",
    ),
    "unknown-subset-uses-destination": Tls(
        [dr("bookinfo/r", tls_=tls(SIMPLE))], SIMPLE, False, TlsSource.DESTINATION, subset="nope"
    ),
}


@pytest.mark.parametrize("case", list(TLS.values()), ids=list(TLS))
def test_client_tls(case: Tls) -> None:
    result = resolve_client_tls(
        HOST,
        case.port,
        client_namespace="client",
        service_namespace="bookinfo",
        rules=case.rules,
        mesh=case.mesh,
        namespace_mode=case.service_mode,
        service_accounts=["reviews"],
        subset=case.subset,
        endpoints=case.endpoints,
        mesh_external=case.external,
    )
    assert (result.mode, result.auto, result.source) == (case.mode, case.auto, case.source), (
        result.reason
    )
    assert result.reason


def test_istio_mutual_sni_and_sans_from_service_accounts_with_aliases() -> None:
    mesh = MeshConfig(trust_domain="cluster.local", trust_domain_aliases=("old-td",))
    result = resolve_client_tls(
        HOST,
        9080,
        client_namespace="client",
        service_namespace="bookinfo",
        rules=[dr("bookinfo/r", tls_=tls(IM), subsets=(subset("v1"),))],
        mesh=mesh,
        namespace_mode=NS_STRICT,
        service_accounts=["reviews", "reviews-v2"],
        subset="v1",
    )
    assert result.sni == f"outbound_.9080_.v1_.{HOST}"
    assert result.subject_alt_names == (
        "spiffe://cluster.local/ns/bookinfo/sa/reviews",
        "spiffe://cluster.local/ns/bookinfo/sa/reviews-v2",
        "spiffe://old-td/ns/bookinfo/sa/reviews",
        "spiffe://old-td/ns/bookinfo/sa/reviews-v2",
    )


def test_istio_mutual_rule_sans_and_sni_win() -> None:
    rule = dr(
        "bookinfo/r", tls_=tls(IM, subject_alt_names=("spiffe://x/ns/a/sa/b",), sni="custom.sni")
    )
    result = resolve_client_tls(
        HOST,
        9080,
        client_namespace="c",
        service_namespace="bookinfo",
        rules=[rule],
        mesh=MESH,
        namespace_mode=NS_STRICT,
        service_accounts=["reviews"],
    )
    assert result.subject_alt_names == ("spiffe://x/ns/a/sa/b",)
    assert result.sni == "custom.sni"


def test_auto_mtls_sni_without_subset_and_plaintext_has_none() -> None:
    auto = resolve_client_tls(
        HOST,
        9080,
        client_namespace="c",
        service_namespace="bookinfo",
        rules=[],
        mesh=MESH,
        namespace_mode=NS_PERM,
        service_accounts=["reviews"],
    )
    assert auto.sni == build_sni(HOST, 9080) == f"outbound_.9080_._.{HOST}"
    assert auto.subject_alt_names == ("spiffe://cluster.local/ns/bookinfo/sa/reviews",)
    plain = resolve_client_tls(
        HOST,
        9080,
        client_namespace="c",
        service_namespace="bookinfo",
        rules=[],
        mesh=MESH,
        namespace_mode=NS_OFF,
        service_accounts=["reviews"],
    )
    assert (plain.sni, plain.subject_alt_names, plain.is_tls) == (None, (), False)


def test_simple_keeps_configured_sans_without_expansion() -> None:
    rule = dr("bookinfo/r", tls_=tls(SIMPLE, subject_alt_names=("reviews.example.com",)))
    result = resolve_client_tls(
        HOST,
        9080,
        client_namespace="c",
        service_namespace="bookinfo",
        rules=[rule],
        mesh=MeshConfig(trust_domain_aliases=("old-td",)),
        namespace_mode=NS_STRICT,
        service_accounts=["reviews"],
    )
    assert result.subject_alt_names == ("reviews.example.com",)
    assert result.sni is None


def test_reason_names_port_replacement() -> None:
    rule = dr("bookinfo/r", tls_=tls(OFF), ports={9080: None})
    result = resolve_client_tls(
        HOST,
        9080,
        client_namespace="c",
        service_namespace="bookinfo",
        rules=[rule],
        mesh=MESH,
        namespace_mode=NS_STRICT,
    )
    assert "portLevelSettings[9080] of DestinationRule bookinfo/r" in result.reason
    assert "replaces" in result.reason
    assert result.destination_rule is rule


def test_build_service_sans_dedupes_and_sorts() -> None:
    assert build_service_sans("ns", ["b", "a", "a"], MESH) == (
        "spiffe://cluster.local/ns/ns/sa/a",
        "spiffe://cluster.local/ns/ns/sa/b",
    )


def test_compose_service_accounts_from_selected_workloads() -> None:
    def wl(key: str, labels: dict[str, str], sa: str) -> Workload:
        ns, name = key.split("/")
        return Workload(
            ObjectMeta(name, ns), Origin(), labels=FrozenMap(labels), service_account=sa
        )

    svc = Service(
        ObjectMeta("reviews", "bookinfo"), Origin(), selector=FrozenMap({"app": "reviews"})
    )
    workloads = [
        wl("bookinfo/r1", {"app": "reviews", "v": "1"}, "reviews"),
        wl("bookinfo/r2", {"app": "reviews", "v": "2"}, "reviews-v2"),
        wl("bookinfo/r3", {"app": "reviews"}, "reviews"),
        wl("bookinfo/other", {"app": "ratings"}, "ratings"),
        wl("elsewhere/r", {"app": "reviews"}, "intruder"),
    ]
    assert compose_service_accounts(svc, workloads) == ("reviews", "reviews-v2")


@pytest.mark.parametrize(
    ("namespace_mode", "kwargs", "expected"),
    [
        pytest.param(NS_STRICT, {}, NS_STRICT, id="namespace-mode-known"),
        pytest.param(NS_OFF, {}, NS_OFF, id="namespace-disable"),
        pytest.param(NS_UNKNOWN, {}, NS_PERM, id="unknown-assumed-permissive"),
        pytest.param(NS_STRICT, {"mesh_external": True}, NS_UNKNOWN, id="mesh-external-unknown"),
        pytest.param(
            NS_STRICT, {"passthrough": True, "endpoints": 0}, NS_OFF, id="passthrough-empty"
        ),
        pytest.param(
            NS_STRICT,
            {"passthrough": True, "endpoints": 3, "endpoint_without_sidecar": True},
            NS_OFF,
            id="passthrough-endpoint-without-sidecar",
        ),
        pytest.param(
            NS_STRICT, {"passthrough": True, "endpoints": 3}, NS_STRICT, id="passthrough-ok"
        ),
        pytest.param(
            NS_STRICT, {"passthrough": True}, NS_STRICT, id="passthrough-endpoints-unknown"
        ),
    ],
)
def test_infer_service_mtls_mode(
    namespace_mode: NamespaceMtlsMode, kwargs: dict[str, Any], expected: NamespaceMtlsMode
) -> None:
    result = infer_service_mtls_mode(namespace_mode, **kwargs)
    assert result.mode is expected
    assert result.reason


def test_compose_client_tls_accepts_bare_namespace_mode() -> None:
    result = compose_client_tls(None, HOST, 9080, mesh=MESH, service_mode=NS_UNKNOWN)
    assert (result.mode, result.auto) == (IM, True)
