"""The CA worker's event-loop ledger writer: group commit, reply only after COMMIT, failures."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshsec.ca import loop_ledger
from meshsec.ca.errors import LedgerError
from meshsec.ca.ledger import IssuedRecord, load_issued
from meshsec.ca.loop_ledger import LoopLedger

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _record(i: int) -> IssuedRecord:
    return IssuedRecord(
        serial=f"{i:032x}",
        spiffe_id="spiffe://cluster.local/ns/default/sa/sleep",
        not_before=NOW - timedelta(minutes=2),
        not_after=NOW + timedelta(hours=24),
        authenticator="KubeJWTAuthenticator",
        cluster="cluster1",
        issued_at=NOW + timedelta(microseconds=i),
    )


def _committed(path: Path) -> set[str]:
    """What another process sees now (a separate connection, no flush)."""
    conn = sqlite3.connect(path)
    try:
        return {serial for (serial,) in conn.execute("SELECT serial FROM issued")}
    finally:
        conn.close()


async def test_each_commit_returns_after_its_row_is_visible_to_other_connections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = LoopLedger(path, batch_window=0.001)
    seen: list[bool] = []

    async def issue(i: int) -> None:
        await ledger.commit(_record(i))
        seen.append(f"{i:032x}" in _committed(path))

    await asyncio.gather(*(issue(i) for i in range(40)))
    await ledger.close()
    assert seen == [True] * 40
    assert len(list(load_issued(path))) == 40
    assert path.stat().st_mode & 0o777 == 0o600


async def test_concurrent_commits_share_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = LoopLedger(tmp_path / "ledger.sqlite", batch_window=0.001)
    batches: list[int] = []
    write = ledger._write
    monkeypatch.setattr(ledger, "_write", lambda rows: (batches.append(len(rows)), write(rows)))
    await ledger.commit(_record(0))  # alone: written at once
    await asyncio.gather(*(ledger.commit(_record(i)) for i in range(1, 51)))
    await ledger.close()
    assert batches[0] == 1
    assert sum(batches) == 51
    assert len(batches) <= 3  # 50 overlapping requests: one transaction (two if split by timing)


async def test_failed_write_fails_every_waiter_and_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = LoopLedger(path)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON issued BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    conn.commit()
    conn.close()
    results = await asyncio.gather(
        *(ledger.commit(_record(i)) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, LedgerError) for r in results), results
    assert "write failed" in str(results[0])
    await ledger.close()
    assert _committed(path) == set()


async def test_another_writer_holding_the_lock_delays_but_does_not_block_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = LoopLedger(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker mid-transaction
    task = asyncio.create_task(ledger.commit(_record(1)))
    done, _ = await asyncio.wait({task}, timeout=0.05)  # the loop keeps running meanwhile
    assert not done
    assert _committed(path) == set()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(task, timeout=10)
    assert _committed(path) == {f"{1:032x}"}
    await ledger.close()


async def test_a_lock_held_beyond_max_wait_fails_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = LoopLedger(path, max_wait=0.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(LedgerError, match="locked"):
        await ledger.commit(_record(1))
    other.execute("ROLLBACK")
    other.close()
    await ledger.close()
    assert _committed(path) == set()


async def test_a_cancelled_callers_row_is_still_written(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = LoopLedger(path, batch_window=60.0)
    await asyncio.gather(ledger.commit(_record(0)), ledger.commit(_record(1)))  # window on
    task = asyncio.create_task(ledger.commit(_record(2)))
    await asyncio.sleep(0)  # queued, waiting for the window
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ledger.close()  # writes what is queued
    assert f"{2:032x}" in _committed(path)


async def test_closed_ledger_refuses_rows(tmp_path: Path) -> None:
    ledger = LoopLedger(tmp_path / "ledger.sqlite")
    await ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        await ledger.commit(_record(1))


async def test_checkpoints_run_off_the_loop_every_checkpoint_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = loop_ledger.checkpoint_ledger

    def checkpoint(path: Path) -> None:
        calls.append(path)
        real(path)

    monkeypatch.setattr(loop_ledger, "checkpoint_ledger", checkpoint)
    path = tmp_path / "ledger.sqlite"
    ledger = LoopLedger(path, checkpoint_pages=10)
    for i in range(4):  # 4 transactions of one row: ~16 pages
        await ledger.commit(_record(i))
    await ledger.close()
    assert calls == [path]


async def test_a_quiet_ca_writes_at_once_and_a_busy_one_waits_for_the_window(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    path = tmp_path / "ledger.sqlite"
    ledger = LoopLedger(path, batch_window=60.0, monotonic=lambda: now[0])
    await asyncio.wait_for(ledger.commit(_record(1)), timeout=10)  # first ever: no window
    now[0] += 120.0  # the next request comes long after the last write: still no window
    await asyncio.wait_for(ledger.commit(_record(2)), timeout=10)
    now[0] += 1.0  # within a window of the last write: requests overlap, wait for company
    task = asyncio.create_task(ledger.commit(_record(3)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    assert f"{3:032x}" not in _committed(path)
    ledger.flush()
    await asyncio.wait_for(task, timeout=10)
    await ledger.close()
    assert _committed(path) == {f"{i:032x}" for i in (1, 2, 3)}


async def test_an_unexpected_failure_fails_the_waiters_instead_of_hanging_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = LoopLedger(tmp_path / "ledger.sqlite")

    def broken(rows: object) -> None:
        raise MemoryError("no room")

    monkeypatch.setattr(ledger, "_write", broken)
    with pytest.raises(LedgerError, match="no room"):
        await asyncio.wait_for(ledger.commit(_record(1)), timeout=10)
    monkeypatch.undo()
    await ledger.close()


def test_a_worker_opening_the_ledger_waits_while_another_sets_it_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CA's workers open one new database at once; the first to switch it to WAL holds it
    exclusively for that moment. The others wait for it instead of failing 'database is
    locked' (which once stopped `meshsec demo` from starting)."""
    path = tmp_path / "ledger.sqlite"
    other = sqlite3.connect(path, isolation_level=None)  # another worker, mid set-up
    other.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(loop_ledger, "init_ledger", lambda _path: None)  # only the open races
    opened: list[LoopLedger] = []
    failed: list[BaseException] = []

    def open_ledger() -> None:
        try:
            opened.append(LoopLedger(path))
        except BaseException as exc:  # reported to the test below
            failed.append(exc)

    thread = threading.Thread(target=open_ledger)
    thread.start()
    thread.join(0.5)  # the lock is held: the worker waits (it used to fail at once)
    assert thread.is_alive(), failed
    other.execute("COMMIT")
    other.close()
    thread.join(30)
    assert not failed
    assert len(opened) == 1
    asyncio.run(opened[0].close())  # its flushes never wait: the tests above hold the lock
