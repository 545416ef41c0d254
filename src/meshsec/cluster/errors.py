"""Errors of the local cluster stand-in (token issuer, cluster directories)."""

from __future__ import annotations

from pathlib import Path

from meshsec.errors import MeshsecError


class ClusterError(MeshsecError):
    """A cluster directory cannot be created, read or used."""


class ClusterDirError(ClusterError):
    """A cluster directory is missing a file or holds something unusable; names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cluster directory file {path}: {reason}")
