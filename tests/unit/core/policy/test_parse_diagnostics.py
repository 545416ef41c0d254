"""Every parse diagnostic: code, level, line, field path and a precise message."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from meshsec.core.policy.diagnostics import Level
from tests.unit.core.policy.policy_yaml import snapshot_of

PA = (
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
    "metadata: {name: p, namespace: ns}\n"
)
AP = (
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
    "metadata: {name: a, namespace: ns}\n"
)
DR = (
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    "metadata: {name: d, namespace: ns}\n"
)


@dataclass(frozen=True)
class Case:
    id: str
    yaml: str
    code: str
    line: int
    path: str
    says: tuple[str, ...]
    level: Level = Level.ERROR
    loaded: bool = False  # is the resource still in the snapshot?


CASES = [
    Case(
        "unknown-field-did-you-mean",
        PA + "spec:\n  mtls:\n    mdoe: STRICT\n",
        "MS0101",
        6,
        "spec.mtls.mdoe",
        ("unknown field 'mdoe'", "did you mean 'mode'?", "valid fields: mode"),
    ),
    Case(
        "unknown-field-snake-case",
        PA + "spec:\n  port_level_mtls: {}\n",
        "MS0101",
        5,
        "spec.port_level_mtls",
        ("did you mean 'portLevelMtls'?",),
    ),
    Case(
        "unknown-top-level-field",
        PA + "specs: {}\n",
        "MS0101",
        4,
        "specs",
        ("did you mean 'spec'?",),
    ),
    Case(
        "unknown-metadata-field",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata:\n  name: p\n  namepsace: x\n",
        "MS0101",
        5,
        "metadata.namepsace",
        ("did you mean 'namespace'?",),
    ),
    Case(
        "match-expressions-hint",
        PA + "spec:\n  selector:\n    matchExpressions: []\n",
        "MS0101",
        6,
        "spec.selector.matchExpressions",
        ("supports only matchLabels",),
    ),
    Case(
        "enum-wrong-case",
        PA + "spec:\n  mtls:\n    mode: strict\n",
        "MS0103",
        6,
        "spec.mtls.mode",
        (
            "invalid mtls mode 'strict'",
            "UNSET, DISABLE, PERMISSIVE, STRICT",
            "did you mean 'STRICT'",
        ),
    ),
    Case(
        "enum-unknown",
        DR + "spec:\n  host: a\n  trafficPolicy:\n    tls: {mode: MTLS}\n",
        "MS0103",
        7,
        "spec.trafficPolicy.tls.mode",
        ("DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL",),
    ),
    Case(
        "ap-action-enum",
        AP + "spec:\n  action: REJECT\n",
        "MS0103",
        5,
        "spec.action",
        ("ALLOW, DENY, AUDIT, CUSTOM",),
    ),
    Case(
        "lb-simple-enum",
        DR + "spec:\n  host: a\n  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n",
        "MS0103",
        7,
        "spec.trafficPolicy.loadBalancer.simple",
        ("PASSTHROUGH",),
    ),
    Case(
        "enum-not-a-string",
        PA + "spec:\n  mtls:\n    mode: 3\n",
        "MS0102",
        6,
        "spec.mtls.mode",
        ("must be one of UNSET, DISABLE, PERMISSIVE, STRICT, got integer 3",),
    ),
    Case(
        "enum-yaml-boolean",
        PA + "spec:\n  mtls:\n    mode: off\n",
        "MS0102",
        6,
        "spec.mtls.mode",
        ("got boolean False", "unquoted yes/no/on/off"),
    ),
    Case(
        "port-level-without-selector",
        PA + "spec:\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
        "MS0106",
        6,
        "spec.portLevelMtls",
        ("portLevelMtls requires a selector", "workload-level"),
    ),
    Case(
        "port-level-empty-selector",
        PA + "spec:\n  selector: {matchLabels: {}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
        "MS0106",
        6,
        "spec.portLevelMtls",
        ("requires a selector",),
    ),
    Case(
        "port-level-port-zero",
        PA + "spec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls:\n    0: {mode: DISABLE}\n",
        "MS0105",
        7,
        "spec.portLevelMtls[0]",
        ("portLevelMtls port 0 is out of range 1-65535",),
    ),
    Case(
        "port-level-port-too-big",
        PA + "spec:\n  selector: {matchLabels: {a: b}}\n"
        "  portLevelMtls:\n    70000: {mode: DISABLE}\n",
        "MS0105",
        7,
        "spec.portLevelMtls[70000]",
        ("70000 is out of range",),
    ),
    Case(
        "port-level-port-not-a-number",
        PA
        + "spec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls:\n    http: {mode: DISABLE}\n",
        "MS0102",
        7,
        "spec.portLevelMtls.http",
        ("port number",),
    ),
    Case(
        "dr-port-out-of-range",
        DR
        + "spec:\n  host: a\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 0}\n",
        "MS0105",
        8,
        "spec.trafficPolicy.portLevelSettings[0].port.number",
        ("port 0 is out of range",),
    ),
    Case(
        "dr-port-missing",
        DR
        + "spec:\n  host: a\n  trafficPolicy:\n    portLevelSettings:\n    - tls: {mode: SIMPLE}\n",
        "MS0104",
        8,
        "spec.trafficPolicy.portLevelSettings[0].port",
        ("require port.number",),
    ),
    Case(
        "dr-duplicate-port",
        DR
        + "spec:\n  host: a\n  trafficPolicy:\n    portLevelSettings:\n"
        + "    - port: {number: 80}\n    - port: {number: 80}\n",
        "MS0305",
        9,
        "spec.trafficPolicy.portLevelSettings[1].port",
        ("port 80 appears more than once",),
        Level.WARNING,
        True,
    ),
    Case(
        "dr-host-missing",
        DR + "spec:\n  trafficPolicy: {}\n",
        "MS0104",
        4,
        "spec.host",
        ("spec.host is required",),
    ),
    Case(
        "dr-host-with-scheme",
        DR + "spec:\n  host: http://reviews\n",
        "MS0110",
        5,
        "spec.host",
        ("not a DNS name or wildcard", "drop the scheme"),
    ),
    Case(
        "dr-host-with-port",
        DR + "spec:\n  host: reviews:9080\n",
        "MS0110",
        5,
        "spec.host",
        ("has no port",),
    ),
    Case(
        "dr-export-to-invalid",
        DR + "spec:\n  host: reviews\n  exportTo: ['.', 'Prod']\n",
        "MS0110",
        6,
        "spec.exportTo[1]",
        ("exportTo 'Prod' must be",),
    ),
    Case(
        "dr-istio-mutual-with-certs",
        DR + "spec:\n  host: a\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n"
        "      caCertificates: /ca.pem\n",
        "MS0110",
        9,
        "spec.trafficPolicy.tls.caCertificates",
        ("cannot be set with mode ISTIO_MUTUAL",),
    ),
    Case(
        "dr-mutual-without-cert",
        DR + "spec:\n  host: a\n  trafficPolicy:\n    tls:\n      mode: MUTUAL\n"
        "      privateKey: /k.pem\n",
        "MS0104",
        8,
        "spec.trafficPolicy.tls.mode",
        ("mode MUTUAL requires clientCertificate",),
    ),
    Case(
        "dr-subset-name-missing",
        DR + "spec:\n  host: a\n  subsets:\n  - labels: {v: '1'}\n",
        "MS0104",
        7,
        "spec.subsets[0].name",
        ("is required",),
    ),
    Case(
        "dr-subset-duplicate",
        DR + "spec:\n  host: a\n  subsets:\n  - name: v1\n  - name: v1\n",
        "MS0110",
        8,
        "spec.subsets[1].name",
        ("duplicate subset name 'v1'",),
    ),
    Case(
        "dr-connection-pool-typo",
        DR + "spec:\n  host: a\n  trafficPolicy:\n    connectionPool:\n      tcp:\n"
        "        maxConnection: 1\n",
        "MS0101",
        9,
        "spec.trafficPolicy.connectionPool.tcp.maxConnection",
        ("did you mean 'maxConnections'?",),
    ),
    Case(
        "dr-insecure-skip-verify-type",
        DR + "spec:\n  host: a\n  trafficPolicy:\n"
        "    tls: {mode: SIMPLE, insecureSkipVerify: 'yes'}\n",
        "MS0102",
        7,
        "spec.trafficPolicy.tls.insecureSkipVerify",
        ("must be a boolean",),
    ),
    Case(
        "label-value-not-string",
        PA + "spec:\n  selector:\n    matchLabels:\n      version: 1\n",
        "MS0102",
        7,
        "spec.selector.matchLabels.version",
        ("must be a string, got integer 1", "quote it"),
    ),
    Case(
        "label-key-invalid",
        PA + "spec:\n  selector:\n    matchLabels:\n      'app name': web\n",
        "MS0107",
        7,
        "spec.selector.matchLabels['app name']",
        ("invalid label key 'app name'",),
    ),
    Case(
        "label-value-wildcard",
        PA + "spec:\n  selector:\n    matchLabels:\n      app: '*'\n",
        "MS0107",
        7,
        "spec.selector.matchLabels.app",
        ("invalid label value '*'",),
    ),
    Case(
        "label-value-too-long",
        PA + "spec:\n  selector:\n    matchLabels:\n      app: " + "a" * 64 + "\n",
        "MS0107",
        7,
        "spec.selector.matchLabels.app",
        ("longer than 63",),
    ),
    Case(
        "selector-not-a-mapping",
        PA + "spec:\n  selector: [app]\n",
        "MS0102",
        5,
        "spec.selector",
        ("must be a mapping (WorkloadSelector), got list",),
    ),
    Case(
        "name-invalid",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: My_Policy}\n",
        "MS0108",
        3,
        "metadata.name",
        ("'My_Policy'", "lower-case"),
    ),
    Case(
        "namespace-invalid",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: p, namespace: Prod.ns}\n",
        "MS0108",
        3,
        "metadata.namespace",
        ("'Prod.ns'",),
    ),
    Case(
        "name-missing",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {namespace: x}\n",
        "MS0104",
        3,
        "metadata.name",
        ("metadata.name is required",),
    ),
    Case(
        "metadata-missing",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nspec: {}\n",
        "MS0104",
        1,
        "",
        ("metadata.name is required",),
    ),
    Case(
        "timestamp-invalid",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: p, creationTimestamp: yesterday}\n",
        "MS0109",
        3,
        "metadata.creationTimestamp",
        ("'yesterday' is not an RFC 3339 time",),
    ),
    Case(
        "missing-kind",
        "apiVersion: security.istio.io/v1\nmetadata: {name: p}\n",
        "MS0003",
        1,
        "",
        ("kind missing",),
    ),
    Case(
        "document-not-mapping",
        "- a\n- b\n",
        "MS0002",
        1,
        "",
        ("is a list, not a Kubernetes object",),
    ),
    Case(
        "unknown-api-version",
        "apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: p}\n",
        "MS0202",
        1,
        "apiVersion",
        (
            "'security.istio.io/v1alpha1' is not served for PeerAuthentication",
            "security.istio.io/v1, security.istio.io/v1beta1",
        ),
    ),
    Case(
        "dr-unknown-api-version",
        "apiVersion: networking.istio.io/v2\nkind: DestinationRule\nmetadata: {name: p}\n",
        "MS0202",
        1,
        "apiVersion",
        ("networking.istio.io/v1alpha3",),
    ),
    Case(
        "removed-meshpolicy",
        "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\n"
        "metadata: {name: default}\n"
        "spec:\n  peers:\n  - mtls: {mode: PERMISSIVE}\n",
        "MS0201",
        2,
        "kind",
        (
            "removed in Istio 1.6",
            "PeerAuthentication",
            "security.istio.io/v1",
            "root namespace",
            "mode: PERMISSIVE",
        ),
    ),
    Case(
        "removed-v1alpha1-policy",
        "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\n"
        "metadata: {name: p, namespace: foo}\n"
        "spec:\n  peers:\n  - mtls: {}\n",
        "MS0201",
        2,
        "kind",
        (
            "PeerAuthentication (apiVersion: security.istio.io/v1) in namespace 'foo'",
            "mode: STRICT",
            "RequestAuthentication",
        ),
    ),
    Case(
        "removed-rbac",
        "apiVersion: rbac.istio.io/v1alpha1\nkind: ServiceRole\nmetadata: {name: r}\n",
        "MS0201",
        2,
        "kind",
        ("AuthorizationPolicy (apiVersion: security.istio.io/v1)",),
    ),
    Case(
        "other-kind-ignored",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n",
        "MS0004",
        2,
        "kind",
        ("not used by meshsec",),
        Level.INFO,
    ),
    Case(
        "knative-service-is-not-a-core-service",
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: v}\n",
        "MS0004",
        2,
        "kind",
        ("serving.knative.dev/v1 Service",),
        Level.INFO,
    ),
    Case(
        "ap-ports-as-integers",
        AP + "spec:\n  rules:\n  - to:\n    - operation:\n        ports: [8080]\n",
        "MS0102",
        8,
        "spec.rules[0].to[0].operation.ports[0]",
        ('ports are strings in AuthorizationPolicy: write ports: ["8080"]',),
    ),
    Case(
        "ap-port-out-of-range",
        AP + "spec:\n  rules:\n  - to:\n    - operation:\n        notPorts: ['99999']\n",
        "MS0105",
        8,
        "spec.rules[0].to[0].operation.notPorts[0]",
        ("port '99999' must be a number in 1-65535",),
    ),
    Case(
        "ap-port-unicode-digit",
        AP + "spec:\n  rules:\n  - to:\n    - operation:\n        ports: ['\u00b2']\n",
        "MS0105",
        8,
        "spec.rules[0].to[0].operation.ports[0]",
        ("must be a number in 1-65535",),
    ),
    Case(
        "port-level-unicode-digit-key",
        PA + "spec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls:\n    '\u0663': {}\n",
        "MS0102",
        7,
        "spec.portLevelMtls['\u0663']",
        ("port number",),
    ),
    Case(
        "ap-bad-ip-block",
        AP + "spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: ['10.0.0.0/33']\n",
        "MS0110",
        8,
        "spec.rules[0].from[0].source.ipBlocks[0]",
        ("not an IP address or CIDR block",),
    ),
    Case(
        "ap-principal-with-scheme",
        AP + "spec:\n  rules:\n  - from:\n    - source:\n"
        "        principals: ['spiffe://cluster.local/ns/a/sa/b']\n",
        "MS0110",
        8,
        "spec.rules[0].from[0].source.principals[0]",
        ("never matches", "'cluster.local/ns/a/sa/b'"),
    ),
    Case(
        "ap-empty-source",
        AP + "spec:\n  rules:\n  - from:\n    - source: {}\n",
        "MS0104",
        7,
        "spec.rules[0].from[0].source",
        ("must set at least one field",),
    ),
    Case(
        "ap-from-without-source",
        AP + "spec:\n  rules:\n  - from:\n    - {}\n",
        "MS0104",
        7,
        "spec.rules[0].from[0].source",
        ("spec.rules[0].from[0].source is required",),
    ),
    Case(
        "ap-source-typo",
        AP + "spec:\n  rules:\n  - from:\n    - source:\n        principal: [a]\n",
        "MS0101",
        8,
        "spec.rules[0].from[0].source.principal",
        ("did you mean 'principals'?",),
    ),
    Case(
        "ap-when-unknown-key",
        AP + "spec:\n  rules:\n  - when:\n    - key: source.user\n      values: [a]\n",
        "MS0110",
        7,
        "spec.rules[0].when[0].key",
        ("unknown condition key 'source.user'", "source.principal"),
    ),
    Case(
        "ap-when-header-without-name",
        AP + "spec:\n  rules:\n  - when:\n    - key: request.headers\n      values: [a]\n",
        "MS0110",
        7,
        "spec.rules[0].when[0].key",
        ("take a name in brackets",),
    ),
    Case(
        "ap-when-no-values",
        AP + "spec:\n  rules:\n  - when:\n    - key: source.namespace\n",
        "MS0104",
        7,
        "spec.rules[0].when[0]",
        ("needs values or notValues",),
    ),
    Case(
        "ap-when-key-missing",
        AP + "spec:\n  rules:\n  - when:\n    - values: [a]\n",
        "MS0104",
        7,
        "spec.rules[0].when[0].key",
        ("is required",),
    ),
    Case(
        "ap-when-destination-port",
        AP + "spec:\n  rules:\n  - when:\n    - key: destination.port\n      values: ['http']\n",
        "MS0105",
        7,
        "spec.rules[0].when[0]",
        ("destination.port value 'http'",),
    ),
    Case(
        "ap-empty-string-value",
        AP + "spec:\n  rules:\n  - from:\n    - source:\n        namespaces: ['']\n",
        "MS0110",
        8,
        "spec.rules[0].from[0].source.namespaces[0]",
        ("is empty",),
    ),
    Case(
        "ap-custom-without-provider",
        AP + "spec:\n  action: CUSTOM\n  rules: [{}]\n",
        "MS0104",
        5,
        "spec.action",
        ("action CUSTOM requires provider.name",),
    ),
    Case(
        "ap-provider-without-custom",
        AP + "spec:\n  action: ALLOW\n  provider: {name: opa}\n",
        "MS0110",
        6,
        "spec.provider",
        ("provider is only allowed with action CUSTOM, not ALLOW",),
    ),
    Case(
        "ap-target-refs",
        AP + "spec:\n  targetRefs:\n  - {kind: Service, group: '', name: web}\n",
        "MS0205",
        5,
        "spec.targetRefs",
        ("policy is not loaded", "spec.selector.matchLabels"),
    ),
    Case(
        "service-port-out-of-range",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: 0\n",
        "MS0105",
        6,
        "spec.ports[0].port",
        ("port 0 is out of range",),
    ),
    Case(
        "service-target-port-name-invalid",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n"
        "  - port: 80\n    targetPort: Not_Valid\n",
        "MS0110",
        7,
        "spec.ports[0].targetPort",
        ("named targetPort 'Not_Valid'",),
    ),
    Case(
        "service-protocol",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n"
        "  - port: 80\n    protocol: HTTP\n",
        "MS0103",
        7,
        "spec.ports[0].protocol",
        ("TCP, UDP, SCTP",),
    ),
    Case(
        "mesh-config-bad-trust-domain",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
        "data:\n  mesh: |\n    accessLogFile: /dev/stdout\n    trustDomain: Cluster.Local\n",
        "MS0113",
        7,
        "data.mesh.trustDomain",
        ("trust domains are lower-case",),
    ),
    Case(
        "mesh-config-bad-yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
        "data:\n  mesh: |\n    trustDomain: [a\n",
        "MS0113",
        7,
        "data.mesh",
        ("data.mesh is not valid YAML",),
    ),
    Case(
        "mesh-config-auto-mtls-type",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
        "data:\n  mesh: |\n    enableAutoMtls: sometimes\n",
        "MS0102",
        6,
        "data.mesh.enableAutoMtls",
        ("must be a boolean",),
    ),
    Case(
        "other-configmap-ignored",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config, namespace: web}\n",
        "MS0004",
        2,
        "kind",
        ("only the istio ConfigMap",),
        Level.INFO,
    ),
    Case(
        "duplicate-yaml-key",
        PA + "spec:\n  mtls: {mode: STRICT}\n  mtls: {mode: DISABLE}\n",
        "MS0112",
        6,
        "spec.mtls",
        ("key 'mtls' appears twice",),
    ),
    Case(
        "yaml-syntax",
        PA + "spec:\n  mtls: {mode: STRICT\n",
        "MS0001",
        6,
        "",
        ("invalid YAML",),
    ),
    Case(
        "yaml-unquoted-wildcard-host",
        DR + "spec:\n  host: *.local\n",
        "MS0001",
        5,
        "",
        ("read as a YAML alias", '"*.local"'),
    ),
    Case(
        "yaml-tab-indentation",
        PA + "spec:\n\tmtls: {}\n",
        "MS0001",
        5,
        "",
        ("spaces, not tabs",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_diagnostic(case: Case) -> None:
    snap = snapshot_of(case.yaml)
    found = [d for d in snap.diagnostics if d.code == case.code]
    assert found, f"no {case.code} in {[str(d) for d in snap.diagnostics]}"
    diag = found[0]
    assert diag.level is case.level
    assert (diag.line, diag.path) == (case.line, case.path), str(diag)
    assert diag.file == "in.yaml"
    for fragment in case.says:
        assert fragment in diag.message, diag.message
    total = (
        len(snap.peer_authentications)
        + len(snap.authorization_policies)
        + len(snap.destination_rules)
        + len(snap.services)
    )
    assert (total > 0) is case.loaded


def test_bad_document_does_not_take_down_its_neighbours() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: first, namespace: ns}
        spec: {mtls: {mode: STRICT}}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: broken, namespace: ns}
        spec: {mtls: {mode: sometimes}}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: bad-yaml, namespace: ns}
        spec: {mtls: [}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: last, namespace: ns}
        spec: {mtls: {mode: DISABLE}}
        """
    )
    snap = snapshot_of(text)
    assert [p.name for p in snap.peer_authentications] == ["first", "last"]
    assert sorted((d.code, d.line) for d in snap.diagnostics) == [("MS0001", 14), ("MS0103", 9)]
    last = snap.peer_authentications[1]
    assert last.origin.line == 16
    assert last.origin.document == 3


