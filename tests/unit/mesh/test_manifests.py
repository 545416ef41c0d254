"""Mesh directories: the Workload kind's run fields, start-up checks, expectations."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsec.config.sources.files import FileContent, build_snapshot
from meshsec.config.sources.yaml_lines import parse_yaml_text
from meshsec.core.policy.diagnostics import Level
from meshsec.mesh.manifests import MeshPlan, build_mesh_plan, load_mesh_plan

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "photo-sharing"

BASE = """
apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa1, namespace: ns1}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: ns1}
spec:
  selector: {app: a}
  ports: [{port: 80, targetPort: 8080}]
"""

WORKLOAD = """
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: a, namespace: ns1, labels: {app: a}}
spec:
  serviceAccount: sa1
  command: [python, app.py]
  env: {GREETING: hi}
  ports: [{port: 8080, protocol: http}, 9000]
"""


def _plan(text: str) -> MeshPlan:
    loaded = parse_yaml_text(text, file="m.yaml")
    snapshot = build_snapshot([FileContent("m.yaml", text.encode())])
    return build_mesh_plan(Path("."), snapshot, loaded.documents)


def _errors(plan: MeshPlan) -> list[str]:
    return [d.message for d in plan.diagnostics if d.level is Level.ERROR]


def test_workload_run_fields_are_parsed() -> None:
    plan = _plan(BASE + WORKLOAD)
    assert _errors(plan) == []
    (w,) = plan.workloads
    assert w.command == ("python", "app.py")
    assert dict(w.env) == {"GREETING": "hi"}
    assert [(p.port, p.protocol) for p in w.port_specs] == [(8080, "http"), (9000, "tcp")]
    assert w.ports == (8080, 9000)
    assert w.mount_mtls_certs is False


def test_env_as_kubernetes_list_and_mount_flag() -> None:
    text = WORKLOAD.replace("env: {GREETING: hi}", "env: [{name: A, value: b}]").replace(
        "serviceAccount: sa1", "serviceAccount: sa1\n  mountMtlsCerts: true"
    )
    (w,) = _plan(BASE + text).workloads
    assert dict(w.env) == {"A": "b"}
    assert w.mount_mtls_certs is True


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("command: [python, app.py]", "command: []", "spec.command is required"),
        ("serviceAccount: sa1", "serviceAccount: nobody", "ns1/nobody has no ServiceAccount"),
        ("{port: 8080, protocol: http}", "{port: 8080, protocol: grpc}", "invalid protocol"),
        ("9000]", "8080]", "port 8080 is listed twice"),
        ("env: {GREETING: hi}", "env: {1BAD: x}", "not a valid name"),
        ("mountMtlsCerts", "mountMtlsCerts", ""),
    ],
    ids=["no-command", "missing-sa", "bad-protocol", "dup-port", "bad-env", "control"],
)
def test_workload_problems_are_diagnosed(old: str, new: str, expected: str) -> None:
    text = WORKLOAD.replace(old, new)
    errors = _errors(_plan(BASE + text))
    if expected:
        assert any(expected in e for e in errors), errors
    else:
        assert errors == []


def test_workload_in_undeclared_namespace() -> None:
    errors = _errors(_plan(BASE.replace("name: ns1}\n---", "name: other}\n---", 1) + WORKLOAD))
    assert any("namespace 'ns1' has no Namespace object" in e for e in errors)


def _expectations(*items: str) -> str:
    body = "\n".join(f"  - {i}" for i in items)
    return (
        "\n---\napiVersion: meshsec.io/v1alpha1\nkind: Expectations\nmetadata: {name: x}\n"
        f"spec:\n  expectations:\n{body}\n"
    )


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("{from: a.ns1, to: svc:80, expect: allowed}", ""),
        ("{from: outside, to: svc.ns1:80, expect: refused, path: /x}", ""),
        ("{from: b.ns1, to: svc:80, expect: allowed}", "no workload 'b.ns1'; known: a.ns1"),
        ("{from: a.ns1, to: nope:80, expect: allowed}", "no Service ns1/nope"),
        ("{from: a.ns1, to: svc:81, expect: allowed}", "has no port 81"),
        ("{from: a.ns1, to: svc, expect: allowed}", "expected service[.namespace]:port"),
        ("{from: a.ns1, to: svc:80, expect: maybe}", "invalid expect 'maybe'"),
        ("{from: a.ns1, to: svc:80, expect: allowed, via: x}", "unknown field 'via'"),
        ("{from: a.ns1, to: svc:80, expect: allowed, path: x}", "must start with /"),
    ],
    ids=[
        "ok",
        "outside",
        "bad-from",
        "bad-service",
        "bad-port",
        "no-port",
        "bad-verdict",
        "unknown-field",
        "bad-path",
    ],
)
def test_expectations(item: str, expected: str) -> None:
    plan = _plan(BASE + WORKLOAD + _expectations(item))
    errors = _errors(plan)
    if expected:
        assert any(expected in e for e in errors), errors
        assert plan.expectations == ()
    else:
        assert errors == []
        (exp,) = plan.expectations
        assert (exp.service, exp.namespace, exp.port) == ("svc", "ns1", 80)
        assert exp.line > 0
        # the policy parser's "kind not analyzed" note is not shown for Expectations
        assert not any("Expectations" in d.message for d in plan.diagnostics)


def test_the_photo_sharing_example_is_clean() -> None:
    plan = load_mesh_plan(EXAMPLE)
    assert [str(d) for d in plan.diagnostics if d.level is not Level.INFO] == []
    assert {f"{w.name}.{w.namespace}" for w in plan.workloads} == {
        "photo-frontend.photo-ns",
        "photo-backend.photo-ns",
        "datastore.datastore-ns",
        "legacy.datastore-ns",
        "gallery.public-ns",
    }
    assert len(plan.expectations) == 10
    assert plan.workload("legacy.datastore-ns").mount_mtls_certs  # type: ignore[union-attr]
