"""``OUTPUT_CERTS``: write ``cert-chain.pem``, ``key.pem`` (0600) and ``root-cert.pem``.

Each file is replaced atomically (temp file, fsync, rename) whenever the served identity or the
roots change, so a reader never sees a half-written file or a key with loose permissions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from meshsec.agent.store import Snapshot
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, FileOutputError, write_atomic

log = logging.getLogger(__name__)

CERT_CHAIN_FILE = "cert-chain.pem"
KEY_FILE = "key.pem"
ROOT_CERT_FILE = "root-cert.pem"


class CertFileWriter:
    """A store listener that mirrors the current identity into a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: dict[str, bytes] = {}
        self.failures = 0

    def __call__(self, snapshot: Snapshot) -> None:
        workload = snapshot.workload
        if workload is None:
            return
        files = {
            KEY_FILE: (workload.key_pem, KEY_MODE),
            CERT_CHAIN_FILE: (workload.cert_chain_pem, PUBLIC_MODE),
            ROOT_CERT_FILE: (workload.roots.to_pem(), PUBLIC_MODE),
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # key first, then chain and roots (the order Istio uses)
            for name, (data, mode) in files.items():
                if self._written.get(name) != data:
                    write_atomic(self.directory / name, data, mode)
                    self._written[name] = data
        except (FileOutputError, OSError) as exc:
            self.failures += 1
            log.error("cannot write certificates to %s: %s", self.directory, exc)
            return
        log.info(
            "wrote %s, %s, %s to %s (serial %s)",
            CERT_CHAIN_FILE,
            KEY_FILE,
            ROOT_CERT_FILE,
            self.directory,
            workload.serial_hex,
        )
