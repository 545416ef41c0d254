"""Integer settings with absurd digit counts get a plain message, not Python's int() advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsec.config.agent import AgentSettings
from meshsec.config.ca import CaSettings
from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings
from meshsec.config.proxy import ProxySettings


@pytest.mark.parametrize(("digits", "says"), [(5000, "(5000)"), (20, "(20)")])
def test_too_many_digits(digits: int, says: str) -> None:
    env = {"MESHSEC_CA_WORKERS": "9" * digits}
    with pytest.raises(ConfigError) as info:
        load_settings(CaSettings, flags={"data_dir": "/tmp/x"}, env=env)
    message = str(info.value)
    assert f"env MESHSEC_CA_WORKERS: the number has too many digits {says}" in message
    assert "set_int_max_str_digits" not in message
    assert len(message) < 300


def test_19_digits_still_convert() -> None:
    env = {"MESHSEC_CA_MAX_REQUEST_BYTES": "1" * 19}
    settings = load_settings(CaSettings, flags={"data_dir": "/tmp/x"}, env=env)
    assert settings.max_request_bytes == int("1" * 19)


HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("settings", "env", "says"),
    [
        ("ca", {"MESHSEC_CA_LISTEN": f"127.0.0.1:{HUGE}"}, "is out of range 0-65535"),
        ("ca", {"MESHSEC_CA_LISTEN": "127.0.0.1:²"}, "must be HOST:PORT"),
        ("agent", {"CA_ADDR": f"ca:{HUGE}"}, "is out of range 0-65535"),
        ("agent", {"CA_ADDR": "ca:²"}, "must be HOST:PORT"),
        ("proxy", {"MESHSEC_PROXY_OUTBOUND": f"{HUGE}:svc:80"}, "is not a port number"),
        ("proxy", {"MESHSEC_PROXY_ADMIN_ADDR": f"127.0.0.1:{HUGE}"}, "is out of range 0-65535"),
        ("proxy", {"MESHSEC_PROXY_ADMIN_ADDR": "127.0.0.1:²"}, "must be HOST:PORT"),
    ],
    ids=[
        "ca-huge",
        "ca-superscript",
        "agent-huge",
        "agent-superscript",
        "proxy-huge",
        "proxy-admin-huge",
        "proxy-admin-superscript",
    ],
)
def test_host_port_settings_never_show_int_errors(
    settings: str, env: dict[str, str], says: str, tmp_path: Path
) -> None:
    classes = {"ca": CaSettings, "agent": AgentSettings, "proxy": ProxySettings}
    flags: dict[str, object] = {"data_dir": tmp_path} if settings == "ca" else {}
    if settings == "proxy":
        flags["cert_dir"] = tmp_path
    with pytest.raises(ConfigError) as info:
        load_settings(classes[settings], flags=flags, env=env)
    message = str(info.value)
    assert says in message
    assert "set_int_max_str_digits" not in message
    assert "invalid literal" not in message
    assert len(message) < 500
