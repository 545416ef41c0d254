"""``--concurrency``: forked workers, exit codes, one failure stops the rest."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from meshsec.proxy.workers import run_workers, worker_count


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [(1, 1), (3, 3), (0, os.cpu_count() or 1)],
    ids=["one", "three", "per-cpu"],
)
def test_worker_count(concurrency: int, expected: int) -> None:
    assert worker_count(concurrency) == expected


def test_one_worker_runs_in_this_process() -> None:
    pids: list[int] = []

    def serve(index: int) -> int:
        pids.append(os.getpid())
        return 7

    assert run_workers(1, serve) == 7
    assert pids == [os.getpid()]


def test_every_worker_runs_and_all_zero_is_zero(tmp_path: Path) -> None:
    def serve(index: int) -> int:
        (tmp_path / f"worker-{index}").write_text(str(os.getpid()))
        return 0

    assert run_workers(3, serve) == 0
    pids = {(tmp_path / f"worker-{i}").read_text() for i in range(3)}
    assert len(pids) == 3
    assert str(os.getpid()) not in pids


def test_a_failing_worker_stops_the_others_and_sets_the_exit_code() -> None:
    def serve(index: int) -> int:
        if index == 0:
            return 3
        time.sleep(60)  # a worker that would run on: it must be stopped, not waited for
        return 0

    started = time.monotonic()
    assert run_workers(2, serve) == 3
    assert time.monotonic() - started < 30


def test_a_worker_that_raises_exits_one() -> None:
    def serve(index: int) -> int:
        raise RuntimeError("boom")

    assert run_workers(2, serve) == 1
