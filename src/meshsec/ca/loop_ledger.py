"""The CA worker's ledger writer: group commit on the event loop, no thread hop per certificate.

The CA's order is sign → record → reply: a request gets its chain only once its ledger row has
COMMITted (WAL, ``synchronous=NORMAL``, the durability of :mod:`meshsec.ca.ledger`). A writer
thread (:class:`meshsec.ca.ledger.Ledger`) costs every request two GIL hand-offs between the
event loop and the thread, which measured ~70 µs of CPU per certificate and kept batches at ~2
rows. Here:

* :meth:`LoopLedger.commit` appends the row and the caller's future to the open batch; the
  first row of a batch schedules its flush ``batch_window`` later (or at once when
  ``batch_size`` rows are waiting), so every request the loop handles meanwhile shares the
  transaction. grpc.aio hands the loop about one request per iteration, so flushing at the end
  of the iteration gave 1.2 rows per transaction and ~100 µs of loop time per row under load;
  a 5 ms window gives ~8 and ~30 µs. The window is used only while requests keep coming (the
  batch's first row arrives within a window of the last write); a request to a quiet CA is
  written at the end of the loop's turn, without delay. (Deciding by the last batch's size
  instead locked in the slow mode: at 1.2 rows per batch most batches have one row);
* the flush runs on the loop: ``BEGIN IMMEDIATE`` without waiting (``busy_timeout`` 0), the
  batch's INSERTs, COMMIT, then every waiter is resolved (a transaction takes a few hundred µs
  of the loop, like signing one certificate does);
* when another process (the other workers share the database) holds the write lock, the flush
  is retried shortly after instead of blocking the loop; a batch that cannot be written for
  ``max_wait`` seconds, or any other SQLite error, fails its waiters with :class:`LedgerError`
  (the service answers INTERNAL and hands nothing out);
* WAL checkpoints (which fsync) are kept off the loop: automatic checkpoints are off for this
  connection and a PASSIVE checkpoint runs in a worker thread every ``checkpoint_pages`` WAL
  pages written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from meshsec.ca.errors import LedgerError
from meshsec.ca.ledger import INSERT_ROW, IssuedRecord, Row, connect_ledger, init_ledger

log = logging.getLogger(__name__)

RETRY_DELAY = 0.0005  # seconds between attempts while another process holds the write lock


class LoopLedger:
    """Group-committing ledger writer for one event loop (a CA worker)."""

    def __init__(
        self,
        path: Path,
        *,
        batch_window: float = 0.005,
        batch_size: int = 256,
        max_wait: float = 30.0,
        checkpoint_pages: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        init_ledger(path)
        self.path = path
        # set-up waits for the lock like any connection: the other workers open the same file
        # at the same moment, and the first to switch it to WAL holds it exclusively meanwhile
        self._conn = connect_ledger(path)
        try:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn.execute("PRAGMA cache_size=-16384")  # KiB: the serial index's leaves
            self._conn.execute("PRAGMA mmap_size=268435456")  # reads without a syscall each
            self._conn.execute("PRAGMA busy_timeout=0")  # from now on the loop never waits
        except sqlite3.Error as exc:
            self._conn.close()
            raise LedgerError(path, str(exc)) from None
        self._window = batch_window
        self._batch_size = batch_size
        self._max_wait = max_wait
        self._checkpoint_pages = checkpoint_pages
        self._monotonic = monotonic
        self._rows: list[Row] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._batch_started = 0.0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_write = -float("inf")  # monotonic time of the last transaction
        self._pages = 0  # WAL pages written since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None
        self._closed = False

    async def commit(self, record: IssuedRecord) -> None:
        """Return once ``record``'s row is committed; LedgerError if it could not be."""
        if self._closed:
            raise LedgerError(self.path, "the ledger is closed")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if not self._rows:
            self._batch_started = self._monotonic()
        self._rows.append(record.row())
        self._waiters.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            # Rows arriving within a window of the last write: requests overlap, so wait for
            # the ones behind this one. Otherwise (a quiet CA) write at the end of this turn.
            busy = self._batch_started - self._last_write < self._window
            self._timer = loop.call_later(self._window if busy else 0.0, self._flush)
        elif len(self._rows) == self._batch_size and self._timer is not None:
            self._timer.cancel()
            self._timer = loop.call_later(0, self._flush)
        await waiter

    def _flush(self) -> None:
        self._scheduled = False
        self._timer = None
        if not self._rows:
            return
        rows, waiters = self._rows, self._waiters
        try:
            self._write(rows)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc) and self._monotonic() - self._batch_started < self._max_wait:
                self._scheduled = True
                self._timer = asyncio.get_running_loop().call_later(RETRY_DELAY, self._flush)
                return
            self._fail(exc)
            return
        except Exception as exc:  # any failure: the waiters answer INTERNAL, never hang
            self._fail(exc)
            return
        self._rows, self._waiters = [], []
        self._last_write = self._monotonic()
        for waiter in waiters:
            if not waiter.done():  # a cancelled call's row is written all the same
                waiter.set_result(None)
        self._maybe_checkpoint()

    def _write(self, rows: list[Row]) -> None:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(INSERT_ROW, rows)
        # Pages appended to the WAL are not reported per transaction; a row, its two index
        # entries and the tree pages above them come to about one page per row (measured).
        self._pages += len(rows) + 3

    def _fail(self, exc: Exception) -> None:
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters = [], []
        # Nobody has these certificates yet: each waiting request answers INTERNAL.
        log.error("ledger write of %d rows failed: %s", len(rows), exc)
        error = LedgerError(self.path, f"write failed: {exc}")
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    def _maybe_checkpoint(self) -> None:
        if self._pages < self._checkpoint_pages or self._checkpoint is not None:
            return
        self._pages = 0
        self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        try:
            await asyncio.to_thread(checkpoint_ledger, self.path)
        except LedgerError as exc:  # the next checkpoint (anyone's) catches up
            log.warning("%s", exc)
        finally:
            self._checkpoint = None

    def flush(self, timeout: float = 10.0) -> None:
        """Write whatever is queued now, waiting for the write lock up to ``timeout`` seconds.

        Called on the loop's thread (or after the loop has stopped)."""
        if not self._rows:
            return
        deadline = self._monotonic() + timeout
        while True:
            try:
                self._write(self._rows)
            except sqlite3.OperationalError as exc:
                if _is_busy(exc) and self._monotonic() < deadline:
                    time.sleep(RETRY_DELAY)
                    continue
                self._fail(exc)
                return
            except sqlite3.Error as exc:
                self._fail(exc)
                return
            break
        waiters, self._rows, self._waiters = self._waiters, [], []
        for waiter in waiters:
            # A stopped loop has nobody waiting any more (RuntimeError: loop is closed).
            with contextlib.suppress(RuntimeError):
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    async def close(self) -> None:
        """Write what is still queued, let a running checkpoint finish, close the connection."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._scheduled = None, False
        if self._checkpoint is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoint
        self.flush()
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._conn.close()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED, extended codes included (another writer holds the lock)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def checkpoint_ledger(path: Path) -> None:
    """A PASSIVE WAL checkpoint from a connection of its own (runs in a worker thread)."""
    conn = connect_ledger(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error as exc:
        raise LedgerError(path, f"checkpoint failed: {exc}") from None
    finally:
        conn.close()
