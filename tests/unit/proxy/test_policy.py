"""The sidecar's policy view over the photo-sharing example: modes, routing, authorization."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsec.config.sources.files import FileContent, build_snapshot, load_snapshot
from meshsec.proxy.authz import HttpRequestInfo, PeerInfo
from meshsec.proxy.inbound import PortMode
from meshsec.proxy.policy import LivePolicy, PolicyView
from meshsec.proxy.registry import PortBinding, Registry, WorkloadEntry, split_service_host
from meshsec.proxy.upstream import ClientTlsMode

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "photo-sharing"
WORKLOADS = {
    "photo-frontend.photo-ns": ("photo-frontend", 10001),
    "photo-backend.photo-ns": ("photo-backend", 10002),
    "datastore.datastore-ns": ("datastore", 10003),
    "legacy.datastore-ns": ("legacy", 10004),
    "gallery.public-ns": ("gallery", 10005),
}


def _registry() -> Registry:
    entries = []
    for ref, (sa, inbound) in WORKLOADS.items():
        name, ns = ref.split(".")
        entries.append(
            WorkloadEntry(name, ns, sa, {"app": name}, (PortBinding(8080, 20000, inbound, "http"),))
        )
    return Registry(tuple(entries))


@pytest.fixture(scope="module")
def views() -> dict[str, PolicyView]:
    snapshot = load_snapshot([EXAMPLE])
    registry = _registry()
    return {
        f"{w.name}.{w.namespace}": PolicyView(snapshot, registry, w) for w in registry.workloads
    }


@pytest.mark.parametrize(
    ("workload", "mode"),
    [
        ("photo-frontend.photo-ns", PortMode.STRICT),  # mesh-wide STRICT
        ("datastore.datastore-ns", PortMode.STRICT),
        ("legacy.datastore-ns", PortMode.DISABLE),  # workload-level DISABLE
        ("gallery.public-ns", PortMode.PERMISSIVE),  # namespace PERMISSIVE
    ],
    ids=["mesh", "namespace", "workload", "permissive"],
)
def test_port_modes(views: dict[str, PolicyView], workload: str, mode: PortMode) -> None:
    assert views[workload].port_mode(8080) is mode


def test_routing_uses_auto_mtls_and_marks_disabled_endpoints_plaintext(
    views: dict[str, PolicyView],
) -> None:
    frontend = views["photo-frontend.photo-ns"]
    endpoints, tls = frontend.route("photo-backend", 8080)  # short name: caller's namespace
    assert [(e.port, e.mesh) for e in endpoints] == [(10002, True)]
    assert tls.mode is ClientTlsMode.ISTIO_MUTUAL
    assert tls.auto
    assert "spiffe://cluster.local/ns/photo-ns/sa/photo-backend" in tls.subject_alt_names
    endpoints, tls = frontend.route("legacy.datastore-ns.svc.cluster.local", 8080)
    assert [(e.port, e.mesh) for e in endpoints] == [(10004, False)]
    assert frontend.route("nowhere.photo-ns", 8080)[0] == []
    assert frontend.route("photo-backend.photo-ns", 9999)[0] == []


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        ("spiffe://cluster.local/ns/photo-ns/sa/photo-backend", True),
        ("spiffe://cluster.local/ns/photo-ns/sa/photo-frontend", False),
        ("", False),
    ],
    ids=["backend", "frontend", "plaintext"],
)
def test_datastore_authorization(
    views: dict[str, PolicyView], principal: str, allowed: bool
) -> None:
    peer = PeerInfo("127.0.0.1", principal)
    request = HttpRequestInfo("GET", "/", "datastore.datastore-ns.svc.cluster.local:8080")
    assert views["datastore.datastore-ns"].authorize(peer, 8080, request).allowed is allowed


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("svc", ("svc", "me")),
        ("svc.ns", ("svc", "ns")),
        ("svc.ns.svc", ("svc", "ns")),
        ("svc.ns.svc.cluster.local", ("svc", "ns")),
        ("SVC.NS.svc.cluster.local.", ("svc", "ns")),
        ("example.com.evil.org", None),
        ("", None),
    ],
    ids=["short", "ns", "svc", "fqdn", "case-dot", "external", "empty"],
)
def test_split_service_host(host: str, expected: tuple[str, str] | None) -> None:
    assert split_service_host(host, "me") == expected


CONNECTION_POLICIES = {
    "principals": "- from: [{source: {principals: [cluster.local/ns/a/sa/b]}}]",
    "namespaces-ips": "- from: [{source: {namespaces: [a], ipBlocks: [127.0.0.0/8]}}]",
    "paths": "- to: [{operation: {paths: [/x]}}]",
    "when": "- when: [{key: 'request.headers[x-a]', values: [b]}]",
    "request-principals": "- from: [{source: {requestPrincipals: ['*']}}]",
    "remote-ip": "- from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]",
}


@pytest.mark.parametrize(
    ("rules", "scoped"),
    [
        ("principals", True),
        ("namespaces-ips", True),
        ("paths", False),
        ("when", False),
        ("request-principals", False),
        ("remote-ip", False),
    ],
    ids=list(CONNECTION_POLICIES),
)
def test_one_decision_per_connection_only_without_request_attributes(
    rules: str, scoped: bool
) -> None:
    text = (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: p, namespace: a}\nspec:\n  rules:\n  " + CONNECTION_POLICIES[rules] + "\n"
    )
    snapshot = build_snapshot([FileContent("p.yaml", text.encode())])
    assert not snapshot.has_errors
    entry = WorkloadEntry("w", "a", "w", {}, (PortBinding(80, 8080, 15006, "http"),))
    live = LivePolicy(PolicyView(snapshot, Registry((entry,)), entry))
    peer = PeerInfo("127.0.0.1", "spiffe://cluster.local/ns/a/sa/b")
    decision = live.connection_decision(peer, 8080)
    assert (decision is not None) is scoped
    if decision is not None:
        assert decision.allowed  # principal a/b from 127.0.0.1 matches both scoped policies
    version = live.version
    live.blocked = "1 error(s)"
    assert live.version is not version
    blocked = live.connection_decision(peer, 8080)
    assert blocked is not None
    assert not blocked.allowed
