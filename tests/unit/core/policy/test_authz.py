"""AuthorizationPolicy evaluation, written from Istio's documented semantics (contracts §5.5)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from meshsec.core.policy.authz import (
    AuthorizationIndex,
    Stage,
    Verdict,
    evaluate,
    select_authorization_policies,
)
from meshsec.core.policy.model import (
    AuthorizationAction,
    AuthorizationPolicy,
    Condition,
    FrozenMap,
    MeshConfig,
    ObjectMeta,
    Origin,
    Rule,
    RuleOperation,
    RuleSource,
    WorkloadSelector,
)
from meshsec.core.policy.request import AuthzRequest, HttpAttributes

ALLOW, DENY = AuthorizationAction.ALLOW, AuthorizationAction.DENY
AUDIT, CUSTOM = AuthorizationAction.AUDIT, AuthorizationAction.CUSTOM
MESH = MeshConfig()
ALIASED = MeshConfig(trust_domain="cluster.local", trust_domain_aliases=("old-td",))
SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep"
OLD_SLEEP = "spiffe://old-td/ns/foo/sa/sleep"
OTHER = "spiffe://cluster.local/ns/bar/sa/other"
_order = itertools.count()


def ap(
    key: str,
    action: AuthorizationAction = ALLOW,
    *rules: Rule,
    selector: dict[str, str] | None = None,
    provider: str | None = None,
) -> AuthorizationPolicy:
    namespace, name = key.split("/")
    return AuthorizationPolicy(
        meta=ObjectMeta(name=name, namespace=namespace),
        origin=Origin(order=next(_order)),
        selector=None if selector is None else WorkloadSelector(FrozenMap(selector)),
        action=action,
        provider=provider,
        rules=tuple(Rule(r.sources, r.operations, r.when, i) for i, r in enumerate(rules)),
    )


def rule(
    *,
    src: list[RuleSource] | None = None,
    to: list[RuleOperation] | None = None,
    when: list[Condition] | None = None,
) -> Rule:
    return Rule(tuple(src or ()), tuple(to or ()), tuple(when or ()))


def s(**kw: list[str]) -> RuleSource:
    return RuleSource(**{k: tuple(v) for k, v in kw.items()})


def o(**kw: list[str]) -> RuleOperation:
    return RuleOperation(**{k: tuple(v) for k, v in kw.items()})


def c(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> Condition:
    return Condition(key, tuple(values or ()), tuple(not_values or ()))


def tcp(principal: str | None = SLEEP, port: int = 8080, ip: str = "10.1.2.3") -> AuthzRequest:
    return AuthzRequest(destination_port=port, source_principal=principal, source_ip=ip)


def http(
    method: str = "GET",
    path: str = "/",
    host: str = "web.foo.svc.cluster.local",
    headers: dict[str, str] | None = None,
    principal: str | None = SLEEP,
    port: int = 8080,
) -> AuthzRequest:
    return AuthzRequest(
        destination_port=port,
        source_principal=principal,
        source_ip="10.1.2.3",
        http=HttpAttributes.build(method, path, host, headers),
    )


@dataclass
class Case:
    policies: list[AuthorizationPolicy]
    request: AuthzRequest
    verdict: Verdict
    stage: Stage
    policy: str | None = None
    rule: int | None = None
    mesh: MeshConfig = MESH
    note: str | None = None  # a substring expected in the decision's notes
    labels: dict[str, str] = field(default_factory=lambda: {"app": "web"})


def allow_from(**kw: list[str]) -> AuthorizationPolicy:
    return ap("foo/allow", ALLOW, rule(src=[s(**kw)]))


def deny_from(**kw: list[str]) -> AuthorizationPolicy:
    return ap("foo/deny", DENY, rule(src=[s(**kw)]))


A, D = Verdict.ALLOW, Verdict.DENY

CASES: dict[str, Case] = {
    # --- structure --------------------------------------------------------------------------
    "no-policy-allows": Case([], tcp(), A, Stage.NO_POLICY),
    "allow-without-rules-denies-all": Case([ap("foo/allow-nothing")], tcp(), D, Stage.DEFAULT_DENY),
    "allow-rules-empty-rule-allows-all": Case(
        [ap("foo/allow-all", ALLOW, rule())],
        tcp(principal=None),
        A,
        Stage.ALLOW,
        "foo/allow-all",
        0,
    ),
    "deny-before-allow": Case(
        [
            ap("foo/allow-all", ALLOW, rule()),
            deny_from(principals=["cluster.local/ns/foo/sa/sleep"]),
        ],
        tcp(),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    "deny-not-matching-then-allow": Case(
        [ap("foo/allow-all", ALLOW, rule()), deny_from(principals=["cluster.local/ns/bar/sa/x"])],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow-all",
        0,
    ),
    "only-deny-policies-not-matching-allow": Case(
        [deny_from(namespaces=["bar"])], tcp(), A, Stage.NO_ALLOW_POLICY
    ),
    "deny-without-rules-never-matches": Case(
        [ap("foo/deny", DENY)], tcp(), A, Stage.NO_ALLOW_POLICY
    ),
    "second-rule-matches": Case(
        [
            ap(
                "foo/allow",
                ALLOW,
                rule(src=[s(namespaces=["bar"])]),
                rule(src=[s(namespaces=["foo"])]),
            )
        ],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        1,
    ),
    "from-and-to-both-required": Case(
        [ap("foo/allow", ALLOW, rule(src=[s(namespaces=["foo"])], to=[o(ports=["9090"])]))],
        tcp(port=8080),
        D,
        Stage.DEFAULT_DENY,
    ),
    "from-entries-ored": Case(
        [ap("foo/allow", ALLOW, rule(src=[s(namespaces=["bar"]), s(namespaces=["foo"])]))],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "source-fields-anded": Case(
        [allow_from(namespaces=["foo"], ip_blocks=["192.168.0.0/16"])], tcp(), D, Stage.DEFAULT_DENY
    ),
    "values-ored": Case(
        [allow_from(namespaces=["bar", "foo"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "value-and-not-value-in-one-field": Case(
        [allow_from(namespaces=["*"], not_namespaces=["foo"])], tcp(), D, Stage.DEFAULT_DENY
    ),
    # --- identity fields --------------------------------------------------------------------
    "principal-exact": Case(
        [allow_from(principals=["cluster.local/ns/foo/sa/sleep"])],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "principal-mismatch": Case(
        [allow_from(principals=["cluster.local/ns/foo/sa/other"])], tcp(), D, Stage.DEFAULT_DENY
    ),
    "principal-any-requires-mtls": Case(
        [allow_from(principals=["*"])], tcp(principal=None), D, Stage.DEFAULT_DENY
    ),
    "not-principals-any-denies-plaintext": Case(
        [deny_from(not_principals=["*"])], tcp(principal=None), D, Stage.DENY, "foo/deny", 0
    ),
    "not-principals-any-passes-mtls": Case(
        [deny_from(not_principals=["*"])], tcp(), A, Stage.NO_ALLOW_POLICY
    ),
    "principal-prefix": Case(
        [allow_from(principals=["cluster.local/ns/foo/*"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "principal-suffix": Case(
        [allow_from(principals=["*/sa/sleep"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "not-principals": Case(
        [allow_from(not_principals=["cluster.local/ns/foo/sa/sleep"])], tcp(), D, Stage.DEFAULT_DENY
    ),
    "namespace-match": Case(
        [allow_from(namespaces=["foo"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "namespace-prefix": Case(
        [allow_from(namespaces=["f*"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "namespace-plaintext": Case(
        [allow_from(namespaces=["*"])], tcp(principal=None), D, Stage.DEFAULT_DENY
    ),
    "not-namespaces": Case(
        [deny_from(not_namespaces=["foo"])], tcp(OTHER), D, Stage.DENY, "foo/deny", 0
    ),
    "service-account-with-namespace": Case(
        [allow_from(service_accounts=["foo/sleep"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "service-account-policy-namespace": Case(
        [allow_from(service_accounts=["sleep"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "service-account-other-namespace": Case(
        [allow_from(service_accounts=["other"])], tcp(OTHER), D, Stage.DEFAULT_DENY
    ),
    "not-service-accounts": Case(
        [deny_from(not_service_accounts=["foo/sleep"])], tcp(OTHER), D, Stage.DENY, "foo/deny", 0
    ),
    "trust-domain": Case(
        [allow_from(trust_domains=["cluster.local"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "trust-domain-wildcard": Case(
        [allow_from(trust_domains=["cluster.*"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "trust-domain-other": Case(
        [allow_from(trust_domains=["example.org"])], tcp(), D, Stage.DEFAULT_DENY
    ),
    "not-trust-domains": Case(
        [deny_from(not_trust_domains=["cluster.local"])],
        tcp(OLD_SLEEP),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    # --- trust-domain aliases ---------------------------------------------------------------
    "alias-principal-allowed-with-aliases": Case(
        [allow_from(principals=["cluster.local/ns/foo/sa/sleep"])],
        tcp(OLD_SLEEP),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
        mesh=ALIASED,
    ),
    "alias-principal-denied-without-aliases": Case(
        [allow_from(principals=["cluster.local/ns/foo/sa/sleep"])],
        tcp(OLD_SLEEP),
        D,
        Stage.DEFAULT_DENY,
    ),
    "policy-written-with-alias": Case(
        [allow_from(principals=["old-td/ns/foo/sa/sleep"])],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
        mesh=ALIASED,
    ),
    "not-principals-expanded": Case(
        [deny_from(not_principals=["cluster.local/ns/foo/sa/sleep"])],
        tcp(OLD_SLEEP),
        A,
        Stage.NO_ALLOW_POLICY,
        mesh=ALIASED,
    ),
    "trust-domains-expanded": Case(
        [allow_from(trust_domains=["cluster.local"])],
        tcp(OLD_SLEEP),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
        mesh=ALIASED,
    ),
    "when-source-principal-expanded": Case(
        [
            ap(
                "foo/allow",
                ALLOW,
                rule(when=[c("source.principal", ["cluster.local/ns/foo/sa/sleep"])]),
            )
        ],
        tcp(OLD_SLEEP),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
        mesh=ALIASED,
    ),
    # --- addresses --------------------------------------------------------------------------
    "ip-block": Case([allow_from(ip_blocks=["10.0.0.0/8"])], tcp(), A, Stage.ALLOW, "foo/allow", 0),
    "not-ip-block": Case(
        [deny_from(not_ip_blocks=["10.0.0.0/8"])],
        tcp(ip="192.168.1.1"),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    "remote-ip-defaults-to-source": Case(
        [allow_from(remote_ip_blocks=["10.1.2.3"])], tcp(), A, Stage.ALLOW, "foo/allow", 0
    ),
    "bad-cidr-skips-allow-rule": Case(
        [allow_from(ip_blocks=["10.0.0.0/99", "10.0.0.0/8"])],
        tcp(),
        D,
        Stage.DEFAULT_DENY,
        note="skipped: ipBlocks",
    ),
    "bad-cidr-dropped-in-deny-rule": Case(
        [deny_from(ip_blocks=["not-an-ip", "10.0.0.0/8"])],
        tcp(),
        D,
        Stage.DENY,
        "foo/deny",
        0,
        note="ignored ipBlocks value 'not-an-ip'",
    ),
    # --- operations: HTTP -------------------------------------------------------------------
    "http-method-match": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(methods=["GET", "HEAD"])]))],
        http(),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "http-method-mismatch": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(methods=["POST"])]))], http(), D, Stage.DEFAULT_DENY
    ),
    "http-not-methods": Case(
        [ap("foo/deny", DENY, rule(to=[o(not_methods=["GET"])]))],
        http("DELETE"),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    "http-path-prefix": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(paths=["/api/*"])]))],
        http(path="/api/v1?x=1"),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "http-path-exact-miss": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(paths=["/api"])]))],
        http(path="/api/v1"),
        D,
        Stage.DEFAULT_DENY,
    ),
    "http-not-paths": Case(
        [ap("foo/deny", DENY, rule(to=[o(not_paths=["/healthz"])]))],
        http(path="/healthz"),
        A,
        Stage.NO_ALLOW_POLICY,
    ),
    "http-host-suffix-ignores-case": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(hosts=["*.svc.cluster.local"])]))],
        http(host="WEB.foo.SVC.cluster.local"),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "http-ports-and-methods": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(ports=["8080"], methods=["GET"])]))],
        http(port=9090),
        D,
        Stage.DEFAULT_DENY,
    ),
    # --- operations: TCP semantics ----------------------------------------------------------
    "tcp-port-match": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(ports=["8080"])]))],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "tcp-not-ports": Case(
        [ap("foo/deny", DENY, rule(to=[o(not_ports=["8080"])]))],
        tcp(port=22),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    "tcp-allow-http-field-never-matches": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(ports=["8080"], methods=["GET"])]))],
        tcp(),
        D,
        Stage.DEFAULT_DENY,
        note="methods is HTTP only",
    ),
    "tcp-allow-other-rule-still-matches": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(paths=["/x"])]), rule(to=[o(ports=["8080"])]))],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        1,
    ),
    "tcp-allow-http-field-in-other-clause-skips-rule": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(ports=["8080"]), o(hosts=["x"])]))],
        tcp(),
        D,
        Stage.DEFAULT_DENY,
    ),
    "tcp-deny-http-only-field-matches-everything": Case(
        [ap("foo/deny", DENY, rule(to=[o(methods=["POST"])]))],
        tcp(),
        D,
        Stage.DENY,
        "foo/deny",
        0,
        note="ignored methods",
    ),
    "tcp-deny-http-field-dropped-rest-applies": Case(
        [ap("foo/deny", DENY, rule(src=[s(namespaces=["bar"])], to=[o(paths=["/admin"])]))],
        tcp(),
        A,
        Stage.NO_ALLOW_POLICY,
    ),
    "http-deny-path-respected": Case(
        [ap("foo/deny", DENY, rule(to=[o(methods=["POST"])]))],
        http("GET"),
        A,
        Stage.NO_ALLOW_POLICY,
    ),
    "bad-port-skips-allow-rule": Case(
        [ap("foo/allow", ALLOW, rule(to=[o(ports=["http"])]))],
        tcp(),
        D,
        Stage.DEFAULT_DENY,
        note="not a number",
    ),
    "bad-port-dropped-in-deny": Case(
        [ap("foo/deny", DENY, rule(to=[o(ports=["http", "9999"])]))],
        tcp(port=8080),
        A,
        Stage.NO_ALLOW_POLICY,
    ),
    # --- request principals (no JWT support) ------------------------------------------------
    "request-principals-never-match": Case(
        [allow_from(request_principals=["*"])], http(), D, Stage.DEFAULT_DENY
    ),
    "not-request-principals-deny-requests-without-jwt": Case(
        [deny_from(not_request_principals=["*"])], http(), D, Stage.DENY, "foo/deny", 0
    ),
    "request-principals-on-tcp-skip-allow-rule": Case(
        [allow_from(request_principals=["*"])], tcp(), D, Stage.DEFAULT_DENY, note="HTTP only"
    ),
    # --- when conditions --------------------------------------------------------------------
    "when-source-namespace": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("source.namespace", ["foo"])]))],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "when-source-namespace-not-values": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("source.namespace", not_values=["foo"])]))],
        tcp(),
        D,
        Stage.DEFAULT_DENY,
    ),
    "when-destination-port": Case(
        [ap("foo/deny", DENY, rule(when=[c("destination.port", ["22", "8080"])]))],
        tcp(),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    "when-source-principal-plaintext": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("source.principal", ["*"])]))],
        tcp(principal=None),
        D,
        Stage.DEFAULT_DENY,
    ),
    "when-source-ip": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("source.ip", ["10.1.0.0/16"])]))],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "when-conditions-anded": Case(
        [
            ap(
                "foo/allow",
                ALLOW,
                rule(when=[c("source.namespace", ["foo"]), c("destination.port", ["9090"])]),
            )
        ],
        tcp(),
        D,
        Stage.DEFAULT_DENY,
    ),
    "when-header-http": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("request.headers[X-User]", ["alice", "bob*"])]))],
        http(headers={"x-user": "bobby"}),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "when-header-absent": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("request.headers[X-User]", ["*"])]))],
        http(),
        D,
        Stage.DEFAULT_DENY,
    ),
    "when-header-on-tcp-skips-allow-rule": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("request.headers[X-User]", ["*"])]))],
        tcp(),
        D,
        Stage.DEFAULT_DENY,
        note="HTTP only",
    ),
    "when-unknown-key-skips-even-deny": Case(
        [ap("foo/deny", DENY, rule(when=[c("source.made_up", ["x"])]))],
        tcp(),
        A,
        Stage.NO_ALLOW_POLICY,
        note="unknown when key",
    ),
    "when-source-service-account": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("source.serviceAccount", ["sleep"])]))],
        tcp(),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "when-destination-ip": Case(
        [ap("foo/deny", DENY, rule(when=[c("destination.ip", ["10.9.0.0/16"])]))],
        AuthzRequest(destination_port=80, source_principal=SLEEP, destination_ip="10.9.1.1"),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    "when-remote-ip-from-xff": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("remote.ip", ["203.0.113.0/24"])]))],
        AuthzRequest(destination_port=80, source_ip="10.0.0.1", remote_ip="203.0.113.7"),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "when-connection-sni": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("connection.sni", ["*.example.com"])]))],
        AuthzRequest(destination_port=443, sni="api.example.com"),
        A,
        Stage.ALLOW,
        "foo/allow",
        0,
    ),
    "when-jwt-claims-never-match": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("request.auth.claims[iss]", ["https://idp"])]))],
        http(),
        D,
        Stage.DEFAULT_DENY,
    ),
    "when-jwt-claims-not-values-match": Case(
        [ap("foo/deny", DENY, rule(when=[c("request.auth.claims[groups]", not_values=["admin"])]))],
        http(),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    "when-header-without-brackets-skips-allow": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("request.headers", ["x"])]))],
        http(),
        D,
        Stage.DEFAULT_DENY,
        note="brackets",
    ),
    "when-envoy-metadata-unsupported-skips-allow": Case(
        [ap("foo/allow", ALLOW, rule(when=[c("experimental.envoy.filters.a.b[c]", ["x"])]))],
        tcp(),
        D,
        Stage.DEFAULT_DENY,
        note="not supported",
    ),
    "when-envoy-metadata-dropped-from-deny": Case(
        [ap("foo/deny", DENY, rule(when=[c("experimental.envoy.filters.a.b[c]", ["x"])]))],
        tcp(),
        D,
        Stage.DENY,
        "foo/deny",
        0,
    ),
    # --- CUSTOM and AUDIT -------------------------------------------------------------------
    "custom-matching-fails-closed": Case(
        [ap("foo/ext", CUSTOM, rule(), provider="opa"), ap("foo/allow-all", ALLOW, rule())],
        tcp(),
        D,
        Stage.CUSTOM,
        "foo/ext",
        0,
    ),
    "custom-not-matching-no-effect": Case(
        [ap("foo/ext", CUSTOM, rule(to=[o(ports=["9999"])]), provider="opa")],
        tcp(),
        A,
        Stage.NO_ALLOW_POLICY,
    ),
    "audit-never-decides": Case([ap("foo/audit", AUDIT, rule())], tcp(), A, Stage.NO_ALLOW_POLICY),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_evaluate(case: Case) -> None:
    decision = evaluate(case.request, case.policies, case.mesh, namespace="foo", labels=case.labels)
    assert (decision.verdict, decision.stage) == (case.verdict, case.stage), decision.reason
    assert (decision.policy.meta.key if decision.policy else None) == case.policy
    assert decision.rule == case.rule
    assert decision.reason
    if case.note is not None:
        assert any(case.note in n for n in decision.notes), decision.notes


def test_audit_is_recorded() -> None:
    decision = evaluate(tcp(), [ap("foo/audit", AUDIT, rule())], MESH)
    assert [str(m) for m in decision.audited_by] == ["foo/audit rule 0"]


def test_reasons_name_policy_and_rule() -> None:
    allow = evaluate(tcp(), [ap("foo/a", ALLOW, rule(src=[s(namespaces=["x"])]), rule())], MESH)
    assert allow.reason == "ALLOW policy foo/a rule 1 matched"
    denied = evaluate(
        tcp(principal=None),
        [ap("foo/a", ALLOW), ap("foo/b", ALLOW, rule(src=[s(principals=["*"])]))],
        MESH,
    )
    assert "foo/a, foo/b" in denied.reason
    assert "foo/a has no rules" in denied.reason
    assert "plaintext" in denied.reason
    custom = evaluate(tcp(), [ap("foo/ext", CUSTOM, rule(), provider="opa")], MESH)
    assert "provider opa" in custom.reason
    assert "fails closed" in custom.reason


@pytest.mark.parametrize(
    ("policy", "applies"),
    [
        pytest.param(ap("foo/all"), True, id="same-namespace-no-selector"),
        pytest.param(
            ap("foo/sel", selector={"app": "web"}), True, id="same-namespace-selector-match"
        ),
        pytest.param(
            ap("foo/sel", selector={"app": "db"}), False, id="same-namespace-selector-miss"
        ),
        pytest.param(ap("foo/empty", selector={}), True, id="empty-selector-matches-all"),
        pytest.param(ap("bar/all"), False, id="other-namespace"),
        pytest.param(ap("istio-system/all"), True, id="root-namespace-mesh-wide"),
        pytest.param(
            ap("istio-system/sel", selector={"app": "web"}), True, id="root-selector-any-namespace"
        ),
        pytest.param(
            ap("istio-system/sel", selector={"app": "db"}), False, id="root-selector-miss"
        ),
    ],
)
def test_select_authorization_policies(policy: AuthorizationPolicy, applies: bool) -> None:
    selected = select_authorization_policies("foo", {"app": "web", "v": "1"}, [policy], MESH)
    assert (policy in selected) is applies


def test_root_namespace_deny_applies_to_other_namespaces() -> None:
    policies = [ap("istio-system/deny-plaintext", DENY, rule(src=[s(not_principals=["*"])]))]
    decision = evaluate(tcp(principal=None), policies, MESH, namespace="foo", labels={})
    assert decision.verdict is Verdict.DENY
    assert decision.policy is policies[0]


@pytest.mark.parametrize(
    ("policy", "scope"),
    [
        pytest.param(ap("istio-system/all", DENY, rule()), "mesh", id="root-namespace"),
        pytest.param(ap("foo/all", DENY, rule()), "namespace", id="namespace-wide"),
        pytest.param(
            ap("foo/one", DENY, rule(), selector={"app": "web"}), "workload", id="selector"
        ),
    ],
)
def test_decision_names_the_level_of_the_deciding_policy(
    policy: AuthorizationPolicy, scope: str
) -> None:
    decision = evaluate(tcp(), [policy], MESH, namespace="foo", labels={"app": "web"})
    assert (decision.policy, decision.scope) == (policy, scope)


def test_index_selects_like_the_function_in_input_order() -> None:
    policies = [
        ap("istio-system/a"),
        ap("foo/b", selector={"app": "web"}),
        ap("bar/c"),
        ap("istio-system/d", selector={"app": "db"}),
        ap("foo/e"),
    ]
    index = AuthorizationIndex(policies, MESH)
    for namespace, labels in [
        ("foo", {"app": "web"}),
        ("bar", {"app": "db"}),
        ("istio-system", {}),
    ]:
        expected = select_authorization_policies(namespace, labels, policies, MESH)
        assert index.for_workload(namespace, labels) == expected
