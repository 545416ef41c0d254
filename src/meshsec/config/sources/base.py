"""The ConfigSource protocol: what a consumer of mesh policy needs from wherever it lives.

A source hands out immutable :class:`~meshsec.core.policy.snapshot.PolicySnapshot` values and,
while watched, yields a new one each time the accepted configuration changes. Consumers swap
snapshots atomically; they never see a half-applied edit. Implementations: the YAML directory
source (``files.DirectorySource``); a Kubernetes list/watch source can follow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from meshsec.core.policy.snapshot import PolicySnapshot


class ConfigSource(Protocol):
    def snapshot(self) -> PolicySnapshot:
        """The currently accepted snapshot (never a broken one once a good one exists)."""
        ...

    def watch(self) -> AsyncIterator[PolicySnapshot]:
        """Yield the current snapshot, then each newly accepted snapshot, until cancelled."""
        ...
