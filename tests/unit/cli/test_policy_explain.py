"""``meshsec policy explain``: the JSON contract, text output and exit codes, on real YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshsec.cli.main import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SEMANTICS = FIXTURES / "semantics"
SEED = FIXTURES / "seed" / "mesh"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["policy", "explain", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def explain_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, *args, "-o", "json")
    return code, json.loads(out)


@pytest.mark.parametrize(
    ("namespace", "labels", "ports", "mode", "port_modes", "namespace_mode", "policies"),
    [
        pytest.param(
            "my-namespace",
            "app=my-service",
            [],
            "STRICT",
            {},
            "PERMISSIVE",
            ["my-namespace/my-service-policy", "my-namespace/default", "istio-system/default"],
            id="seed-workload-strict-in-permissive-namespace",
        ),
        pytest.param(
            "my-namespace",
            "app=other",
            ["8080"],
            "PERMISSIVE",
            {"8080": "PERMISSIVE"},
            "PERMISSIVE",
            ["my-namespace/default", "istio-system/default"],
            id="seed-namespace-permissive",
        ),
        pytest.param(
            "sensitive",
            "app=legacy",
            ["9000"],
            "DISABLE",
            {"9000": "DISABLE"},
            "STRICT",
            ["sensitive/legacy-service", "sensitive/default", "istio-system/default"],
            id="seed-legacy-disable-in-strict-namespace",
        ),
        pytest.param(
            "sensitive",
            "app=api",
            [],
            "STRICT",
            {},
            "STRICT",
            ["sensitive/default", "istio-system/default"],
            id="seed-strict-namespace",
        ),
        pytest.param(
            "elsewhere",
            "",
            [],
            "STRICT",
            {},
            "STRICT",
            ["istio-system/default"],
            id="seed-mesh-wide-strict",
        ),
    ],
)
def test_seed_scenario(
    capsys: pytest.CaptureFixture[str],
    namespace: str,
    labels: str,
    ports: list[str],
    mode: str,
    port_modes: dict[str, str],
    namespace_mode: str,
    policies: list[str],
) -> None:
    port_args = [a for p in ports for a in ("--port", p)]
    code, doc = explain_json(
        capsys, "--config-dir", str(SEED), "--namespace", namespace, "--labels", labels, *port_args
    )
    assert code == 0
    assert doc["mode"] == mode
    assert doc["port_modes"] == port_modes
    assert doc["namespace_mode"] == namespace_mode
    assert doc["policies"] == policies
    assert "authorization" not in doc


def test_seed_istio_mutual_destination_rules(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = explain_json(
        capsys, "--config-dir", str(SEED), "-n", "my-namespace", "-l", "app=my-service"
    )
    (service,) = doc["services"]
    assert service["tls_mode"] == "ISTIO_MUTUAL"
    assert service["auto"] is False
    assert service["destination_rule"] == "my-namespace/my-service-dr"
    assert service["destination_rules"] == ["my-namespace/my-service-dr", "my-namespace/my-service"]
    assert service["sni"] == "outbound_.8080_._.my-service.my-namespace.svc.cluster.local"
    assert service["subject_alt_names"] == ["spiffe://cluster.local/ns/my-namespace/sa/my-service"]
    assert service["conflict"] is None


def test_seed_legacy_auto_mtls_sends_plaintext_to_the_disabled_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Istio's EDS marks legacy's DISABLE endpoint tlsMode=disabled: auto mTLS goes plaintext."""
    _, doc = explain_json(capsys, "--config-dir", str(SEED), "-n", "sensitive", "-l", "app=legacy")
    (service,) = doc["services"]
    assert (service["tls_mode"], service["auto"], service["server_mode"]) == (
        "ISTIO_MUTUAL",
        True,
        "DISABLE",
    )
    assert service["conflict"] is None


