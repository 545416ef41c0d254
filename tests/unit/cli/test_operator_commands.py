"""The operator commands end to end in one process: a fake state.json, canned agent/proxy admin
endpoints on loopback, and a small photo-sharing-like manifest directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshsec.cli.main import main
from meshsec.cli.proxy_config import (
    ProxySecrets,
    SecretRow,
    build_secret_rows,
    merge_secret_rows,
    parse_proxy_secrets,
)
from tests.fakes.operator_admin import (
    FakeAdmin,
    agent_secrets,
    closed_port_addr,
    serve_fake_admin,
    workload_entry,
    write_state,
)

SERIAL = "0f" + "1" * 30
OLD_SERIAL = "0e" + "2" * 30

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata: {name: photo-ns}
---
apiVersion: v1
kind: Namespace
metadata: {name: datastore-ns}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: legacy, namespace: datastore-ns}
spec:
  selector: {matchLabels: {app: legacy}}
  mtls: {mode: DISABLE}
---
apiVersion: v1
kind: Service
metadata: {name: photo-backend, namespace: photo-ns}
spec:
  selector: {app: photo-backend}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: datastore, namespace: datastore-ns}
spec:
  selector: {app: datastore}
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: datastore-ns}
spec:
  selector: {app: legacy}
  ports: [{name: tcp, port: 9000}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: datastore-callers, namespace: datastore-ns}
spec:
  selector: {matchLabels: {app: datastore}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/photo-ns/sa/photo-backend"]
"""

OPS = """
---
apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
# a classic mistake: plaintext forced towards a STRICT service
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: datastore-plaintext, namespace: ops}
spec:
  host: datastore.datastore-ns.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: ops-tool, namespace: ops, labels: {app: ops-tool}}
spec: {serviceAccount: ops-tool}
"""

WORKLOADS = """
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: photo-frontend, namespace: photo-ns, labels: {app: photo-frontend}}
spec: {serviceAccount: photo-frontend, ports: [8080]}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: photo-backend, namespace: photo-ns, labels: {app: photo-backend}}
spec: {serviceAccount: photo-backend, ports: [8080]}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: datastore, namespace: datastore-ns, labels: {app: datastore}}
spec: {serviceAccount: datastore, ports: [5432]}
---
apiVersion: meshsec.io/v1alpha1
kind: Workload
metadata: {name: legacy, namespace: datastore-ns, labels: {app: legacy}}
spec: {serviceAccount: legacy, ports: [9000]}
"""


@pytest.fixture
def admins() -> Iterator[tuple[FakeAdmin, FakeAdmin, FakeAdmin]]:
    """Agent of photo-frontend, its proxy, agent of photo-backend."""
    with serve_fake_admin() as a, serve_fake_admin() as p, serve_fake_admin() as b:
        a.json("/debug/secrets", agent_secrets(SERIAL))
        a.text("/healthz/ready", "ready\n")
        a.text("/metrics", 'istio_agent_num_outgoing_requests{request_type="csr"} 1\n')
        b.json("/debug/secrets", agent_secrets(OLD_SERIAL))
        b.text("/healthz/ready", "ready\n")
        b.text("/metrics", "")
        yield a, p, b


@pytest.fixture
def mesh(tmp_path: Path, admins: tuple[FakeAdmin, FakeAdmin, FakeAdmin]) -> Path:
    agent_a, proxy_a, agent_b = admins
    mesh_dir = tmp_path / "photo"
    mesh_dir.mkdir()
    (mesh_dir / "mesh.yaml").write_text(MANIFESTS + WORKLOADS + OPS)
    write_state(
        mesh_dir,
        [
            workload_entry("photo-frontend", "photo-ns", agent=agent_a.addr, proxy=proxy_a.addr),
            workload_entry("photo-backend", "photo-ns", agent=agent_b.addr),
            workload_entry("datastore", "datastore-ns", agent=closed_port_addr()),
            workload_entry("legacy", "datastore-ns", agent=None, cert_model="mounted"),
            workload_entry("ops-tool", "ops"),
        ],
        ca_addr=closed_port_addr(),
    )
    return mesh_dir


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def proxy_dump(serial: str, root_fp: str = "aa" * 32) -> dict[str, Any]:
    return {
        "ready": True,
        "secrets": [
            {
                "name": "default",
                "type": "Cert Chain",
                "serial_number": serial,
                "not_before": "2026-11-23T04:00:00+00:00",
                "not_after": "2099-01-01T00:00:00+00:00",
                "applied_at": "2026-11-23T04:00:01+00:00",
            },
            {
                "name": "ROOTCA",
                "type": "CA",
                "roots": [
                    {
                        "serial_number": "1" * 32,
                        "not_after": "2036-01-01T00:00:00+00:00",
                        "sha256": root_fp,
                    }
                ],
            },
        ],
    }


