"""The directory config source: ordering, versions, watch with a fake clock, broken edits."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from meshsec.config.sources.base import ConfigSource
from meshsec.config.sources.files import DirectorySource, load_snapshot
from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.core.policy.model import MtlsMode
from meshsec.core.policy.snapshot import PolicySnapshot
from tests.fakes.clock import FakeClock


def pa(name: str, mode: str, namespace: str = "foo", extra: str = "") -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {namespace}{extra}}}\n"
        f"spec: {{mtls: {{mode: {mode}}}}}\n"
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_files_sorted_by_path_give_input_order(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", pa("b", "STRICT"))
    write(tmp_path / "a" / "z.yml", pa("a-z", "STRICT") + "---\n" + pa("a-z2", "STRICT"))
    write(
        tmp_path / "c.json",
        '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}}',
    )
    write(tmp_path / "notes.txt", "not yaml: [")
    write(tmp_path / ".hidden" / "x.yaml", pa("hidden", "STRICT"))
    write(tmp_path / "..data" / "y.yaml", pa("configmap-link", "STRICT"))
    snap = load_snapshot([tmp_path])
    assert [p.name for p in snap.peer_authentications] == ["a-z", "a-z2", "b"]
    assert [p.origin.order for p in snap.peer_authentications] == [1, 2, 3]
    assert [n.name for n in snap.namespaces] == ["foo"]
    assert snap.diagnostics == ()


def test_mounted_configmap_layout_is_read_once(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as `..<timestamp>/` + `..data -> ..<timestamp>` + links."""
    write(tmp_path / "..2024_01_01" / "pa.yaml", pa("mounted", "STRICT"))
    (tmp_path / "..data").symlink_to("..2024_01_01")
    (tmp_path / "pa.yaml").symlink_to("..data/pa.yaml")
    write(tmp_path / ".editor-backup.yaml", pa("backup", "STRICT"))
    snap = load_snapshot([tmp_path])
    assert [p.name for p in snap.peer_authentications] == ["mounted"]
    assert snap.peer_authentications[0].origin.file == str(tmp_path / "pa.yaml")


