"""The inbound proxy as the ``openssl s_client`` command sees it (STRICT, PERMISSIVE, bad peers).

The proxy runs in the test's event loop on 127.0.0.1 port 0 in front of a one-line echo app;
``s_client -quiet`` sends ``ping`` and prints what comes back until the proxy closes.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshsec.core.pki import X509Svid
from meshsec.proxy.inbound import PortMode
from tests.component.proxy.apps import LineApp
from tests.component.proxy.harness import (
    CLIENT_ID,
    Identities,
    close,
    exchange,
    make_identities,
    open_plain,
    release_all,
    start_inbound,
    tls_contexts,
)
from tests.testca import TestCA

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed"),
]


@pytest.fixture(scope="module")
def ids() -> Identities:
    return make_identities(TestCA("cluster.local"))


@pytest.fixture(autouse=True)
async def cleanup() -> AsyncIterator[None]:
    yield
    await release_all()


@dataclass
class SClient:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def echoed(self) -> bool:
        return b"echo:ping" in self.stdout


async def s_client(
    tmp: Path,
    port: int,
    bundle_pem: bytes,
    svid: X509Svid | None,
    *extra: str,
    quiet: bool = True,
) -> SClient:
    (tmp / "root.pem").write_bytes(bundle_pem)
    args = [
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-CAfile",
        str(tmp / "root.pem"),
        "-verify_return_error",
        "-alpn",
        "istio-peer-exchange,istio",
        "-quiet" if quiet else "-ign_eof",
        *extra,
    ]
    if svid is not None:
        (tmp / "cert.pem").write_bytes(svid.cert_chain_pem())
        (tmp / "key.pem").write_bytes(svid.private_key_pem())
        args += ["-cert", str(tmp / "cert.pem"), "-key", str(tmp / "key.pem")]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(b"ping\n"), 20)
    assert proc.returncode is not None
    return SClient(proc.returncode, out, err)


async def test_strict_accepts_mesh_certificate(ids: Identities, tmp_path: Path) -> None:
    app = await LineApp(once=True).start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    result = await s_client(tmp_path, listener.bound_port, ids.ca.bundle.to_pem(), ids.client)
    assert result.echoed, result
    await listener.drain(5)
    await app.stop()


async def test_strict_rejects_tls_without_client_certificate(
    ids: Identities, tmp_path: Path
) -> None:
    app = await LineApp(once=True).start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    result = await s_client(tmp_path, listener.bound_port, ids.ca.bundle.to_pem(), None)
    assert not result.echoed
    assert result.returncode != 0, result
    # the client is told why (OpenSSL's alert is flushed before the close), not reset
    assert b"alert certificate required" in result.stderr, result
    assert b"reset by peer" not in result.stderr, result
    assert app.connections == 0
    await listener.drain(5)
    await app.stop()


async def test_strict_rejects_plaintext(ids: Identities) -> None:
    app = await LineApp(once=True).start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    reader, writer = await open_plain(listener.bound_port)
    assert await exchange(reader, writer, b"ping\n") == b""
    await close(writer)
    assert app.connections == 0
    await listener.drain(5)
    await app.stop()


async def test_permissive_serves_openssl_and_plaintext(ids: Identities, tmp_path: Path) -> None:
    app = await LineApp(once=True).start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.PERMISSIVE
    )
    result = await s_client(tmp_path, listener.bound_port, ids.ca.bundle.to_pem(), ids.client)
    assert result.echoed, result
    reader, writer = await open_plain(listener.bound_port)
    assert await exchange(reader, writer, b"ping\n") == b"echo:ping\n"
    await close(writer)
    assert app.connections == 2
    await listener.drain(5)
    await app.stop()


@pytest.mark.parametrize(
    ("kind", "alert"),
    [
        ("other-root", b"alert unknown ca"),
        ("other-trust-domain", None),  # the chain verifies: refused after the handshake
        ("expired", b"alert certificate expired"),
    ],
    ids=["other-root", "other-trust-domain", "expired"],
)
async def test_bad_client_certificates_are_rejected(
    ids: Identities, tmp_path: Path, kind: str, alert: bytes | None
) -> None:
    if kind == "other-root":
        client = TestCA("cluster.local").issue_svid(CLIENT_ID)
    elif kind == "other-trust-domain":
        client = ids.ca.issue_svid("spiffe://evil.example/ns/frontend/sa/client")
    else:
        client = ids.ca.issue_svid(
            CLIENT_ID, now=datetime.now(UTC) - timedelta(days=1), ttl=timedelta(hours=1)
        )
    app = await LineApp(once=True).start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    result = await s_client(tmp_path, listener.bound_port, ids.ca.bundle.to_pem(), client)
    assert not result.echoed, result
    if alert is not None:
        assert alert in result.stderr, result
    assert b"reset by peer" not in result.stderr, result
    assert app.connections == 0
    await listener.drain(5)
    await app.stop()


async def test_server_negotiates_contract_parameters(ids: Identities, tmp_path: Path) -> None:
    """TLS 1.2 works with the contract's ciphers; TLS 1.1 and a non-contract cipher do not."""
    app = await LineApp(once=True).start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    bundle = ids.ca.bundle.to_pem()
    ok = await s_client(
        tmp_path,
        listener.bound_port,
        bundle,
        ids.client,
        "-tls1_2",
        "-cipher",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    )
    assert ok.echoed, ok
    chacha = await s_client(
        tmp_path,
        listener.bound_port,
        bundle,
        ids.client,
        "-tls1_2",
        "-cipher",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    )
    assert not chacha.echoed
    old = await s_client(tmp_path, listener.bound_port, bundle, ids.client, "-tls1_1")
    assert not old.echoed
    await listener.drain(5)
    await app.stop()


async def test_session_resumption_with_tickets(ids: Identities, tmp_path: Path) -> None:
    app = await LineApp(once=True).start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    bundle = ids.ca.bundle.to_pem()
    session = tmp_path / "session.pem"
    first = await s_client(
        tmp_path, listener.bound_port, bundle, ids.client, "-sess_out", str(session)
    )
    assert first.echoed, first
    second = await s_client(
        tmp_path, listener.bound_port, bundle, ids.client, "-sess_in", str(session), quiet=False
    )
    assert second.echoed, second
    assert b"Reused, TLSv1.3" in second.stdout, second
    await listener.drain(5)
    await app.stop()


async def test_one_ticket_and_exactly_the_configured_chain_per_handshake(
    ids: Identities, tmp_path: Path
) -> None:
    # haproxy and Envoy send the configured chain only; OpenSSL would otherwise rebuild it
    # from the trust store on every handshake and append the root. One TLS 1.3 ticket (see
    # meshsec.proxy.tls), and it arrives although the app answers in the same send.
    app = await LineApp(once=True).start()
    listener = await start_inbound(
        tls_contexts(ids.server, ids.ca.bundle), app.port, PortMode.STRICT
    )
    result = await s_client(
        tmp_path,
        listener.bound_port,
        ids.ca.bundle.to_pem(),
        ids.client,
        "-msg",
        "-showcerts",
        quiet=False,
    )
    assert result.echoed, result
    out = result.stdout.decode()
    assert out.count("NewSessionTicket") == 1, out
    chain = out.split("Certificate chain", 1)[1].split("\n---\n", 1)[0]
    assert chain.count("BEGIN CERTIFICATE") == 1, chain  # the leaf, no root
    assert "meshsec test root" in chain  # ... issued by the root, which stays with the client
    await listener.drain(5)
    await app.stop()
