"""Parsing valid Istio/Kubernetes YAML into the typed model."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meshsec.core.policy.model import (
    AuthorizationAction,
    ClientTLSSettings,
    MtlsMode,
    RuleOperation,
    RuleSource,
    TlsMode,
    WorkloadSelector,
)
from tests.unit.core.policy.policy_yaml import errors, snapshot_of

PA_NS = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
  creationTimestamp: "2024-05-01T12:00:00Z"
spec:
  mtls:
    mode: STRICT
"""


def test_peer_authentication_namespace_level() -> None:
    snap = snapshot_of(PA_NS)
    assert errors(snap) == []
    (pa,) = snap.peer_authentications
    assert pa.meta.key == "foo/default"
    assert pa.mtls is MtlsMode.STRICT
    assert pa.selector is None
    assert not pa.has_selector
    assert pa.meta.creation_timestamp == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert pa.origin.line == 2
    assert pa.origin.file == "in.yaml"
    assert pa.api_version == "security.istio.io/v1"
    assert pa.ref == "PeerAuthentication foo/default"


def test_peer_authentication_workload_with_port_level() -> None:
    snap = snapshot_of(
        """
        apiVersion: security.istio.io/v1beta1
        kind: PeerAuthentication
        metadata: {name: web, namespace: foo}
        spec:
          selector:
            matchLabels: {app: web, version: v1}
          mtls: {mode: PERMISSIVE}
          portLevelMtls:
            8080: {mode: DISABLE}
            "9090": {}
        """
    )
    assert errors(snap) == []
    (pa,) = snap.peer_authentications
    assert pa.has_selector
    assert pa.selector == WorkloadSelector(match_labels={"app": "web", "version": "v1"})  # type: ignore[arg-type]
    assert dict(pa.port_level_mtls) == {8080: MtlsMode.DISABLE, 9090: MtlsMode.UNSET}


@pytest.mark.parametrize(
    ("spec", "mode"),
    [
        ("spec: {}", MtlsMode.UNSET),
        ("spec: {mtls: {}}", MtlsMode.UNSET),
        ("spec: {mtls: {mode: UNSET}}", MtlsMode.UNSET),
        ("spec: {mtls: {mode: DISABLE}}", MtlsMode.DISABLE),
        ("", MtlsMode.UNSET),
    ],
    ids=["empty-spec", "empty-mtls", "explicit-unset", "disable", "no-spec"],
)
def test_peer_authentication_mode_defaults(spec: str, mode: MtlsMode) -> None:
    snap = snapshot_of(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: a, namespace: b}}\n{spec}\n"
    )
    assert errors(snap) == []
    assert snap.peer_authentications[0].mtls is mode


def test_missing_namespace_defaults_to_default_and_no_timestamp_is_none() -> None:
    snap = snapshot_of(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\n"
    )
    (pa,) = snap.peer_authentications
    assert pa.namespace == "default"
    (note,) = snap.diagnostics
    assert (note.code, note.level.value, note.line, note.path) == ("MS0114", "Info", 3, "metadata")
    assert "namespace 'default'" in note.message
    assert pa.meta.creation_timestamp is None


def test_input_order_and_precedence_key() -> None:
    snap = snapshot_of(
        """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: b, namespace: x, creationTimestamp: "2024-01-02T00:00:00Z"}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: a, namespace: x, creationTimestamp: 2024-01-01T00:00:00Z}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: c, namespace: x, creationTimestamp: null}
        """
    )
    assert errors(snap) == []
    b, a, c = snap.peer_authentications
    assert [p.origin.order for p in (b, a, c)] == [1, 2, 3]
    assert [p.origin.document for p in (b, a, c)] == [0, 1, 2]
    oldest_first = sorted(snap.peer_authentications, key=lambda p: p.precedence_key)
    assert [p.name for p in oldest_first] == ["c", "a", "b"]
    assert a.meta.creation_timestamp == datetime(2024, 1, 1, tzinfo=UTC)


