"""The acceptor: worker processes share a listen port (a socket bound before they fork, or
SO_REUSEPORT); a port that cannot be bound is a clear error."""

from __future__ import annotations

import asyncio
import socket

import pytest

from meshsec.proxy import listener
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
    bind_shared({("127.0.0.1", port)})
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
            bind_shared({("127.0.0.1", port)})
    assert ("127.0.0.1", port) not in listener._SHARED
