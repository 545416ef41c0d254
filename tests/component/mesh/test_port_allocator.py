"""PortAllocator: the ports `meshsec up` hands its processes (loopback binds only)."""

from __future__ import annotations

import socket

from meshsec.mesh.launch import LOOPBACK, PortAllocator


def _free_port_in(low: int, high: int) -> socket.socket:
    for port in range(low, high):
        sock = socket.socket()
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            sock.close()
            continue
        return sock
    raise AssertionError(f"no free port in [{low}, {high})")


def test_ports_are_distinct_held_and_below_the_ephemeral_range() -> None:
    ports = PortAllocator(ephemeral_start=32768)
    taken = [ports.take() for _ in range(20)]
    try:
        assert len(set(taken)) == 20
        assert all(PortAllocator.LOWEST <= p < 32768 for p in taken)
        with socket.socket() as probe:  # held until release: nobody else can bind it
            try:
                probe.bind((LOOPBACK, taken[0]))
                held = False
            except OSError:
                held = True
            assert held
        ports.release()
        with socket.socket() as child:  # released: the child process can bind it
            child.bind((LOOPBACK, taken[0]))
    finally:
        ports.release()


def test_a_port_in_use_is_never_handed_out() -> None:
    busy = _free_port_in(20000, 30000)
    busy.listen()
    port = busy.getsockname()[1]
    # a range of two ports, the first busy: only the second (or a kernel port) may come out
    ports = PortAllocator(lowest=port, ephemeral_start=port + 2)
    try:
        got = {ports.take()}
        ports.release()
        got |= {ports.take() for _ in range(3)}
        assert port not in got
    finally:
        ports.release()
        busy.close()


def test_an_empty_range_falls_back_to_a_kernel_port() -> None:
    ports = PortAllocator(lowest=30000, ephemeral_start=30000)
    try:
        port = ports.take()
        assert port != 0
    finally:
        ports.release()
