"""Atomic file output: every file meshsec writes (keys 0600, certs, bundles) goes through here.

``write_atomic`` writes a temp file in the same directory, sets its mode before any byte is
written, fsyncs it, renames it over the target and fsyncs the directory, so a reader sees the old
content or the new, never half a file, and a key is never briefly world-readable.
``write_files_atomic`` writes a set of files all-or-nothing (as far as a POSIX filesystem allows):
it checks every target first and removes what it created if a later write fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from meshsec.errors import MeshsecError

KEY_MODE = 0o600
PUBLIC_MODE = 0o644


class FileOutputError(MeshsecError):
    """A file could not be written (or would have overwritten something without --force)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class FileContent:
    data: bytes
    mode: int = PUBLIC_MODE


def write_atomic(
    path: str | os.PathLike[str], data: bytes, mode: int = KEY_MODE, *, overwrite: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically, with permission bits ``mode`` (default 0600)."""
    target = Path(path)
    if not overwrite and target.exists():
        raise FileOutputError(target, "already exists (use --force to overwrite)")
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = _create_temp(directory, target.name)
    except OSError as exc:
        raise FileOutputError(
            target, f"cannot create a file in {directory}: {exc.strerror}"
        ) from None
    try:
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb", closefd=True) as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        os.replace(tmp_name, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise FileOutputError(target, f"cannot write: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(directory)


def _create_temp(directory: Path, name: str) -> tuple[int, str]:
    """A new ``.<name>.<random>.tmp`` in ``directory``, opened exclusively with mode 0600.

    ``tempfile.mkstemp`` does the same but imports ``random`` and friends (0.6 MB of RSS in every
    long-running process that writes a file, the node agent among them).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp_name = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp_name, flags, 0o600), tmp_name
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name for {name} in {directory}")


def write_files_atomic(
    directory: str | os.PathLike[str],
    files: Mapping[str, FileContent],
    *,
    overwrite: bool = False,
    protect: frozenset[str] | None = None,
) -> list[Path]:
    """Write several files into ``directory`` (created 0755 if missing), all or nothing.

    Without ``overwrite``, existing files named in ``protect`` (default: every file) make the call
    fail before anything is written. Returns the written paths.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise FileOutputError(root, "exists and is not a directory")
    guarded = set(files) if protect is None else set(protect) & set(files)
    if not overwrite:
        existing = sorted(name for name in guarded if (root / name).exists())
        if existing:
            names = ", ".join(existing)
            raise FileOutputError(root, f"would overwrite {names} (use --force to overwrite)")
    created_dir = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileOutputError(root, f"cannot create directory: {exc.strerror}") from None
    written: list[Path] = []
    new_files: list[Path] = []
    try:
        for name, content in files.items():
            target = root / name
            existed = target.exists()
            write_atomic(target, content.data, content.mode)
            written.append(target)
            if not existed:
                new_files.append(target)
    except BaseException:
        for target in new_files:
            with contextlib.suppress(OSError):
                target.unlink()
        if created_dir:
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    return written


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
