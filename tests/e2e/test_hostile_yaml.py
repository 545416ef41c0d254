"""Hostile YAML against the real CLI process: deep nesting must be a diagnostic, not a crash.

libyaml's composer recurses in C; before the depth pre-scan, ~50k nested ``[`` killed
``meshsec analyze`` (and the sidecar's config watcher) with SIGSEGV (exit 139 / -11).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.ca_process import run_meshsec

GOOD = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"""

BOMBS = {
    "flow-lists": "a: " + "[" * 100_000 + "\n",
    "flow-mappings": "{a: " * 100_000 + "\n",
}


@pytest.mark.parametrize("bomb", BOMBS.values(), ids=BOMBS.keys())
def test_analyze_reports_deep_nesting_and_keeps_running(tmp_path: Path, bomb: str) -> None:
    (tmp_path / "a-good.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b-deep.yaml").write_text(bomb, encoding="utf-8")
    result = run_meshsec("analyze", str(tmp_path), "-o", "json")
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    (problem,) = [d for d in json.loads(result.stdout) if d["level"] == "Error"]
    assert (problem["code"], problem["file"], problem["line"]) == (
        "MS0001",
        str(tmp_path / "b-deep.yaml"),
        1,
    )
    assert "too deeply nested" in problem["message"]
