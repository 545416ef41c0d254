"""The secret cache every consumer reads: one workload identity plus the trust bundle.

Producers (the CA rotator or the mounted-files watcher) ``publish``; consumers (SDS streams,
Workload API streams, the file writer, the status server) read :meth:`SecretStore.snapshot` and
wait on :meth:`SecretStore.wait_for_change`. Each resource name has its own version, bumped only
when its content changes, so a rotation that keeps the same roots does not push ``ROOTCA``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from meshsec.agent.secret import DEFAULT, ROOTCA, WorkloadSecret
from meshsec.core.pki import TrustBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    generation: int
    workload: WorkloadSecret | None
    roots: TrustBundle | None
    versions: dict[str, int] = field(default_factory=dict)
    changed_at: float = 0.0  # monotonic time of the publish (for push latency)

    def valid_workload(self, now: datetime) -> WorkloadSecret | None:
        """The workload secret if it is currently valid — never an expired one."""
        if self.workload is not None and self.workload.is_valid(now):
            return self.workload
        return None


Listener = Callable[[Snapshot], None]


class SecretStore:
    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._snapshot = Snapshot(0, None, None, {DEFAULT: 0, ROOTCA: 0})
        self._event = asyncio.Event()
        self._listeners: list[Listener] = []

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def add_listener(self, listener: Listener) -> None:
        """Called synchronously after each publish that changed something."""
        self._listeners.append(listener)

    def publish(self, workload: WorkloadSecret) -> Snapshot:
        """Store a new identity; the roots are those that came with it."""
        old = self._snapshot
        versions = dict(old.versions)
        changed = False
        if old.workload is None or _workload_key(old.workload) != _workload_key(workload):
            versions[DEFAULT] += 1
            changed = True
        if old.roots is None or old.roots.to_pem() != workload.roots.to_pem():
            versions[ROOTCA] += 1
            changed = True
            if old.roots is not None:
                log.info("trust bundle changed: %d root(s)", len(workload.roots.certificates))
        if not changed:
            return old
        snap = Snapshot(old.generation + 1, workload, workload.roots, versions, self._monotonic())
        self._snapshot = snap
        event, self._event = self._event, asyncio.Event()
        event.set()
        for listener in self._listeners:
            listener(snap)
        return snap

    async def wait_for_change(self, seen_generation: int) -> Snapshot:
        """The first snapshot newer than ``seen_generation`` (at once if there is one)."""
        while self._snapshot.generation <= seen_generation:
            await self._event.wait()
        return self._snapshot


def _workload_key(secret: WorkloadSecret) -> tuple[bytes, bytes]:
    return secret.cert_chain_pem, secret.key_pem
