"""The fleet store: the records of many processes on many hosts in one PostgreSQL database.

``configure(store="postgresql://user:password@host/db")`` (or ``LLMMETER_STORE=postgresql://...``)
selects :class:`PostgresStore`. Needs ``pip install "llmmeter[postgresql]"`` (psycopg 3).

**Writing.** The same path as the local store (:class:`~llmmeter.store.SQLiteStore`, whose writer
this class reuses): the caller's thread appends the record to this process's journal — here a
*spool* directory on the local disk — and the pipeline's thread queues it; one writer thread
sends batches with ``COPY`` into a session-local staging table, then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into ``llmmeter.records``: a batch retried after
a lost connection, a spool replayed twice or ``llmmeter store copy`` run again never duplicates a
record. A row the server refuses (a NUL byte, a number beyond 64 bits) is retried made storable,
then put in ``llmmeter.quarantine`` with the reason; it never sinks its batch.

**The database unreachable** (refused, down, restarting, a wrong password, a schema from a newer
llmmeter): logged once; the batch is retried with backoff (50 ms doubling to 2 s) for as long as it
takes. Meanwhile the memory queue fills and further records wait only in the spool, read back
from there once the server answers: nothing is dropped, memory stays bounded, the caller never
waits. At exit (``exit_timeout``, 2 s by default) what is not delivered stays in the spool; the
next process configured with the same database (same spool directory) delivers it. What survives
a kill is what survives for the local store: every record whose call returned (it is in the
spool, in the kernel's page cache), unless the machine itself crashes.

**Layout** (PostgreSQL schema ``llmmeter``): ``records`` has the columns of the local store
(:data:`~llmmeter.store.schema.COLUMNS`; integers ``BIGINT``, costs ``NUMERIC`` so that sums are
exact in SQL, ``streaming`` ``BOOLEAN``, JSON as text), primary key
``(start_time_unix_ns, record_id)``, range-partitioned by start time into one partition per
calendar month (UTC), ``records_YYYY_MM``, created on demand; a start time outside 1970–2199 goes
to the default partition ``records_other``.
``schema_version`` holds one row per migration applied; migrations run under an advisory lock,
are idempotent, and a process that finds the current version does no DDL at all: once an owner
has created the schema, a writing role needs ``CREATE`` only on the ``llmmeter`` schema (for each
new month's partition), not on the database.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmmeter._log import log_once
from llmmeter.record import CallKind, CallRecord
from llmmeter.store.journal import Batch, Journal
from llmmeter.store.schema import (
    COLUMN_NAMES,
    COLUMNS,
    StoreError,
    record_from_row,
    record_id_of,
    storable_row,
)
from llmmeter.store.writer import SQLiteStore

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "FLEET_SCHEMA_VERSION",
    "PostgresStore",
    "connect",
    "default_spool_dir",
    "is_postgres_url",
    "iter_fleet_rows",
    "prepare_fleet_database",
    "read_fleet_records",
    "redacted",
    "write_fleet_batch",
]

FLEET_SCHEMA_VERSION = 2
"""The layout this llmmeter writes, kept in ``llmmeter.schema_version``. Bump it, with a migration
step, whenever :data:`~llmmeter.store.schema.COLUMNS` grows."""

SCHEMA = "llmmeter"
_T = TypeVar("_T")
_MIGRATION_LOCK = 0x6C6C6D6D_00000001
_PARTITION_LOCK = 0x6C6C6D6D_00000002
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0
_FIRST_YEAR, _END_YEAR = 1970, 2200
_COST_COLUMNS = frozenset({"cost_amount", "rollup_cost"})
_SPECIAL_TYPES = {"cost_amount": "NUMERIC", "rollup_cost": "NUMERIC", "streaming": "BOOLEAN"}
_PG_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "TEXT": "TEXT"}
_URL_SCHEMES = ("postgresql://", "postgres://")
_COLUMN_LIST = ", ".join(COLUMN_NAMES)
_START_INDEX = COLUMN_NAMES.index("start_time_unix_ns")
_STAGING = "pg_temp.llmmeter_staging"


# --- URLs -----------------------------------------------------------------------------------------
def is_postgres_url(target: object) -> bool:
    """``True`` for a ``postgresql://`` or ``postgres://`` URL (the store is then the fleet store)."""
    return isinstance(target, str) and target.strip().lower().startswith(_URL_SCHEMES)