def test_timestamp_with_offset_is_normalised_to_utc() -> None:
    snap = snapshot_of(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        'metadata: {name: a, creationTimestamp: "2024-01-01T02:00:00+02:00"}\n'
    )
    ts = snap.peer_authentications[0].meta.creation_timestamp
    assert ts == datetime(2024, 1, 1, tzinfo=UTC)
    assert ts is not None
    assert ts.tzinfo is UTC


DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  exportTo: [".", "istio-system"]
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
    connectionPool:
      tcp: {maxConnections: 100, maxConnectionDuration: 30m}
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/client.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      subjectAltNames: [reviews.example.com]
      sni: reviews.example.com
      insecureSkipVerify: false
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: ISTIO_MUTUAL}
    - port: {number: 9443}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: DISABLE}
"""


def test_destination_rule_full() -> None:
    snap = snapshot_of(DR)
    assert errors(snap) == []
    (dr,) = snap.destination_rules
    assert dr.host == "reviews.bookinfo.svc.cluster.local"
    assert dr.export_to == (".", "istio-system")
    tp = dr.traffic_policy
    assert tp is not None
    assert tp.load_balancer_simple == "PASSTHROUGH"
    assert tp.tls == ClientTLSSettings(
        mode=TlsMode.MUTUAL,
        client_certificate="/etc/certs/client.pem",
        private_key="/etc/certs/key.pem",
        ca_certificates="/etc/certs/ca.pem",
        subject_alt_names=("reviews.example.com",),
        sni="reviews.example.com",
        insecure_skip_verify=False,
    )
    p1, p2 = tp.port_level_settings
    assert p1.port is not None
    assert p1.port.number == 9080
    assert p1.tls == ClientTLSSettings(mode=TlsMode.ISTIO_MUTUAL)
    assert p2.port is not None
    assert p2.port.number == 9443
    assert p2.tls is None
    (subset,) = dr.subsets
    assert subset.name == "v1"
    assert dict(subset.labels) == {"version": "v1"}
    assert subset.traffic_policy is not None
    assert subset.traffic_policy.tls == ClientTLSSettings(mode=TlsMode.DISABLE)


def test_destination_rule_tls_without_mode_is_disable() -> None:
    snap = snapshot_of(
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\n"
        "metadata: {name: r}\nspec: {host: a, trafficPolicy: {tls: {sni: x}}}\n"
    )
    tp = snap.destination_rules[0].traffic_policy
    assert tp is not None
    assert tp.tls is not None
    assert tp.tls.mode is TlsMode.DISABLE


AP = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector:
    matchLabels: {app: httpbin}
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
        notNamespaces: ["prod"]
        ipBlocks: ["10.0.0.0/8", "192.168.1.1"]
        trustDomains: ["cluster.local"]
        serviceAccounts: ["foo/sleep"]
    - source:
        namespaces: ["test*"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
        ports: ["8080"]
        notHosts: ["*.internal"]
    when:
    - key: source.principal
      values: ["*"]
    - key: request.headers[x-token]
      notValues: ["bad"]
  - {}
"""


def test_authorization_policy_full() -> None:
    snap = snapshot_of(AP)
    assert errors(snap) == []
    (ap,) = snap.authorization_policies
    assert ap.action is AuthorizationAction.DENY
    assert ap.has_selector
    assert ap.provider is None
    r0, r1 = ap.rules
    assert (r0.index, r1.index) == (0, 1)
    assert r0.sources == (
        RuleSource(
            principals=("cluster.local/ns/default/sa/sleep",),
            not_namespaces=("prod",),
            ip_blocks=("10.0.0.0/8", "192.168.1.1"),
            trust_domains=("cluster.local",),
            service_accounts=("foo/sleep",),
        ),
        RuleSource(namespaces=("test*",)),
    )
    assert r0.operations == (
        RuleOperation(
            methods=("GET",), paths=("/info*",), ports=("8080",), not_hosts=("*.internal",)
        ),
    )
    assert [c.key for c in r0.when] == ["source.principal", "request.headers[x-token]"]
    assert r0.when[1].not_values == ("bad",)
    assert r1.sources == ()
    assert r1.operations == ()
    assert r1.when == ()


