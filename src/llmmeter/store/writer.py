"""The store's writer: records in, SQLite rows out, none lost on the way.

:meth:`SQLiteStore.journal` (the caller's thread) appends the record's journal form to this
process's journal (see :mod:`llmmeter.store.journal`); :meth:`SQLiteStore.accept` (the pipeline's
thread) puts that form on a bounded memory queue; one daemon thread lays the forms out as rows and
writes them in batches, one
``BEGIN IMMEDIATE`` transaction per batch, in WAL mode, so several processes can share a file.

* **Busy or locked** (another writer, a backup, an open shell transaction): the batch is retried
  with backoff (50 ms doubling to 1 s) for as long as it takes; meanwhile the queue fills and then
  spills.
* **Full queue**: the record is not queued (it is already in the journal); once the queue is
  drained the writer reads the spilled journal segment back. Memory stays bounded by the queue.
* **One odd record**: a batch that fails on a row is written row by row; a row that fails is made
  storable (:func:`~llmmeter.store.schema.storable_row`) and, if it still fails, goes to the
  ``quarantine`` table with the reason. It never sinks its batch.
* **A file that cannot be opened** (unwritable path, a newer llmmeter's schema, disk full): logged
  once and counted in :attr:`StoreStats.failed`; the records stay in the journal for a later process
  (counted in :attr:`StoreStats.lost` only when the journal could not be written either).
* **fork()**: before the fork the parent waits (at most 1 s) for its writer to finish the current
  transaction, so that the child never inherits SQLite's bookkeeping of a lock held mid-write (the
  old 10 s hang in ``PRAGMA journal_mode=WAL``). The child gets an empty queue, no thread, a new
  connection and its own journal; the parent's queued records stay the parent's.
* **Exit**: an :mod:`atexit` hook closes every store within 2 s: a fully written store's journal
  is deleted; whatever is left stays in the journal for the next process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from llmmeter._log import guard, internal_error, log_once, strict_mode
from llmmeter.record import CallRecord
from llmmeter.store.journal import Batch, Journal, Segment, journal_dir, read_segment, replay_dead_segments
from llmmeter.store.pending import price_pending
from llmmeter.store.schema import (
    COLUMN_NAMES,
    INSERT_QUARANTINE,
    INSERT_RECORD,
    journal_form,
    prepare_for_writing,
    record_id_of,
    rollback_quietly,
    row_from_form,
    storable_row,
    with_report_columns,
)

__all__ = ["DEFAULT_EXIT_TIMEOUT_S", "SQLiteStore", "StoreStats", "write_batch"]

DEFAULT_EXIT_TIMEOUT_S = 2.0
"""How long the store's own exit hook waits, at most, for the writer."""

_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0
_FORK_WAIT_S = 1.0
_MEMORY_ONLY_FACTOR = 10
"""Without a journal, the memory queue may grow to this many times its bound before a record is lost."""

_Entry = tuple[tuple[Any, ...], Segment | None]


@dataclass(slots=True)
class StoreStats:
    """What a store did in this process (``store.stats``; a snapshot with :meth:`snapshot`)."""

    accepted: int = 0
    """Records handed to the writer."""
    written: int = 0
    """Rows inserted (a record already in the file, replayed again, is not counted twice)."""
    spilled: int = 0
    """Records not queued in memory because the queue was full: read back from the journal."""
    replayed_segments: int = 0
    """Journal segments of dead processes written into the store."""
    quarantined: int = 0
    """Records the database refused even once sanitized: in the ``quarantine`` table."""
    busy_retries: int = 0
    """Times a batch waited for another connection's lock."""
    failed: int = 0
    """Records not written because the file could not be opened or written (logged once); those
    in the journal are written by a later process."""
    lost: int = 0
    """Records neither written nor journaled: the only loss, counted and logged."""

    def snapshot(self) -> StoreStats:
        """A copy, safe to read while the writer runs."""
        return StoreStats(*(getattr(self, f.name) for f in fields(self)))


def _is_busy(exc: BaseException) -> bool:
    message = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in message or "busy" in message)


def write_batch(conn: sqlite3.Connection, batch: Batch) -> tuple[int, int]:
    """Insert ``batch`` in one transaction: ``(rows inserted, records quarantined)``.

    A row the database refuses is retried once made storable, then quarantined with the reason;
    it never sinks the batch. Lock and I/O errors (``sqlite3.OperationalError``) roll the whole
    batch back and are raised: the caller retries or keeps the records in the journal.
    """
    before = conn.total_changes
    conn.execute("BEGIN IMMEDIATE")
    try:
        quarantined = 0
        try:
            conn.executemany(INSERT_RECORD, map(with_report_columns, batch.rows))
        except sqlite3.OperationalError:
            raise
        except Exception:  # one odd row: start over, one row at a time
            rollback_quietly(conn)
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            quarantined = sum(_insert_one(conn, row) for row in batch.rows)
        for line, reason in batch.bad_lines:
            quarantined += _quarantine(conn, None, reason, line)
        inserted = conn.total_changes - before - quarantined
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise
    return inserted, quarantined


