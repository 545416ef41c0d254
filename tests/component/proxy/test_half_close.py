"""Half-close across the TLS hop: a client that stops sending still gets the whole answer.

The application reads until end of input and only then answers (like ``wc``, a request body
delimited by close, or an rsync-style exchange), so the answer exists only if the EOF travelled
through the proxy as an EOF and the reply path stayed open: TCP FIN → ``close_notify`` on the
mTLS hop → FIN to the application, and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl

from meshsec.proxy.inbound import PortMode
from meshsec.proxy.outbound import TcpOutboundListener
from meshsec.proxy.upstream import Endpoint
from tests.component.proxy.harness import (
    SERVER_ID,
    Identities,
    client_context,
    outbound_connector,
    start_inbound,
    tls_contexts,
    track,
)
from tests.component.proxy.test_outbound import HOST
from tests.fakes.mesh_registry import FakeClientTlsPolicy, FakeResolver

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: several TLS records, more than one socket buffer


class DigestApp:
    """Reads everything until EOF, then answers ``<n> <sha256>`` (plus 256 KiB) and closes."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    async def start(self) -> DigestApp:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until EOF
        writer.write(b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode()))
        writer.write(PAYLOAD)
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def expected_answer() -> bytes:
    return b"%d %s\n" % (len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest().encode()) + PAYLOAD


async def tls_half_close_exchange(port: int, ctx: ssl.SSLContext) -> bytes:
    """Send PAYLOAD over TLS, send close_notify (and keep reading), return everything received."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="proxy.test")

    async def flush() -> None:
        if outgoing.pending:
            await loop.sock_sendall(sock, outgoing.read())

    async def fill() -> bool:
        data = await loop.sock_recv(sock, 65536)
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        return bool(data)

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await flush()
                await fill()
        await flush()
        tls.write(PAYLOAD)
        await flush()
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.unwrap()  # close_notify: we are done sending
        await flush()
        received = bytearray()
        while True:
            try:
                chunk = tls.read(65536)
            except ssl.SSLWantReadError:
                if not await fill():
                    break
                continue
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            received += chunk
        return bytes(received)
    finally:
        sock.close()


async def test_tls_client_close_notify_still_gets_the_answer(ids: Identities) -> None:
    app = await DigestApp().start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    answer = await asyncio.wait_for(
        tls_half_close_exchange(listener.bound_port, client_context(ids.client, ids.ca.bundle)),
        10,
    )
    assert answer == expected_answer()
    await listener.drain(5)
    await app.stop()


async def test_plaintext_shutdown_wr_through_mtls_hop_still_gets_the_answer(
    ids: Identities,
) -> None:
    """app client --TCP--> outbound --mTLS--> inbound --TCP--> app; the client half-closes."""
    app = await DigestApp().start()
    inbound = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    resolver = FakeResolver()
    resolver.add(HOST, 80, Endpoint("127.0.0.1", inbound.bound_port, (SERVER_ID,)))
    out = TcpOutboundListener(
        "127.0.0.1",
        0,
        HOST,
        80,
        outbound_connector(
            tls_contexts(ids.client, ids.ca.bundle), resolver, FakeClientTlsPolicy()
        ),
    )
    await out.start()
    track(out)
    reader, writer = await asyncio.open_connection("127.0.0.1", out.bound_port)
    writer.write(PAYLOAD)
    await writer.drain()
    writer.write_eof()  # shutdown(SHUT_WR)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer == expected_answer()
    await out.drain(5)
    await inbound.drain(5)
    await app.stop()