@pytest.mark.parametrize(
    ("spec", "rules", "action"),
    [
        ("spec: {}", 0, AuthorizationAction.ALLOW),
        ("spec: {rules: [{}]}", 1, AuthorizationAction.ALLOW),
        ("spec: {action: AUDIT, rules: [{}]}", 1, AuthorizationAction.AUDIT),
    ],
    ids=["allow-nothing", "allow-all", "audit"],
)
def test_authorization_policy_rule_shapes(
    spec: str, rules: int, action: AuthorizationAction
) -> None:
    snap = snapshot_of(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: a}}\n{spec}\n"
    )
    assert errors(snap) == []
    (ap,) = snap.authorization_policies
    assert len(ap.rules) == rules
    assert ap.action is action


def test_custom_action_is_loaded_with_a_warning() -> None:
    snap = snapshot_of(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: ext, namespace: x}\n"
        "spec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}\n"
    )
    (ap,) = snap.authorization_policies
    assert ap.action is AuthorizationAction.CUSTOM
    assert ap.provider == "opa"
    assert [d.code for d in snap.diagnostics] == ["MS0204"]


REGISTRY = """
apiVersion: v1
kind: Namespace
metadata:
  name: foo
  labels: {istio-injection: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: foo}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: foo}
spec:
  type: ClusterIP
  clusterIP: 10.0.0.1
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090, targetPort: grpc-port, protocol: TCP, appProtocol: grpc}
  - {port: 53, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: foo, labels: {app: web}}
spec:
  serviceAccountName: web
  containers:
  - name: app
    image: web
    ports: [{containerPort: 8080}, {containerPort: 9090, name: grpc-port}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: foo}
spec:
  template:
    metadata: {labels: {app: db}}
    spec:
      serviceAccount: db
      containers: [{name: db, image: db}]
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: vm, namespace: foo, labels: {app: vm}}
spec: {serviceAccount: vm-sa, ports: [7000]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    trustDomain: example.org
    trustDomainAliases: [old.example.org, cluster.local]
    rootNamespace: mesh-root
    enableAutoMtls: false
    defaultConfig: {proxyMetadata: {A: "1"}}
"""


def test_registry_kinds_and_mesh_config() -> None:
    snap = snapshot_of(REGISTRY)
    assert errors(snap) == []
    assert snap.diagnostics == ()
    (ns,) = snap.namespaces
    assert ns.meta.namespace == ""
    assert ns.meta.labels["istio-injection"] == "enabled"
    assert ns.ref == "Namespace foo"
    assert [sa.meta.key for sa in snap.service_accounts] == ["foo/web"]
    (svc,) = snap.services
    assert svc.hostname == "web.foo.svc.cluster.local"
    assert svc.selects({"app": "web", "x": "y"})
    assert not svc.selects({"app": "db"})
    http, grpc, dns = svc.ports
    assert (http.port, http.target_port, http.effective_target_port) == (80, 8080, 8080)
    assert (grpc.target_port, grpc.app_protocol) == ("grpc-port", "grpc")
    assert (dns.protocol, dns.effective_target_port) == ("UDP", 53)
    pod, sts, vm = snap.workloads
    assert (pod.source_kind, pod.service_account, pod.ports) == ("Pod", "web", (8080, 9090))
    assert (sts.source_kind, dict(sts.labels), sts.service_account) == (
        "StatefulSet",
        {"app": "db"},
        "db",
    )
    assert (vm.source_kind, vm.service_account, vm.ports) == ("Workload", "vm-sa", (7000,))
    mesh = snap.mesh_config
    assert mesh.trust_domain == "example.org"
    assert mesh.trust_domain_aliases == ("old.example.org", "cluster.local")
    assert mesh.root_namespace == "mesh-root"
    assert snap.root_namespace == "mesh-root"
    assert mesh.enable_auto_mtls is False
    assert mesh.origin is not None
    assert mesh.origin.file == "in.yaml"


def test_mesh_config_defaults_without_configmap() -> None:
    snap = snapshot_of(PA_NS)
    assert snap.mesh_config.root_namespace == "istio-system"
    assert snap.mesh_config.trust_domain == "cluster.local"
    assert snap.mesh_config.enable_auto_mtls is True
    assert snap.mesh_config.origin is None


