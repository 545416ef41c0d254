"""process_alive: the pid probe shared by the mesh runtime and the operator CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meshsec.runtime import pids
from meshsec.runtime.pids import process_alive


def test_own_process_is_alive() -> None:
    assert process_alive(os.getpid())


def test_reaped_child_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert not process_alive(child.pid)


@pytest.mark.parametrize("pid", [0, -1, -os.getpid()], ids=["zero", "minus-one", "group"])
def test_group_pids_are_never_alive(pid: int) -> None:
    assert not process_alive(pid)


@pytest.mark.parametrize(
    ("error", "alive"),
    [(PermissionError, True), (ProcessLookupError, False)],
    ids=["other-users-process", "no-such-process"],
)
def test_kill_errors(monkeypatch: pytest.MonkeyPatch, error: type[OSError], alive: bool) -> None:
    def fake_kill(pid: int, sig: int) -> None:
        assert (pid, sig) == (4242, 0)
        raise error

    monkeypatch.setattr(pids.os, "kill", fake_kill)
    assert process_alive(4242) is alive


def test_one_implementation_serves_cli_and_mesh() -> None:
    from meshsec.cli import meshstate
    from meshsec.mesh import runtime

    assert meshstate.process_alive is process_alive
    assert runtime.process_alive is process_alive
