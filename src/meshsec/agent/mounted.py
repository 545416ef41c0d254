"""``FILE_MOUNTED_CERTS``: serve ``cert-chain.pem``, ``key.pem``, ``root-cert.pem`` from files.

No CA is called. The files are polled (``stat`` through symlinks, so a Kubernetes Secret volume's
``..data`` symlink swap is seen as a change of the resolved path), and after a change settles
for the debounce interval they are re-read, checked (key matches the leaf, the chain verifies
against the roots, not expired) and published. Bad files are logged with the reason, counted in
``istio_agent_num_file_secret_failures_total``, and the last good identity stays in service;
errors reading the directory count in ``istio_agent_num_file_watcher_failures_total``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from meshsec.agent.errors import MountedCertsError
from meshsec.agent.metrics import FILE_SECRET_FAILURES, FILE_WATCHER_FAILURES, AgentMetrics
from meshsec.agent.output import CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE
from meshsec.agent.secret import SecretRejected, WorkloadSecret, build_secret_from_files
from meshsec.agent.store import SecretStore
from meshsec.core.pki import PkiError, parse_private_key_pem
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)

FILES = (CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE)

Signature = tuple[tuple[str, int, int, int], ...]


class MountedCertsWatcher:
    def __init__(
        self,
        directory: Path,
        *,
        store: SecretStore,
        clock: Clock,
        metrics: AgentMetrics,
        poll_interval: float = 1.0,
        debounce: float = 0.1,
    ) -> None:
        self.directory = directory
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._poll_interval = poll_interval
        self._debounce = debounce
        self._last: Signature | None = None
        self._watch_failing = False

    def load(self) -> WorkloadSecret:
        """Read and check the three files once (MountedCertsError / SecretRejected)."""
        data: dict[str, bytes] = {}
        for name in FILES:
            path = self.directory / name
            try:
                data[name] = path.read_bytes()
            except FileNotFoundError:
                raise MountedCertsError(self.directory, f"{name} does not exist") from None
            except OSError as exc:
                raise MountedCertsError(
                    self.directory, f"cannot read {name}: {exc.strerror}"
                ) from None
        source = f"mounted certificates in {self.directory}"
        try:
            key = parse_private_key_pem(data[KEY_FILE], what=KEY_FILE)
        except PkiError as exc:
            raise SecretRejected(source, str(exc)) from None
        return build_secret_from_files(
            data[CERT_CHAIN_FILE],
            key,
            data[ROOT_CERT_FILE],
            now=self._clock.now(),
            source=source,
        )

    def signature(self) -> Signature:
        """What identifies the current file contents without reading them."""
        parts = []
        for name in FILES:
            path = self.directory / name
            real = os.path.realpath(path)
            st = os.stat(real)
            parts.append((real, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(parts)

    def check_once(self) -> bool:
        """Poll step: if the files changed, (re)load and publish; True if published."""
        try:
            signature = self.signature()
        except OSError as exc:
            self._metrics.inc(FILE_WATCHER_FAILURES)
            if not self._watch_failing:
                log.error("cannot watch mounted certificates in %s: %s", self.directory, exc)
            self._watch_failing = True
            return False
        self._watch_failing = False
        if signature == self._last:
            return False
        self._last = signature
        try:
            secret = self.load()
        except (MountedCertsError, SecretRejected) as exc:
            self._metrics.inc(FILE_SECRET_FAILURES)
            current = self._store.snapshot().workload
            keeping = f"keeping serial {current.serial_hex}" if current else "nothing to serve yet"
            log.error("rejected %s; %s", exc, keeping)
            return False
        before = self._store.snapshot().generation
        published = self._store.publish(secret).generation != before
        if published:
            log.info(
                "serving mounted certificate %s serial=%s valid until %s",
                secret.spiffe_id,
                secret.serial_hex,
                secret.not_after.isoformat(),
            )
        return published

    async def run(self) -> None:
        while True:
            try:
                changed = self.signature() != self._last
            except OSError:
                changed = True
            if changed and self._last is not None:
                await self._clock.sleep(self._debounce)  # let a multi-file update settle
            self.check_once()
            await self._clock.sleep(self._poll_interval)