def _parts(url: str) -> dict[str, str]:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise StoreError(_NEEDS_PSYCOPG) from None
    try:
        return {key: str(value) for key, value in conninfo_to_dict(url.strip()).items()}
    except Exception as exc:
        raise StoreError(f"not a valid PostgreSQL URL: {_first_line(exc)}") from None


def redacted(url: str) -> str:
    """``url`` without its password, for messages: ``postgresql://user@host:port/db``."""
    try:
        parts = _parts(url)
    except StoreError:
        return _PASSWORD_IN_URL.sub("", url.strip())
    user = f"{parts['user']}@" if "user" in parts else ""
    port = f":{parts['port']}" if "port" in parts else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


_PASSWORD_IN_URL = re.compile(r"(?<=[^/@:]):[^@/]*(?=@)|password=[^&\s]*")
_NEEDS_PSYCOPG = 'the PostgreSQL store needs psycopg 3: pip install "llmmeter[postgresql]"'
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.@-]+")


def default_spool_dir(url: str) -> Path:
    """Where records for the database at ``url`` wait on this machine: ``spool/<user@host-port-db>``
    beside the default local store (``$XDG_DATA_HOME/llmmeter``). The same database always gets the
    same directory, so the next process delivers what a previous one left."""
    from llmmeter.store import default_store_path

    parts = _parts(url)
    name = "-".join(
        (
            f"{parts.get('user', '')}@{parts.get('host', 'localhost')}",
            parts.get("port", "5432"),
            parts.get("dbname", ""),
        )
    )
    return default_store_path().parent / "spool" / (_UNSAFE_IN_NAME.sub("_", name).strip("._") or "default")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(url: str, connect_timeout_s: float = 5.0) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection to ``url`` (TCP keepalives on, so a dead server is noticed)."""
    _parts(url)
    import psycopg

    return psycopg.connect(
        url.strip(),
        autocommit=True,
        connect_timeout=max(1, round(connect_timeout_s)),
        application_name="llmmeter",
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )


# --- schema and migrations ------------------------------------------------------------------------
def _pg_type(name: str, sqlite_type: str) -> str:
    base = _SPECIAL_TYPES.get(name) or _PG_TYPES[sqlite_type.replace(" NOT NULL", "")]
    return f"{base} NOT NULL" if "NOT NULL" in sqlite_type or name == "record_id" else base


_COLUMN_TYPES: dict[str, str] = {name: _pg_type(name, sql_type) for name, sql_type in COLUMNS}

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.records ("
        + ", ".join(f"{name} {sql_type}" for name, sql_type in _COLUMN_TYPES.items())
        + ", PRIMARY KEY (start_time_unix_ns, record_id)) PARTITION BY RANGE (start_time_unix_ns)",
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.records_other PARTITION OF {SCHEMA}.records DEFAULT",
        f"CREATE INDEX IF NOT EXISTS records_by_model ON {SCHEMA}.records "
        "(request_model, start_time_unix_ns)",
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.quarantine (record_id TEXT UNIQUE, "
        "quarantined_at TIMESTAMPTZ NOT NULL DEFAULT now(), reason TEXT NOT NULL, record_json TEXT NOT NULL)",
    ),
    2: (  # issue 14: budgets read only the rows inserted since their last read; feedback in the fleet
        f"ALTER TABLE {SCHEMA}.records ADD COLUMN IF NOT EXISTS inserted_at TIMESTAMPTZ",
        f"ALTER TABLE {SCHEMA}.records ALTER COLUMN inserted_at SET DEFAULT clock_timestamp()",
        f"CREATE INDEX IF NOT EXISTS records_by_insertion ON {SCHEMA}.records USING brin (inserted_at) "
        "WITH (pages_per_range = 32, autosummarize = on)",
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.feedback (feedback_id TEXT PRIMARY KEY, "
        "time_unix_ns BIGINT NOT NULL, response_id TEXT NOT NULL, score DOUBLE PRECISION, label TEXT, "
        "comment TEXT, record_id TEXT, trace_id TEXT, span_id TEXT)",
        f"CREATE INDEX IF NOT EXISTS feedback_by_response_id ON {SCHEMA}.feedback (response_id)",
    ),
}
"""Each version's statements; every one is idempotent, so a migration interrupted half-way is
simply run again.

