"""The acceptor: worker processes share a listen port (a socket bound before they fork, or
SO_REUSEPORT); a port that cannot be bound is a clear error."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from meshsec.proxy import balance, listener
from meshsec.proxy.balance import SLACK, WorkerLoad
from meshsec.proxy.errors import ListenError
from meshsec.proxy.listener import Acceptor, bind_shared


def _ignore(conn: socket.socket, _address: str) -> None:
    conn.close()


async def test_reuse_port_lets_two_acceptors_share_a_port() -> None:
    first = Acceptor("127.0.0.1", 0, _ignore, reuse_port=True)
    first.start()
    second = Acceptor("127.0.0.1", first.bound_port, _ignore, reuse_port=True)
    try:
        second.start()
        assert second.bound_port == first.bound_port
    finally:
        second.stop()
        first.stop()


async def test_without_reuse_port_a_taken_port_is_an_error() -> None:
    first = Acceptor("127.0.0.1", 0, _ignore, reuse_port=True)
    first.start()
    second = Acceptor("127.0.0.1", first.bound_port, _ignore)
    try:
        with pytest.raises(
            ListenError, match=r"cannot listen on 127\.0\.0\.1:\d+: Address already in use"
        ):
            second.start()
    finally:
        second.stop()
        first.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_acceptor_takes_the_socket_bound_before_the_fork() -> None:
    port = _free_port()
    bind_shared({("127.0.0.1", port)}, workers=1)
    shared = listener._SHARED[("127.0.0.1", port)]
    accepted: list[str] = []
    arrived = asyncio.Event()

    def on_socket(conn: socket.socket, address: str) -> None:
        accepted.append(address)
        conn.close()
        arrived.set()

    acceptor = Acceptor("127.0.0.1", port, on_socket, reuse_port=True)
    try:
        acceptor.start()
        assert acceptor._sock is shared  # no second bind
        assert ("127.0.0.1", port) not in listener._SHARED
        with socket.create_connection(("127.0.0.1", port)):
            await asyncio.wait_for(arrived.wait(), 10)
        assert accepted == ["127.0.0.1"]
    finally:
        acceptor.stop()


def test_a_busy_port_is_a_clear_error_before_any_worker_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ListenError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"
        ):
            bind_shared({("127.0.0.1", port)}, workers=2)
    assert ("127.0.0.1", port) not in listener._SHARED


class Worker:
    """One ``--concurrency`` worker's acceptor on the shared socket, with its view of the load."""

    def __init__(self, load: WorkerLoad, port: int, shared: socket.socket) -> None:
        self.load = load
        self.accepted: list[socket.socket] = []
        self.arrived = asyncio.Event()
        listener._SHARED[("127.0.0.1", port)] = shared
        listener._LOAD = load  # what start() finds in this worker's process
        load.ready(True)
        self.acceptor = Acceptor("127.0.0.1", port, self._on_socket, reuse_port=True)
        self.acceptor.start()

    def _on_socket(self, conn: socket.socket, _address: str) -> None:
        self.accepted.append(conn)
        self.arrived.set()

    def stop(self) -> None:
        self.acceptor.stop()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
async def workers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Worker, Worker]]:
    # the workers beat once, when they become ready: a slow test machine must not make them
    # look stuck (the test of a stuck worker sets this itself)
    monkeypatch.setattr(balance, "STALE_AFTER", 3600.0)
    port = _free_port()
    bind_shared({("127.0.0.1", port)}, workers=2)
    shared = listener._SHARED.pop(("127.0.0.1", port))
    load = listener._LOAD
    assert load is not None
    busy = Worker(load, port, shared.dup())
    idle = Worker(load.for_worker(1), port, shared)
    yield busy, idle
    busy.stop()
    idle.stop()
    listener._LOAD = None


