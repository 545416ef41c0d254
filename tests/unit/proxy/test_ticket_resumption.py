"""Session tickets across the server contexts of ``--concurrency`` workers.

Each worker builds its own contexts; with the run's ticket secret, those for the same port kind
and trust bundle share their ticket keys, so a ticket one worker issued resumes on another.
A new trust bundle derives new keys: nothing verified under the old roots resumes.
"""

from __future__ import annotations

import contextlib
import ssl

from meshsec.core.pki.svid import X509Svid
from meshsec.proxy.tls import (
    TlsContexts,
    build_client_context,
    derive_ticket_keys,
)
from tests.testca import TestCA

SERVER_ID = "spiffe://cluster.local/ns/a/sa/server"
CLIENT_ID = "spiffe://cluster.local/ns/a/sa/client"
SECRET = b"s" * 32


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> ssl.SSLObject:
    """A whole TLS 1.3 handshake in memory, and one byte each way so the ticket arrives."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False, session=session)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    server.write(b"x")
    c_in.write(s_out.read())
    assert client.read(1) == b"x"
    return client


def _worker(ca: TestCA, svid: X509Svid, secret: bytes | None) -> ssl.SSLContext:
    """The HTTP-port server context one worker builds."""
    contexts = TlsContexts(ticket_secret=secret)
    return contexts.update(svid, ca.bundle).server_context(http=True)


def test_a_ticket_from_one_worker_resumes_on_another() -> None:
    ca = TestCA("cluster.local")
    svid = ca.issue_svid(SERVER_ID)
    client_ctx = build_client_context(ca.issue_svid(CLIENT_ID), ca.bundle)
    first, second = _worker(ca, svid, SECRET), _worker(ca, svid, SECRET)
    issued = _handshake(first, client_ctx, None)
    assert not issued.session_reused
    resumed = _handshake(second, client_ctx, issued.session)
    assert resumed.session_reused


def test_without_the_shared_secret_each_worker_has_its_own_keys() -> None:
    ca = TestCA("cluster.local")
    svid = ca.issue_svid(SERVER_ID)
    client_ctx = build_client_context(ca.issue_svid(CLIENT_ID), ca.bundle)
    issued = _handshake(_worker(ca, svid, None), client_ctx, None)
    again = _handshake(_worker(ca, svid, None), client_ctx, issued.session)
    assert not again.session_reused  # a full handshake instead, which still succeeds


def test_a_ticket_survives_an_svid_rotation_but_not_a_new_bundle() -> None:
    ca = TestCA("cluster.local")
    client_ctx = build_client_context(ca.issue_svid(CLIENT_ID), ca.bundle)
    contexts = TlsContexts(ticket_secret=SECRET)
    before = contexts.update(ca.issue_svid(SERVER_ID), ca.bundle).server_context(http=True)
    issued = _handshake(before, client_ctx, None)
    rotated = contexts.update(ca.issue_svid(SERVER_ID), ca.bundle).server_context(http=True)
    assert _handshake(rotated, client_ctx, issued.session).session_reused
    # the same root, but the bundle now also trusts another: new keys, a full handshake
    other = TestCA("cluster.local")
    bigger = ca.bundle.merge(other.bundle)
    rerooted = contexts.update(ca.issue_svid(SERVER_ID), bigger).server_context(http=True)
    again = _handshake(rerooted, client_ctx, issued.session)
    assert not again.session_reused


def test_keys_differ_by_port_kind_and_bundle() -> None:
    ca, other = TestCA("cluster.local"), TestCA("cluster.local")
    tcp = derive_ticket_keys(SECRET, ca.bundle, "tcp")
    assert derive_ticket_keys(SECRET, ca.bundle, "tcp") == tcp
    assert derive_ticket_keys(SECRET, ca.bundle, "http") != tcp
    assert derive_ticket_keys(SECRET, other.bundle, "tcp") != tcp
    assert derive_ticket_keys(b"t" * 32, ca.bundle, "tcp") != tcp
