"""SSL_MODE_NO_AUTO_CHAIN and session-ticket keys on the proxy's contexts (set through ctypes,
checked the same way)."""

from __future__ import annotations

import ssl

import pytest

from meshsec.proxy.tls import build_client_context, build_server_context
from meshsec.proxy.tls_openssl import (
    TICKET_KEYS_SIZE,
    auto_chain_disabled,
    disable_auto_chain,
    set_ticket_keys,
    ticket_keys,
)
from tests.testca import TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("cluster.local")


def test_a_fresh_context_auto_chains_and_the_switch_turns_it_off() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert not auto_chain_disabled(ctx)
    assert disable_auto_chain(ctx)
    assert auto_chain_disabled(ctx)
    assert disable_auto_chain(ctx)  # idempotent


def test_every_proxy_context_sends_only_its_own_chain(ca: TestCA) -> None:
    svid = ca.issue_svid("spiffe://cluster.local/ns/a/sa/b")
    assert auto_chain_disabled(build_server_context(svid, ca.bundle))
    assert auto_chain_disabled(build_client_context(svid, ca.bundle))


def test_the_switch_leaves_other_settings_alone() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    options, verify = ctx.options, ctx.verify_mode
    disable_auto_chain(ctx)
    assert ctx.options == options
    assert ctx.verify_mode == verify


def test_not_a_context_is_refused_without_touching_memory() -> None:
    assert not disable_auto_chain(object())  # type: ignore[arg-type]
    assert not auto_chain_disabled(object())  # type: ignore[arg-type]


def test_ticket_keys_are_set_and_read_back(ca: TestCA) -> None:
    ctx = build_server_context(ca.issue_svid("spiffe://cluster.local/ns/a/sa/b"), ca.bundle)
    own = ticket_keys(ctx)
    assert own is not None
    assert len(own) == TICKET_KEYS_SIZE
    keys = bytes(range(TICKET_KEYS_SIZE))
    assert set_ticket_keys(ctx, keys)
    assert ticket_keys(ctx) == keys


def test_ticket_keys_of_the_wrong_size_are_refused() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    before = ticket_keys(ctx)
    with pytest.raises(ValueError, match="session-ticket keys are 80 bytes, got 79"):
        set_ticket_keys(ctx, bytes(79))
    assert ticket_keys(ctx) == before
    assert not set_ticket_keys(object(), bytes(80))  # type: ignore[arg-type]
    assert ticket_keys(object()) is None  # type: ignore[arg-type]