def test_kubectl_list_output_is_expanded() -> None:
    snap = snapshot_of(
        """
        apiVersion: v1
        kind: List
        items:
        - apiVersion: security.istio.io/v1
          kind: PeerAuthentication
          metadata: {name: a, namespace: x}
          spec: {mtls: {mode: STRICT}}
        - apiVersion: security.istio.io/v1
          kind: PeerAuthentication
          metadata: {name: b, namespace: x}
          spec: {mtls: {mode: BAD}}
        """
    )
    assert [p.name for p in snap.peer_authentications] == ["a"]
    (diag,) = errors(snap)
    assert diag.path == "items[1].spec.mtls.mode"
    assert diag.line == 12


def test_snapshot_indexes() -> None:
    snap = snapshot_of(PA_NS + "---\n" + DR + "---\n" + AP + "---\n" + REGISTRY)
    assert [p.name for p in snap.peer_authentications_in("foo")] == ["default"]
    assert snap.peer_authentications_in("nope") == ()
    assert [d.name for d in snap.destination_rules_in("bookinfo")] == ["reviews"]
    assert [a.name for a in snap.authorization_policies_in("foo")] == ["httpbin"]
    assert [w.name for w in snap.workloads_in("foo")] == ["web-1", "db", "vm"]
    assert snap.service("foo", "web") is not None
    assert snap.service("foo", "x") is None
    assert snap.namespace_names == frozenset({"foo"})
    assert snap.namespace("foo") is not None
    assert [s.name for s in snap.service_accounts_in("foo")] == ["web"]
    assert [s.name for s in snap.services_in("foo")] == ["web"]


def test_model_objects_are_hashable_and_frozen() -> None:
    snap = snapshot_of(AP + "---\n" + DR)
    assert len({*snap.authorization_policies, *snap.destination_rules}) == 2
    with pytest.raises(AttributeError):
        snap.authorization_policies[0].action = AuthorizationAction.ALLOW  # type: ignore[misc]


def test_load_errors_inside_a_list_item_reject_only_that_item() -> None:
    snap = snapshot_of(
        """
        apiVersion: v1
        kind: List
        items:
        - apiVersion: security.istio.io/v1
          kind: PeerAuthentication
          metadata: {name: a, namespace: x}
        - apiVersion: security.istio.io/v1
          kind: PeerAuthentication
          metadata: {name: b, namespace: x}
          spec: {mtls: {mode: STRICT}, mtls: {mode: DISABLE}}
        """
    )
    assert [p.name for p in snap.peer_authentications] == ["a"]
    (diag,) = snap.diagnostics
    assert (diag.code, diag.path, diag.line) == ("MS0112", "items[1].spec.mtls", 11)
    assert diag.resource == "PeerAuthentication x/b"


def test_large_list_parses_in_linear_time() -> None:
    item = (
        "- apiVersion: security.istio.io/v1\n  kind: PeerAuthentication\n"
        "  metadata: {{name: p{i}, namespace: ns}}\n  spec: {{mtls: {{mode: STRICT}}}}\n"
    )
    text = "apiVersion: v1\nkind: List\nitems:\n" + "".join(item.format(i=i) for i in range(3000))
    snap = snapshot_of(text)
    assert len(snap.peer_authentications) == 3000
    last = snap.peer_authentications[-1]
    assert last.origin.line == 3 + 4 * 2999 + 1
    assert last.origin.line_of("spec.mtls.mode") == last.origin.line + 3


def test_skipped_kinds_are_reported_once_per_kind() -> None:
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {{name: s{i}, namespace: x}}\n---\n"
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: x}}\n---\n"
    snap = snapshot_of("".join(secret.format(i=i) + cm.format(i=i) for i in range(5)) + PA_NS)
    infos = [(d.code, d.resource, d.line) for d in snap.diagnostics]
    assert infos == [("MS0004", "Secret x/s0", 2), ("MS0004", "ConfigMap x/c0", 6)]
    assert "(5 objects like this; the first is shown)" in snap.diagnostics[0].message
    assert len(snap.peer_authentications) == 1