Version 2 adds ``records.inserted_at`` (set by the server; ``NULL`` on rows from before it, never
read by the report), indexed with a small BRIN index (each full range of 32 pages summarized by
autovacuum as the next one starts) so that budgets read only the rows inserted since their last
read (:mod:`llmmeter.budgets`), and the ``feedback`` table
(:mod:`llmmeter.feedback`), keyed by a feedback id so that a judgement delivered twice is stored once."""


def fleet_schema_version(conn: psycopg.Connection[Any]) -> int | None:
    """The newest version in ``llmmeter.schema_version``; ``None`` for a database without it."""
    row = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.schema_version",)).fetchone()
    if row is None or row[0] is None:
        return None
    found = conn.execute(f"SELECT max(version) FROM {SCHEMA}.schema_version").fetchone()
    return None if found is None or found[0] is None else int(found[0])


def prepare_fleet_database(conn: psycopg.Connection[Any]) -> None:
    """Create or upgrade the schema (idempotent, safe when many processes start at once), then the
    session's staging table. Raises :class:`StoreError` for a schema from a newer llmmeter."""
    found = fleet_schema_version(conn)
    if found is None or found < FLEET_SCHEMA_VERSION:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            _migrate_locked(conn)
    elif found > FLEET_SCHEMA_VERSION:
        raise _newer(found)
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS llmmeter_staging (LIKE {SCHEMA}.records) ON COMMIT DELETE ROWS"
    )


def _newer(found: int) -> StoreError:
    return StoreError(
        f"the fleet store's schema version {found} is newer than this llmmeter's "
        f"({FLEET_SCHEMA_VERSION}); upgrade llmmeter"
    )


def _migrate_locked(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    found = fleet_schema_version(conn) or 0  # again: another process may have migrated meanwhile
    if found > FLEET_SCHEMA_VERSION:
        raise _newer(found)
    for version in range(found + 1, FLEET_SCHEMA_VERSION + 1):
        for statement in _MIGRATIONS[version]:
            conn.execute(statement)
        conn.execute(f"INSERT INTO {SCHEMA}.schema_version (version) VALUES (%s)", (version,))
    _add_missing_columns(conn)


def _add_missing_columns(conn: psycopg.Connection[Any]) -> None:
    """A table made by an older llmmeter gets the columns it lacks, nullable."""
    existing = {
        str(row[0])
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (SCHEMA, "records"),
        )
    }
    for name, sql_type in _COLUMN_TYPES.items():
        if name not in existing:
            nullable = sql_type.replace(" NOT NULL", "")
            conn.execute(f"ALTER TABLE {SCHEMA}.records ADD COLUMN IF NOT EXISTS {name} {nullable}")


# --- monthly partitions ---------------------------------------------------------------------------
def _month_of(start: object) -> tuple[int, int] | None:
    """The (year, month), UTC, of a start time in ns; ``None`` when it belongs in ``records_other``."""
    if type(start) is not int:
        return None
    moment = time.gmtime(start // 1_000_000_000) if 0 <= start < 2**62 else None
    if moment is None or not _FIRST_YEAR <= moment.tm_year < _END_YEAR:
        return None
    return moment.tm_year, moment.tm_mon


def _month_start_ns(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)) * 1_000_000_000


def partition_name(year: int, month: int) -> str:
    """The partition holding the records that started in that month (UTC)."""
    return f"records_{year:04d}_{month:02d}"


