"""``meshsec agent run``'s own flag parser (the lean entry point, no CLI framework)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshsec.agent.command import FLAGS, entrypoint, parse_flags
from meshsec.config.agent import AgentSettings
from meshsec.config.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--ca-addr", "ca:15012"], {"ca_addr": "ca:15012"}),
        (["--ca-root", "r.pem"], {"ca_root": Path("r.pem")}),
        (["--workload-socket", "unix:///run/s.sock"], {"workload_socket": Path("/run/s.sock")}),
        (["--workload-socket", "rel/s.sock"], {"workload_socket": Path("rel/s.sock")}),
        (["--file-mounted-certs"], {"file_mounted_certs": True}),
        ([], {"file_mounted_certs": None, "ca_addr": None, "secret_ttl": None}),
        (
            ["--secret-ttl", "2h", "--log-level", "debug"],
            {"secret_ttl": "2h", "log_level": "debug"},
        ),
    ],
    ids=["str", "path", "socket-uri", "socket-path", "bool", "absent-is-none", "several"],
)
def test_parse_flags(argv: list[str], expected: dict[str, Any]) -> None:
    flags, config = parse_flags(argv)
    assert config is None
    for key, value in expected.items():
        assert flags[key] == value


def test_config_file_flag() -> None:
    assert parse_flags(["--config", "a.yaml"])[1] == Path("a.yaml")


def test_every_flag_is_a_settings_field() -> None:
    fields = AgentSettings.__dataclass_fields__
    assert all(flag.field in fields for flag in FLAGS)
    assert len({flag.option for flag in FLAGS}) == len(FLAGS)


@pytest.mark.parametrize(
    "argv", [["--bogus"], ["--ca-addr"], ["positional"]], ids=["unknown", "no-value", "extra"]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_flags(argv)
    assert exc.value.code == 2
    assert "meshsec agent run" in capsys.readouterr().err


def test_tcp_workload_socket_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"flag --workload-socket: .*only unix domain sockets"):
        parse_flags(["--workload-socket", "tcp://127.0.0.1:1"])


@pytest.mark.parametrize("argv", [[], ["serve"]], ids=["none", "other"])
def test_module_entry_needs_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert entrypoint(argv) == 2
    assert "python -m meshsec.agent run" in capsys.readouterr().err
