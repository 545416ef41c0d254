"""The one settings loader: precedence, conversion, and errors that name their source."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings, parse_duration, setting


@dataclass(frozen=True)
class _Demo:
    addr: str = setting("127.0.0.1:1", env="DEMO_ADDR")
    ttl: timedelta = setting(timedelta(hours=24), env=("SECRET_TTL", "OLD_TTL"))
    ratio: float = setting(0.5, env="RATIO")
    enabled: bool = setting(False, env="ENABLED")
    clusters: tuple[str, ...] = setting((), env="CLUSTERS")
    path: Path | None = setting(None, env="SOME_PATH")


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("addr: file:1\nttl: 2h\nratio: 0.25\n")
    env = {"DEMO_ADDR": "env:1", "SECRET_TTL": "90m"}
    s = load_settings(_Demo, file=f, env=env, flags={"addr": "flag:1", "ratio": None})
    assert s.addr == "flag:1"
    assert s.ttl == timedelta(minutes=90)
    assert s.ratio == 0.25
    assert s.enabled is False


def test_first_env_name_wins_and_lists_split() -> None:
    s = load_settings(_Demo, env={"OLD_TTL": "1h", "CLUSTERS": "a, b,,c", "ENABLED": "true"})
    assert s.ttl == timedelta(hours=1)
    assert s.clusters == ("a", "b", "c")
    assert s.enabled is True


def test_all_problems_reported_with_their_source(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("maxSessionAge: 1h\nratio: lots\n")
    with pytest.raises(ConfigError) as info:
        load_settings(_Demo, file=f, env={"SECRET_TTL": "soon", "ENABLED": "maybe"})
    text = str(info.value)
    assert "env SECRET_TTL: 'soon' is not a duration" in text
    assert "env ENABLED: 'maybe' is not a boolean" in text
    assert f"file {f}: ratio: could not convert string to float: 'lots'" in text
    assert "unknown key 'maxSessionAge'" in text
    assert len(info.value.problems) == 4


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("1h30m", 5400), ("100ms", 0.1), ("90", 90), ("2160h", 7776000)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "10x", "1h 2m", "-"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
