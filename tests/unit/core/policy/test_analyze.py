"""Analyzers: input YAML → expected (code, resource, line) list, written from the rules."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from meshsec.core.policy.analyze import analyze_snapshot, collect_diagnostics, count_levels
from meshsec.core.policy.diagnostics import Level
from tests.unit.core.policy.policy_yaml import snapshot_of


def ns(name: str) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n---\n"


def deploy(name: str, namespace: str, labels: str, port: int = 8080, sa: str = "default") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          template:
            metadata: {{labels: {labels}}}
            spec:
              serviceAccountName: {sa}
              containers: [{{name: app, image: x, ports: [{{containerPort: {port}}}]}}]
        ---
        """
    )


def svc(name: str, namespace: str, selector: str, port: int = 80, target: int = 8080) -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  selector: {selector}\n  ports: [{{port: {port}, targetPort: {target}}}]\n---\n"
    )


def pa(name: str, namespace: str, spec: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n---\n"
    )


def ap(name: str, namespace: str, spec: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n---\n"
    )


def dr(name: str, namespace: str, spec: str) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec), "  ")
        + "---\n"
    )


WEB = deploy("web", "foo", "{app: web}") + svc("web", "foo", "{app: web}")
LEGACY = deploy("legacy", "foo", "{app: legacy}", 9000) + svc(
    "legacy", "foo", "{app: legacy}", 90, 9000
)


@dataclass(frozen=True)
class Case:
    id: str
    yaml: str
    expected: tuple[tuple[str, str], ...]  # (code, resource)


