"""Waiting on a running meshsec process: poll a cheap local condition, fail early if it died."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_while_running(
    predicate: Callable[[], Any],
    what: str,
    proc: subprocess.Popen[str],
    *,
    timeout: float,
    exited: Callable[[], str],
) -> Any:
    """``predicate()``'s first truthy value; the test fails with ``exited()`` if ``proc`` ends
    first, or on ``timeout``. Between polls it waits on ``proc`` (wakes at once if it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(exited())
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.2)
    pytest.fail(f"timed out waiting for {what}")
