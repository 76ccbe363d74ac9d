"""Reading the store: the records of a time window, after writing in the journals of dead processes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmmeter._log import log_once
from llmmeter.record import CallKind, CallRecord
from llmmeter.store.journal import Batch, journal_dir, replay_dead_segments
from llmmeter.store.report_columns import REPORT_COLUMN_NAMES
from llmmeter.store.schema import (
    NUMERIC_COLUMNS,
    StoreError,
    decode_number,
    prepare_for_writing,
    record_from_row,
)
from llmmeter.store.writer import write_batch

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REPLAY_TIMEOUT_S = 5.0


def unix_ns(moment: datetime) -> int:
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

    First writes into the store the journals left by processes that died before their records
    reached it (:func:`replay_journals`). ``kind`` keeps only LLM calls or only steps. Raises
    :class:`StoreError` with a one-line, human-readable message when the file is missing, unreadable
    or not an llmmeter store. A row that cannot be read (written by a damaged or foreign program) is
    skipped and logged once.
    """
    store_path = Path(path).expanduser()
    replay_journals(store_path)
    where, params = _window_clause(since, until, kind)
    conn = _open_for_reading(store_path)
    try:
        conn.row_factory = sqlite3.Row
        cursor = conn.execute(f"SELECT * FROM records{where} ORDER BY start_time_unix_ns, id", params)
        return [record for record in map(_record_or_none, cursor) if record is not None]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the llmmeter store {path}: {exc}") from exc
    finally:
        conn.close()


_READ_CACHE_KIB = 4 * 1024
"""SQLite's page cache (and sort memory) per connection while a report runs, one connection per
thread: 1 M records report as fast with 16 MB as with 32 MB, in 145 MB of RSS instead of 210;
as fast with 2-4 MB (a scan reads each page once; a larger sort spills to a temporary file),
which keeps the figures' scan running beside the report's work within 200 MB (185 MB, 211 with
16 MB)."""


class SQLiteRun:
    """Runs one SQL statement on a store connection: ``run(sql, params)`` -> the result rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection = _open_for_report(path)
        """The read-only connection (the report registers its SQL functions on it); usable from
        any thread, one at a time."""

    def __call__(self, sql: str, params: Sequence[object]) -> Iterable[Sequence[Any]]:
        try:
            return self.connection.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the llmmeter store {self.path}: {exc}") from exc

    def another(self) -> SQLiteRun:
        """A runner on a connection of its own to the same store (for a thread of its own)."""
        return SQLiteRun(self.path)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def _open_for_report(path: Path) -> sqlite3.Connection:
    conn = _open_for_reading(path, check_same_thread=False)
    try:
        conn.text_factory = _decode_text
        conn.execute(f"PRAGMA cache_size = -{_READ_CACHE_KIB}")
        _add_missing_report_columns(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"cannot read the llmmeter store {path}: {exc}") from exc
    return conn


def _add_missing_report_columns(conn: sqlite3.Connection) -> None:
    """A store no llmmeter of this version has written to lacks the report's columns: this
    connection sees them as ``NULL`` (a temporary view shadows the table), read-only as it is."""
    present = {row[1] for row in conn.execute("PRAGMA main.table_info(records)")}
    missing = [name for name in REPORT_COLUMN_NAMES if name not in present]
    if missing:
        extra = ", ".join(f"NULL AS {name}" for name in missing)
        conn.execute(f"CREATE TEMP VIEW records AS SELECT *, {extra} FROM main.records")


@contextlib.contextmanager
def reading_store(path: str | os.PathLike[str]) -> Iterator[SQLiteRun]:
    """A read-only query runner over the store at ``path``, for the report's SQL.

    First writes the journals of dead processes into the store (:func:`replay_journals`). Any
    database error while the runner is used is raised as a one-line :class:`StoreError`. Text
    that is not valid UTF-8 comes back as a Python string, never as an exception.
    """
    store_path = Path(path).expanduser()
    replay_journals(store_path)
    run = SQLiteRun(store_path)
    try:
        yield run
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the llmmeter store {path}: {exc}") from exc
    finally:
        run.close()


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # SQLite's JSON functions turn an escaped lone surrogate into its 3-byte (CESU) form.
        return data.decode("utf-8", "surrogatepass" if _is_cesu(data) else "backslashreplace")


def _is_cesu(data: bytes) -> bool:
    try:
        data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True


def replay_journals(path: str | os.PathLike[str], timeout: float = _REPLAY_TIMEOUT_S) -> int:
    """Write into the store at ``path`` the journal segments of processes that died (killed, or
    exited before their writer caught up), then delete them; segments of live processes are left
    to them. Creates the store if only a journal exists. Returns the number of segments replayed.

    Never raises: a store that cannot be written (read-only, locked for longer than ``timeout``
    seconds) is logged once and the journals stay for next time.
    """
    store_path = Path(path).expanduser()
    directory = journal_dir(store_path)
    if not directory.is_dir():
        return 0
    deadline = time.monotonic() + timeout
    connection: list[sqlite3.Connection] = []

    def write(batch: Batch) -> bool:
        return _write_with_retry(store_path, connection, batch, deadline)

    try:
        return replay_dead_segments(directory, write)
    except Exception as exc:
        log_once(f"replay:{store_path}", "llmmeter: could not replay the journals in %s: %s", directory, exc)
        return 0
    finally:
        for conn in connection:
            conn.close()


def _write_with_retry(
    path: Path, connection: list[sqlite3.Connection], batch: Batch, deadline: float
) -> bool:
    delay = 0.05
    while True:
        try:
            if not connection:
                connection.append(_open_for_replay(path))
            write_batch(connection[0], batch)
            return True
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + delay > deadline:
                log_once(
                    f"replay-busy:{path}", "llmmeter: %s stayed locked; journals left for next time", path
                )
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _open_for_replay(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        prepare_for_writing(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _record_or_none(row: sqlite3.Row) -> CallRecord | None:
    values = _row_dict(row)
    try:
        return record_from_row(values)
    except Exception as exc:
        log_once(
            "read:row", "llmmeter: skipped a store row that cannot be read (id %s): %r", values.get("id"), exc
        )
        return None


def _row_dict(row: sqlite3.Row) -> Mapping[str, Any]:
    keys = row.keys()
    return {key: decode_number(row[key]) if key in NUMERIC_COLUMNS else row[key] for key in keys}


def _window_clause(
    since: datetime | None, until: datetime | None, kind: CallKind | None
) -> tuple[str, list[object]]:
    conditions: list[str] = []
    params: list[object] = []
    if since is not None:
        conditions.append("start_time_unix_ns >= ?")
        params.append(unix_ns(since))
    if until is not None:
        conditions.append("start_time_unix_ns < ?")
        params.append(unix_ns(until))
    if kind is not None:
        conditions.append("kind = ?")
        params.append(kind.value)
    return ((" WHERE " + " AND ".join(conditions)) if conditions else ""), params


def _open_for_reading(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    if not path.exists():
        raise StoreError(f"no llmmeter store at {path} (records are written there once a call is metered)")
    if path.is_dir():
        raise StoreError(f"the llmmeter store path {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise StoreError(f"the llmmeter store {path} is not readable (permission denied)")
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=check_same_thread
        )
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