# --- proxy-config secret ---------------------------------------------------------------------


def test_secret_table_has_istioctl_columns_and_serial(
    mesh: Path, admins: tuple[FakeAdmin, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    admins[1].json("/config_dump", proxy_dump(SERIAL))
    code, out, err = run(capsys, "proxy-config", "secret", "photo-frontend", "--mesh", str(mesh))
    assert code == 0, err
    header, default, root = out.strip().splitlines()
    assert header.split() == [
        "RESOURCE", "NAME", "TYPE", "STATUS", "VALID", "CERT", "SERIAL", "NUMBER", "NOT", "AFTER",
        "NOT", "BEFORE",
    ]  # fmt: skip
    assert default.split() == [
        "default", "Cert", "Chain", "ACTIVE", "true", SERIAL, "2099-01-01T00:00:00Z",
        "2026-11-23T04:58:00Z",
    ]  # fmt: skip
    assert root.split()[:5] == ["ROOTCA", "CA", "ACTIVE", "true", "1" * 32]
    assert admins[0].requests == ["/debug/secrets"]
    assert admins[1].requests == ["/config_dump"]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_secret_machine_output(
    mesh: Path, admins: tuple[FakeAdmin, ...], capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    admins[1].json("/config_dump", proxy_dump(SERIAL))
    code, out, _ = run(
        capsys, "proxy-config", "secret", "photo-frontend.photo-ns", "--mesh", str(mesh), "-o", fmt
    )
    assert code == 0
    doc = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert doc["workload"] == "photo-frontend.photo-ns"
    first = doc["secrets"][0]
    assert (first["resource_name"], first["status"], first["serial_number"]) == (
        "default",
        "ACTIVE",
        SERIAL,
    )


def test_secret_during_rotation_shows_warming(
    mesh: Path, admins: tuple[FakeAdmin, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    admins[1].json("/config_dump", proxy_dump(OLD_SERIAL))
    code, out, _ = run(capsys, "proxy-config", "secret", "photo-frontend", "--mesh", str(mesh))
    assert code == 0
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert [(r[0], r[3], r[5]) for r in rows[:2]] == [
        ("default", "ACTIVE", OLD_SERIAL),
        ("default", "WARMING", SERIAL),
    ]


def test_secret_without_proxy_reads_the_agent(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "proxy-config", "secret", "photo-backend", "--mesh", str(mesh))
    assert code == 0
    assert OLD_SERIAL in out
    assert "ACTIVE" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["nope"], 2, "known: datastore.datastore-ns", id="unknown-workload"),
        pytest.param(["datastore"], 3, "connection refused", id="agent-down"),
        pytest.param(["legacy"], 3, "no agent status port", id="no-agent-port"),
        pytest.param(["photo-backend", "-o", "xml"], 2, "--output", id="bad-format"),
    ],
)
def test_secret_errors(
    mesh: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    got, _, err = run(capsys, "proxy-config", "secret", *args, "--mesh", str(mesh))
    assert got == code
    assert message in err


def test_secret_when_no_mesh_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_state(tmp_path, [workload_entry("a", "b")], pid=2**22 + 1)
    code, _, err = run(capsys, "proxy-config", "secret", "a", "--mesh", str(tmp_path))
    assert code == 3
    assert "not running" in err


def test_mesh_dir_from_environment(
    mesh: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHSEC_MESH_DIR", str(mesh))
    code, out, _ = run(capsys, "proxy-config", "secret", "photo-backend")
    assert code == 0
    assert OLD_SERIAL in out


@pytest.mark.parametrize(
    ("proxy_default", "expected"),
    [
        pytest.param(SERIAL, [("default", "ACTIVE", SERIAL)], id="applied"),
        pytest.param(
            OLD_SERIAL,
            [("default", "ACTIVE", OLD_SERIAL), ("default", "WARMING", SERIAL)],
            id="rotation-not-applied-yet",
        ),
        pytest.param(None, [("default", "WARMING", SERIAL)], id="proxy-holds-nothing"),
    ],
)
def test_merge_secret_rows(proxy_default: str | None, expected: list[tuple[str, ...]]) -> None:
    agent = build_secret_rows(agent_secrets(SERIAL))
    default = (
        None
        if proxy_default is None
        else SecretRow("default", "Cert Chain", "ACTIVE", True, proxy_default, "", "")
    )
    rows = merge_secret_rows(agent, ProxySecrets(default, ()))
    assert [
        (r.resource_name, r.status, r.serial_number) for r in rows if r.type != "CA"
    ] == expected
    # the agent's root is not applied by this proxy (no roots in its dump): WARMING
    assert [r.status for r in rows if r.type == "CA"] == ["WARMING"]


def test_serial_is_normalised_to_32_hex_digits() -> None:
    doc = agent_secrets("AB:CD")
    rows = build_secret_rows(doc)
    assert rows[0].serial_number == "0" * 28 + "abcd"


# --- rootca-compare --------------------------------------------------------------------------


def test_rootca_compare_identical(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "proxy-config",
        "rootca-compare",
        "photo-frontend",
        "photo-backend",
        "--mesh",
        str(mesh),
    )
    assert code == 0
    assert out.strip() == (
        "Both [photo-frontend.photo-ns] and [photo-backend.photo-ns] have the identical ROOTCA, "
        "theoretically the connectivity between them is available"
    )


def test_rootca_compare_different(
    mesh: Path, admins: tuple[FakeAdmin, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    admins[2].json("/debug/secrets", agent_secrets(OLD_SERIAL, root_fp="bb" * 32))
    code, out, _ = run(
        capsys,
        "proxy-config",
        "rootca-compare",
        "photo-frontend",
        "photo-backend",
        "--mesh",
        str(mesh),
    )
    assert code == 1
    assert out.splitlines()[0] == (
        "Both [photo-frontend.photo-ns] and [photo-backend.photo-ns] have the non identical "
        "ROOTCA, theoretically the connectivity between them is unavailable"
    )


# --- status ----------------------------------------------------------------------------------


def test_status_reports_every_workload(
    mesh: Path, admins: tuple[FakeAdmin, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    admins[0].text("/metrics", 'istio_agent_num_failed_outgoing_requests{request_type="csr"} 2\n')
    code, out, _ = run(capsys, "status", "--mesh", str(mesh), "-o", "json")
    assert code == 1  # datastore's agent is down, legacy has none, the CA is unreachable
    doc = json.loads(out)
    assert doc["ca"]["reachable"] is False
    by_name = {w["workload"]: w for w in doc["workloads"]}
    front = by_name["photo-frontend.photo-ns"]
    assert front["ready"] is True
    assert front["serial_number"] == SERIAL
    assert front["expires_in_seconds"] > 0
    assert front["last_rotation"] == "2026-11-23T05:00:00Z"
    assert front["ca"] == "UNREACHABLE (2 failed CSR calls)"
    assert by_name["datastore.datastore-ns"]["ready"] is False
    assert "agent unreachable" in by_name["datastore.datastore-ns"]["ready_detail"]


def test_status_table(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "--mesh", str(mesh))
    assert code == 1
    assert "CA UNREACHABLE" in out
    assert "WORKLOAD" in out
    assert "EXPIRES IN" in out
    assert "LAST ROTATION" in out
    front = next(line for line in out.splitlines() if line.startswith("photo-frontend"))
    assert "ready" in front
    assert SERIAL in front


def test_status_all_ready_exits_zero(
    tmp_path: Path, admins: tuple[FakeAdmin, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as ca:  # a listener that is not TLS: reachable but not verified
        ca.bind(("127.0.0.1", 0))
        ca.listen()
        write_state(
            tmp_path,
            [workload_entry("photo-backend", "photo-ns", agent=admins[2].addr)],
            ca_addr=f"127.0.0.1:{ca.getsockname()[1]}",
        )
        code, out, _ = run(capsys, "status", "--mesh", str(tmp_path), "-o", "json")
    assert code == 0, out
    assert json.loads(out)["ca"]["reachable"] is True


# --- check -----------------------------------------------------------------------------------


def check_json(capsys: pytest.CaptureFixture[str], mesh: Path, *args: str) -> tuple[int, Any]:
    code, out, err = run(capsys, "check", *args, "--mesh", str(mesh), "-o", "json")
    return code, json.loads(out) if out.strip() else err


def test_check_allowed(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = check_json(capsys, mesh, "photo-backend", "datastore.datastore-ns:5432")
    assert code == 0
    (route,) = doc["routes"]
    assert route["client"]["tls_mode"] == "ISTIO_MUTUAL"
    assert route["client"]["auto"] is True
    (endpoint,) = route["endpoints"]
    assert endpoint["status"] == "OK"
    assert endpoint["server_mode"] == "STRICT"
    assert endpoint["principal"] == "spiffe://cluster.local/ns/photo-ns/sa/photo-backend"
    assert endpoint["authorization"]["decision"] == "ALLOW"
    assert route["client"]["subject_alt_names"] == [
        "spiffe://cluster.local/ns/datastore-ns/sa/datastore"
    ]


def test_check_denied_by_authorization(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = check_json(capsys, mesh, "photo-frontend", "datastore.datastore-ns")
    assert code == 1
    endpoint = doc["routes"][0]["endpoints"][0]
    assert endpoint["status"] == "OK"
    assert endpoint["authorization"]["decision"] == "DENY"


def test_check_conflict_table(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "ops-tool", "datastore.datastore-ns", "--mesh", str(mesh))
    assert code == 1
    lines = out.splitlines()
    assert lines[1].split() == [
        "HOST:PORT", "STATUS", "SERVER", "CLIENT", "AUTHN", "POLICY", "DESTINATION", "RULE",
        "AUTHZ",
    ]  # fmt: skip
    assert lines[2].split() == [
        "datastore.datastore-ns.svc.cluster.local:5432", "CONFLICT", "STRICT", "plaintext",
        "istio-system/default", "ops/datastore-plaintext", "-",
    ]  # fmt: skip
    assert "CONFLICT: clients send plaintext but the workload port is STRICT" in out


def test_check_auto_mtls_sends_plaintext_to_a_disable_port(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = check_json(capsys, mesh, "photo-frontend", "legacy.datastore-ns")
    assert code == 0
    route = doc["routes"][0]
    assert route["client"]["tls_mode"] == "ISTIO_MUTUAL"  # the service-level decision
    endpoint = route["endpoints"][0]
    assert endpoint["client_tls_mode"] == "DISABLE"  # what the DISABLE endpoint gets
    assert endpoint["status"] == "OK"
    assert endpoint["principal"] is None
    assert endpoint["authorization"]["decision"] == "ALLOW"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["photo-frontend", "nosuch"], "known: datastore.datastore-ns", id="service"),
        pytest.param(["photo-frontend", "datastore:1"], "has no port 1", id="port"),
        pytest.param(["photo-frontend", "datastore:x"], "not a number", id="port-text"),
        pytest.param(["ghost", "datastore"], "no workload 'ghost'", id="client"),
    ],
)
def test_check_bad_input(
    mesh: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run(capsys, "check", *args, "--mesh", str(mesh))
    assert code == 2
    assert message in err


def test_check_offline_from_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no state.json upward: workloads come from the manifests
    (tmp_path / "m.yaml").write_text(MANIFESTS + WORKLOADS)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    code, out, err = run(
        capsys,
        "check",
        "photo-frontend",
        "photo-backend",
        "--config-dir",
        str(tmp_path),
        "-o",
        "json",
    )
    assert code == 0, err
    assert json.loads(out)["routes"][0]["endpoints"][0]["authorization"]["decision"] == "ALLOW"


def test_describe_offline_uses_the_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(
        MANIFESTS
        + WORKLOADS.replace(
            "spec: {serviceAccount: legacy, ports: [9000]}",
            (
                "spec: {serviceAccount: legacy, mountMtlsCerts: true, "
                "ports: [{port: 9000, protocol: http}]}"
            ),
        )
    )
    code, out, err = run(capsys, "describe", "legacy", "--config-dir", str(tmp_path), "-o", "json")
    assert code == 0, err
    identity = json.loads(out)["identity"]
    assert identity["cert_model"] == "mounted"
    assert identity["spiffe_id"] == "spiffe://cluster.local/ns/datastore-ns/sa/legacy"
    assert identity["certificate"] is None  # no mesh running: nothing live


# --- describe --------------------------------------------------------------------------------


def test_describe_text(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", "legacy.datastore-ns", "--mesh", str(mesh))
    assert code == 0
    assert (
        "Exposed by Service legacy.datastore-ns.svc.cluster.local:9000 -> port 9000 (DISABLE); "
        "clients in datastore-ns send plaintext (auto)"
    ) in out
    assert "WARNING" not in out
    assert "SPIFFE ID: spiffe://cluster.local/ns/datastore-ns/sa/legacy" in out
    assert "Certificate model: mounted" in out
    assert "Effective PeerAuthentication:\n   Workload mTLS mode: DISABLE" in out
    assert "Applied PeerAuthentication:\n   datastore-ns/legacy, istio-system/default" in out
    assert "Applied AuthorizationPolicy: <none>" in out


def test_describe_outbound_and_rbac(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", "datastore", "--mesh", str(mesh))
    assert code == 0
    assert "-> legacy.datastore-ns: sends plaintext (auto), server DISABLE, OK" in out
    assert "RBAC policies: ns[datastore-ns]-policy[datastore-callers]-rule[0]" in out
    assert "photo-backend.photo-ns.svc.cluster.local:8080 (HTTP)" in out
    assert "Accepts server SANs: spiffe://cluster.local/ns/photo-ns/sa/photo-backend" in out
    assert "Current certificate: agent unreachable" in out


def test_describe_json(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", "photo-frontend", "--mesh", str(mesh), "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["identity"]["spiffe_id"] == "spiffe://cluster.local/ns/photo-ns/sa/photo-frontend"
    assert doc["identity"]["certificate"]["serial_number"] == SERIAL
    assert doc["peer_authentication"]["mode"] == "STRICT"
    hosts = {r["host"] for r in doc["outbound"]}
    assert hosts == {
        "photo-backend.photo-ns.svc.cluster.local",
        "datastore.datastore-ns.svc.cluster.local",
        "legacy.datastore-ns.svc.cluster.local",
    }
    datastore = next(r for r in doc["outbound"] if r["host"].startswith("datastore."))
    assert datastore["endpoints"][0]["authorization"]["decision"] == "DENY"


def test_describe_exits_1_on_a_conflict(mesh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", "ops-tool.ops", "--mesh", str(mesh))
    assert code == 1
    assert "DestinationRule: ops/datastore-plaintext   Traffic Policy TLS Mode: plaintext" in out
    assert "-> datastore.datastore-ns: server STRICT, CONFLICT" in out


# --- sidecar dump formats --------------------------------------------------------------------


def test_secret_reads_the_meshsec_up_sidecar_dump(
    mesh: Path, admins: tuple[FakeAdmin, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    admins[1].json(
        "/config_dump",
        {
            "spiffe_id": "spiffe://cluster.local/ns/photo-ns/sa/photo-frontend",
            "certificate": {"serial": OLD_SERIAL, "not_after": "2099-01-01T00:00:00+00:00"},
            "policy_version": "x",
        },
    )
    code, out, _ = run(
        capsys, "proxy-config", "secret", "photo-frontend", "--mesh", str(mesh), "-o", "json"
    )
    assert code == 0
    rows = [
        (s["resource_name"], s["status"], s["serial_number"]) for s in json.loads(out)["secrets"]
    ]
    assert rows == [
        ("default", "ACTIVE", OLD_SERIAL),
        ("default", "WARMING", SERIAL),
        ("ROOTCA", "ACTIVE", "1" * 32),  # the sidecar does not report roots: the agent's view
    ]


def test_secret_when_the_sidecar_is_down_shows_the_agent_and_exits_1(
    mesh: Path, admins: tuple[FakeAdmin, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    admins[1].routes.clear()  # /config_dump answers 404
    code, out, err = run(capsys, "proxy-config", "secret", "photo-frontend", "--mesh", str(mesh))
    assert code == 1
    assert "warning: proxy of photo-frontend.photo-ns" in err
    assert SERIAL in out


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param([], "expected a JSON object", id="not-an-object"),
        pytest.param({"listeners": []}, "no 'secrets' list", id="no-secrets"),
        pytest.param({"certificate": "x"}, "not an object", id="certificate-not-object"),
    ],
)
def test_unusable_sidecar_dump_is_refused(document: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_proxy_secrets(document, datetime.now(UTC))


def test_missing_config_dir_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "check", "a", "b", "--config-dir", str(tmp_path / "nope"))
    assert code == 2
    assert "no such file or directory" in err


@pytest.mark.parametrize(
    ("service", "status", "code"),
    [
        pytest.param("datastore.datastore-ns", "CONFLICT", 1, id="strict-refuses-plaintext"),
        pytest.param("legacy.datastore-ns", "OK", 0, id="disable-takes-plaintext"),
    ],
)
def test_check_from_outside_the_mesh(
    mesh: Path, capsys: pytest.CaptureFixture[str], service: str, status: str, code: int
) -> None:
    got, doc = check_json(capsys, mesh, "outside", service)
    assert got == code
    route = doc["routes"][0]
    assert route["client"]["tls_mode"] == "DISABLE"
    assert route["client"]["destination_rule"] is None
    assert route["endpoints"][0]["status"] == status
    assert route["endpoints"][0]["principal"] is None


def test_check_outside_ignores_destination_rules(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ops/datastore-plaintext would apply to a client in ops; outside has no sidecar at all
    code, doc = check_json(capsys, mesh, "outside", "datastore.datastore-ns")
    assert code == 1
    assert "no sidecar" in doc["routes"][0]["client"]["reason"]
