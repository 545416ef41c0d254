"""CaSettings: Istio's env names, defaults, and every bad value reported together."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from meshsec.config.ca import CaSettings
from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings, parse_host_port


def test_defaults_are_istios(tmp_path: Path) -> None:
    s = load_settings(CaSettings, flags={"data_dir": tmp_path}, env={})
    assert (s.listen, s.monitoring, s.mtls_listen) == (
        "127.0.0.1:15012",
        "127.0.0.1:15014",
        "127.0.0.1:15013",
    )
    assert s.trust_domain == "cluster.local"
    assert s.default_workload_cert_ttl == timedelta(hours=24)
    assert s.max_workload_cert_ttl == timedelta(days=90)
    assert s.token_audiences == ("istio-ca",)
    assert s.self_signed_ca_cert_ttl == timedelta(days=3650)
    assert s.plaintext is False


def test_istio_env_names_and_flag_precedence(tmp_path: Path) -> None:
    env = {
        "DEFAULT_WORKLOAD_CERT_TTL": "12h",
        "MAX_WORKLOAD_CERT_TTL": "48h",
        "TOKEN_AUDIENCES": "istio-ca,other",
        "ROOT_CA_DIR": str(tmp_path / "cacerts"),
        "TRUST_DOMAIN": "example.org",
        "CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE": "4096",
    }
    s = load_settings(
        CaSettings, flags={"data_dir": tmp_path, "trust_domain": "flag.example"}, env=env
    )
    assert s.default_workload_cert_ttl == timedelta(hours=12)
    assert s.max_workload_cert_ttl == timedelta(hours=48)
    assert s.token_audiences == ("istio-ca", "other")
    assert s.cacerts == tmp_path / "cacerts"
    assert s.trust_domain == "flag.example"  # flags beat env
    assert s.self_signed_ca_rsa_key_size == 4096


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    env = {
        "DEFAULT_WORKLOAD_CERT_TTL": "48h",
        "MAX_WORKLOAD_CERT_TTL": "24h",
        "MESHSEC_CA_KEY_TYPE": "dsa",
    }
    with pytest.raises(ConfigError) as err:
        load_settings(CaSettings, flags={"data_dir": tmp_path, "listen": "nope"}, env=env)
    text = str(err.value)
    assert "listen 'nope' must be HOST:PORT" in text
    assert "MAX_WORKLOAD_CERT_TTL" in text
    assert "ca-key-type 'dsa'" in text


def test_data_dir_is_required() -> None:
    with pytest.raises(ConfigError, match="--data-dir"):
        load_settings(CaSettings, flags={}, env={})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:15012", ("127.0.0.1", 15012)),
        (":15012", ("0.0.0.0", 15012)),
        ("[::1]:0", ("::1", 0)),
    ],
)
def test_parse_host_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected


@pytest.mark.parametrize("value", ["15012", "host:", "host:99999", "host:port"])
def test_parse_host_port_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|out of range"):
        parse_host_port(value)


def test_settings_file_in_camel_case(tmp_path: Path) -> None:
    config = tmp_path / "ca.yaml"
    config.write_text("trustDomain: file.example\nmaxInFlight: 7\ntokenAudiences: [a, b]\n")
    s = load_settings(CaSettings, flags={"data_dir": tmp_path}, env={}, file=config)
    assert (s.trust_domain, s.max_in_flight, s.token_audiences) == ("file.example", 7, ("a", "b"))
    config.write_text("trustDomian: typo\n")
    with pytest.raises(ConfigError, match="unknown key 'trustDomian'"):
        load_settings(CaSettings, flags={"data_dir": tmp_path}, env={}, file=config)


def test_limits_defaults_and_their_help_say_what_is_answered(tmp_path: Path) -> None:
    import dataclasses

    from meshsec.ca.grpc_server import grpc_server_options
    from meshsec.config.load import setting_info

    s = load_settings(CaSettings, flags={"data_dir": tmp_path}, env={})
    assert (s.max_in_flight, s.max_request_bytes) == (128, 64 * 1024)
    fields = {f.name: setting_info(f).help for f in dataclasses.fields(CaSettings)}
    assert "RESOURCE_EXHAUSTED" in fields["max_in_flight"]
    assert "INVALID_ARGUMENT" in fields["max_request_bytes"]
    assert "(4x this, at least 1 MiB) RESOURCE_EXHAUSTED" in fields["max_request_bytes"]
    for size, grpc_max in ((64 * 1024, 1 << 20), (1 << 20, 4 << 20)):
        options = dict(grpc_server_options(dataclasses.replace(s, max_request_bytes=size)))
        assert options["grpc.max_receive_message_length"] == grpc_max
