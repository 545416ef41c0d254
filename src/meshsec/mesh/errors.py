"""Errors of the local-mesh runtime (``meshsec up``)."""

from __future__ import annotations

from collections.abc import Sequence

from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.errors import MeshsecError


class MeshError(MeshsecError):
    """Base of the runtime's errors."""


class ManifestError(MeshError):
    """The mesh directory has errors; ``diagnostics`` lists every one of them."""

    def __init__(self, directory: str, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        lines = "\n".join(f"  {d}" for d in self.diagnostics)
        super().__init__(f"{directory}: {len(self.diagnostics)} error(s)\n{lines}")


class StartupError(MeshError):
    """A component failed to start or died: names it and carries its log tail."""

    def __init__(self, owner: str, what: str, log_tail: str) -> None:
        self.owner = owner
        self.what = what
        self.log_tail = log_tail
        super().__init__(f"{owner}: {what}")


class MeshRunningError(MeshError):
    """Another ``meshsec up`` is running on the same directory."""


__all__ = ["ManifestError", "MeshError", "MeshRunningError", "StartupError"]
