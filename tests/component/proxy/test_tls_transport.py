"""TlsTransport on an in-memory raw transport, driven by a real client SSLObject.

Checks the behaviours the loop's own SSL transport lacks: the alert goes out before the close,
``close_notify`` is an end of input only, our ``close_notify`` is deferred past unread records,
and a FIN that arrives while reading is paused waits for the buffered records; and the send
coalescing: TLS 1.3 tickets leave with the first application write (or alone, soon, without
one), a TLS 1.2 server's last flight is never held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from meshsec.proxy.tls_transport import TlsTransport
from tests.component.proxy.harness import Identities, client_context, tls_contexts


class RawTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.wrote = asyncio.Event()
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.written += data
        self.writes += 1
        self.wrote.set()

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


class App(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", bytes(data)))

    def eof_received(self) -> None:
        self.events.append(("eof", b""))


class Client:
    """A TLS client over memory BIOs, wired to a TlsTransport through a RawTransport."""

    def __init__(self, ctx: ssl.SSLContext, server: TlsTransport, raw: RawTransport) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="proxy.test")
        self.server, self.raw = server, raw

    def pump(self) -> None:
        """Client → server bytes, then server → client bytes."""
        if self.outgoing.pending:
            self.server.data_received(self.outgoing.read())
        if self.raw.written:
            self.incoming.write(self.raw.take())

    def handshake(self) -> BaseException | None:
        for _ in range(10):
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.pump()
                continue
            except ssl.SSLError as exc:
                return exc
            self.pump()
            return None
        raise AssertionError("handshake did not finish")

    def read_all(self) -> bytes:
        out = bytearray()
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            while chunk := self.tls.read(65536):
                out += chunk
        return bytes(out)


def assert_resumable(client: Client) -> None:
    """The client holds a session ticket it could resume with."""
    session = client.tls.session
    assert session is not None
    assert session.has_ticket


def _pair(
    ids: Identities, client_svid: Any, *, tls12: bool = False
) -> tuple[TlsTransport, RawTransport, App, Client]:
    server_ctx = tls_contexts(ids.server, ids.ca.bundle).current.server_tcp
    app = App()
    server = TlsTransport(lambda: app, server_ctx, server_side=True)
    raw = RawTransport()
    server.connection_made(raw)
    client_ctx = client_context(client_svid, ids.ca.bundle)
    if tls12:
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client = Client(client_ctx, server, raw)
    return server, raw, app, client


async def test_failed_handshake_sends_the_alert_then_closes_gracefully(ids: Identities) -> None:
    server, raw, app, client = _pair(ids, None)  # no client certificate
    error = client.handshake()
    if error is None:  # TLS 1.3: the client learns of the refusal on its first read
        client.tls.write(b"x")
        client.pump()
        try:
            client.tls.read(10)
        except ssl.SSLError as exc:
            error = exc
    assert error is not None
    assert "CERTIFICATE_REQUIRED" in str(error).upper(), error
    assert raw.closed
    assert not raw.aborted
    assert server.handshake.done()
    assert isinstance(server.handshake.exception(), ssl.SSLError)
    assert app.transport is None  # the application protocol was never made


async def test_close_notify_ends_input_only(ids: Identities) -> None:
    server, raw, app, client = _pair(ids, ids.client)
    assert client.handshake() is None
    assert server.handshake.result() is None
    client.tls.write(b"request")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.tls.unwrap()  # close_notify
    client.pump()
    assert app.events == [("data", b"request"), ("eof", b"")]
    server.write(b"the answer")  # still allowed after the peer's close_notify
    server.write_eof()
    client.pump()
    assert client.read_all() == b"the answer"
    assert not raw.closed


async def test_write_eof_waits_for_unread_records(ids: Identities) -> None:
    server, raw, app, client = _pair(ids, ids.client)
    assert client.handshake() is None
    server.pause_reading()
    assert not raw.reading
    client.tls.write(b"while paused")
    client.pump()
    assert app.events == []  # buffered, not delivered
    server.write_eof()  # must not let OpenSSL consume (and drop) the buffered record
    server.eof_received()  # FIN while paused: waits for the buffered record
    assert app.events == []
    server.resume_reading()
    await asyncio.sleep(0)
    assert app.events == [("data", b"while paused"), ("eof", b"")]
    client.pump()
    assert client.tls.read(10) == b""  # our close_notify went out once the record was read


async def test_tls13_tickets_leave_with_the_first_application_write(ids: Identities) -> None:
    server, raw, _app, client = _pair(ids, ids.client)
    assert client.handshake() is None
    assert server.handshake.result() is None
    assert client.tls.version() == "TLSv1.3"
    assert not raw.written  # the ticket is held back ...
    writes = raw.writes
    server.write(b"the answer")
    assert raw.writes == writes + 1  # ... and leaves in the answer's send
    client.pump()
    assert client.read_all() == b"the answer"
    assert_resumable(client)


async def test_tls13_tickets_leave_alone_when_the_application_is_silent(ids: Identities) -> None:
    _server, raw, _app, client = _pair(ids, ids.client)
    assert client.handshake() is None
    assert not raw.written
    raw.wrote.clear()
    await asyncio.wait_for(raw.wrote.wait(), 5)  # TICKET_DELAY later, without any write
    client.pump()
    assert client.read_all() == b""
    assert_resumable(client)


async def test_tls13_held_tickets_precede_our_close_notify(ids: Identities) -> None:
    server, raw, _app, client = _pair(ids, ids.client)
    assert client.handshake() is None
    server.close()
    client.pump()
    assert client.tls.read(10) == b""  # close_notify, after the ticket
    assert_resumable(client)
    assert raw.closed


async def test_tls12_server_finished_is_never_held_back(ids: Identities) -> None:
    # the client cannot complete its handshake without the server's last flight
    server, _raw, _app, client = _pair(ids, ids.client, tls12=True)
    assert client.handshake() is None
    assert client.tls.version() == "TLSv1.2"
    assert server.handshake.result() is None
