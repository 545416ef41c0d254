"""The issuance ledger: one SQLite row per certificate issued, in the data directory.

Several worker processes write to the same database (WAL mode). DESIGN's order is sign → record
→ reply, so a row is durable before its certificate leaves the CA: :meth:`Ledger.record` queues
the row and returns a future that the writer thread resolves when the row's batch has COMMITted
(or fails with :class:`LedgerError`). The writer does group commit: it takes whatever is queued,
waits at most ``batch_window`` for more (or until ``batch_size`` rows), commits them in one
transaction and resolves all their futures, so
concurrent requests share one commit and throughput does not serialize on the database.

The CA's workers do not use this thread writer: they commit on their event loop
(:mod:`meshsec.ca.loop_ledger`, same schema and durability). :class:`Ledger` records the
``istio.<sa>`` certificates ``meshsec up`` signs for mounted-certificate workloads;
:func:`load_issued` is the reader (``meshsec ca issued``).

Durability: WAL with ``synchronous=NORMAL``. A committed row survives the CA process being killed
(SIGKILL, OOM) because the WAL write has reached the OS; only an OS crash or power loss can drop
the last commits before a checkpoint. ``synchronous=FULL`` (an fsync per commit) would cover that
too and cost ~15% of signing throughput (bench/ca_throughput.py: 2,330 vs 2,690 certs/s).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

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
INSERT_ROW = (
    "INSERT OR REPLACE INTO issued (serial, spiffe_id, not_before, not_after, authenticator, "
    "cluster, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


Row: TypeAlias = tuple[str | float, ...]


@dataclass(frozen=True)
class IssuedRecord:
    serial: str  # lower-case hex, 32 digits
    spiffe_id: str
    not_before: datetime
    not_after: datetime
    authenticator: str
    cluster: str
    issued_at: datetime

    def row(self) -> Row:
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


def connect_ledger(path: Path, *, busy_timeout: float = 30.0) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=NORMAL`` (see the module's durability note)."""
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    except sqlite3.Error as exc:
        raise LedgerError(path, str(exc)) from None
    return conn


def init_ledger(path: Path) -> None:
    """Create the database and its schema (idempotent; done once by the supervisor)."""
    conn = connect_ledger(path)
    try:
        conn.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise LedgerError(path, str(exc)) from None
    finally:
        conn.close()
    path.chmod(0o600)


class Ledger:
    """Group-committing writer for one process. ``record`` is cheap and thread-safe."""

    def __init__(self, path: Path, *, batch_window: float = 0.002, batch_size: int = 256) -> None:
        init_ledger(path)
        self.path = path
        self._conn = connect_ledger(path)
        self._pending: list[tuple[Row, Future[None]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flushed = threading.Condition(self._lock)
        self._written = 0
        self._queued = 0
        self._closed = False
        self._flushing = 0  # threads in flush(): no batch window while they wait
        self._window = batch_window
        self._batch = batch_size
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def record(self, record: IssuedRecord) -> Future[None]:
        """Queue one row; the future resolves once it is committed (LedgerError if not)."""
        done: Future[None] = Future()
        row = record.row()
        with self._lock:
            if self._closed:
                raise LedgerError(self.path, "the ledger is closed")
            self._pending.append((row, done))
            self._queued += 1
            if len(self._pending) in (1, self._batch):
                self._wake.notify()
        return done

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything recorded so far is committed (or has failed)."""
        with self._lock:
            target = self._queued
            self._flushing += 1  # ends the writer's batch window now
            self._wake.notify()
            try:
                if not self._flushed.wait_for(lambda: self._written >= target, timeout):
                    raise LedgerError(self.path, f"flush did not finish within {timeout}s")
            finally:
                self._flushing -= 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
        self._conn.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._closed:  # group commit: let concurrent requests join the batch
                    self._wake.wait_for(
                        lambda: len(self._pending) >= self._batch or self._closed or self._flushing,
                        self._window,
                    )
                batch, self._pending = self._pending, []
                closed = self._closed
            if batch:
                self._commit(batch)
            with self._lock:
                self._written += len(batch)
                self._flushed.notify_all()
            if closed and not batch:
                return

    def _commit(self, batch: list[tuple[Row, Future[None]]]) -> None:
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(INSERT_ROW, [row for row, _ in batch])
        except sqlite3.Error as exc:
            # Nobody has these certificates yet: each waiting request answers INTERNAL.
            log.error("ledger write of %d rows failed: %s", len(batch), exc)
            error = LedgerError(self.path, f"write failed: {exc}")
            for _, done in batch:
                _settle(done, error)
            return
        for _, done in batch:
            _settle(done, None)


def _settle(done: Future[None], error: LedgerError | None) -> None:
    """Resolve one waiter; one that gave up (its call was cancelled) is simply skipped."""
    try:
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
    except InvalidStateError:
        pass


def load_issued(path: Path) -> Iterator[IssuedRecord]:
    """Every ledger row, oldest first (``meshsec ca issued``)."""
    if not path.exists():
        raise LedgerError(path, "not found (has `meshsec ca serve` run with this data dir?)")
    conn = connect_ledger(path)
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
