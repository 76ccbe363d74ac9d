"""The embedded local store: every :class:`CallRecord` as one row of a SQLite file.

Writing never blocks the caller for long: :meth:`SQLiteStore.write` only puts the record on an
in-memory queue, and a background thread inserts queued records in batches, one transaction per
batch. The queue is bounded; when it is full the record is dropped, counted and a warning is
logged once, rather than letting a slow disk slow the application down.

The file is opened in WAL mode with a busy timeout, and each batch is written in a
``BEGIN IMMEDIATE`` transaction, so several processes can write the same file at once. An
:mod:`atexit` hook flushes every open store, so records are not lost on a normal interpreter
exit. Errors (unwritable path, full disk, a file written by a newer llmmeter) are logged once and
never reach the caller.

The schema is versioned in a ``meta`` table. Numbers are stored as the record holds them:
``None`` stays ``NULL``, costs are decimal strings (exact), dicts are JSON.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from llmmeter.record import (
    USAGE_COUNT_FIELDS,
    CallKind,
    CallRecord,
    Cost,
    CostStatus,
    Outcome,
    ServerTimings,
    Timings,
    Usage,
    UsageSource,
)

__all__ = [
    "SCHEMA_VERSION",
    "STORE_ENV_VAR",
    "SQLiteStore",
    "StoreError",
    "default_store_path",
    "read_records",
    "resolve_store_path",
]

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the table layout this module writes; kept in the ``meta`` table."""

STORE_ENV_VAR = "LLMMETER_STORE"
"""Environment variable naming the store file (overridden by an explicit path)."""

_SERVER_TIMING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ServerTimings))

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("start_time_unix_ns", "INTEGER NOT NULL"),
    ("kind", "TEXT"),
    ("operation", "TEXT"),
    ("provider", "TEXT"),
    ("request_model", "TEXT"),
    ("response_model", "TEXT"),
    ("name", "TEXT"),
    ("server_address", "TEXT"),
    ("server_port", "INTEGER"),
    ("streaming", "INTEGER"),
    ("outcome", "TEXT"),
    ("error_type", "TEXT"),
    ("duration_s", "REAL"),
    ("ttfc_s", "REAL"),
    ("ttft_s", "REAL"),
    ("tpot_s", "REAL"),
    ("chunks", "INTEGER"),
    ("server_timings", "TEXT"),
    ("usage_source", "TEXT"),
    ("usage_estimate_method", "TEXT"),
    *((name, "INTEGER") for name in USAGE_COUNT_FIELDS),
    ("cost_amount", "TEXT"),
    ("cost_currency", "TEXT"),
    ("cost_source", "TEXT"),
    ("cost_price_ref", "TEXT"),
    ("cost_components", "TEXT"),
    ("cost_status", "TEXT"),
    ("response_id", "TEXT"),
    ("finish_reasons", "TEXT"),
    ("service_tier", "TEXT"),
    ("request_params", "TEXT"),
    ("attributes", "TEXT"),
    ("trace_id", "TEXT"),
    ("span_id", "TEXT"),
    ("rollup_usage_source", "TEXT"),
    ("rollup_usage_estimate_method", "TEXT"),
    *((f"rollup_{name}", "INTEGER") for name in USAGE_COUNT_FIELDS),
    ("rollup_cost", "TEXT"),
    ("rollup_calls", "INTEGER"),
    ("rollup_unpriced_calls", "INTEGER"),
    ("content", "TEXT"),
)
_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in _COLUMNS)

_CREATE_STATEMENTS: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, "
    + ", ".join(f"{name} {sql_type}" for name, sql_type in _COLUMNS)
    + ")",
    "CREATE INDEX IF NOT EXISTS records_by_start ON records (start_time_unix_ns)",
    "CREATE INDEX IF NOT EXISTS records_by_model ON records (request_model, start_time_unix_ns)",
)
_INSERT = f"INSERT INTO records ({', '.join(_COLUMN_NAMES)}) VALUES ({', '.join('?' for _ in _COLUMN_NAMES)})"