async def test_the_less_loaded_worker_takes_the_connection(
    workers: tuple[Worker, Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "ACCEPT_DEFER", 60.0)  # the busy one stays back for the test
    busy, idle = workers
    for _ in range(SLACK + 2):  # the busy worker stays ahead even once the other took one
        busy.load.opened()
    with socket.create_connection(("127.0.0.1", busy.acceptor.bound_port)):
        await asyncio.wait_for(idle.arrived.wait(), 10)
    # both were woken in the same loop turn, whichever first: the busy one stepped back
    assert not idle.load.accepting(0)  # stepping back
    assert not busy.accepted
    assert len(idle.accepted) == 1
    assert idle.load.open_connections(1) == 1  # counted until released
    idle.acceptor.release()
    assert idle.load.open_connections(1) == 0


async def test_a_connection_the_less_loaded_worker_leaves_waiting_is_taken(
    workers: tuple[Worker, Worker],
) -> None:
    busy, idle = workers
    idle.acceptor.stop()  # stands for a worker that is stuck: it never accepts
    for _ in range(SLACK + 1):
        busy.load.opened()
    with socket.create_connection(("127.0.0.1", busy.acceptor.bound_port)):
        # the busy worker defers, then after ACCEPT_DEFER takes what is still waiting
        await asyncio.wait_for(busy.arrived.wait(), 10)
    assert len(busy.accepted) == 1
    assert busy.load.open_connections(0) == SLACK + 2


async def test_a_deferring_worker_is_not_waited_for(workers: tuple[Worker, Worker]) -> None:
    busy, idle = workers
    for _ in range(SLACK + 1):
        busy.load.opened()
    assert busy.load.should_defer()
    idle.acceptor.stop()
    idle.load.deferring(True)  # the less loaded worker is itself stepping back
    assert not busy.load.should_defer()
    with socket.create_connection(("127.0.0.1", busy.acceptor.bound_port)):
        await asyncio.wait_for(busy.arrived.wait(), 10)
    assert len(busy.accepted) == 1


async def test_a_released_connection_counts_when_its_link_ends(
    workers: tuple[Worker, Worker],
) -> None:
    _, idle = workers
    idle.load.opened()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    idle.acceptor.release_when_done(done)
    assert idle.load.open_connections(1) == 1
    done.set_result(None)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert idle.load.open_connections(1) == 0


async def test_a_worker_without_signs_of_life_is_not_waited_for(
    workers: tuple[Worker, Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "ACCEPT_DEFER", 60.0)  # a step back would outlast the test
    busy, idle = workers
    idle.acceptor.stop()  # its event loop is stuck: it neither accepts nor beats
    for _ in range(SLACK + 1):
        busy.load.opened()
    assert busy.load.should_defer()
    monkeypatch.setattr(balance, "STALE_AFTER", 0.0)  # its last beat is now too old
    with socket.create_connection(("127.0.0.1", busy.acceptor.bound_port)):
        await asyncio.wait_for(busy.arrived.wait(), 10)  # taken at once, not after 60 s
    assert len(busy.accepted) == 1


async def test_a_ready_worker_shows_signs_of_life_until_it_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 1_000_000_000
    monkeypatch.setattr(balance, "_now_ms", lambda: now)
    stale = int(balance.STALE_AFTER * 1000)
    load = WorkerLoad(2)
    peer = load.for_worker(1)
    listener._LOAD = load
    try:
        listener.set_worker_ready(True)
        assert peer.accepting(0)
        assert not peer.accepting(0, now_ms=now + stale)
        scheduled = listener._BEAT
        assert scheduled is not None
        now += stale - 1
        listener._beat()  # what the timer runs: a sign of life, and the next one scheduled
        assert peer.accepting(0, now_ms=now + stale - 1)
        assert listener._BEAT is not None
        assert listener._BEAT is not scheduled
        listener.set_worker_ready(False)
        assert not peer.accepting(0)
        assert listener._BEAT is None
    finally:
        listener.set_worker_ready(False)
        listener._LOAD = None


async def test_after_a_step_back_that_left_a_connection_waiting_the_worker_takes_the_rest(
    workers: tuple[Worker, Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "PEERS_BUSY_HOLD", 60.0)  # the hold outlasts the test
    busy, idle = workers
    idle.acceptor.stop()  # ready and alive, but busy: it takes nothing meanwhile
    for _ in range(SLACK + 1):
        busy.load.opened()
    steps_back = 0
    step_back = busy.acceptor._defer

    def counted(sock: socket.socket, load: WorkerLoad) -> None:
        nonlocal steps_back
        steps_back += 1
        step_back(sock, load)

    monkeypatch.setattr(busy.acceptor, "_defer", counted)
    clients = []
    try:
        for expected in range(1, 6):
            clients.append(socket.create_connection(("127.0.0.1", busy.acceptor.bound_port)))
            while len(busy.accepted) < expected:
                busy.arrived.clear()
                await asyncio.wait_for(busy.arrived.wait(), 10)
        assert busy.load.should_defer()  # the peer still looks less loaded and ready
        assert steps_back == 1  # one step back (ACCEPT_DEFER), then no more for the hold
    finally:
        for client in clients:
            client.close()
