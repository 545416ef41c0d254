"""The issuance ledger: one SQLite row per certificate issued, in the data directory.

Several worker processes write to the same database (WAL mode). Writes never sit on the request
path: :meth:`Ledger.record` appends to an in-memory queue and a writer thread commits batches
(every ``flush_interval`` or ``batch_size`` rows, and on close), so signing throughput does not
serialize on the database.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from meshsec.ca.errors import LedgerError

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued (
    serial        TEXT PRIMARY KEY,  -- 32 lower-case hex digits
    spiffe_id     TEXT NOT NULL,
    not_before    INTEGER NOT NULL,  -- unix seconds (UTC)
    not_after     INTEGER NOT NULL,
    authenticator TEXT NOT NULL,
    cluster       TEXT NOT NULL,
    issued_at     REAL NOT NULL      -- unix seconds (UTC)
);
CREATE INDEX IF NOT EXISTS issued_by_id ON issued (spiffe_id);
"""
_INSERT = (
    "INSERT OR REPLACE INTO issued (serial, spiffe_id, not_before, not_after, authenticator, "
    "cluster, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class IssuedRecord:
    serial: str  # lower-case hex, 32 digits
    spiffe_id: str
    not_before: datetime
    not_after: datetime
    authenticator: str
    cluster: str
    issued_at: datetime

    def row(self) -> tuple[str | float, ...]:
        return (
            self.serial,
            self.spiffe_id,
            int(self.not_before.timestamp()),
            int(self.not_after.timestamp()),
            self.authenticator,
            self.cluster,
            self.issued_at.timestamp(),
        )

    def to_json(self) -> dict[str, str]:
        return {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_unix(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
    except sqlite3.Error as exc:
        raise LedgerError(path, str(exc)) from None
    return conn


def init_ledger(path: Path) -> None:
    """Create the database and its schema (idempotent; done once by the supervisor)."""
    conn = _connect(path)
    try:
        conn.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise LedgerError(path, str(exc)) from None
    finally:
        conn.close()
    path.chmod(0o600)


class Ledger:
    """Batched writer for one process. ``record`` is cheap and thread-safe."""

    def __init__(self, path: Path, *, flush_interval: float = 0.25, batch_size: int = 1000) -> None:
        init_ledger(path)
        self.path = path
        self._conn = _connect(path)
        self._pending: list[tuple[str | float, ...]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flushed = threading.Condition(self._lock)
        self._written = 0
        self._queued = 0
        self._closed = False
        self._interval = flush_interval
        self._batch = batch_size
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def record(self, record: IssuedRecord) -> None:
        row = record.row()
        with self._lock:
            self._pending.append(row)
            self._queued += 1
            if len(self._pending) >= self._batch:
                self._wake.notify()

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything recorded so far is committed."""
        with self._lock:
            target = self._queued
            self._wake.notify()
            if not self._flushed.wait_for(lambda: self._written >= target, timeout):
                raise LedgerError(self.path, f"flush did not finish within {timeout}s")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
        self._conn.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending and not self._closed:
                    self._wake.wait(self._interval)
                batch, self._pending = self._pending, []
                closed = self._closed
            if batch:
                self._write(batch)
            with self._lock:
                self._written += len(batch)
                self._flushed.notify_all()
            if closed and not batch:
                return

    def _write(self, batch: list[tuple[str | float, ...]]) -> None:
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(_INSERT, batch)
        except sqlite3.Error as exc:
            # The certificates are already in the callers' hands: log loudly, keep serving.
            log.error("ledger write of %d rows failed: %s", len(batch), exc)


def load_issued(path: Path) -> Iterator[IssuedRecord]:
    """Every ledger row, oldest first (``meshsec ca issued``)."""
    if not path.exists():
        raise LedgerError(path, "not found (has `meshsec ca serve` run with this data dir?)")
    conn = _connect(path)
    try:
        rows = conn.execute(
            "SELECT serial, spiffe_id, not_before, not_after, authenticator, cluster, issued_at "
            "FROM issued ORDER BY issued_at, rowid"
        ).fetchall()
    except sqlite3.Error as exc:
        raise LedgerError(path, str(exc)) from None
    finally:
        conn.close()
    for serial, sid, nb, na, authn, cluster, at in rows:
        yield IssuedRecord(
            serial, sid, _from_unix(nb), _from_unix(na), authn, cluster, _from_unix(at)
        )
