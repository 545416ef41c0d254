"""The token file: re-read every call, problems logged and counted, never logged itself."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from meshsec.agent.errors import CredentialError
from meshsec.agent.metrics import TOKEN_READ_FAILURES, AgentMetrics
from meshsec.agent.tokens import FileTokenSource, load_token

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _jwt(exp: datetime) -> str:
    return jwt.encode({"sub": "x", "exp": int(exp.timestamp())}, "k" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    ("content", "kind"),
    [(None, "missing"), ("  \n", "empty"), (_jwt(NOW - timedelta(seconds=1)), "expired")],
    ids=["missing", "empty", "expired"],
)
def test_token_problems(tmp_path: Path, content: str | None, kind: str) -> None:
    path = tmp_path / "istio-token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CredentialError) as info:
        load_token(path, now=NOW)
    assert info.value.kind == kind
    assert str(path) in str(info.value)


def test_token_reread_and_trimmed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "istio-token"
    metrics = AgentMetrics()
    source = FileTokenSource(path, metrics, lambda: NOW)
    path.write_text(" first\n")
    assert source.token() == "first"
    path.write_text(_jwt(NOW + timedelta(hours=1)))
    assert source.token() == _jwt(NOW + timedelta(hours=1))
    path.unlink()
    with caplog.at_level(logging.WARNING):
        assert source.token() is None
    assert metrics.value(TOKEN_READ_FAILURES, reason="missing") == 1
    assert "first" not in caplog.text


def test_no_token_file_configured_means_no_header() -> None:
    assert FileTokenSource(None, AgentMetrics(), lambda: NOW).token() is None