def test_semantics_port_levels_ties_and_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = explain_json(
        capsys, "--config-dir", str(SEMANTICS), "-n", "payments", "-l", "app=api,tier=backend"
    )
    assert code == 0
    assert doc["mode"] == "STRICT"
    assert doc["decided_by"] == {
        "level": "workload",
        "policy": "payments/api",
        "reason": "workload policy payments/api sets STRICT",
    }
    # Every port with a port-level entry, UNSET resolved; the twin's 8080 entry is not used.
    assert doc["port_modes"] == {"9090": "DISABLE", "15020": "STRICT"}
    assert doc["ports"]["9090"]["level"] == "port"
    assert doc["namespace_mode"] == "PERMISSIVE"
    assert doc["policies"] == [
        "payments/api",
        "payments/api-newer-twin",
        "payments/default",
        "istio-system/default",
    ]
    assert sorted(i["policy"] for i in doc["ignored_policies"]) == [
        "istio-system/api-from-root",
        "payments/strict-everything",
    ]


def test_semantics_unset_workload_inherits(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = explain_json(
        capsys, "--config-dir", str(SEMANTICS), "-n", "payments", "-l", "app=batch", "--port", "80"
    )
    assert doc["mode"] == "PERMISSIVE"
    assert doc["decided_by"]["level"] == "namespace"
    assert doc["port_modes"] == {"80": "PERMISSIVE", "7000": "STRICT"}


def test_semantics_port_level_dr_replacement(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = explain_json(capsys, "--config-dir", str(SEMANTICS), "-n", "payments", "-l", "app=api")
    by_port = {s["port"]: s for s in doc["services"]}
    assert (by_port[80]["tls_mode"], by_port[80]["source"]) == ("ISTIO_MUTUAL", "destination")
    assert by_port[80]["subject_alt_names"] == [
        "spiffe://cluster.local/ns/payments/sa/api",
        "spiffe://old-td/ns/payments/sa/api",
    ]
    assert (by_port[9090]["auto"], by_port[9090]["source"]) == (True, "auto")
    assert "replaces" in by_port[9090]["reason"]
    # auto mTLS towards a DISABLE port: the endpoint is plaintext (Istio EDS), not a conflict
    assert by_port[9090]["server_mode"] == "DISABLE"
    assert by_port[9090]["conflict"] is None


@pytest.mark.parametrize(
    ("extra", "code", "decision", "policy", "rule"),
    [
        pytest.param(
            ["--source-principal", "old-td/ns/frontend/sa/web", "--method", "GET", "--path", "/x"],
            0,
            "ALLOW",
            "payments/allow-frontend",
            1,
            id="alias-principal-http-allowed",
        ),
        pytest.param(
            ["--source-principal", "cluster.local/ns/frontend/sa/web", "--path", "/admin/x"],
            1,
            "DENY",
            "payments/deny-admin",
            0,
            id="deny-admin-path",
        ),
        pytest.param(
            ["--source-principal", "spiffe://cluster.local/ns/frontend/sa/web"],
            1,
            "DENY",
            "payments/deny-admin",
            0,
            id="tcp-deny-on-http-only-field",
        ),
        pytest.param(
            ["--source-principal", "cluster.local/ns/other/sa/x", "--method", "GET"],
            1,
            "DENY",
            None,
            None,
            id="default-deny",
        ),
    ],
)
def test_authorization(
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    code: int,
    decision: str,
    policy: str | None,
    rule: int | None,
) -> None:
    got, doc = explain_json(
        capsys,
        "--config-dir",
        str(SEMANTICS),
        "-n",
        "payments",
        "-l",
        "app=api",
        "-p",
        "8080",
        *extra,
    )
    assert got == code
    auth = doc["authorization"]
    assert (auth["decision"], auth["policy"], auth["rule"]) == (decision, policy, rule)
    assert auth["reason"]
    assert auth["port"] == 8080


def test_plaintext_into_strict_port_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = explain_json(
        capsys,
        "--config-dir",
        str(SEED),
        "-n",
        "sensitive",
        "-l",
        "app=x",
        "-p",
        "80",
        "--plaintext",
    )
    assert code == 1
    assert doc["source"]["principal"] is None
    assert doc["authorization"]["transport"]["accepted"] is False


def test_text_output_like_istioctl_describe(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--config-dir", str(SEMANTICS), "-n", "payments", "-l", "app=api", "-p", "8080"
    )
    assert code == 0
    assert "Effective PeerAuthentication:\n   Workload mTLS mode: STRICT\n" in out
    assert "   Port Level mTLS mode:\n      8080: STRICT" in out
    assert "      9090: DISABLE" in out
    assert (
        "Applied PeerAuthentication:\n"
        "   payments/api, payments/api-newer-twin, payments/default, istio-system/default\n"
    ) in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--config-dir", "/nonexistent/dir", "-n", "x"], "no such file", id="missing-config"
        ),
        pytest.param(
            ["--config-dir", str(SEED), "-n", "x", "-l", "novalue"], "key=value", id="bad-labels"
        ),
        pytest.param(
            ["--config-dir", str(SEED), "-n", "x", "-p", "70000"], "out of range", id="bad-port"
        ),
        pytest.param(
            ["--config-dir", str(SEED), "-n", "x", "-o", "yaml"], "text or json", id="bad-output"
        ),
        pytest.param(
            ["--config-dir", str(SEED), "-n", "x", "--source-principal", "Cluster.Local/ns/a/sa/b"],
            "--source-principal",
            id="bad-principal",
        ),
        pytest.param(
            ["--config-dir", str(SEED), "-n", "x", "--source-principal", "td/ns/a/sa/b?x"],
            "query",
            id="principal-with-query",
        ),
        pytest.param(
            ["--config-dir", str(SEED), "-n", "x", "--source-ip", "10.0.0.300"],
            "not an IP address",
            id="bad-source-ip",
        ),
        pytest.param(
            [
                "--config-dir",
                str(SEED),
                "-n",
                "x",
                "--source-ip",
                "10.0.0.1",
                "--header",
                "nocolon",
            ],
            "Name:value",
            id="bad-header",
        ),
        pytest.param(
            ["--config-dir", str(SEED), "-n", "x", "--plaintext", "--source-principal", "a/b"],
            "mutually exclusive",
            id="plaintext-and-principal",
        ),
    ],
)
def test_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert out == ""


