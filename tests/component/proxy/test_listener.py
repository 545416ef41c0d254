"""The acceptor: SO_REUSEPORT lets worker processes share one listen port."""

from __future__ import annotations

import socket

import pytest

from meshsec.proxy.listener import Acceptor


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
        with pytest.raises(OSError, match="in use"):
            second.start()
    finally:
        second.stop()
        first.stop()
