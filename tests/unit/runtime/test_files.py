"""Atomic file output: modes, no overwrite without force, all-or-nothing sets of files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from meshsec.runtime.files import (
    FileContent,
    FileOutputError,
    write_atomic,
    write_files_atomic,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_default_mode_is_0600(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    write_atomic(target, b"secret")
    assert target.read_bytes() == b"secret"
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temp file left behind


def test_write_atomic_replaces_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "cert.pem"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    write_atomic(target, b"new", 0o644)
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o644


def test_write_atomic_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"old")
    with pytest.raises(FileOutputError, match="already exists"):
        write_atomic(target, b"new", overwrite=False)
    assert target.read_bytes() == b"old"


def test_write_atomic_missing_directory_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileOutputError, match="cannot create a file in"):
        write_atomic(tmp_path / "nope" / "key.pem", b"x")


def test_write_files_atomic_all_or_nothing_on_existing(tmp_path: Path) -> None:
    (tmp_path / "b.pem").write_bytes(b"keep")
    files = {"a.pem": FileContent(b"A"), "b.pem": FileContent(b"B", 0o600)}
    with pytest.raises(FileOutputError, match=r"would overwrite b\.pem"):
        write_files_atomic(tmp_path, files)
    assert not (tmp_path / "a.pem").exists()
    assert (tmp_path / "b.pem").read_bytes() == b"keep"
    written = write_files_atomic(tmp_path, files, overwrite=True)
    assert [p.name for p in written] == ["a.pem", "b.pem"]
    assert _mode(tmp_path / "b.pem") == 0o600
    assert _mode(tmp_path / "a.pem") == 0o644


def test_write_files_atomic_protect_subset(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_bytes(b"old")
    files = {"cert.pem": FileContent(b"new"), "key.pem": FileContent(b"k", 0o600)}
    write_files_atomic(tmp_path, files, protect=frozenset({"key.pem"}))
    assert (tmp_path / "cert.pem").read_bytes() == b"new"
    with pytest.raises(FileOutputError, match=r"would overwrite key\.pem"):
        write_files_atomic(tmp_path, files, protect=frozenset({"key.pem"}))


def test_write_files_atomic_rolls_back_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "new-dir"
    real = write_atomic
    calls: list[str] = []

    def failing(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise FileOutputError(path, "disk full")
        real(path, data, mode)

    monkeypatch.setattr("meshsec.runtime.files.write_atomic", failing)
    with pytest.raises(FileOutputError, match="disk full"):
        write_files_atomic(out, {"a": FileContent(b"1"), "b": FileContent(b"2")})
    assert calls == ["a", "b"]
    assert not out.exists()


def test_write_files_atomic_target_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    with pytest.raises(FileOutputError, match="not a directory"):
        write_files_atomic(target, {"a": FileContent(b"1")})
