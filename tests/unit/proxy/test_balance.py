"""WorkerLoad: which worker should leave a new connection to another."""

from __future__ import annotations

import os

import pytest

from meshsec.proxy import balance
from meshsec.proxy.balance import SLACK, STALE_AFTER, WorkerLoad


def test_a_worker_defers_only_to_an_accepting_worker_with_fewer_connections() -> None:
    assert SLACK == 1
    a = WorkerLoad(3)
    b, c = a.for_worker(1), a.for_worker(2)
    for worker in (a, b, c):
        worker.ready(True)
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
    if pid == 0:  # the worker: ready, three connections opened, one closed
        try:
            load.index = 1
            load.ready(True)  # its sign of life is on the clock every process shares
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
    load.ready(True)
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


def test_a_worker_that_is_not_ready_or_is_draining_is_not_waited_for() -> None:
    a = WorkerLoad(2)
    b = a.for_worker(1)
    assert not a.accepting(0)
    assert not b.accepting(1)  # not ready until it says so (listeners up, certificates loaded)
    a.ready(True)
    for _ in range(SLACK + 1):
        a.opened()
    assert not a.should_defer()
    b.ready(True)
    b.ready(True)  # repeating a state changes nothing
    assert a.should_defer()
    b.ready(False)  # draining
    assert not a.should_defer()
    b.ready(False)
    b.ready(True)
    assert a.should_defer()


def test_steps_back_of_two_acceptors_are_counted() -> None:
    a = WorkerLoad(2)
    b = a.for_worker(1)
    a.ready(True)
    b.ready(True)
    b.deferring(True)  # one port's acceptor steps back
    b.deferring(True)  # and the other port's
    b.deferring(False)  # the first is back: the second still steps back
    assert not a.accepting(1)
    b.deferring(False)
    assert a.accepting(1)


def test_a_worker_that_stops_showing_signs_of_life_is_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = WorkerLoad(2)
    b = a.for_worker(1)
    now = 1_000_000_000
    monkeypatch.setattr(balance, "_now_ms", lambda: now)
    a.ready(True)
    b.ready(True)  # seen at `now`
    for _ in range(SLACK + 1):
        a.opened()
    assert a.should_defer()
    now += int(STALE_AFTER * 1000) - 1
    assert a.should_defer()
    now += 1  # b's event loop has not run for STALE_AFTER: stuck, or gone
    assert not a.should_defer()
    assert not a.accepting(1)
    b.beat()
    assert a.should_defer()


def test_a_worker_that_is_not_ready_leaves_every_connection_to_one_that_is() -> None:
    a = WorkerLoad(2)
    b = a.for_worker(1)
    assert not a.should_defer()  # nobody is ready: whoever is woken takes it
    b.ready(True)
    for _ in range(5):
        b.opened()
    assert a.should_defer()  # it would refuse the connection; b would serve it
    b.deferring(True)
    assert not a.should_defer()  # b is stepping back itself: a takes it after all
    b.deferring(False)
    a.ready(True)
    assert not a.should_defer()  # ready, and the less loaded one