def _following(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _ensure_partitions(conn: psycopg.Connection[Any], rows: Sequence[Sequence[Any]], known: set[Any]) -> None:
    """Create the monthly partitions ``rows`` need that this connection has not seen yet, and the
    month after each (so that writers rarely create one at the turn of the month).

    Each in its own short transaction, serialized by an advisory lock (writers on many hosts start
    a month together). Only the owner of ``llmmeter.records`` may create a partition: for any other
    role, or any other refusal, the records of that month go to ``records_other`` (logged once),
    never held back. A lost connection is raised."""
    import psycopg

    months = {_month_of(row[_START_INDEX]) for row in rows}
    missing = {month for month in months if month is not None} - known
    for year, month in sorted(missing | {_following(*month) for month in missing}):
        if (year, month) in known:
            continue
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{partition_name(year, month)} PARTITION OF "
                    f"{SCHEMA}.records FOR VALUES FROM ({_month_start_ns(year, month)}) "
                    f"TO ({_month_start_ns(*_following(year, month))})"
                )
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                raise
            log_once(
                f"fleet:partition:{type(exc).__name__}",
                "llmmeter: cannot create the partition %s of the fleet store (%s); its records go to "
                "records_other (nothing is lost; run one writer as the owner of llmmeter.records to "
                "create monthly partitions)",
                partition_name(year, month),
                _first_line(exc),
            )
        known.add((year, month))


# --- writing a batch ------------------------------------------------------------------------------
def _is_row_problem(exc: BaseException) -> bool:
    """An error about a value (to retry row by row), not about the connection or the schema."""
    import psycopg

    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    if isinstance(exc, psycopg.Error):  # "cannot adapt type": raised before reaching the server
        return exc.sqlstate is None
    return isinstance(exc, UnicodeError | ValueError | TypeError | OverflowError)


def fleet_storable(row: Sequence[Any]) -> tuple[Any, ...]:
    """``row`` made storable for PostgreSQL: :func:`~llmmeter.store.schema.storable_row`, then a
    NUL character in a text column (PostgreSQL text cannot hold one) as its visible escape ``\\x00``."""
    return tuple(
        value.replace("\x00", "\\x00") if isinstance(value, str) else value for value in storable_row(row)
    )


def write_fleet_batch(
    conn: psycopg.Connection[Any], batch: Batch, known_partitions: set[Any]
) -> tuple[int, int]:
    """Write ``batch`` in one transaction: ``(rows inserted, records quarantined)``. Records already
    in the database are skipped. Connection and schema errors are raised (nothing is written)."""
    _ensure_partitions(conn, batch.rows, known_partitions)
    try:
        with conn.transaction():
            with conn.cursor().copy(f"COPY {_STAGING} ({_COLUMN_LIST}) FROM STDIN") as copy:
                for row in batch.rows:
                    copy.write_row(row)
            return _merge_staged(conn), _quarantine_lines(conn, batch)
    except Exception as exc:
        if not _is_row_problem(exc):
            raise
    with conn.transaction():  # one odd row: stage them one at a time
        quarantined = sum(_stage_one(conn, row) for row in batch.rows)
        return _merge_staged(conn), quarantined + _quarantine_lines(conn, batch)


def _merge_staged(conn: psycopg.Connection[Any]) -> int:
    cursor = conn.execute(
        f"INSERT INTO {SCHEMA}.records ({_COLUMN_LIST}) SELECT DISTINCT ON (start_time_unix_ns, record_id) "
        f"{_COLUMN_LIST} FROM {_STAGING} ON CONFLICT DO NOTHING"
    )
    return max(0, cursor.rowcount)


_INSERT_STAGED = (
    f"INSERT INTO {_STAGING} ({_COLUMN_LIST}) VALUES ("
    + ", ".join(f"%s::text::{_COLUMN_TYPES[name].replace(' NOT NULL', '')}" for name in COLUMN_NAMES)
    + ")"
)
"""Every value goes as text, converted by the server: a value of an unexpected type is a
``DataError`` (quarantined), never a type mismatch in the statement."""


def _stage_one(conn: psycopg.Connection[Any], row: Sequence[Any]) -> int:
    """Stage ``row`` as it is, else made storable; 1 when it had to be quarantined instead."""
    problem: BaseException = ValueError("refused")
    for candidate in (row, fleet_storable(row)):
        try:
            with conn.transaction():  # a savepoint: a refused row leaves the batch intact
                conn.execute(_INSERT_STAGED, candidate)
            return 0
        except Exception as exc:
            if not _is_row_problem(exc):
                raise
            problem = exc
    record_json = json.dumps(dict(zip(COLUMN_NAMES, row, strict=True)), default=str)
    return _quarantine(
        conn, record_id_of(row), f"{type(problem).__name__}: {_first_line(problem)}", record_json
    )


