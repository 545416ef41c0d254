"""WorkerLoad: which worker should leave a new connection to another."""

from __future__ import annotations

import os

import pytest

from meshsec.proxy.balance import SLACK, WorkerLoad


def test_a_worker_defers_only_to_an_accepting_worker_with_fewer_connections() -> None:
    assert SLACK == 1
    a = WorkerLoad(3)
    b, c = a.for_worker(1), a.for_worker(2)
    assert not a.should_defer()  # all idle: whoever is woken takes it
    a.opened()
    assert not a.should_defer()  # one ahead: within the slack
    a.opened()
    assert a.should_defer()  # two ahead of b and c
    b.opened()
    c.opened()
    assert not a.should_defer()
    a.opened()
    assert a.should_defer()
    b.deferring(True)
    c.deferring(True)
    assert not a.should_defer()  # the less loaded ones are not accepting right now
    c.deferring(False)
    assert a.should_defer()
    a.closed()
    assert not a.should_defer()
    assert [a.open_connections(w) for w in range(3)] == [2, 1, 1]


def test_the_table_is_shared_with_forked_workers() -> None:
    load = WorkerLoad(2)
    pid = os.fork()
    if pid == 0:  # the worker: three connections opened, one closed
        try:
            load.index = 1
            load.opened()
            load.opened()
            load.opened()
            load.closed()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert load.open_connections(1) == 2
    assert load.open_connections(0) == 0
    assert not load.should_defer()
    for _ in range(4):
        load.opened()
    assert load.should_defer()


@pytest.mark.parametrize("workers", [0, -1])
def test_a_table_needs_a_worker(workers: int) -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerLoad(workers)


def test_a_worker_index_must_be_in_the_table() -> None:
    with pytest.raises(ValueError, match=r"worker 2 out of range 0\.\.1"):
        WorkerLoad(2).index = 2
