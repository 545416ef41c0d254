"""TLS over a plain asyncio transport, with the two behaviours asyncio's and uvloop's SSL lack.

asyncio (and uvloop, which ports the same ``sslproto``) terminate TLS inside the loop, which
costs the proxy two things Envoy and haproxy get right:

* **Handshake alerts** — when OpenSSL fails a handshake (no client certificate, unknown root,
  expired certificate) it writes an alert record; the loop's SSL protocol aborts the socket
  without sending it, so the client sees a bare TCP reset instead of ``alert unknown ca``.
  Here the pending output (the alert) is written and the socket closed gracefully.
* **Half-close** — the loop's SSL protocol answers a peer's ``close_notify`` by shutting the
  whole connection down and has no ``write_eof``. Here ``close_notify`` is an end of *input*
  only (the application may still answer, TLS 1.3 §6.1), and :meth:`TlsTransport.write_eof`
  sends our ``close_notify`` while reading goes on.

:class:`TlsTransport` is both the raw socket's protocol and the transport its application
protocol sees (``write``, ``write_eof``, ``pause_reading``, ``get_extra_info("ssl_object")``,
...). Records are encrypted and decrypted through ``ssl.MemoryBIO`` pairs: one ``SSLObject``
per connection from the shared, pre-built context (no per-connection context work).

Sends are coalesced where the protocol allows: each handshake flight leaves in one ``send``,
and a TLS 1.3 server's session tickets (all OpenSSL still has to send once the handshake is
complete) wait for the first application write and leave in the same ``send`` — or alone after
:data:`TICKET_DELAY` when the application writes nothing first. That saves a system call per
connection on both ends; RFC 8446 §4.6.1 lets the server send tickets at any time after the
client's Finished. A TLS 1.2 server's last flight holds its Finished and is never held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, cast

READ_SIZE = 256 * 1024  # plaintext per SSLObject.read call (records are at most 16 KiB)
TICKET_DELAY = 0.05  # s a TLS 1.3 server's tickets wait for the application's first write

_HANDSHAKE, _OPEN, _CLOSED = range(3)


class TlsTransport(asyncio.Protocol):
    """One TLS connection: protocol of the raw transport, transport of ``app``."""

    __slots__ = (
        "_app",
        "_app_factory",
        "_closing",
        "_ctx",
        "_eof_in",
        "_eof_in_pending",
        "_eof_out",
        "_eof_out_pending",
        "_in",
        "_loop",
        "_out",
        "_paused",
        "_raw",
        "_ssl",
        "_state",
        "_tickets",
        "handshake",
    )

    def __init__(
        self,
        app_factory: Callable[[], asyncio.BaseProtocol],
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._app_factory = app_factory
        self._app: asyncio.Protocol | None = None
        self._ctx = ctx
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = ctx.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self._raw: asyncio.Transport | None = None
        self._state = _HANDSHAKE
        self._closing = False
        self._paused = False
        self._eof_in = False  # close_notify or TCP FIN received (passed to the app once)
        self._eof_in_pending = False  # FIN while paused: passed on after the buffered records
        self._eof_out = False  # our close_notify sent
        self._eof_out_pending = False
        self._tickets: asyncio.TimerHandle | None = None  # held-back TLS 1.3 tickets' deadline
        self.handshake: asyncio.Future[None] = self._loop.create_future()

    # raw side ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)
        if not self._ssl.server_side:
            self._handshake_step()

    def data_received(self, data: bytes) -> None:
        self._in.write(data)
        if self._state == _HANDSHAKE:
            self._handshake_step()
            if self._state != _OPEN:
                return
        if not self._paused:
            self._read_records()

    def eof_received(self) -> bool:
        if self._state == _HANDSHAKE:
            self._fail_handshake(ConnectionResetError("peer closed during the TLS handshake"))
            return False
        if self._paused:
            self._eof_in_pending = True
        else:
            self._read_records()
            self._input_ended()
        return True  # our write side stays open: the peer may still be reading

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._stop_ticket_timer()
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("connection lost"))
            self.handshake.exception()  # retrieved: the waiter may have given up already
            return
        app, self._app = self._app, None
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    # handshake --------------------------------------------------------------------------------
    def _handshake_step(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._fail_handshake(exc)
            return
        sslobj = self._ssl
        if sslobj.server_side and self._out.pending and sslobj.version() == "TLSv1.3":
            # only session tickets are left: they go out with the first application write
            self._tickets = self._loop.call_later(TICKET_DELAY, self._flush)
        else:
            self._flush()  # a client's last flight, a TLS 1.2 server's Finished
        self._state = _OPEN
        if self.handshake.done():  # the waiter timed out meanwhile
            self.abort()
            return
        app = cast(asyncio.Protocol, self._app_factory())
        self._app = app
        app.connection_made(self)  # type: ignore[arg-type]  # a transport by duck typing
        self.handshake.set_result(None)

    def handshake_timed_out(self) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(TimeoutError("TLS handshake timed out"))
            self.abort()

    def _fail_handshake(self, exc: BaseException) -> None:
        """Send what OpenSSL queued (the alert), then close the socket gracefully."""
        self._state = _CLOSED
        self._flush()
        if self._raw is not None:
            self._raw.close()
        if not self.handshake.done():
            self.handshake.set_exception(exc)

    # reading ----------------------------------------------------------------------------------
    def _read_records(self) -> None:
        app = self._app
        if app is None:
            return
        sslobj = self._ssl
        chunks: list[bytes] = []
        closed = False
        try:
            while True:
                chunk = sslobj.read(READ_SIZE)
                if not chunk:  # close_notify (CPython returns b"" before we sent ours)
                    closed = True
                    break
                chunks.append(chunk)
                if not self._in.pending and not sslobj.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # close_notify after ours
            closed = True
        except ssl.SSLError:  # a corrupt or forged record: the connection is unusable
            self._deliver(app, chunks)
            self._state = _CLOSED
            if self._raw is not None:
                self._raw.abort()
            return
        self._deliver(app, chunks)
        if closed:
            self._input_ended()
            return
        if self._out.pending and self._tickets is None:  # key updates, a client's tickets
            self._flush()
        if self._eof_out_pending and not self._in.pending:
            self._send_close_notify()

    def _deliver(self, app: asyncio.Protocol, chunks: list[bytes]) -> None:
        if not chunks or self._state == _CLOSED:
            return
        app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _input_ended(self) -> None:
        if self._eof_in:
            return
        self._eof_in = True
        if self._app is not None:
            self._app.eof_received()

    def _resume_read(self) -> None:
        if not self._paused and self._state == _OPEN:
            self._read_records()
            if self._eof_in_pending and not self._paused:
                self._eof_in_pending = False
                self._input_ended()

    # the application's transport --------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN or self._closing or self._eof_out:
            return
        try:
            self._ssl.write(data)
        except ssl.SSLError:
            self.abort()
            return
        raw = self._raw
        if raw is not None:
            self._stop_ticket_timer()  # held-back tickets are in this read
            raw.write(self._out.read())

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send ``close_notify``; incoming data is still read (a TLS half-close)."""
        if self._eof_out or self._state != _OPEN:
            return
        if self._in.pending or self._ssl.pending():
            # shutting down now would make OpenSSL consume (and drop) unread records
            self._eof_out_pending = True
            return
        self._send_close_notify()

    def _send_close_notify(self) -> None:
        self._eof_out_pending = False
        self._eof_out = True
        with contextlib.suppress(ssl.SSLError):  # WANT_READ: the peer's is still to come
            self._ssl.unwrap()
        self._flush()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._state == _OPEN and not self._eof_out:
            self._eof_out_pending = False
            self._send_close_notify()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self._raw is None or self._raw.is_closing()

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            if self._raw is not None and not self._raw.is_closing():
                self._raw.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._raw is not None and not self._raw.is_closing():
                self._raw.resume_reading()
            if self._in.pending or self._ssl.pending() or self._eof_in_pending:
                self._loop.call_soon(self._resume_read)

    def is_reading(self) -> bool:
        return not self._paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high=high, low=low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "sslcontext":
            return self._ctx
        if name == "peercert":
            return self._ssl.getpeercert()
        if name == "cipher":
            return self._ssl.cipher()
        if name == "compression":
            return self._ssl.compression()
        return self._raw.get_extra_info(name, default) if self._raw is not None else default

    def _stop_ticket_timer(self) -> None:
        if self._tickets is not None:
            self._tickets.cancel()
            self._tickets = None

    def _flush(self) -> None:
        self._stop_ticket_timer()
        if self._out.pending and self._raw is not None and not self._raw.is_closing():
            self._raw.write(self._out.read())