CASES = [
    # ---------------------------------------------------------------- IST0127
    Case(
        "ap-selector-matches-workload",
        WEB + ap("a", "foo", "{selector: {matchLabels: {app: web}}, rules: [{}]}"),
        (),
    ),
    Case(
        "ap-selector-matches-nothing",
        WEB + ap("a", "foo", "{selector: {matchLabels: {app: webb}}, rules: [{}]}"),
        (("IST0127", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "ap-selector-matches-in-other-namespace-only",
        WEB + ap("a", "bar", "{selector: {matchLabels: {app: web}}}"),
        (("IST0127", "AuthorizationPolicy bar/a"),),
    ),
    Case(
        "ap-in-root-namespace-matches-any-namespace",
        WEB + ap("a", "istio-system", "{selector: {matchLabels: {app: web}}}"),
        (),
    ),
    Case(
        "ap-matches-service-selector-without-workloads",
        svc("web", "foo", "{app: web}") + ap("a", "foo", "{selector: {matchLabels: {app: web}}}"),
        (),
    ),
    Case(
        "ap-namespace-wide-in-empty-namespace",
        WEB + ap("a", "empty", "{}"),
        (("IST0127", "AuthorizationPolicy empty/a"),),
    ),
    Case(
        "ap-namespace-wide-in-root-namespace",
        WEB + ap("a", "istio-system", "{}"),
        (),
    ),
    Case(
        "pa-selector-matches-nothing",
        WEB + pa("p", "foo", "{selector: {matchLabels: {app: db}}, mtls: {mode: STRICT}}"),
        (("IST0127", "PeerAuthentication foo/p"),),
    ),
    Case(
        "no-workloads-known-info",
        ap("a", "foo", "{selector: {matchLabels: {app: web}}}"),
        (("MS0304", ""),),
    ),
    Case("nothing-at-all", ns("foo"), ()),
    # ---------------------------------------------------------------- IST0101
    Case(
        "ap-namespaces-missing",
        ns("foo")
        + ns("bar")
        + WEB
        + ap(
            "a",
            "foo",
            "{rules: [{from: [{source: {namespaces: [bar, baz], notNamespaces: [qux]}}]}]}",
        ),
        (("IST0101", "AuthorizationPolicy foo/a"), ("IST0101", "AuthorizationPolicy foo/a")),
    ),
    Case(
        "ap-namespace-wildcards-skipped",
        ns("foo")
        + WEB
        + ap("a", "foo", "{rules: [{from: [{source: {namespaces: ['ba*', '*']}}]}]}"),
        (),
    ),
    Case(
        "ap-when-source-namespace-missing",
        ns("foo")
        + WEB
        + ap("a", "foo", "{rules: [{when: [{key: source.namespace, notValues: [nope]}]}]}"),
        (("IST0101", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "ap-namespaces-unchecked-without-namespace-objects",
        WEB + ap("a", "foo", "{rules: [{from: [{source: {namespaces: [nope]}}]}]}"),
        (),
    ),
    # ---------------------------------------------------------------- MS0302 / MS0303
    Case(
        "pa-two-namespace-policies",
        WEB + pa("first", "foo", "{mtls: {mode: STRICT}}") + pa("second", "foo", "{}"),
        (("MS0302", "PeerAuthentication foo/second"),),
    ),
    Case(
        "pa-two-mesh-policies",
        WEB + pa("a", "istio-system", "{}") + pa("b", "istio-system", "{}"),
        (("MS0302", "PeerAuthentication istio-system/b"),),
    ),
    Case(
        "pa-selector-in-root-namespace",
        WEB + pa("p", "istio-system", "{selector: {matchLabels: {app: web}}}"),
        (("MS0303", "PeerAuthentication istio-system/p"),),
    ),
    # ---------------------------------------------------------------- IST0128 / IST0129
    Case(
        "dr-simple-without-ca",
        dr("d", "foo", "host: api.example.com\ntrafficPolicy:\n  tls: {mode: SIMPLE}\n"),
        (("IST0128", "DestinationRule foo/d"),),
    ),
    Case(
        "dr-mutual-without-ca",
        dr(
            "d",
            "foo",
            "host: db\ntrafficPolicy:\n"
            "  tls: {mode: MUTUAL, clientCertificate: /c, privateKey: /k}\n",
        ),
        (("IST0128", "DestinationRule foo/d"),),
    ),
    Case(
        "dr-simple-with-ca",
        dr("d", "foo", "host: a\ntrafficPolicy:\n  tls: {mode: SIMPLE, caCertificates: /ca.pem}\n"),
        (),
    ),
    Case(
        "dr-credential-name-with-workload-selector",
        dr(
            "d",
            "foo",
            "host: a\nworkloadSelector: {matchLabels: {app: web}}\n"
            "trafficPolicy:\n  tls: {mode: SIMPLE, credentialName: my-secret}\n",
        ),
        (),
    ),
    Case(
        "dr-credential-name-without-workload-selector",
        dr("d", "foo", "host: a\ntrafficPolicy:\n  tls: {mode: SIMPLE, credentialName: s}\n"),
        (("IST0128", "DestinationRule foo/d"),),
    ),
    Case(
        "dr-port-level-simple-without-ca",
        dr(
            "d",
            "foo",
            "host: a\ntrafficPolicy:\n  tls: {mode: SIMPLE, caCertificates: /ca}\n"
            "  portLevelSettings:\n  - port: {number: 443}\n    tls: {mode: SIMPLE}\n",
        ),
        (("IST0129", "DestinationRule foo/d"),),
    ),
    Case(
        "dr-subset-simple-without-ca",
        dr(
            "d",
            "foo",
            "host: a\nsubsets:\n- name: v1\n  labels: {v: '1'}\n"
            "  trafficPolicy:\n    tls: {mode: SIMPLE}\n",
        ),
        (("IST0128", "DestinationRule foo/d"),),
    ),
    Case(
        "dr-istio-mutual-is-fine",
        dr("d", "foo", "host: a\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}\n"),
        (),
    ),
    # ---------------------------------------------------------------- MS0301
    Case(
        "conflict-plaintext-to-strict-workload",
        WEB
        + pa("default", "foo", "{mtls: {mode: STRICT}}")
        + dr("web", "foo", "host: web\ntrafficPolicy:\n  tls: {mode: DISABLE}\n"),
        (("MS0301", "DestinationRule foo/web"),),
    ),
    Case(
        "conflict-plaintext-to-mesh-strict",
        WEB
        + pa("default", "istio-system", "{mtls: {mode: STRICT}}")
        + dr(
            "web",
            "foo",
            "host: web.foo.svc.cluster.local\ntrafficPolicy:\n  tls: {mode: DISABLE}\n",
        ),
        (("MS0301", "DestinationRule foo/web"),),
    ),
    Case(
        "no-conflict-plaintext-to-permissive",
        WEB + dr("web", "foo", "host: web\ntrafficPolicy:\n  tls: {mode: DISABLE}\n"),
        (),
    ),
    Case(
        "conflict-istio-mutual-to-disabled-workload-via-wildcard",
        WEB
        + LEGACY
        + pa("default", "istio-system", "{mtls: {mode: STRICT}}")
        + pa("legacy", "foo", "{selector: {matchLabels: {app: legacy}}, mtls: {mode: DISABLE}}")
        + dr(
            "default",
            "istio-system",
            "host: '*.local'\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}\n",
        ),
        (("MS0301", "DestinationRule istio-system/default"),),
    ),
    Case(
        "conflict-on-port-level-disable-only",
        WEB
        + pa(
            "web",
            "foo",
            "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT},"
            " portLevelMtls: {8080: {mode: DISABLE}}}",
        )
        + dr("web", "foo", "host: web\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}\n"),
        (("MS0301", "DestinationRule foo/web"),),
    ),
    Case(
        "port-level-dr-replaces-and-avoids-conflict",
        WEB
        + pa("default", "foo", "{mtls: {mode: STRICT}}")
        + dr(
            "web",
            "foo",
            "host: web\ntrafficPolicy:\n  tls: {mode: DISABLE}\n"
            "  portLevelSettings:\n  - port: {number: 80}\n    tls: {mode: ISTIO_MUTUAL}\n",
        ),
        (),
    ),
    Case(
        "port-level-without-tls-falls-back-to-auto",
        WEB
        + pa("default", "foo", "{mtls: {mode: STRICT}}")
        + dr(
            "web",
            "foo",
            "host: web\ntrafficPolicy:\n  tls: {mode: DISABLE}\n"
            "  portLevelSettings:\n  - port: {number: 80}\n",
        ),
        (),
    ),
    Case(
        "subset-conflict-only-for-matching-workloads",
        deploy("web-v1", "foo", "{app: web, version: v1}")
        + deploy("web-v2", "foo", "{app: web, version: v2}")
        + svc("web", "foo", "{app: web}")
        + pa(
            "v2",
            "foo",
            "{selector: {matchLabels: {version: v2}}, mtls: {mode: STRICT}}",
        )
        + dr(
            "web",
            "foo",
            "host: web\nsubsets:\n- name: v1\n  labels: {version: v1}\n"
            "  trafficPolicy:\n    tls: {mode: DISABLE}\n"
            "- name: v2\n  labels: {version: v2}\n  trafficPolicy:\n    tls: {mode: DISABLE}\n",
        ),
        (("MS0301", "DestinationRule foo/web"),),
    ),
    Case(
        "conflict-from-service-selector-when-no-workloads",
        svc("legacy", "foo", "{app: legacy}", 90, 9000)
        + pa("legacy", "foo", "{selector: {matchLabels: {app: legacy}}, mtls: {mode: DISABLE}}")
        + dr("legacy", "foo", "host: legacy\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}\n"),
        (("MS0301", "DestinationRule foo/legacy"),),
    ),
]


CASES += [
    # ---------------------------------------------------------------- MS0306
    Case(
        "pa-port-level-uses-service-port",
        WEB
        + pa(
            "web",
            "foo",
            "{selector: {matchLabels: {app: web}}, portLevelMtls: {80: {mode: DISABLE}}}",
        ),
        (("MS0306", "PeerAuthentication foo/web"),),
    ),
    Case(
        "pa-port-level-uses-target-port",
        WEB
        + pa(
            "web",
            "foo",
            "{selector: {matchLabels: {app: web}}, portLevelMtls: {8080: {mode: DISABLE}}}",
        ),
        (),
    ),
    Case(
        "pa-port-level-unknown-port-is-not-guessed",
        WEB
        + pa(
            "web",
            "foo",
            "{selector: {matchLabels: {app: web}}, portLevelMtls: {15020: {mode: DISABLE}}}",
        ),
        (),
    ),
    Case(
        "ap-ports-use-service-port",
        WEB
        + ap(
            "a",
            "foo",
            "{selector: {matchLabels: {app: web}}, rules: [{to: [{operation: {ports: ['80']}}]}]}",
        ),
        (("MS0306", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "ap-destination-port-condition-uses-service-port",
        WEB + ap("a", "foo", "{rules: [{when: [{key: destination.port, values: ['80']}]}]}"),
        (("MS0306", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "dr-port-level-uses-target-port",
        WEB
        + dr(
            "web",
            "foo",
            "host: web\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 8080}\n"
            "    tls: {mode: ISTIO_MUTUAL}\n",
        ),
        (("MS0306", "DestinationRule foo/web"),),
    ),
    Case(
        "dr-port-level-uses-service-port",
        WEB
        + dr(
            "web",
            "foo",
            "host: web\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n"
            "    tls: {mode: ISTIO_MUTUAL}\n",
        ),
        (),
    ),
    Case(
        "same-service-and-target-port-is-fine",
        deploy("db", "foo", "{app: db}", 5432)
        + svc("db", "foo", "{app: db}", 5432, 5432)
        + pa(
            "db",
            "foo",
            "{selector: {matchLabels: {app: db}}, portLevelMtls: {5432: {mode: STRICT}}}",
        )
        + dr(
            "db",
            "foo",
            "host: db\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 5432}\n"
            "    tls: {mode: ISTIO_MUTUAL}\n",
        ),
        (),
    ),
]


def sa(name: str, namespace: str) -> str:
    return (
        "apiVersion: v1\nkind: ServiceAccount\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n---\n"
    )


MESH_TD = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
    "data:\n  mesh: |\n    trustDomain: prod.example\n    trustDomainAliases: [old.example]\n---\n"
)

CASES += [
    # ---------------------------------------------------------------- MS0307 / MS0308
    Case(
        "principal-in-mesh-trust-domain",
        WEB
        + MESH_TD
        + ap(
            "a",
            "foo",
            "{rules: [{from: [{source: {principals: "
            "[prod.example/ns/foo/sa/web, old.example/ns/foo/sa/web,"
            " cluster.local/ns/foo/sa/web]}}]}]}",
        ),
        (),
    ),
    Case(
        "principal-in-foreign-trust-domain",
        WEB
        + MESH_TD
        + ap(
            "a", "foo", "{rules: [{from: [{source: {principals: [prod.exmaple/ns/foo/sa/web]}}]}]}"
        ),
        (("MS0307", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "trust-domains-foreign-and-patterns",
        WEB
        + ap(
            "a",
            "foo",
            "{rules: [{from: [{source: {trustDomains: [other.td, '*', 'cluster.*']}}]}]}",
        ),
        (("MS0307", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "when-source-principal-foreign",
        WEB
        + ap("a", "foo", "{rules: [{when: [{key: source.principal, values: [x.td/ns/a/sa/b]}]}]}"),
        (("MS0307", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "principal-service-account-missing",
        WEB
        + sa("web", "foo")
        + ap(
            "a", "foo", "{rules: [{from: [{source: {principals: [cluster.local/ns/foo/sa/wbe]}}]}]}"
        ),
        (("MS0308", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "service-accounts-field-missing-and-present",
        WEB
        + sa("web", "foo")
        + ap(
            "a",
            "foo",
            "{rules: [{from: [{source: {serviceAccounts: [web, foo/web, foo/db, bar/x]}}]}]}",
        ),
        (("MS0308", "AuthorizationPolicy foo/a"),),
    ),
    Case(
        "service-accounts-unchecked-without-objects",
        WEB + ap("a", "foo", "{rules: [{from: [{source: {serviceAccounts: [nope]}}]}]}"),
        (),
    ),
]


def test_port_space_message_names_the_mapping() -> None:
    yaml = WEB + pa(
        "web", "foo", "{selector: {matchLabels: {app: web}}, portLevelMtls: {80: {mode: DISABLE}}}"
    )
    _, path, message = _one(yaml, "MS0306")
    assert path == "spec.portLevelMtls[80]"
    assert "Service foo/web port 80 → targetPort 8080" in message
    assert "use the targetPort" in message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_analyzers(case: Case) -> None:
    snap = snapshot_of(case.yaml)
    assert [d for d in snap.diagnostics if d.level is Level.ERROR] == []
    found = sorted((d.code, d.resource) for d in analyze_snapshot(snap))
    assert found == sorted(case.expected)


def _one(yaml: str, code: str) -> tuple[int, str, str]:
    snap = snapshot_of(yaml)
    (diag,) = [d for d in analyze_snapshot(snap) if d.code == code]
    return diag.line, diag.path, diag.message


def test_conflict_message_points_at_the_mode_line_and_explains() -> None:
    yaml = (
        WEB
        + pa("default", "foo", "{mtls: {mode: STRICT}}")
        + dr("web", "foo", "host: web\ntrafficPolicy:\n  tls:\n    mode: DISABLE\n")
    )
    line, path, message = _one(yaml, "MS0301")
    assert yaml.splitlines()[line - 1].strip() == "mode: DISABLE"
    assert path == "spec.trafficPolicy.tls.mode"
    assert "DISABLE to web.foo.svc.cluster.local:80" in message
    assert "Deployment foo/web" in message
    assert "target port 8080 is STRICT" in message
    assert "namespace policy foo/default sets STRICT" in message
    assert "every connection is refused" in message


def test_conflict_on_port_level_names_the_port_entry() -> None:
    yaml = (
        WEB
        + pa("default", "foo", "{mtls: {mode: STRICT}}")
        + dr(
            "web",
            "foo",
            "host: web\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n"
            "    tls: {mode: DISABLE}\n",
        )
    )
    _, path, _ = _one(yaml, "MS0301")
    assert path == "spec.trafficPolicy.portLevelSettings[0].tls.mode"


def test_subset_conflict_names_subset_path() -> None:
    case = next(c for c in CASES if c.id == "subset-conflict-only-for-matching-workloads")
    line, path, message = _one(case.yaml, "MS0301")
    assert path == "spec.subsets[1].trafficPolicy.tls.mode"
    assert "subset v2" in message
    assert "web-v2" in message
    assert case.yaml.splitlines()[line - 1].strip() == "tls: {mode: DISABLE}"


def test_ist0128_points_at_tls_mode() -> None:
    yaml = dr("d", "foo", "host: a\ntrafficPolicy:\n  tls:\n    mode: SIMPLE\n")
    line, path, message = _one(yaml, "IST0128")
    assert path == "spec.trafficPolicy.tls.mode"
    assert yaml.splitlines()[line - 1].strip() == "mode: SIMPLE"
    assert "no caCertificates" in message


def test_ist0127_message_and_line() -> None:
    yaml = WEB + ap("a", "foo", "{selector: {matchLabels: {app: webb}}}")
    line, path, message = _one(yaml, "IST0127")
    assert path == "spec.selector.matchLabels"
    assert "app=webb matches no known workload in namespace foo" in message
    assert "selector" in yaml.splitlines()[line - 1]


def test_ist0101_message() -> None:
    yaml = ns("foo") + WEB + ap("a", "foo", "{rules: [{from: [{source: {namespaces: [prod]}}]}]}")
    _, path, message = _one(yaml, "IST0101")
    assert path == "spec.rules[0].from[0].source.namespaces[0]"
    assert "namespace 'prod' does not exist" in message


def test_duplicate_namespace_policy_respects_creation_timestamp() -> None:
    yaml = (
        WEB + "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: newer, namespace: foo, creationTimestamp: '2024-02-01T00:00:00Z'}\n---\n"
        + "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: older, namespace: foo, creationTimestamp: '2024-01-01T00:00:00Z'}\n"
    )
    _, _, message = _one(yaml, "MS0302")
    assert message.startswith("foo/older is already the namespace-wide policy")


def test_collect_diagnostics_sorts_and_counts() -> None:
    snap = snapshot_of(
        dr("d", "foo", "host: a\ntrafficPolicy:\n  tls: {mode: SIMPLE}\n")
        + "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x}\n"
        "spec: {mtls: {mode: nope}}\n"
    )
    diags = collect_diagnostics(snap)
    assert [d.line for d in diags] == sorted(d.line for d in diags)
    assert count_levels(diags) == {"Error": 1, "Warning": 1, "Info": 1}  # Info: MS0114