def test_version_is_a_content_digest(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", pa("a", "STRICT"))
    first = load_snapshot([tmp_path])
    assert first.version == load_snapshot([tmp_path]).version
    assert len(first.version) == 16
    write(tmp_path / "a.yaml", pa("a", "DISABLE"))
    assert load_snapshot([tmp_path]).version != first.version


def test_files_and_directories_can_be_mixed(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.yaml", pa("a", "STRICT"))
    write(tmp_path / "single.yaml", pa("s", "STRICT"))
    snap = load_snapshot([tmp_path / "d", tmp_path / "single.yaml"])
    assert [p.name for p in snap.peer_authentications] == ["a", "s"]


@pytest.mark.parametrize(
    ("kind", "code"),
    [("missing", "MS0006"), ("not-utf8", "MS0006"), ("empty-dir", "MS0007")],
)
def test_unreadable_or_empty_input(tmp_path: Path, kind: str, code: str) -> None:
    target = tmp_path / "input.yaml"
    if kind == "not-utf8":
        target.write_bytes(b"\xff\xfe\x00bad")
    elif kind == "empty-dir":
        target.mkdir()
    snap = load_snapshot([target])
    assert [d.code for d in snap.diagnostics] == [code]


def test_permission_denied_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated (chmod 0 does not stop root, and CI runs as root): opening the file fails."""
    target = tmp_path / "secret.yaml"
    write(target, pa("a", "STRICT"))
    write(tmp_path / "ok.yaml", pa("b", "STRICT"))
    real_open = Path.open
    opened: list[Path] = []

    def open_or_deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self)
        if self == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_or_deny)
    snap = load_snapshot([tmp_path])
    assert target in opened  # the source really went through the patched read
    (diag,) = snap.diagnostics
    assert (diag.code, diag.file) == ("MS0006", str(target))
    assert diag.message == "cannot read: Permission denied"
    assert [p.name for p in snap.peer_authentications] == ["b"]  # neighbours still load


def test_deeply_nested_file_is_a_diagnostic_and_neighbours_load(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", pa("a", "STRICT"))
    write(tmp_path / "deep.yaml", "spec: " + "[" * 100_000 + "\n")
    snap = load_snapshot([tmp_path])
    (diag,) = snap.diagnostics
    assert (diag.code, diag.file, diag.line) == ("MS0001", str(tmp_path / "deep.yaml"), 1)
    assert "too deeply nested" in diag.message
    assert [p.name for p in snap.peer_authentications] == ["a"]


def _source(
    tmp_path: Path, clock: FakeClock, rejected: list[tuple[Diagnostic, ...]]
) -> DirectorySource:
    return DirectorySource([tmp_path], clock=clock, interval=5.0, on_rejected=rejected.append)


def test_directory_source_is_a_config_source(tmp_path: Path) -> None:
    source: ConfigSource = DirectorySource([tmp_path], clock=FakeClock())
    assert isinstance(source.snapshot(), PolicySnapshot)


def test_poll_accepts_good_edits_and_rejects_broken_ones(tmp_path: Path) -> None:
    write(tmp_path / "pa.yaml", pa("a", "STRICT"))
    rejected: list[tuple[Diagnostic, ...]] = []
    source = _source(tmp_path, FakeClock(), rejected)
    first = source.snapshot()
    assert first.peer_authentications[0].mtls is MtlsMode.STRICT
    assert source.poll() is False  # unchanged

    write(tmp_path / "pa.yaml", pa("a", "DISABLE"))
    assert source.poll() is True
    second = source.snapshot()
    assert second.peer_authentications[0].mtls is MtlsMode.DISABLE
    assert second.version != first.version

    write(tmp_path / "pa.yaml", pa("a", "STRICTLY"))  # a typo: the policy would vanish
    assert source.poll() is False
    assert source.snapshot() is second  # last good kept
    (diag,) = source.rejected
    assert (diag.code, diag.line, diag.path) == ("MS0103", 4, "spec.mtls.mode")
    assert rejected == [source.rejected]
    assert source.poll() is False  # the same broken content is not re-reported
    assert len(rejected) == 1

    write(tmp_path / "pa.yaml", "apiVersion: [")  # not even YAML
    assert source.poll() is False
    assert source.snapshot() is second
    assert source.rejected[0].code == "MS0001"

    write(tmp_path / "pa.yaml", pa("a", "PERMISSIVE"))
    assert source.poll() is True
    assert source.rejected == ()
    assert source.snapshot().peer_authentications[0].mtls is MtlsMode.PERMISSIVE


def test_errors_present_from_the_start_do_not_block_other_edits(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", pa("bad", "nope"))
    write(tmp_path / "good.yaml", pa("good", "STRICT"))
    source = _source(tmp_path, FakeClock(), [])
    assert [p.name for p in source.snapshot().peer_authentications] == ["good"]
    assert source.snapshot().has_errors
    write(tmp_path / "good.yaml", pa("good", "DISABLE"))
    assert source.poll() is True
    assert source.snapshot().peer_authentications[0].mtls is MtlsMode.DISABLE


def test_deleting_a_file_is_an_edit(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", pa("a", "STRICT"))
    write(tmp_path / "b.yaml", pa("b", "STRICT"))
    source = _source(tmp_path, FakeClock(), [])
    assert len(source.snapshot().peer_authentications) == 2
    (tmp_path / "b.yaml").unlink()
    assert source.poll() is True
    assert [p.name for p in source.snapshot().peer_authentications] == ["a"]


async def test_watch_yields_current_then_each_accepted_edit(tmp_path: Path) -> None:
    write(tmp_path / "pa.yaml", pa("a", "STRICT"))
    clock = FakeClock()
    rejected: list[tuple[Diagnostic, ...]] = []
    source = _source(tmp_path, clock, rejected)
    updates: asyncio.Queue[PolicySnapshot] = asyncio.Queue()

    async def consume() -> None:
        async for snapshot in source.watch():
            await updates.put(snapshot)

    task = asyncio.create_task(consume())
    try:
        first = await asyncio.wait_for(updates.get(), 5)
        assert first.peer_authentications[0].mtls is MtlsMode.STRICT

        write(tmp_path / "pa.yaml", pa("a", "DISABLE"))
        await clock.wait_for_sleepers(1)
        clock.advance(5)
        second = await asyncio.wait_for(updates.get(), 5)
        assert second.peer_authentications[0].mtls is MtlsMode.DISABLE

        write(tmp_path / "pa.yaml", pa("a", "broken"))
        await clock.wait_for_sleepers(1)
        clock.advance(5)
        await clock.wait_for_sleepers(1)  # polled, rejected, sleeping again
        assert updates.empty()
        assert len(rejected) == 1
        assert source.snapshot() is second

        write(tmp_path / "pa.yaml", pa("a", "PERMISSIVE"))
        clock.advance(5)
        third = await asyncio.wait_for(updates.get(), 5)
        assert third.peer_authentications[0].mtls is MtlsMode.PERMISSIVE
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = len(pa("ok", "STRICT")) + 10
    monkeypatch.setattr("meshsec.config.sources.files.MAX_FILE_BYTES", limit)
    write(tmp_path / "big.yaml", pa("big", "STRICT") + "#" * limit)
    write(tmp_path / "ok.yaml", pa("ok", "STRICT"))
    snap = load_snapshot([tmp_path])
    assert [p.name for p in snap.peer_authentications] == ["ok"]
    (diag,) = snap.diagnostics
    assert diag.code == "MS0006"
    assert "larger than" in diag.message


def test_removing_the_whole_directory_keeps_the_last_good_snapshot(tmp_path: Path) -> None:
    config = tmp_path / "config"
    write(config / "pa.yaml", pa("a", "STRICT"))
    source = _source(config, FakeClock(), [])
    good = source.snapshot()
    (config / "pa.yaml").unlink()
    config.rmdir()
    assert source.poll() is False
    assert source.snapshot() is good
    assert [d.code for d in source.rejected] == ["MS0006"]
