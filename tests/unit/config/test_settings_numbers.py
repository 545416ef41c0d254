"""Integer settings with absurd digit counts get a plain message, not Python's int() advice."""

from __future__ import annotations

import pytest

from meshsec.config.ca import CaSettings
from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings


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
