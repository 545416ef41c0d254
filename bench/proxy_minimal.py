"""The floor of ``bench/proxy.py``: the least a Python mTLS relay on uvloop can do per byte.

``python bench/proxy_minimal.py KIND PORT APP_PORT DIR WORKERS`` terminates mTLS on ``PORT``
with haproxy's settings (``DIR/haproxy.pem``, ``verify required`` against ``DIR/root.pem``,
TLS 1.2-1.3, the same ciphers and ALPN) and relays bytes to the app on ``APP_PORT``, in
``WORKERS`` forked processes sharing the port (``SO_REUSEPORT``). Nothing else: no policy, no
metrics, no idle or handshake timers, no half-close, no alerts on failed handshakes, no drain.

``KIND`` picks the TLS layer:

* ``uvloop-ssl``: the loop's own SSL transport (``create_server(ssl=...)``, Cython);
* ``memory-bio``: OpenSSL through ``ssl.MemoryBIO`` on plain uvloop transports, as meshsec's
  ``proxy/tls_transport.py`` does, in the fewest Python calls per event.

Both relay with backpressure (a side above its write buffer's high mark pauses the other's
reading). What meshsec costs above this is its own work; what this costs above haproxy is
Python's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

from proxy_peers import CIPHERS

READ = 256 * 1024
ALPN = ["istio-peer-exchange", "istio", "http/1.1"]


def context(d: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(CIPHERS)
    ctx.load_cert_chain(d / "haproxy.pem")
    ctx.load_verify_locations(d / "root.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(ALPN)
    return ctx


class Plain(asyncio.Protocol):
    """The app side: bytes go to ``peer`` (the TLS side's relay)."""

    def __init__(self, peer: Relay) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.peer.send(data)

    def eof_received(self) -> None:
        self.peer.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.close()

    def pause_writing(self) -> None:
        self.peer.pause()

    def resume_writing(self) -> None:
        self.peer.resume()


class Relay(asyncio.Protocol):
    """``uvloop-ssl``: the client side, on the loop's SSL transport."""

    def __init__(self, app_port: int) -> None:
        self.app_port = app_port
        self.transport: asyncio.Transport | None = None
        self.up: Plain | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(lambda: Plain(self), "127.0.0.1", self.app_port)
        except OSError:
            self.close()
            return
        self.up = up
        for data in self.early:
            up.transport.write(data)  # type: ignore[union-attr]
        self.early = []

    def data_received(self, data: bytes) -> None:
        if self.up is not None:
            self.up.transport.write(data)  # type: ignore[union-attr]
        else:
            self.early.append(data)

    def eof_received(self) -> None:
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    # the app side's calls
    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def pause(self) -> None:
        self.transport.pause_reading()  # type: ignore[union-attr]

    def resume(self) -> None:
        self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class BioRelay(Relay):
    """``memory-bio``: the client side on a plain transport, TLS through ``ssl.MemoryBIO``."""

    def __init__(self, app_port: int, ctx: ssl.SSLContext) -> None:
        super().__init__(app_port)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.open:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.flush()
                return
            except ssl.SSLError:
                self.flush()  # the alert
                self.close()
                return
            self.flush()
            self.open = True
            asyncio.get_running_loop().create_task(self.connect())
        tls, incoming = self.tls, self.incoming
        try:
            while True:
                chunk = tls.read(READ)
                if not chunk:
                    self.close()
                    return
                up = self.up
                if up is not None:
                    up.transport.write(chunk)  # type: ignore[union-attr]
                else:
                    self.early.append(chunk)
                if not incoming.pending and not tls.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            self.transport.abort()  # type: ignore[union-attr]
            return
        if self.outgoing.pending:
            self.flush()

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.flush()

    def flush(self) -> None:
        self.transport.write(self.outgoing.read())  # type: ignore[union-attr]


def worker(kind: str, port: int, app_port: int, d: Path) -> None:
    import uvloop

    ctx = context(d)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        on_loop = kind == "uvloop-ssl"
        server = await loop.create_server(
            (lambda: Relay(app_port)) if on_loop else (lambda: BioRelay(app_port, ctx)),
            "127.0.0.1",
            port,
            ssl=ctx if on_loop else None,
            reuse_port=True,
            backlog=4096,
        )
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        async with server:
            await stopped.wait()

    uvloop.run(serve())


def main() -> None:
    kind, port, app_port, d, workers = sys.argv[1:6]
    if kind not in ("uvloop-ssl", "memory-bio"):
        raise SystemExit(f"unknown kind {kind!r}: uvloop-ssl or memory-bio")
    children = []
    for _ in range(int(workers)):
        pid = os.fork()
        if pid == 0:
            worker(kind, int(port), int(app_port), Path(d))
            os._exit(0)
        children.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(c, signal.SIGTERM) for c in children])
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except InterruptedError:
                continue


if __name__ == "__main__":
    main()
