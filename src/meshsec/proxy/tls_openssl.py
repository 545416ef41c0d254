"""The OpenSSL context settings Python's ``ssl`` module does not expose: no automatic chain,
and session-ticket keys.

When a context's certificate was loaded without extra chain certificates (an SVID whose issuer
is the root itself, the usual mesh case), OpenSSL 3 builds the chain to send **on every
handshake**: it runs ``X509_verify_cert`` on our own leaf against the trust store loaded for
verifying peers (a signature check and chain build per connection) and then sends the root too.
Envoy (BoringSSL) and haproxy send exactly the configured chain. ``SSL_MODE_NO_AUTO_CHAIN``
makes OpenSSL do the same: the ``cert-chain.pem`` we were given, leaf first, nothing added —
about 0.1 ms less CPU per handshake for us, one certificate fewer for the peer to parse and check.
A chain with intermediates is unaffected (OpenSSL never auto-chains when extra certificates
were loaded).

Session-ticket keys (``SSL_CTX_set_tlsext_ticket_keys``): each context otherwise makes random
keys of its own, so a ticket resumes only on the context — the ``--concurrency`` worker — that
issued it. :func:`set_ticket_keys` installs keys the caller derived (:mod:`meshsec.proxy.tls`).

Both are set through ``ctypes`` on the ``SSL_CTX`` behind an :class:`ssl.SSLContext`:
CPython's context object starts with the ``SSL_CTX *`` right after the object header, and the
functions are looked up in the very library ``_ssl`` is linked against. Each step is checked
(CPython, same OpenSSL version number, the pointer's ``SSL_CTX_get_options`` equals the
context's ``options``); when any check fails nothing is changed and the context keeps OpenSSL's
default (automatic chain, keys of its own), which is correct, only slower.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import ssl
import sys
from typing import Any

log = logging.getLogger("meshsec.proxy.tls_openssl")

_SSL_CTRL_MODE = 33
_SSL_CTRL_GET_TLSEXT_TICKET_KEYS = 58
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
SSL_MODE_NO_AUTO_CHAIN = 0x00000008
TICKET_KEYS_SIZE = 80  # OpenSSL's layout: key name (16), HMAC secret (32), AES-256 key (32)


class _LibSsl:
    """The ``SSL_CTX`` functions of the libssl that ``_ssl`` uses."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.restype = ctypes.c_long
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.restype = ctypes.c_uint64
        self.get_options.argtypes = [ctypes.c_void_p]
        version = lib.OpenSSL_version_num
        version.restype = ctypes.c_ulong
        version.argtypes = []
        self.version = int(version())


@functools.cache
def _libssl() -> _LibSsl | None:
    if sys.implementation.name != "cpython":
        return None
    try:
        import _ssl

        # dlsym on the extension module's handle resolves through its own dependencies: the
        # same libssl/libcrypto the ssl module calls, whatever else is installed
        lib = _LibSsl(ctypes.CDLL(_ssl.__file__))
    except (ImportError, OSError, AttributeError) as exc:
        log.debug("OpenSSL functions not reachable through ctypes: %s", exc)
        return None
    if lib.version != ssl.OPENSSL_VERSION_NUMBER:
        log.debug(
            "ctypes found OpenSSL %#x, the ssl module runs %#x: leaving contexts alone",
            lib.version,
            ssl.OPENSSL_VERSION_NUMBER,
        )
        return None
    return lib


def _ssl_ctx_pointer(ctx: ssl.SSLContext, lib: _LibSsl) -> int | None:
    import _ssl

    if not isinstance(ctx, _ssl._SSLContext):
        return None
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer or lib.get_options(pointer) != int(ctx.options):
        return None
    return pointer


def _ctrl(ctx: ssl.SSLContext, command: int, larg: int, parg: Any) -> int | None:
    """``SSL_CTX_ctrl`` on the context behind ``ctx``; None when it cannot be reached."""
    lib = _libssl()
    pointer = _ssl_ctx_pointer(ctx, lib) if lib is not None else None
    if lib is None or pointer is None:
        return None
    return int(lib.ctrl(pointer, command, larg, parg))


def disable_auto_chain(ctx: ssl.SSLContext) -> bool:
    """Send exactly the loaded certificate chain (``SSL_MODE_NO_AUTO_CHAIN``); True if set."""
    mode = _ctrl(ctx, _SSL_CTRL_MODE, SSL_MODE_NO_AUTO_CHAIN, None)
    return mode is not None and bool(mode & SSL_MODE_NO_AUTO_CHAIN)


def auto_chain_disabled(ctx: ssl.SSLContext) -> bool:
    """Whether ``ctx`` has ``SSL_MODE_NO_AUTO_CHAIN`` (False when it cannot be read)."""
    mode = _ctrl(ctx, _SSL_CTRL_MODE, 0, None)
    return mode is not None and bool(mode & SSL_MODE_NO_AUTO_CHAIN)


def set_ticket_keys(ctx: ssl.SSLContext, keys: bytes) -> bool:
    """Encrypt and accept session tickets with ``keys`` (:data:`TICKET_KEYS_SIZE` bytes)."""
    if len(keys) != TICKET_KEYS_SIZE:
        raise ValueError(f"session-ticket keys are {TICKET_KEYS_SIZE} bytes, got {len(keys)}")
    buffer = ctypes.create_string_buffer(keys, TICKET_KEYS_SIZE)
    return _ctrl(ctx, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, TICKET_KEYS_SIZE, buffer) == 1


def ticket_keys(ctx: ssl.SSLContext) -> bytes | None:
    """The context's session-ticket keys (None when they cannot be read)."""
    buffer = ctypes.create_string_buffer(TICKET_KEYS_SIZE)
    if _ctrl(ctx, _SSL_CTRL_GET_TLSEXT_TICKET_KEYS, TICKET_KEYS_SIZE, buffer) != 1:
        return None
    return buffer.raw
