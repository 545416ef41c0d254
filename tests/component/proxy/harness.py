"""Shared set-up for proxy tests: a mesh CA, identities, TLS contexts, listeners and clients."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509

from meshsec.core.identity import TrustDomainSet
from meshsec.core.pki import TrustBundle, X509Svid
from meshsec.proxy.authz import Authorizer
from meshsec.proxy.inbound import InboundListener, InboundOptions, InboundPort, PortMode
from meshsec.proxy.metrics import ProxyMetrics
from meshsec.proxy.pump import PumpLimits
from meshsec.proxy.tls import ALPN_CLIENT_ISTIO, TlsContexts, build_client_context
from meshsec.proxy.upstream import OutboundOptions, UpstreamConnector
from tests.testca import TestCA

TD = "cluster.local"

# Everything a test opens is registered here and torn down by the autouse ``cleanup`` fixture
# (tests/component/proxy/conftest.py) even when the test fails: uvloop's loop.close() blocks on
# TLS transports that are still open.
RESOURCES: list[object] = []


def track(resource: T) -> T:
    RESOURCES.append(resource)
    return resource


async def release_all() -> None:
    while RESOURCES:
        resource = RESOURCES.pop()
        if isinstance(resource, asyncio.StreamWriter):
            resource.transport.abort()
        elif hasattr(resource, "drain"):
            await resource.drain(0)
        elif hasattr(resource, "stop"):
            await resource.stop()
        elif hasattr(resource, "wait_closed"):  # asyncio.Server or uvloop's Server
            resource.close()  # type: ignore[attr-defined]
            await resource.wait_closed()


SERVER_ID = "spiffe://cluster.local/ns/backend/sa/server"
CLIENT_ID = "spiffe://cluster.local/ns/frontend/sa/client"
T = TypeVar("T")
MESH_TDS = TrustDomainSet.build(TD, ("old.example",))


@dataclass
class Identities:
    ca: TestCA
    server: X509Svid
    client: X509Svid


def make_identities(ca: TestCA) -> Identities:
    return Identities(ca, ca.issue_svid(SERVER_ID), ca.issue_svid(CLIENT_ID))


def tls_contexts(svid: X509Svid, bundle: TrustBundle) -> TlsContexts:
    contexts = TlsContexts()
    contexts.update(svid, bundle)
    return contexts


async def start_inbound(
    contexts: TlsContexts,
    app_port: int,
    mode: PortMode,
    *,
    http: bool = False,
    authorizer: Authorizer | None = None,
    metrics: ProxyMetrics | None = None,
    limits: PumpLimits | None = None,
    handshake_timeout: float = 5.0,
    sniff_timeout: float = 5.0,
    trust_domains: TrustDomainSet | None = MESH_TDS,
) -> InboundListener:
    listener = InboundListener(
        InboundPort(0, app_port, mode, http=http, listen_host="127.0.0.1"),
        contexts,
        options=InboundOptions(
            trust_domains=trust_domains,
            handshake_timeout=handshake_timeout,
            sniff_timeout=sniff_timeout,
            limits=limits or PumpLimits(),
        ),
        authorizer=authorizer,
        metrics=metrics,
    )
    await listener.start()
    return track(listener)


def client_context(
    svid: X509Svid | None, bundle: TrustBundle, alpn: Sequence[str] = ALPN_CLIENT_ISTIO
) -> ssl.SSLContext:
    return build_client_context(svid, bundle, alpn=alpn)


async def open_tls(
    port: int, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="proxy.test"), 5
    )
    return reader, track(writer)


async def open_plain(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    return reader, track(writer)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes
) -> bytes:
    """Send one line, return the reply line (b'' if the connection was closed instead)."""
    writer.write(line)
    try:
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    except (ConnectionError, ssl.SSLError):
        return b""


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5)


def peer_serial(writer: asyncio.StreamWriter) -> int:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


async def http_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send a raw request; return (status, body) of a Content-Length response."""
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
    return status, body


def outbound_connector(
    contexts: TlsContexts,
    resolver: object,
    policy: object,
    *,
    handshake_timeout: float = 5.0,
    limits: PumpLimits | None = None,
) -> UpstreamConnector:
    return UpstreamConnector(
        resolver,  # type: ignore[arg-type]
        policy,  # type: ignore[arg-type]
        contexts,
        OutboundOptions(
            trust_domains=MESH_TDS,
            handshake_timeout=handshake_timeout,
            limits=limits or PumpLimits(),
        ),
    )
