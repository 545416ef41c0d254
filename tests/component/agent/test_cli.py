"""``meshsec agent run`` refuses bad input with exit 2 and a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsec.cli.main import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "localhost"], "--status 'localhost' must be HOST:PORT"),
        (["--ca-addr", ":15012"], "--ca-addr ':15012' must name a host"),
        (["--ca-mtls-addr", "ca"], "--ca-mtls-addr 'ca' must be HOST:PORT"),
        (["--ca-addr", "ca:99999"], "port '99999' is out of range 0-65535"),
        (["--workload-socket", "tcp://127.0.0.1:8081"], "only unix domain sockets"),
        (["--trust-domain", "Cluster.Local"], "trust domains are lower-case"),
        (["--secret-ttl", "soon"], "flag --secret-ttl: 'soon' is not a duration"),
        (["--ca-root", "/nonexistent/root.pem"], "--ca-root /nonexistent/root.pem: file does not"),
    ],
    ids=[
        "status",
        "ca-no-host",
        "ca-mtls",
        "ca-port",
        "tcp-socket",
        "trust-domain",
        "ttl",
        "ca-root-missing",
    ],
)
def test_bad_input_exits_2_with_reason(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["agent", "run", "--sds-socket", str(tmp_path / "s.sock"), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_config_file_then_env_then_flags(tmp_path: Path) -> None:
    from meshsec.config.agent import AgentSettings
    from meshsec.config.load import load_settings

    config = tmp_path / "agent.yaml"
    config.write_text("caAddr: file:1\nclusterId: from-file\nsecretTtl: 2h\n")
    settings = load_settings(
        AgentSettings,
        file=config,
        env={"ISTIO_META_CLUSTER_ID": "from-env", "SECRET_TTL": "3h"},
        flags={"secret_ttl": "4h"},
    )
    assert settings.ca_addr == "file:1"
    assert settings.cluster_id == "from-env"
    assert settings.secret_ttl.total_seconds() == 4 * 3600