def test_config_errors_warn_but_still_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "--config-dir",
        str(FIXTURES / "seed"),
        "-n",
        "sensitive",
        "-l",
        "app=legacy",
        "-o",
        "json",
    )
    assert code == 0
    assert "configuration error(s)" in err
    assert "meshsec analyze" in err
    assert json.loads(out)["mode"] == "DISABLE"


def test_http_headers_and_client_namespace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(
        """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-header, namespace: shop}
spec:
  rules:
  - when:
    - key: request.headers[X-Team]
      values: ["payments"]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart-from-client, namespace: client}
spec:
  host: cart.shop.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
"""
    )
    base = ["--config-dir", str(tmp_path), "-n", "shop", "-l", "app=cart", "-p", "8080"]
    base += ["--source-principal", "cluster.local/ns/client/sa/c"]
    code, doc = explain_json(capsys, *base, "--header", "x-team: payments")
    assert (code, doc["authorization"]["decision"], doc["authorization"]["rule"]) == (0, "ALLOW", 0)
    assert doc["source"]["protocol"] == "HTTP"
    # No PeerAuthentication anywhere: the namespace mode is UNKNOWN and Istio's best-effort
    # service mode is PERMISSIVE, so auto mTLS still sends ISTIO_MUTUAL.
    assert doc["namespace_mode"] == "UNKNOWN"
    own_view = doc["services"][0]
    assert (own_view["tls_mode"], own_view["auto"], own_view["destination_rule"]) == (
        "ISTIO_MUTUAL",
        True,
        None,
    )
    assert "assumed PERMISSIVE" in own_view["reason"]
    code, doc = explain_json(
        capsys, *base, "--header", "x-team: other", "--client-namespace", "client"
    )
    assert (code, doc["authorization"]["decision"]) == (1, "DENY")
    assert doc["authorization"]["stage"] == "default-deny"
    (service,) = doc["services"]
    assert (service["tls_mode"], service["destination_rule"]) == (
        "DISABLE",
        "client/cart-from-client",
    )


def test_labels_may_be_repeated(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = explain_json(
        capsys, "--config-dir", str(SEMANTICS), "-n", "payments", "-l", "tier=x", "-l", "app=api"
    )
    assert doc["labels"] == {"tier": "x", "app": "api"}
    assert doc["decided_by"]["policy"] == "payments/api"