def _insert_one(conn: sqlite3.Connection, row: tuple[Any, ...]) -> int:
    """1 when ``row`` had to be quarantined, else 0."""
    try:
        conn.execute(INSERT_RECORD, with_report_columns(row))
        return 0
    except sqlite3.OperationalError:
        raise
    except Exception:
        pass
    try:
        conn.execute(INSERT_RECORD, storable_row(with_report_columns(row)))
        return 0
    except sqlite3.OperationalError:
        raise
    except Exception as exc:
        record_json = json.dumps(dict(zip(COLUMN_NAMES, row, strict=True)), default=str)
        return _quarantine(conn, record_id_of(row), f"{type(exc).__name__}: {exc}", record_json)


def _quarantine(conn: sqlite3.Connection, record_id: Any, reason: str, record_json: str) -> int:
    values = (record_id, time.time_ns(), reason[:2000], record_json)
    conn.execute(INSERT_QUARANTINE, storable_row(values))
    log_once(
        "store:quarantine",
        "llmmeter: a record the store could not take was put in its quarantine table (%s)",
        reason[:200],
    )
    return 1


class SQLiteStore:
    """Appends records to a SQLite file from a background thread, journaled so none is lost.

    A :class:`~llmmeter.Sink` with a journal (a ``DurableSink``): ``journal`` on the caller's
    thread, ``accept`` on the pipeline's, then ``flush``/``close``. See the module docstring.
    Nothing happens at construction: the journal, the file and the thread start with the first record.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        busy_timeout_s: float = 0.1,
        sync_journal: bool = False,
        segment_records: int = 10_000,
    ) -> None:
        self._path = Path(path).expanduser()
        self._max_queue = max(1, max_queue)
        self._batch_size = max(1, batch_size)
        self._busy_timeout_s = busy_timeout_s
        self._journal = Journal(journal_dir(self._path), sync=sync_journal, max_records=segment_records)
        self.stats = StoreStats()
        self._reset_runtime_state()
        _live_stores.add(self)

    def _reset_runtime_state(self) -> None:
        # At construction and, in a forked child, to forget the parent's queue, thread and locks.
        self._state = threading.Condition(threading.Lock())
        self._io_lock = threading.Lock()
        self._queue: deque[_Entry] = deque()
        self._unaccepted: dict[str, _Entry] = {}
        self._working = False
        self._catch_up_needed = False
        self._closing = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._dead_replayed = False
        self._last_write_ok = True

    @property
    def path(self) -> Path:
        """The SQLite file this store writes."""
        return self._path

    @property
    def journal_path(self) -> Path:
        """The directory of the journals beside the store (``<store>.journal/``)."""
        return self._journal.directory

    # --- the caller's side ------------------------------------------------------------------------
    def journal(self, record: CallRecord) -> None:
        """Append ``record`` to this process's journal (one ``write()``); on return it survives the
        process being killed. On the caller's thread: never raises, never waits for the database."""
        try:  # not `with guard(...)`: this runs on every call, and two method calls cost 10 % here
            form = journal_form(record)
            self._unaccepted[record.record_id] = (form, self._journal.append(form))
        except Exception:
            self._count_lost(1, "it could not be journaled")
            if strict_mode():
                raise
            internal_error("journaling a record for the local store")

    def accept(self, record: CallRecord) -> None:
        """Queue ``record`` for the writer; when the queue is full it stays in the journal and is
        read back from there. Never blocks on the database, never drops."""
        with guard("queueing a record for the local store"):
            entry = self._unaccepted.pop(record.record_id, None)
            if entry is None:
                entry = (journal_form(record), None)
            elif entry[0][3] != record.cost_status._value_:  # journaled before pricing
                entry = (journal_form(record), entry[1])
            self._enqueue(*entry)

    def write(self, record: CallRecord) -> None:
        """:meth:`journal` then :meth:`accept`, for a store used on its own."""
        self.journal(record)
        self.accept(record)

    def _enqueue(self, form: tuple[Any, ...], segment: Segment | None) -> None:
        with self._state:
            self.stats.accepted += 1
            if len(self._queue) >= self._max_queue:
                if segment is None:
                    segment = self._journal.append(form)
                if segment is not None:
                    self._spill(segment)
                    return
                if len(self._queue) >= self._max_queue * _MEMORY_ONLY_FACTOR:
                    self._count_lost(1, "its queue is full and its journal cannot be written")
                    return
            self._queue.append((form, segment))
            self._state.notify_all()
            self._ensure_writer()

    def _spill(self, segment: Segment) -> None:
        segment.spilled = True
        self._catch_up_needed = True
        self.stats.spilled += 1
        log_once(
            f"store:spill:{self._path}",
            "llmmeter: the store %s is %d records behind; further records wait in its journal and "
            "are written from there (none is dropped)",
            self._path,
            self._max_queue,
        )
        self._state.notify_all()
        self._ensure_writer()

    def _ensure_writer(self) -> None:
        # Called with self._state held.
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name="llmmeter-store", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown: the records wait in the journal
            return
        self._thread = thread

    # --- flush and close --------------------------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(self._queue) or self._working or self._catch_up_needed

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record accepted so far is in SQLite, at most ``timeout`` seconds.

        ``False`` on timeout or when writing failed (the reason is logged once).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._state:
            if self._has_work():
                self._ensure_writer()
            while self._has_work():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._state.wait(min(remaining, 0.25))
            return self._last_write_ok

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued and what the journal holds, then release the file and the journal
        (deleting it when everything is written), waiting at most ``timeout`` seconds.

        ``True`` when everything handed to the store is in SQLite. What is not stays in the
        journal for the next process. The store can be used again afterwards.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._state:
            idle = self._thread is None or not self._thread.is_alive()
            if idle and not self._journal.pending() and not self._has_work():
                return self._last_write_ok
            self._closing = True
            self._deadline = deadline
            self._state.notify_all()
            self._ensure_writer()
            thread = self._thread
        if thread is None or not thread.is_alive():
            self._finish()  # no thread could be started (interpreter shutdown): do it here
        else:
            thread.join(max(0.0, deadline - time.monotonic()) + 0.05)
        with self._state:
            return not self._has_work() and self._last_write_ok and not self._journal.pending()

    # --- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._replay_dead_once()
            while self._step():
                pass
        finally:
            with self._state:
                closing = self._closing and not self._queue
            if closing:
                self._finish()

    def _step(self) -> bool:
        """Write one batch or catch up on the journal; ``False`` when closing with nothing left."""
        with self._state:
            while not self._queue and not self._catch_up_needed and not self._closing:
                self._state.wait()
            if self._queue:
                count = min(len(self._queue), self._batch_size)
                entries = [self._queue.popleft() for _ in range(count)]
            elif self._catch_up_needed:
                entries, self._catch_up_needed = [], False
            else:
                return False
            self._working = True
        try:
            if entries:
                self._write_entries(entries)
            else:
                self._catch_up()
        finally:
            with self._state:
                self._working = False
                self._state.notify_all()
        return True

    def _write_entries(self, entries: list[_Entry]) -> None:
        ok = self._write(Batch(rows=[price_pending(row_from_form(form)) for form, _ in entries]))
        if not ok:
            self._count_failed(entries)
            return
        for _, segment in entries:
            if segment is not None:
                segment.committed += 1
        self._remove_done_segments()

    def _catch_up(self) -> None:
        """Write back the records of spilled segments (and, at close, of any segment not done)."""
        self._journal.rotate_if_spilled()
        for segment in self._journal.pending():
            wanted = segment.rotated and not segment.done and (segment.spilled or self._closing)
            if wanted and not self._replay_own(segment):
                return
        self._remove_done_segments()

    def _replay_own(self, segment: Segment) -> bool:
        try:
            for batch in read_segment(segment.path, self._batch_size):
                if self._past_deadline() or not self._write(batch):
                    return False
        except OSError as exc:  # removed behind our back: whoever removed it replayed it
            log_once(
                f"store:own-journal:{self._path}", "llmmeter: cannot read back %s: %s", segment.path, exc
            )
        segment.caught_up = True
        return True

    def _replay_dead_once(self) -> None:
        if self._dead_replayed:
            return
        self._dead_replayed = True
        with guard("replaying the journals of dead processes"):
            self.stats.replayed_segments += replay_dead_segments(
                self._journal.directory, self._write, self._batch_size
            )

    def _remove_done_segments(self) -> None:
        for segment in self._journal.pending():
            if segment.done:
                self._journal.remove(segment)

    def _finish(self) -> None:
        """At close: everything journaled goes in, then the file and the journal are released."""
        self._journal.rotate()
        self._catch_up()
        with self._io_lock:
            if self._conn is not None:
                _close_quietly(self._conn)
                self._conn = None
        if not self._journal.pending():
            self._journal.release()
        else:  # records left for the next process: keep the files, let go of their locks
            log_once(
                f"store:left:{self._path}",
                "llmmeter: at close, records not yet in %s were left in its journal %s; the next "
                "process that opens the store, or `llmmeter report`, writes them",
                self._path,
                self._journal.directory,
            )
            self._journal.release()
        with self._state:
            self._closing = False
            self._deadline = None
            self._dead_replayed = False
            self._state.notify_all()

    # --- talking to SQLite ------------------------------------------------------------------------
    def _write(self, batch: Batch) -> bool:
        """Write ``batch``, retrying a busy file with backoff; ``False`` when the file cannot take
        it (logged once) or the close deadline passed."""
        delay = _FIRST_BACKOFF_S
        while True:
            try:
                with self._io_lock:
                    inserted, quarantined = write_batch(self._connection(), batch)
            except Exception as exc:
                if not _is_busy(exc):
                    self._broken(exc, len(batch.rows) + len(batch.bad_lines))
                    return False
                self.stats.busy_retries += 1
                log_once(
                    f"store:busy:{self._path}",
                    "llmmeter: the store %s is locked by another connection; retrying with backoff "
                    "(records wait in memory and in the journal)",
                    self._path,
                )
                if not self._sleep(delay):
                    return False
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            self.stats.written += inserted
            self.stats.quarantined += quarantined
            self._last_write_ok = True
            return True

    def _past_deadline(self) -> bool:
        deadline = self._deadline
        return deadline is not None and time.monotonic() >= deadline

    def _sleep(self, delay: float) -> bool:
        """Back off; ``False`` when the close deadline has passed instead."""
        deadline = self._deadline
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            delay = min(delay, remaining)
        time.sleep(delay)
        return True

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                prepare_for_writing(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _broken(self, exc: BaseException, count: int) -> None:
        self._last_write_ok = False
        log_once(
            f"store:write:{self._path}",
            "llmmeter: could not write %d records to %s: %s (they stay in its journal, if any, for a "
            "later process)",
            count,
            self._path,
            exc,
        )
        with self._io_lock:
            if self._conn is not None:
                _close_quietly(self._conn)
                self._conn = None

    def _count_failed(self, entries: list[_Entry]) -> None:
        self.stats.failed += len(entries)
        not_journaled = sum(1 for _, segment in entries if segment is None)
        if not_journaled:
            self._count_lost(not_journaled, "they could neither be written nor journaled")

    def _count_lost(self, count: int, why: str) -> None:
        self.stats.lost += count
        log_once(
            f"store:lost:{self._path}",
            "llmmeter: %d record(s) lost by the store %s: %s (counted in store.stats.lost)",
            count,
            self._path,
            why,
        )

    # --- fork ---------------------------------------------------------------------------------------
    def _before_fork(self) -> bool:
        # Waiting for the current transaction to end keeps the child's copy of SQLite's per-process
        # lock bookkeeping clean; bounded, so a stuck writer never stalls fork().
        return self._io_lock.acquire(timeout=_FORK_WAIT_S)

    def _after_fork_in_parent(self, held: bool) -> None:
        if held:
            self._io_lock.release()

    def _forget_parent_after_fork(self) -> None:
        # SQLite forbids using or closing a connection carried across fork: park it for good.
        if self._conn is not None:
            _connections_from_parent.append(self._conn)
        self._journal.forget_after_fork()
        self._reset_runtime_state()


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except Exception:  # closing is best effort
        log_once("store:close", "llmmeter: closing the store connection failed", exc_info=True)


# --- process lifecycle: close at exit, forget the parent's state after fork --------------------------
_live_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
_connections_from_parent: list[sqlite3.Connection] = []
_held_at_fork: list[tuple[SQLiteStore, bool]] = []


def _close_all_at_exit() -> None:
    deadline = time.monotonic() + DEFAULT_EXIT_TIMEOUT_S
    for store in list(_live_stores):
        if store._deadline is not None:
            continue  # the pipeline's exit hook closed it and its time ran out: the journal keeps the rest
        with contextlib.suppress(Exception):  # at exit there is nobody left to raise to
            store.close(max(0.0, deadline - time.monotonic()))


def _before_fork() -> None:
    _held_at_fork[:] = [(store, store._before_fork()) for store in list(_live_stores)]


def _after_fork_in_parent() -> None:
    for store, held in _held_at_fork:
        store._after_fork_in_parent(held)
    _held_at_fork.clear()


def _after_fork_in_child() -> None:
    _held_at_fork.clear()
    for store in list(_live_stores):
        store._forget_parent_after_fork()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