async def accept_tls(
    sock: Any,
    app_factory: Callable[[], asyncio.BaseProtocol],
    ctx: ssl.SSLContext,
    *,
    handshake_timeout: float,
) -> TlsTransport:
    """Server handshake on an accepted socket; the app protocol is made once it succeeds."""
    loop = asyncio.get_running_loop()
    tls = TlsTransport(app_factory, ctx, server_side=True, loop=loop)
    await loop.connect_accepted_socket(lambda: tls, sock)
    await _handshake(tls, handshake_timeout, loop)
    return tls


async def connect_tls(
    host: str,
    port: int,
    app_factory: Callable[[], asyncio.BaseProtocol],
    ctx: ssl.SSLContext,
    *,
    server_hostname: str | None,
    handshake_timeout: float,
) -> TlsTransport:
    """Client handshake to ``host:port``; the app protocol is made once it succeeds."""
    loop = asyncio.get_running_loop()
    tls = TlsTransport(
        app_factory, ctx, server_side=False, server_hostname=server_hostname, loop=loop
    )
    await loop.create_connection(lambda: tls, host, port)
    await _handshake(tls, handshake_timeout, loop)
    return tls


async def _handshake(tls: TlsTransport, limit: float, loop: asyncio.AbstractEventLoop) -> None:
    # a timer rather than wait_for: no extra task per connection
    timer = loop.call_later(limit, tls.handshake_timed_out)
    try:
        await tls.handshake
    except asyncio.CancelledError:
        tls.abort()
        raise
    finally:
        timer.cancel()
