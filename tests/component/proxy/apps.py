"""Tiny applications behind the proxy in tests: a line echo server and an HTTP/1.1 server.

Both run on 127.0.0.1 port 0 and record what they saw, so tests can assert that a refused
connection never reached the application and what headers an allowed request carried.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tests.component.proxy.harness import track


@dataclass
class LineApp:
    """Replies ``echo:<line>`` to every line; ``once`` closes after the first reply."""

    once: bool = False
    connections: int = 0
    lines: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> LineApp:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        track(self)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.connected.set()
        try:
            while line := await reader.readline():
                self.lines.append(line)
                writer.write(b"echo:" + line)
                await writer.drain()
                if self.once:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class HttpApp:
    """Answers every request ``200`` with a body listing method, path and selected headers."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> HttpApp:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        track(self)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers: dict[str, str] = {}
                xfcc_count = 0
                for line in lines[1:]:
                    if not line:
                        continue
                    name, _, value = line.partition(":")
                    if name.lower() == "x-forwarded-client-cert":
                        xfcc_count += 1
                    headers[name.lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                self.requests.append((method, path, headers))
                xfcc = headers.get("x-forwarded-client-cert", "")
                out = (
                    f"method={method}\npath={path}\nxfcc={xfcc}\n"
                    f"xfcc_count={xfcc_count}\nbody={body.decode('latin-1')}\n"
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(out), out)
                )
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def parse_echo_fields(body: bytes) -> dict[str, str]:
    """``HttpApp``'s reply body (``key=value`` lines: method, path, xfcc, ...) as a mapping."""
    return dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)
