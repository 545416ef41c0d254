"""``CA_HEADER_<NAME>=value`` (Istio) → extra gRPC metadata on CA calls; bad ones refused."""

from __future__ import annotations

import pytest

from meshsec.config.agent import load_agent_settings, parse_ca_headers, parse_header_pairs
from meshsec.config.errors import ConfigError


def test_prefix_variables_become_lower_case_metadata() -> None:
    env = {"CA_HEADER_X_TENANT": "blue", "CA_HEADER_Route": "east", "CA_ADDR": "ca:1", "X": "y"}
    assert parse_ca_headers(env) == (("route", "east"), ("x_tenant", "blue"))


def test_settings_carry_them_and_env_beats_file(tmp_path: pytest.TempPathFactory) -> None:
    config = tmp_path / "agent.yaml"  # type: ignore[operator]
    config.write_text("caHeaders: x-from-file=1, x-two=2\n")
    from_file = load_agent_settings(flags={}, file=config, env={})
    assert from_file.ca_headers == (("x-from-file", "1"), ("x-two", "2"))
    from_env = load_agent_settings(flags={}, file=config, env={"CA_HEADER_X_ENV": "e"})
    assert from_env.ca_headers == (("x_env", "e"),)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CA_HEADER_AUTHORIZATION": "Bearer x"}, "'authorization' is set by the agent itself"),
        ({"CA_HEADER_CLUSTERID": "other"}, "'clusterid' is set by the agent itself"),
        ({"CA_HEADER_GRPC-TIMEOUT": "1S"}, "'grpc-timeout' is set by the agent itself"),
        ({"CA_HEADER_X Y": "1"}, "'x y' is not a gRPC metadata name"),
        ({"CA_HEADER_": "1"}, "'' is not a gRPC metadata name"),
        ({"CA_HEADER_X": "a\r\nInjected: 1"}, "CA_HEADER_X: the value must be printable ASCII"),
        ({"CA_HEADER_X": "caf\u00e9"}, "CA_HEADER_X: the value must be printable ASCII"),
    ],
    ids=["authorization", "clusterid", "grpc-reserved", "space", "empty-name", "crlf", "non-ascii"],
)
def test_bad_headers_are_refused_with_the_variable_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_agent_settings(flags={}, file=None, env=env)


@pytest.mark.parametrize("text", ["novalue", "=v", "a=1,broken"], ids=["no-eq", "no-name", "2nd"])
def test_file_form_needs_name_equals_value(text: str) -> None:
    with pytest.raises(ValueError, match="is not name=value"):
        parse_header_pairs(text)