def test_duplicate_resource_keeps_first() -> None:
    one = PA
    snap = snapshot_of(
        one + "spec: {mtls: {mode: STRICT}}\n---\n" + one + "spec: {mtls: {mode: DISABLE}}\n"
    )
    (pa,) = snap.peer_authentications
    assert pa.mtls.name == "STRICT"
    (diag,) = snap.diagnostics
    assert diag.code == "MS0005"
    assert diag.line == 6
    assert "first definition at in.yaml:1 is used" in diag.message


def test_resource_name_is_in_every_diagnostic() -> None:
    snap = snapshot_of(PA + "spec:\n  mtls:\n    mode: strict\n")
    assert snap.diagnostics[0].resource == "PeerAuthentication ns/p"
    assert str(snap.diagnostics[0]).startswith("in.yaml:6: Error [MS0103] PeerAuthentication ns/p")


def test_several_problems_in_one_document_are_all_reported() -> None:
    snap = snapshot_of(
        DR + "spec:\n  host: a\n  trafficPolicy:\n    tls:\n      mode: SIMPLE\n"
        "      maxSessionAge: 300s\n      sni: 5\n"
        "    portLevelSettings:\n    - port: {number: -1}\n"
    )
    assert sorted(d.code for d in snap.diagnostics) == ["MS0101", "MS0102", "MS0105"]
