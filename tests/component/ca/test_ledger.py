"""The issuance ledger: batched writes, several writers (processes) on one WAL database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshsec.ca.errors import LedgerError
from meshsec.ca.ledger import IssuedRecord, Ledger, load_issued

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _record(i: int, writer: int = 0) -> IssuedRecord:
    return IssuedRecord(
        serial=f"{writer:04x}{i:028x}",
        spiffe_id=f"spiffe://cluster.local/ns/default/sa/w{writer}",
        not_before=NOW - timedelta(minutes=2),
        not_after=NOW + timedelta(hours=24),
        authenticator="KubeJWTAuthenticator",
        cluster="cluster1",
        issued_at=NOW + timedelta(microseconds=i),
    )


def test_batched_writes_from_threads_and_two_ledgers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledgers = [Ledger(path, batch_window=10.0, batch_size=50) for _ in range(2)]

    def write(ledger: Ledger, writer: int) -> None:
        for i in range(300):
            ledger.record(_record(i, writer))

    threads = [threading.Thread(target=write, args=(ledgers[w % 2], w)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ledger in ledgers:
        ledger.flush()
    records = list(load_issued(path))
    assert len(records) == 1200
    assert len({r.serial for r in records}) == 1200
    assert records[0].not_after == NOW + timedelta(hours=24)
    assert records[0].to_json()["not_after"] == "2026-06-02T12:00:00Z"
    for ledger in ledgers:
        ledger.close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_close_flushes_pending_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, batch_window=60.0, batch_size=10_000)
    ledger.record(_record(1))
    ledger.close()
    assert [r.serial for r in load_issued(path)] == [_record(1).serial]


def test_missing_ledger_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="meshsec ca serve"):
        list(load_issued(tmp_path / "ledger.sqlite"))


def test_flush_ends_the_batch_window(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, batch_window=60.0, batch_size=10_000)
    ledger.record(_record(1))
    ledger.flush(timeout=5.0)  # must not wait for the 60 s window to run out
    assert [r.serial for r in load_issued(path)] == [_record(1).serial]
    ledger.close()
