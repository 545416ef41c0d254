"""Policy from files: directories (searched recursively) and single files of YAML.

* Files ending ``.yaml``, ``.yml`` or ``.json`` are read; hidden files and directories (names
  starting with ``.``, e.g. the ``..data`` links of a mounted ConfigMap) are skipped.
* Input order is the files sorted by path, then documents in file order; it breaks ties between
  objects with equal ``creationTimestamp``.
* ``version`` of a snapshot is a digest of the file names and contents.

:class:`DirectorySource` watches by polling with an injected :class:`Clock` (tests drive it with
a fake clock). An edit that introduces new errors is *rejected*: the last good snapshot stays
current and the edit's diagnostics are kept in :attr:`DirectorySource.rejected` and logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshsec.config.sources.yaml_lines import parse_yaml_text
from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.document import SourceDocument
from meshsec.core.policy.parse import parse_documents
from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 32 * 1024 * 1024
"""Bigger files are refused (MS0006): policy files are small, and a watched directory must not
be a way to make the control plane read without bound."""


@dataclass(frozen=True)
class FileContent:
    """One input file read from disk (``text`` is None when it could not be read)."""

    path: str
    data: bytes | None


def _walk(root: Path, problems: list[Diagnostic]) -> list[Path]:
    """Config files under ``root``; hidden directories are not entered (symlinked files are
    followed, symlinked directories are not, so a mount's ``..data`` link is not read twice)."""
    found: list[Path] = []

    def on_error(exc: OSError) -> None:
        problems.append(_unreadable(str(exc.filename or root), exc))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            candidate = Path(dirpath) / name
            if not name.startswith(".") and candidate.suffix in SUFFIXES and candidate.is_file():
                found.append(candidate)
    return found


def _list_files(paths: Sequence[Path | str]) -> tuple[list[Path], list[Diagnostic]]:
    found: list[Path] = []
    problems: list[Diagnostic] = []
    for given in paths:
        path = Path(given)
        try:
            if path.is_dir():
                found.extend(_walk(path, problems))
            elif path.is_file():
                found.append(path)
            else:
                problems.append(dg.make(dg.UNREADABLE, "no such file or directory", file=str(path)))
        except OSError as exc:
            problems.append(_unreadable(str(path), exc))
    return sorted(set(found)), problems


def _unreadable(path: str, exc: OSError) -> Diagnostic:
    return dg.make(dg.UNREADABLE, f"cannot read: {exc.strerror or exc}", file=path)


def read_files(paths: Sequence[Path | str]) -> tuple[list[FileContent], list[Diagnostic]]:
    """Read every config file under ``paths`` (files sorted by path)."""
    files, problems = _list_files(paths)
    contents: list[FileContent] = []
    for path in files:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                problems.append(
                    dg.make(
                        dg.UNREADABLE,
                        f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not read",
                        file=str(path),
                    )
                )
                contents.append(FileContent(str(path), None))
                continue
            contents.append(FileContent(str(path), data))
        except OSError as exc:
            problems.append(_unreadable(str(path), exc))
            contents.append(FileContent(str(path), None))
    return contents, problems


def digest(contents: Iterable[FileContent]) -> str:
    """A content version: sha256 over names and bytes, first 16 hex digits."""
    h = hashlib.sha256()
    for item in contents:
        h.update(item.path.encode() + b"\0")
        h.update(item.data if item.data is not None else b"\xff<unreadable>")
        h.update(b"\0")
    return h.hexdigest()[:16]


def build_snapshot(
    contents: Sequence[FileContent], problems: Sequence[Diagnostic] = ()
) -> PolicySnapshot:
    """Parse already-read files into a snapshot (no I/O)."""
    documents: list[SourceDocument] = []
    diags: list[Diagnostic] = list(problems)
    for item in contents:
        if item.data is None:
            continue
        try:
            text = item.data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            diags.append(
                dg.make(dg.UNREADABLE, f"not UTF-8 text (byte {exc.start})", file=item.path)
            )
            continue
        loaded = parse_yaml_text(text, file=item.path)
        documents.extend(loaded.documents)
        diags.extend(loaded.diagnostics)
    if not contents and not problems:
        diags.append(dg.make(dg.NO_INPUT, "no .yaml, .yml or .json files found"))
    return parse_documents(
        documents, version=digest(contents), yaml_parser=parse_yaml_text, diagnostics=diags
    )


def load_snapshot(paths: Sequence[Path | str]) -> PolicySnapshot:
    """Read and parse every config file under ``paths`` into one snapshot."""
    contents, problems = read_files(paths)
    return build_snapshot(contents, problems)


def _error_keys(diags: Iterable[Diagnostic]) -> set[tuple[str, str, str, str, str]]:
    """Errors compared across edits, ignoring line numbers (edits shift lines)."""
    return {
        (d.code, d.file, d.resource, d.path, d.message) for d in diags if d.level is Level.ERROR
    }


class DirectorySource:
    """A :class:`~meshsec.config.sources.base.ConfigSource` over YAML files, polled.

    The first load is always accepted (it is all there is). Later loads are accepted unless
    they add an error that the current snapshot does not already have; a rejected load leaves
    :meth:`snapshot` unchanged and its diagnostics in :attr:`rejected` (cleared by the next
    accepted load).
    """

    def __init__(
        self,
        paths: Sequence[Path | str],
        *,
        clock: Clock,
        interval: float = 2.0,
        on_rejected: Callable[[tuple[Diagnostic, ...]], None] | None = None,
    ) -> None:
        self._paths = tuple(paths)
        self._clock = clock
        self._interval = interval
        self._on_rejected = on_rejected
        self._rejected: tuple[Diagnostic, ...] = ()
        self._rejected_version = ""
        self._current: PolicySnapshot | None = None

    def snapshot(self) -> PolicySnapshot:
        """The accepted snapshot; the first call reads the files."""
        if self._current is None:
            self._current = load_snapshot(self._paths)
        return self._current

    @property
    def rejected(self) -> tuple[Diagnostic, ...]:
        """Diagnostics of the latest rejected edit (empty when the files are accepted)."""
        return self._rejected

    def poll(self) -> bool:
        """Re-read the files; True when a new snapshot was accepted."""
        current = self.snapshot()
        contents, problems = read_files(self._paths)
        version = digest(contents)
        if version in (current.version, self._rejected_version):
            return False
        candidate = build_snapshot(contents, problems)
        new_errors = _error_keys(candidate.diagnostics) - _error_keys(current.diagnostics)
        if new_errors:
            self._rejected_version = version
            self._rejected = tuple(
                d
                for d in candidate.diagnostics
                if (d.code, d.file, d.resource, d.path, d.message) in new_errors
            )
            log.warning(
                "config edit rejected, keeping version %s: %d new error(s); first: %s",
                current.version,
                len(self._rejected),
                self._rejected[0],
            )
            if self._on_rejected is not None:
                self._on_rejected(self._rejected)
            return False
        self._current = candidate
        self._rejected = ()
        self._rejected_version = ""
        log.info("config version %s accepted", version)
        return True

    async def watch(self) -> AsyncIterator[PolicySnapshot]:
        yield self.snapshot()
        while True:
            await self._clock.sleep(self._interval)
            if self.poll():
                yield self.snapshot()