class StoreError(Exception):
    """The store file cannot be read: missing, unreadable, not a store. The message says which."""


def default_store_path() -> Path:
    """Where records go when nothing else is configured.

    ``$XDG_DATA_HOME/llmmeter/records.sqlite3``, or ``~/.local/share/llmmeter/records.sqlite3``
    when ``XDG_DATA_HOME`` is unset or not absolute (as the XDG base-directory spec requires).
    """
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "llmmeter" / "records.sqlite3"


def resolve_store_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store path to use: ``explicit`` > ``$LLMMETER_STORE`` > :func:`default_store_path`."""
    if explicit is not None:
        return Path(explicit).expanduser()
    from_env = os.environ.get(STORE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return default_store_path()


# ---------------------------------------------------------------------------------------------
# Writing


class SQLiteStore:
    """Appends records to a SQLite file from a background thread; see the module docstring.

    Nothing happens at construction: the writer thread starts and the file (and its parent
    directories) is created on the first :meth:`write`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self._path = Path(path).expanduser()
        self._max_queue = max(1, max_queue)
        self._batch_size = max(1, batch_size)
        self._busy_timeout_s = busy_timeout_s
        self._warned: set[str] = set()
        self._dropped = 0
        self._failed = 0
        self._closed = False
        self._conn: sqlite3.Connection | None = None
        self._reset_runtime_state()
        _live_stores.add(self)

    def _reset_runtime_state(self) -> None:
        # Called at construction and, in a forked child, to forget the parent's queue and thread.
        self._state = threading.Condition(threading.Lock())
        self._io_lock = threading.Lock()
        self._queue: queue.SimpleQueue[CallRecord | None] = queue.SimpleQueue()
        self._pending = 0
        self._last_write_ok = True
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        """The SQLite file this store writes."""
        return self._path

    @property
    def dropped_records(self) -> int:
        """Records dropped because the queue was full (or the store closed)."""
        return self._dropped

    @property
    def failed_records(self) -> int:
        """Records lost because writing them failed (see the log for why)."""
        return self._failed

    def write(self, record: CallRecord) -> None:
        """Queue ``record`` for writing and return at once. Never raises, never blocks on I/O."""
        try:
            with self._state:
                if self._closed or self._pending >= self._max_queue:
                    self._dropped += 1
                    why = "closed" if self._closed else f"behind by {self._max_queue} records"
                    self._warn_once(
                        f"drop:{self._closed}",
                        "llmmeter: store %s is %s; dropping records (counted in dropped_records)",
                        self._path,
                        why,
                    )
                    return
                self._pending += 1
                self._queue.put(record)
                if self._thread is None:
                    self._start_writer()
        except Exception as exc:  # never break the host application
            # A record already queued is still written by flush()/close() from their own thread.
            self._warn_once("write", "llmmeter: could not queue a record for %s: %r", self._path, exc)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued so far is written.

        Returns ``True`` when nothing is left pending and the latest write succeeded; ``False``
        on timeout or when writing fails (the reason is logged once).
        """
        deadline = time.monotonic() + timeout
        with self._state:
            while self._pending > 0:
                if not self._writer_alive():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state.wait(remaining)
        if self._pending > 0:
            self._drain_inline()
        with self._state:
            return self._pending == 0 and self._last_write_ok

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds), stop the writer, close the file.

        Later :meth:`write` calls drop their record. Closing twice is harmless.
        """
        with self._state:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)
        self._drain_inline()
        # A writer stuck on a locked file keeps the I/O lock: leave its connection to the daemon.
        if self._io_lock.acquire(timeout=timeout):
            try:
                self._discard_connection()
            finally:
                self._io_lock.release()
        if self._dropped or self._failed:
            _log.warning(
                "llmmeter: store %s lost %d records (%d dropped while the queue was full, %d failed)",
                self._path,
                self._dropped + self._failed,
                self._dropped,
                self._failed,
            )

    # -- writer thread -----------------------------------------------------------------------

    def _start_writer(self) -> None:
        thread = threading.Thread(target=self._run_writer, name="llmmeter-sqlite-writer", daemon=True)
        thread.start()
        self._thread = thread

    def _writer_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run_writer(self) -> None:
        while True:
            batch, stop = self._next_batch(block=True)
            if batch:
                self._write_batch(batch)
            if stop:
                return

    def _next_batch(self, *, block: bool) -> tuple[list[CallRecord], bool]:
        """Up to ``batch_size`` queued records, and whether the stop signal was seen."""
        batch: list[CallRecord] = []
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get() if block and not batch else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _drain_inline(self) -> None:
        """Write what is still queued from the calling thread (the writer is gone or stopping)."""
        if self._writer_alive():
            return
        while True:
            batch, _ = self._next_batch(block=False)
            if not batch:
                return
            self._write_batch(batch)

    def _write_batch(self, batch: list[CallRecord]) -> None:
        with self._io_lock:
            written = self._insert(batch)
        with self._state:
            self._pending -= len(batch)
            self._failed += len(batch) - written
            self._last_write_ok = written == len(batch)
            self._state.notify_all()

    def _insert(self, batch: list[CallRecord]) -> int:
        """Insert ``batch`` in one transaction; returns how many records were written."""
        rows = self._rows(batch)
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                _rollback_quietly(conn)
                raise
        except Exception as exc:  # unwritable path, full disk, locked too long, newer schema
            self._warn_once(
                "insert", "llmmeter: could not write %d records to %s: %s", len(batch), self._path, exc
            )
            self._discard_connection()
            return 0
        return len(rows)

    def _rows(self, batch: list[CallRecord]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for record in batch:
            try:
                rows.append(_record_to_row(record))
            except Exception as exc:  # a malformed record must not sink the whole batch
                self._warn_once("row", "llmmeter: could not store a record: %r", exc)
        return rows

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                _prepare_for_writing(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _discard_connection(self) -> None:
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        _log.warning(message, *args)

    def _forget_parent_after_fork(self) -> None:
        # The parent's queue is copied into the child: those records are the parent's to write.
        # The parent's connection must not be used or closed here (SQLite forbids carrying a
        # connection across fork), so it is parked for good.
        if self._conn is not None:
            _connections_from_parent.append(self._conn)
            self._conn = None
        self._reset_runtime_state()


def _prepare_for_writing(conn: sqlite3.Connection) -> None:
    """WAL mode, then create or upgrade the schema; refuses a file from a newer llmmeter."""
    _execute_with_retry(conn, "PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _schema_version(conn)
        if found is not None and found > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {found} is newer than this llmmeter's ({SCHEMA_VERSION}); "
                "upgrade llmmeter or use another store"
            )
        for statement in _CREATE_STATEMENTS:
            conn.execute(statement)
        _add_missing_columns(conn)
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        conn.execute("COMMIT")
    except BaseException:
        _rollback_quietly(conn)
        raise


def _execute_with_retry(conn: sqlite3.Connection, sql: str, attempts: int = 20) -> None:
    # Switching to WAL needs a moment of exclusive access; two processes starting together can
    # see SQLITE_BUSY here before any busy handler applies.
    for attempt in range(attempts):
        try:
            conn.execute(sql).fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _schema_version(conn: sqlite3.Connection) -> int | None:
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else None


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Upgrade a file made by an older llmmeter: new columns are only ever added, nullable."""
    existing = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
    for name, sql_type in _COLUMNS:
        if name not in existing:
            conn.execute(f"ALTER TABLE records ADD COLUMN {name} {sql_type.replace(' NOT NULL', '')}")


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back (disk full, I/O error): keep the original error.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except Exception:  # closing is best effort
        _log.debug("llmmeter: closing the store connection failed", exc_info=True)


# -- record <-> row ---------------------------------------------------------------------------


def _json(value: object) -> str | None:
    if value is None:
        return None
    return json.dumps(value, default=str, separators=(",", ":"), sort_keys=True)


def _usage_columns(usage: Usage | None) -> tuple[Any, ...]:
    if usage is None:
        return (None, None, *(None for _ in USAGE_COUNT_FIELDS))
    counts = tuple(getattr(usage, name) for name in USAGE_COUNT_FIELDS)
    return (usage.source.value, usage.estimate_method, *counts)


def _server_timings_json(server: ServerTimings | None) -> str | None:
    if server is None:
        return None
    return _json({name: getattr(server, name) for name in _SERVER_TIMING_FIELDS})


def _record_to_row(record: CallRecord) -> tuple[Any, ...]:
    timings = record.timings
    usage_source, estimate_method, *counts = _usage_columns(record.usage)
    rollup_source, rollup_method, *rollup_counts = _usage_columns(record.rollup_usage)
    cost = record.cost
    row: tuple[Any, ...] = (
        timings.start_time_unix_ns,
        record.kind.value,
        record.operation,
        record.provider,
        record.request_model,
        record.response_model,
        record.name,
        record.server_address,
        record.server_port,
        int(record.streaming),
        record.outcome.value,
        record.error_type,
        timings.duration_s,
        timings.ttfc_s,
        timings.ttft_s,
        timings.tpot_s,
        timings.chunks,
        _server_timings_json(timings.server),
        usage_source,
        estimate_method,
        *counts,
        None if cost is None else str(cost.amount),
        None if cost is None else cost.currency,
        None if cost is None else cost.source,
        None if cost is None else cost.price_ref,
        None if cost is None else _json({k: str(v) for k, v in cost.components.items()}),
        record.cost_status.value,
        record.response_id,
        None if record.finish_reasons is None else _json(list(record.finish_reasons)),
        record.service_tier,
        _json(record.request_params),
        _json(record.attributes),
        record.trace_id,
        record.span_id,
        rollup_source,
        rollup_method,
        *rollup_counts,
        None if record.rollup_cost is None else str(record.rollup_cost),
        record.rollup_calls,
        record.rollup_unpriced_calls,
        _json(record.content),
    )
    return row


_E = TypeVar("_E", bound=StrEnum)


def _enum(enum_type: type[_E], value: Any, default: _E) -> _E:
    """``value`` as a member of ``enum_type``; ``default`` for NULL or a value from a newer llmmeter."""
    try:
        return enum_type(value)
    except ValueError:
        return default


def _usage_from_row(row: Mapping[str, Any], prefix: str) -> Usage | None:
    source = row.get(f"{prefix}usage_source")
    if source is None:
        return None
    counts = {name: row.get(f"{prefix}{name}") for name in USAGE_COUNT_FIELDS}
    return Usage(
        **counts,
        source=_enum(UsageSource, source, UsageSource.PROVIDER),
        estimate_method=row.get(f"{prefix}usage_estimate_method"),
    )


def _cost_from_row(row: Mapping[str, Any]) -> Cost | None:
    amount = row.get("cost_amount")
    if amount is None:
        return None
    components = json.loads(row.get("cost_components") or "{}")
    return Cost(
        amount=Decimal(amount),
        currency=row.get("cost_currency") or "USD",
        components={name: Decimal(value) for name, value in components.items()},
        source=row.get("cost_source") or "registry",
        price_ref=row.get("cost_price_ref"),
    )


def _timings_from_row(row: Mapping[str, Any]) -> Timings:
    server_json = row.get("server_timings")
    server = None if server_json is None else ServerTimings(**json.loads(server_json))
    return Timings(
        start_time_unix_ns=row["start_time_unix_ns"],
        duration_s=row.get("duration_s"),
        ttfc_s=row.get("ttfc_s"),
        ttft_s=row.get("ttft_s"),
        tpot_s=row.get("tpot_s"),
        chunks=row.get("chunks"),
        server=server,
    )


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _record_from_row(row: Mapping[str, Any]) -> CallRecord:
    finish_reasons = _loads(row.get("finish_reasons"))
    rollup_cost = row.get("rollup_cost")
    return CallRecord(
        operation=row.get("operation") or "",
        provider=row.get("provider") or "",
        request_model=row.get("request_model"),
        response_model=row.get("response_model"),
        kind=_enum(CallKind, row.get("kind"), CallKind.LLM),
        name=row.get("name"),
        server_address=row.get("server_address"),
        server_port=row.get("server_port"),
        streaming=bool(row.get("streaming")),
        timings=_timings_from_row(row),
        usage=_usage_from_row(row, ""),
        cost=_cost_from_row(row),
        cost_status=_enum(CostStatus, row.get("cost_status"), CostStatus.NO_USAGE),
        outcome=_enum(Outcome, row.get("outcome"), Outcome.OK),
        error_type=row.get("error_type"),
        response_id=row.get("response_id"),
        finish_reasons=None if finish_reasons is None else tuple(finish_reasons),
        service_tier=row.get("service_tier"),
        request_params=_loads(row.get("request_params")) or {},
        attributes=_loads(row.get("attributes")) or {},
        trace_id=row.get("trace_id"),
        span_id=row.get("span_id"),
        rollup_usage=_usage_from_row(row, "rollup_"),
        rollup_cost=None if rollup_cost is None else Decimal(rollup_cost),
        rollup_calls=row.get("rollup_calls") or 0,
        rollup_unpriced_calls=row.get("rollup_unpriced_calls") or 0,
        content=_loads(row.get("content")),
    )


# ---------------------------------------------------------------------------------------------
# Reading

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _unix_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch; a naive datetime is taken as local time."""
    aware = moment if moment.tzinfo is not None else moment.astimezone()
    return (aware - _EPOCH) // timedelta(microseconds=1) * 1000


def read_records(
    path: str | os.PathLike[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: CallKind | None = None,
) -> list[CallRecord]:
    """The records in the store at ``path`` that started in ``[since, until)``, oldest first.

    ``kind`` keeps only LLM calls or only steps. Raises :class:`StoreError` with a one-line,
    human-readable message when the file is missing, unreadable or not an llmmeter store.
    """
    where, params = _window_clause(since, until, kind)
    conn = _open_for_reading(Path(path).expanduser())
    try:
        conn.row_factory = sqlite3.Row
        cursor = conn.execute(f"SELECT * FROM records{where} ORDER BY start_time_unix_ns, id", params)
        return [_record_from_row(_row_dict(row)) for row in cursor]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the llmmeter store {path}: {exc}") from exc
    finally:
        conn.close()


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a Mapping


def _window_clause(
    since: datetime | None, until: datetime | None, kind: CallKind | None
) -> tuple[str, list[object]]:
    conditions: list[str] = []
    params: list[object] = []
    if since is not None:
        conditions.append("start_time_unix_ns >= ?")
        params.append(_unix_ns(since))
    if until is not None:
        conditions.append("start_time_unix_ns < ?")
        params.append(_unix_ns(until))
    if kind is not None:
        conditions.append("kind = ?")
        params.append(kind.value)
    return ((" WHERE " + " AND ".join(conditions)) if conditions else ""), params


def _open_for_reading(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise StoreError(f"no llmmeter store at {path} (records are written there once a call is metered)")
    if path.is_dir():
        raise StoreError(f"the llmmeter store path {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise StoreError(f"the llmmeter store {path} is not readable (permission denied)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the llmmeter store {path}: {exc}") from exc
    try:
        has_records = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} is not an llmmeter store: {exc}") from exc
    if not has_records:
        conn.close()
        raise StoreError(f"{path} is not an llmmeter store (it has no records table)")
    return conn


# ---------------------------------------------------------------------------------------------
# Process lifecycle: flush at exit, forget the parent's state after fork

_live_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
_connections_from_parent: list[sqlite3.Connection] = []


def _flush_all_at_exit() -> None:
    for store in list(_live_stores):
        try:
            store.close()
        except Exception:  # at exit there is nobody left to raise to
            _log.debug("llmmeter: closing a store at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    for store in list(_live_stores):
        store._forget_parent_after_fork()


def _register_process_hooks() -> None:
    atexit.register(_flush_all_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


_register_process_hooks()
