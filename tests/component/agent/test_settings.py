"""AgentSettings through the one loader: Istio env names, flags win, CA root selection."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from meshsec.agent.server import build_key_spec
from meshsec.config.agent import AgentSettings, parse_unix_socket_path
from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings
from meshsec.core.pki import KeySpec


def test_istio_environment_names() -> None:
    env = {
        "CA_ADDR": "istiod.istio-system.svc:15012",
        "SECRET_TTL": "12h",
        "SECRET_GRACE_PERIOD_RATIO": "0.4",
        "SECRET_GRACE_PERIOD_RATIO_JITTER": "0.02",
        "OUTPUT_CERTS": "/tmp/out",
        "ISTIO_META_CLUSTER_ID": "east",
        "PILOT_CERT_PROVIDER": "custom",
        "TRUST_DOMAIN": "example.org",
        "POD_NAMESPACE": "shop",
        "SERVICE_ACCOUNT": "cart",
        "ECC_SIGNATURE_ALGORITHM": "ECDSA",
        "ECC_CURVE": "P384",
        "SPIFFE_ENDPOINT_SOCKET": "unix:///run/spire/api.sock",
        "WORKLOAD_IDENTITY_SOCKET_FILE": "sds",
        "FILE_MOUNTED_CERTS": "false",
        "ISTIO_META_CERT_SIGNER": "signer-a",
    }
    s = load_settings(AgentSettings, env=env)
    assert s.secret_ttl == timedelta(hours=12)
    assert s.secret_grace_period_ratio == 0.4
    assert s.secret_grace_period_ratio_jitter == 0.02
    assert s.output_certs == Path("/tmp/out")
    assert s.cluster_id == "east"
    assert str(s.identity) == "spiffe://example.org/ns/shop/sa/cart"
    assert build_key_spec(s) is KeySpec.EC_P384
    assert s.workload_socket == Path("/run/spire/api.sock")
    assert s.sds_socket_path == Path("./var/run/secrets/workload-spiffe-uds/sds")
    assert s.ca_root_path == Path("./etc/certs/root-cert.pem")
    assert s.cert_signer == "signer-a"


def test_flags_win_over_env() -> None:
    s = load_settings(
        AgentSettings,
        env={"CA_ADDR": "env:1", "ISTIO_META_CLUSTER_ID": "env"},
        flags={"ca_addr": "flag:2", "cluster_id": None},
    )
    assert s.ca_addr == "flag:2"
    assert s.cluster_id == "env"


@pytest.mark.parametrize(
    ("env", "root"),
    [
        ({}, "var/run/secrets/istio/root-cert.pem"),
        (
            {"PILOT_CERT_PROVIDER": "kubernetes"},
            "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        ),
        ({"PILOT_CERT_PROVIDER": "custom"}, "etc/certs/root-cert.pem"),
        ({"PILOT_CERT_PROVIDER": "kubernetes", "CA_ROOT_CA": "/x/root.pem"}, "/x/root.pem"),
    ],
    ids=["istiod", "kubernetes", "custom", "explicit"],
)
def test_ca_root_chosen_like_pilot_cert_provider(env: dict[str, str], root: str) -> None:
    assert load_settings(AgentSettings, env=env).ca_root_path == Path(root)


def test_defaults_match_istio() -> None:
    s = load_settings(AgentSettings, env={})
    assert s.secret_ttl == timedelta(hours=24)
    assert s.secret_grace_period_ratio == 0.5
    assert s.secret_grace_period_ratio_jitter == 0.01
    assert build_key_spec(s) is KeySpec.RSA_2048
    assert s.sds_socket_path == Path("./var/run/secrets/workload-spiffe-uds/socket")


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            AgentSettings,
            env={
                "SECRET_GRACE_PERIOD_RATIO": "1.5",
                "PILOT_CERT_PROVIDER": "vault",
                "ECC_CURVE": "P521",
                "TRUST_DOMAIN": "Bad_Domain",
                "CA_ADDR": "no-port",
            },
        )
    text = str(info.value)
    for expected in (
        "SECRET_GRACE_PERIOD_RATIO",
        "PILOT_CERT_PROVIDER 'vault'",
        "P521",
        "lower-case",
    ):
        assert expected in text
    assert "--ca-addr" in text


@pytest.mark.parametrize(
    ("value", "path"),
    [("unix:///run/a.sock", "/run/a.sock"), ("unix:/run/a.sock", "/run/a.sock"), ("/p", "/p")],
)
def test_spiffe_endpoint_socket_forms(value: str, path: str) -> None:
    assert parse_unix_socket_path(value) == Path(path)


@pytest.mark.parametrize("value", ["tcp://127.0.0.1:8081", "unix://host/p", ""])
def test_spiffe_endpoint_socket_rejected(value: str) -> None:
    with pytest.raises(ValueError, match=r"unix|empty"):
        parse_unix_socket_path(value)