def _quarantine_lines(conn: psycopg.Connection[Any], batch: Batch) -> int:
    return sum(_quarantine(conn, None, reason, line) for line, reason in batch.bad_lines)


def _quarantine(conn: psycopg.Connection[Any], record_id: Any, reason: str, record_json: str) -> int:
    values = fleet_storable((None if record_id is None else str(record_id), reason[:2000], record_json))
    conn.execute(
        f"INSERT INTO {SCHEMA}.quarantine (record_id, reason, record_json) VALUES (%s, %s, %s) "
        "ON CONFLICT (record_id) DO NOTHING",
        values,
    )
    log_once(
        "fleet:quarantine",
        "llmmeter: a record the fleet store refused was put in its quarantine table (%s)",
        reason[:200],
    )
    return 1


# --- reading --------------------------------------------------------------------------------------
_SELECT_COLUMNS = ", ".join(f"{name}::text" if name in _COST_COLUMNS else name for name in COLUMN_NAMES)
"""Costs come back as their exact decimal text, as the local store keeps them."""


def _unix_ns(moment: datetime) -> int:
    aware = moment if moment.tzinfo is not None else moment.astimezone()
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def iter_fleet_rows(
    conn: psycopg.Connection[Any],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 5_000,
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``llmmeter.records`` in :data:`COLUMN_NAMES` order, oldest first, ``batch_size``
    at a time (a server-side cursor: memory stays bounded)."""
    where, params = [], []
    if since is not None:
        where.append("start_time_unix_ns >= %s")
        params.append(_unix_ns(since))
    if until is not None:
        where.append("start_time_unix_ns < %s")
        params.append(_unix_ns(until))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with conn.transaction(), conn.cursor(name="llmmeter_rows") as cursor:
        cursor.execute(
            f"SELECT {_SELECT_COLUMNS} FROM {SCHEMA}.records{clause} ORDER BY start_time_unix_ns, record_id",
            params,
        )
        while rows := cursor.fetchmany(batch_size):
            yield rows


def read_fleet_records(
    url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: CallKind | None = None,
) -> list[CallRecord]:
    """The records in the fleet store at ``url`` that started in ``[since, until)``, oldest first
    (``kind`` keeps only LLM calls or only steps). Raises :class:`StoreError` with a one-line
    message when the database cannot be reached or holds no llmmeter store."""
    try:
        with connect(url) as conn:
            if fleet_schema_version(conn) is None:
                raise StoreError(f"no llmmeter store in {redacted(url)}")
            records = [
                record_from_row(dict(zip(COLUMN_NAMES, row, strict=True)))
                for rows in iter_fleet_rows(conn, since=since, until=until)
                for row in rows
            ]
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot read the fleet store {redacted(url)}: {_first_line(exc)}") from None
    return records if kind is None else [record for record in records if record.kind is kind]


# --- the store ------------------------------------------------------------------------------------
_connections_from_parent: list[Any] = []


def _orphan_in_child(conn: psycopg.Connection[Any]) -> None:
    """In a forked child: the parent's connection shares its socket with the parent. Point the
    child's copy of the descriptor at /dev/null so that nothing the child does (closing it, its
    finalizer at exit) reaches the parent's session, and keep the object alive for good."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, conn.pgconn.socket)
        os.close(devnull)
    _connections_from_parent.append(conn)


