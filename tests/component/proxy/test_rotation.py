"""Hot reload: new SVIDs and bundles apply to new handshakes at once, open connections stay up.

The load test follows the issue's acceptance: 10 clients stream continuously through an outbound
sidecar into a STRICT inbound sidecar while both sides' certificates rotate 5 times and the root
bundle changes once (a second root is added, then the SVIDs move to it); no request fails and
every echoed byte stream matches its SHA-256. Moving SVIDs to a new root in the same step as the
bundle change would fail handshakes already in flight with the old bundle — a root rotation is
two pushes, as Istio's agent does it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from meshsec.proxy.inbound import PortMode
from meshsec.proxy.outbound import TcpOutboundListener
from meshsec.proxy.upstream import Endpoint
from tests.component.proxy.apps import LineApp
from tests.component.proxy.harness import (
    CLIENT_ID,
    SERVER_ID,
    Identities,
    client_context,
    close,
    exchange,
    open_plain,
    open_tls,
    outbound_connector,
    peer_serial,
    start_inbound,
    tls_contexts,
    track,
)
from tests.fakes.mesh_registry import FakeClientTlsPolicy, FakeResolver
from tests.testca import TestCA

HOST = "echo.default.svc.cluster.local"
CLIENTS = 10
ROUND_BYTES = 64 * 1024
CHUNK = 4096


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_rotation_keeps_open_connection_and_new_handshake_sees_new_serial(
    ids: Identities,
) -> None:
    app = await LineApp().start()
    contexts = tls_contexts(ids.server, ids.ca.bundle)
    listener = await start_inbound(contexts, app.port, PortMode.STRICT)
    ctx = client_context(ids.client, ids.ca.bundle)
    old_reader, old_writer = await open_tls(listener.bound_port, ctx)
    assert await exchange(old_reader, old_writer, b"before\n") == b"echo:before\n"
    assert peer_serial(old_writer) == ids.server.leaf.serial_number

    rotated = ids.ca.issue_svid(SERVER_ID)
    contexts.update(rotated, ids.ca.bundle)

    new_reader, new_writer = await open_tls(listener.bound_port, ctx)
    assert peer_serial(new_writer) == rotated.leaf.serial_number
    assert await exchange(new_reader, new_writer, b"new\n") == b"echo:new\n"
    assert await exchange(old_reader, old_writer, b"still\n") == b"echo:still\n"
    await close(old_writer)
    await close(new_writer)
    await listener.drain(5)
    await app.stop()


async def test_bundle_with_two_roots_accepts_both(ids: Identities) -> None:
    new_root = TestCA("cluster.local")
    app = await LineApp().start()
    both = ids.ca.bundle.merge(new_root.bundle)
    contexts = tls_contexts(ids.server, both)
    listener = await start_inbound(contexts, app.port, PortMode.STRICT)
    for ca in (ids.ca, new_root):
        client = ca.issue_svid(CLIENT_ID)
        reader, writer = await open_tls(listener.bound_port, client_context(client, ids.ca.bundle))
        assert await exchange(reader, writer, b"root\n") == b"echo:root\n"
        await close(writer)
    # and dropping the old root from the bundle rejects its clients on the next handshake
    contexts.update(new_root.issue_svid(SERVER_ID), new_root.bundle)
    old_client = ids.ca.issue_svid(CLIENT_ID)
    try:
        reader, writer = await open_tls(
            listener.bound_port, client_context(old_client, new_root.bundle)
        )
    except (ConnectionError, OSError):
        pass
    else:
        assert await exchange(reader, writer, b"gone\n") == b""
        await close(writer)
    assert app.lines == [b"root\n", b"root\n"]
    await listener.drain(5)
    await app.stop()


async def test_rotation_under_load(ids: Identities) -> None:
    server = track(await asyncio.start_server(_echo, "127.0.0.1", 0))
    app_port = server.sockets[0].getsockname()[1]
    server_tls = tls_contexts(ids.server, ids.ca.bundle)
    client_tls = tls_contexts(ids.client, ids.ca.bundle)
    inbound = await start_inbound(server_tls, app_port, PortMode.STRICT)
    resolver = FakeResolver()
    resolver.add(HOST, 80, Endpoint("127.0.0.1", inbound.bound_port, (SERVER_ID,)))
    outbound = TcpOutboundListener(
        "127.0.0.1", 0, HOST, 80, outbound_connector(client_tls, resolver, FakeClientTlsPolicy())
    )
    await outbound.start()
    track(outbound)

    stop = asyncio.Event()
    rounds = [0] * CLIENTS
    failures: list[str] = []
    progress = asyncio.Condition()

    async def one_round(n: int) -> None:
        payload = os.urandom(ROUND_BYTES)
        reader, writer = await open_plain(outbound.bound_port)

        async def send() -> None:
            for i in range(0, ROUND_BYTES, CHUNK):
                writer.write(payload[i : i + CHUNK])
                await writer.drain()

        sender = asyncio.ensure_future(send())
        echoed = await asyncio.wait_for(reader.readexactly(ROUND_BYTES), 10)
        await sender
        await close(writer)
        if hashlib.sha256(echoed).digest() != hashlib.sha256(payload).digest():
            failures.append(f"client {n}: echo hash mismatch")

    async def client(n: int) -> None:
        while not stop.is_set():
            try:
                await one_round(n)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                failures.append(f"client {n}: {exc!r}")
                return
            async with progress:
                rounds[n] += 1
                progress.notify_all()

    async def everyone_did_another_round() -> None:
        target = [r + 1 for r in rounds]
        async with progress:
            await asyncio.wait_for(
                progress.wait_for(
                    lambda: (
                        failures != [] or all(r >= t for r, t in zip(rounds, target, strict=True))
                    )
                ),
                30,
            )

    # a long-lived connection that must survive every rotation
    long_reader, long_writer = await open_plain(outbound.bound_port)
    assert await exchange(long_reader, long_writer, b"first\n") == b"first\n"

    clients = [asyncio.ensure_future(client(n)) for n in range(CLIENTS)]
    await everyone_did_another_round()
    new_root = TestCA("cluster.local")
    ca = ids.ca
    serials = []
    for step in range(5):
        bundle = server_tls.current.bundle
        if step == 2:  # the root bundle changes once: both sides learn the new root first ...
            bundle = ids.ca.bundle.merge(new_root.bundle)
        if step == 3:  # ... and only once every handshake has it do the SVIDs move to it
            ca = new_root
        server_svid = ca.issue_svid(SERVER_ID)
        server_tls.update(server_svid, bundle)
        client_tls.update(ca.issue_svid(CLIENT_ID), bundle)
        serials.append(server_svid.leaf.serial_number)
        await everyone_did_another_round()
        # a fresh direct handshake sees the new serial
        _reader, writer = await open_tls(
            inbound.bound_port, client_context(client_tls.current.svid, bundle)
        )
        assert peer_serial(writer) == server_svid.leaf.serial_number
        await close(writer)
        assert await exchange(long_reader, long_writer, f"step{step}\n".encode()) == (
            f"step{step}\n".encode()
        )
    stop.set()
    await asyncio.gather(*clients)
    assert failures == []
    assert min(rounds) >= 6
    assert len(set(serials)) == 5
    await close(long_writer)
    await outbound.drain(5)
    await inbound.drain(5)
    server.close()
    await server.wait_closed()
