"""Certificates from a directory (the agent's file output or Istio's mounted ``/etc/certs``).

``cert-chain.pem`` (leaf first), ``key.pem``, ``root-cert.pem`` (one or several roots). The
watcher polls file stamps every ``interval`` on an injected clock and hands every consistent new
set to a callback; a half-written or inconsistent set is logged and the current one kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from meshsec.core.pki import PkiError, TrustBundle, X509Svid
from meshsec.proxy.errors import TlsMaterialError
from meshsec.runtime.clock import Clock

log = logging.getLogger("meshsec.proxy.certdir")

CERT_CHAIN = "cert-chain.pem"
KEY = "key.pem"
ROOT_CERT = "root-cert.pem"
FILES = (CERT_CHAIN, KEY, ROOT_CERT)

Stamp = tuple[tuple[int, int, int], ...]


def load_cert_dir(directory: Path) -> tuple[X509Svid, TrustBundle]:
    """Read and check the three files; TlsMaterialError names the file and the problem."""
    data: dict[str, bytes] = {}
    for name in FILES:
        try:
            data[name] = (directory / name).read_bytes()
        except OSError as exc:
            raise TlsMaterialError(str(directory / name), exc.strerror or str(exc)) from None
    try:
        svid = X509Svid.from_pem(data[CERT_CHAIN], data[KEY])
    except PkiError as exc:
        raise TlsMaterialError(f"{directory / CERT_CHAIN} + {KEY}", str(exc)) from None
    try:
        bundle = TrustBundle.parse_pem(data[ROOT_CERT], what=str(directory / ROOT_CERT))
    except PkiError as exc:
        raise TlsMaterialError(str(directory / ROOT_CERT), str(exc)) from None
    return svid, bundle


def stamp_cert_dir(directory: Path) -> Stamp:
    out = []
    for name in FILES:
        try:
            st = (directory / name).stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


async def watch_cert_dir(
    directory: Path,
    on_change: Callable[[X509Svid, TrustBundle], None],
    *,
    clock: Clock,
    interval: float,
    initial: Stamp | None = None,
) -> None:
    """Runs until cancelled."""
    stamp = initial if initial is not None else stamp_cert_dir(directory)
    while True:
        await clock.sleep(interval)
        current = stamp_cert_dir(directory)
        if current == stamp:
            continue
        stamp = current
        try:
            svid, bundle = load_cert_dir(directory)
        except TlsMaterialError as exc:
            log.warning(
                "certificate files changed but cannot be used yet (keeping current): %s", exc
            )
            continue
        try:
            on_change(svid, bundle)
        except TlsMaterialError as exc:
            log.warning("new certificates refused by TLS (keeping current): %s", exc)
            continue
        log.info(
            "loaded new certificates from %s: %s serial %s (expires %s), %d root(s)",
            directory,
            svid.spiffe_id,
            svid.serial_hex,
            svid.not_after.isoformat(),
            len(bundle),
        )