class PostgresStore(SQLiteStore):
    """Sends records to a PostgreSQL database shared by a fleet, through a local spool, so that
    none is lost while the database is away. See the module docstring.

    A :class:`~llmmeter.Sink` with a journal, like the local store: ``journal`` on the caller's
    thread, ``accept`` on the pipeline's, ``flush``/``close``. ``stats.busy_retries`` counts the
    batches that waited for the database to come back. Nothing happens at construction but checking
    the URL: the spool, the connection and the thread start with the first record.
    """

    def __init__(
        self,
        url: str,
        *,
        spool_dir: str | os.PathLike[str] | None = None,
        max_queue: int = 10_000,
        batch_size: int = 1_000,
        sync_journal: bool = False,
        segment_records: int = 10_000,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if not is_postgres_url(url):
            raise StoreError(f"not a PostgreSQL URL (postgresql://user@host/database): {url!r}")
        self._url = url
        self._shown = redacted(url)
        self._connect_timeout_s = connect_timeout_s
        self._partitions: set[Any] = set()
        spool = Path(spool_dir).expanduser() if spool_dir is not None else default_spool_dir(url)
        super().__init__(spool, max_queue=max_queue, batch_size=batch_size, sync_journal=sync_journal)
        self._journal = Journal(spool, sync=sync_journal, max_records=segment_records)

    @property
    def url(self) -> str:
        """The database, without its password."""
        return self._shown

    @property
    def spool_path(self) -> Path:
        """The local directory where records wait until the database has them."""
        return self._journal.directory

    def _reset_runtime_state(self) -> None:
        super()._reset_runtime_state()
        self._fleet: psycopg.Connection[Any] | None = None
        self._unreachable_since: float | None = None

    def _write(self, batch: Batch) -> bool:
        """Write ``batch``; while the database cannot take it, retry with backoff (the records wait
        in the spool). ``False`` only when the close deadline passed first."""
        delay = _FIRST_BACKOFF_S
        while True:
            try:
                with self._io_lock:
                    inserted, quarantined = write_fleet_batch(
                        self._connection_to_fleet(), batch, self._partitions
                    )
            except Exception as exc:
                self._disconnect()
                self._wait_for_database(exc)
                if not self._sleep(delay):
                    self._last_write_ok = False
                    return False
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            self.stats.written += inserted
            self.stats.quarantined += quarantined
            self._last_write_ok = True
            self._back_if_away()
            return True

    def _connection_to_fleet(self, connect_timeout_s: float | None = None) -> psycopg.Connection[Any]:
        if self._fleet is None:
            conn = connect(self._url, connect_timeout_s or self._connect_timeout_s)
            try:
                prepare_fleet_database(conn)
            except BaseException:
                conn.close()
                raise
            self._fleet = conn
        return self._fleet

    def _disconnect(self) -> None:
        with self._io_lock:
            conn, self._fleet = self._fleet, None
            self._partitions.clear()  # a new session checks them again (the database may be new)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _wait_for_database(self, exc: BaseException) -> None:
        self.stats.busy_retries += 1
        self._last_write_ok = False
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
        log_once(
            f"fleet:unreachable:{self._shown}:{type(exc).__name__}",  # once per database and kind of failure
            "llmmeter: the fleet store %s cannot take records (%s); they wait in the local spool %s "
            "and are delivered when it is back (retrying every %g s at most)",
            self._shown,
            _first_line(exc),
            self._journal.directory,
            _MAX_BACKOFF_S,
        )

    def _back_if_away(self) -> None:
        if self._unreachable_since is None:
            return
        away = time.monotonic() - self._unreachable_since
        self._unreachable_since = None
        log_once(
            f"fleet:back:{self._shown}",
            "llmmeter: the fleet store %s takes records again after %.1f s; the spooled ones follow",
            self._shown,
            away,
        )

    def _finish(self) -> None:
        try:
            super()._finish()
        finally:
            self._disconnect()

    def _forget_parent_after_fork(self) -> None:
        if self._fleet is not None:
            _orphan_in_child(self._fleet)
        super()._forget_parent_after_fork()

    # --- reads and writes beside the records (issue 14: budgets, feedback) ---------------------------
    def run_on_fleet(self, work: Callable[[psycopg.Connection[Any]], _T], *, timeout_s: float) -> _T:
        """``work(connection)`` in one transaction on this process's session with the database (the
        writer's: one connection per process), each statement limited to ``timeout_s``. Waits at
        most ``timeout_s`` for the batch the writer is sending (else :class:`TimeoutError`). Any
        failure is raised, after dropping the session: whoever needs it next reconnects."""
        if not self._io_lock.acquire(timeout=max(0.0, timeout_s)):
            raise TimeoutError(f"the connection to {self._shown} stayed busy for {timeout_s:g} s")
        failed = False
        try:
            conn = self._connection_to_fleet(min(timeout_s, self._connect_timeout_s))
            with conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}")
                return work(conn)
        except BaseException:
            failed = True
            raise
        finally:
            self._io_lock.release()
            if failed:
                self._disconnect()
