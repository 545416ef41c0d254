"""``meshsec demo`` (what ``make run`` does): a real CA, a real request, a table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakes.ca_process import run_meshsec

pytestmark = pytest.mark.e2e


def test_demo_issues_and_shows_a_certificate_and_keeps_its_root(tmp_path: Path) -> None:
    first = run_meshsec("demo", "--state-dir", str(tmp_path), timeout=120)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "spiffe://cluster.local/ns/default/sa/demo" in out
    for label in ("serial", "not before", "not after", "issuer", "chain length", "key type"):
        assert label in out
    assert "Try next" in out
    assert (tmp_path / "workload" / "key.pem").stat().st_mode & 0o777 == 0o600
    root = re.search(r"root sha256:([0-9a-f]{64})", out)
    assert root is not None
    second = run_meshsec("demo", "--state-dir", str(tmp_path), timeout=120)
    assert second.returncode == 0, second.stderr
    assert root.group(1) in second.stdout  # same data dir, same root
