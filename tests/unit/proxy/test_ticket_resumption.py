"""Session tickets across the server contexts of ``--concurrency`` workers.

Each worker builds its own contexts; with the run's ticket secret, those for the same port kind
and trust bundle share their ticket keys, so a ticket one worker issued resumes on another.
A new trust bundle derives new keys: nothing verified under the old roots resumes. The keys
change every hour of the wall clock, in every worker alike.
"""

from __future__ import annotations

import contextlib
import ssl
from datetime import UTC, datetime, timedelta

import pytest

from meshsec.core.pki.svid import X509Svid
from meshsec.proxy import tls
from meshsec.proxy.tls import (
    TICKET_KEY_PERIOD,
    TlsContexts,
    build_client_context,
    derive_ticket_keys,
    ticket_epoch,
)
from meshsec.proxy.tls_openssl import ticket_keys
from tests.testca import TestCA

SERVER_ID = "spiffe://cluster.local/ns/a/sa/server"
CLIENT_ID = "spiffe://cluster.local/ns/a/sa/client"
SECRET = b"s" * 32
NOW = datetime(2026, 11, 23, 10, 59, 30, tzinfo=UTC)  # 30 s before the next key epoch


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
    return contexts.update(svid, ca.bundle, now=NOW).server_context(http=True)


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
    before = contexts.update(ca.issue_svid(SERVER_ID), ca.bundle, now=NOW)
    issued = _handshake(before.server_context(http=True), client_ctx, None)
    later = NOW + timedelta(seconds=20)  # the same key epoch
    rotated = contexts.update(ca.issue_svid(SERVER_ID), ca.bundle, now=later)
    rotated_ctx = rotated.server_context(http=True)
    assert _handshake(rotated_ctx, client_ctx, issued.session).session_reused
    # the same root, but the bundle now also trusts another: new keys, a full handshake
    other = TestCA("cluster.local")
    bigger = ca.bundle.merge(other.bundle)
    rerooted = contexts.update(ca.issue_svid(SERVER_ID), bigger, now=later)
    rerooted_ctx = rerooted.server_context(http=True)
    again = _handshake(rerooted_ctx, client_ctx, issued.session)
    assert not again.session_reused


def test_keys_differ_by_port_kind_bundle_and_epoch() -> None:
    ca, other = TestCA("cluster.local"), TestCA("cluster.local")
    epoch = ticket_epoch(NOW)
    tcp = derive_ticket_keys(SECRET, ca.bundle, "tcp", epoch)
    assert derive_ticket_keys(SECRET, ca.bundle, "tcp", epoch) == tcp
    assert derive_ticket_keys(SECRET, ca.bundle, "http", epoch) != tcp
    assert derive_ticket_keys(SECRET, other.bundle, "tcp", epoch) != tcp
    assert derive_ticket_keys(b"t" * 32, ca.bundle, "tcp", epoch) != tcp
    assert derive_ticket_keys(SECRET, ca.bundle, "tcp", epoch + 1) != tcp


def test_the_keys_change_every_epoch_in_every_worker_alike() -> None:
    ca = TestCA("cluster.local")
    svid = ca.issue_svid(SERVER_ID)
    client_ctx = build_client_context(ca.issue_svid(CLIENT_ID), ca.bundle)
    first, second = TlsContexts(ticket_secret=SECRET), TlsContexts(ticket_secret=SECRET)
    first.update(svid, ca.bundle, now=NOW)
    second.update(svid, ca.bundle, now=NOW)
    assert first.seconds_to_next_ticket_keys(NOW) == 30.0
    server = first.current.server_context(http=True)
    issued = _handshake(server, client_ctx, None)
    keys = ticket_keys(server)
    assert not first.rotate_ticket_keys(NOW + timedelta(seconds=29))  # the same epoch
    assert ticket_keys(server) == keys
    boundary = NOW + timedelta(seconds=30)
    assert first.seconds_to_next_ticket_keys(boundary) == TICKET_KEY_PERIOD
    assert first.rotate_ticket_keys(boundary)
    assert second.rotate_ticket_keys(boundary + timedelta(seconds=5))
    assert ticket_keys(server) != keys
    for http in (False, True):  # both port kinds, as a worker started in the new epoch has them
        fresh = TlsContexts(ticket_secret=SECRET).update(svid, ca.bundle, now=boundary)
        assert ticket_keys(first.current.server_context(http=http)) == ticket_keys(
            fresh.server_context(http=http)
        )
    # the old epoch's ticket: a full handshake; a new one resumes on the other worker
    again = _handshake(server, client_ctx, issued.session)
    assert not again.session_reused
    assert _handshake(
        second.current.server_context(http=True), client_ctx, again.session
    ).session_reused


def test_without_a_secret_there_is_nothing_to_rotate() -> None:
    ca = TestCA("cluster.local")
    contexts = TlsContexts()
    assert not contexts.rotate_ticket_keys(NOW)  # nothing loaded yet
    contexts.update(ca.issue_svid(SERVER_ID), ca.bundle, now=NOW)
    assert not contexts.rotate_ticket_keys(NOW + timedelta(hours=1))


def test_the_secret_is_not_printed() -> None:
    assert SECRET.hex() not in repr(TlsContexts(ticket_secret=SECRET))
    assert repr(SECRET) not in repr(TlsContexts(ticket_secret=SECRET))


def test_keys_that_cannot_be_changed_are_replaced_by_new_contexts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = TestCA("cluster.local")
    contexts = TlsContexts(ticket_secret=SECRET)
    before = contexts.update(ca.issue_svid(SERVER_ID), ca.bundle, now=NOW)
    old_keys = ticket_keys(before.server_context(http=True))
    monkeypatch.setattr(tls, "set_ticket_keys", lambda _ctx, _keys: False)  # libssl refuses
    assert contexts.rotate_ticket_keys(NOW + timedelta(seconds=30))
    after = contexts.current
    assert after is not before  # new contexts: the old epoch's keys are gone everywhere
    assert after.generation == before.generation + 1
    assert ticket_keys(after.server_context(http=True)) != old_keys
    assert not contexts.rotate_ticket_keys(NOW + timedelta(seconds=31))  # done for this epoch
