"""The store's tables, their migrations, and a record as a row and back.

One row per :class:`CallRecord` in ``records``; numbers are kept as the record holds them: ``None``
stays ``NULL``, costs are decimal strings (exact), dicts are JSON. ``record_id`` is unique, so a
record replayed from a journal twice is written once.

Values SQLite cannot take are made storable by :func:`storable_row`, only when a batch failed on
them (the common path pays nothing):

* an integer outside SQLite's signed 64 bits is stored as the text ``"bigint:<digits>"`` and read
  back as the exact integer;
* a lone surrogate (``"\\ud800"``, valid in JSON and Python, not in UTF-8) in a text column is
  stored as its visible escape, the six characters ``\\ud800``; inside a JSON column (attributes,
  request parameters, content...) it is escaped by JSON and comes back unchanged;
* anything else of an unexpected type is stored as its ``str()``.

A record that still fails goes to the ``quarantine`` table with its JSON and the reason.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from decimal import Decimal
from enum import StrEnum
from operator import attrgetter
from typing import Any, TypeVar

from llmmeter.record import (
    USAGE_COUNT_FIELDS,
    CallKind,
    CallRecord,
    Cost,
    CostStatus,
    MediaUnits,
    Outcome,
    ServerTimings,
    Timings,
    Usage,
    UsageSource,
)
from llmmeter.store.report_columns import (
    REPORT_COLUMN_NAMES,
    REPORT_COLUMNS,
    keep_rows_summary,
    written_values,
)

SCHEMA_VERSION = 4
"""Version of the table layout this package writes; kept in the ``meta`` table. 2 added
``record_id`` (unique), ``media`` and the ``quarantine`` table; 3 the report's columns
(:data:`~llmmeter.store.report_columns.REPORT_COLUMNS`: left ``NULL`` on older rows, which the
report reads the slow way); 4 the trigger keeping what the rows inserted since hold
(:func:`~llmmeter.store.report_columns.keep_rows_summary`: the report sums only the token kinds
they have)."""

BIGINT_PREFIX = "bigint:"
"""How an integer beyond SQLite's 64 bits is stored: ``"bigint:18446744073709551616"``."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class StoreError(Exception):
    """The store file cannot be read: missing, unreadable, not a store. The message says which."""


_SERVER_TIMING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ServerTimings))
_MEDIA_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(MediaUnits))

COLUMNS: tuple[tuple[str, str], ...] = (
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
    ("media", "TEXT"),
    ("record_id", "TEXT"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
NUMERIC_COLUMNS: frozenset[str] = frozenset(
    name for name, sql_type in COLUMNS if sql_type.startswith(("INTEGER", "REAL"))
)

_CREATE_TABLES: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, "
    + ", ".join(f"{name} {sql_type}" for name, sql_type in (*COLUMNS, *REPORT_COLUMNS))
    + ")",
    "CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY, record_id TEXT UNIQUE, "
    "quarantined_unix_ns INTEGER NOT NULL, reason TEXT NOT NULL, record_json TEXT NOT NULL)",
)
_CREATE_INDEXES: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS records_by_start ON records (start_time_unix_ns)",
    "CREATE INDEX IF NOT EXISTS records_by_model ON records (request_model, start_time_unix_ns)",
    "CREATE UNIQUE INDEX IF NOT EXISTS records_by_record_id ON records (record_id)",
)

_STORED_COLUMN_NAMES = (*COLUMN_NAMES, *REPORT_COLUMN_NAMES)
INSERT_RECORD = (
    f"INSERT INTO records ({', '.join(_STORED_COLUMN_NAMES)}) "
    f"VALUES ({', '.join('?' for _ in _STORED_COLUMN_NAMES)}) ON CONFLICT (record_id) DO NOTHING"
)
"""Idempotent: a record already stored (same ``record_id``) is skipped; any other constraint
still fails, so that a bad row is quarantined rather than silently ignored. Takes the rows of
:func:`with_report_columns`."""

INSERT_QUARANTINE = (
    "INSERT INTO quarantine (record_id, quarantined_unix_ns, reason, record_json) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (record_id) DO NOTHING"
)

_RECORD_ID_INDEX = COLUMN_NAMES.index("record_id")


def record_id_of(row: Sequence[Any]) -> Any:
    """The ``record_id`` of a row in :data:`COLUMN_NAMES` order."""
    return row[_RECORD_ID_INDEX]


# --- creating and upgrading -----------------------------------------------------------------------
def prepare_for_writing(conn: sqlite3.Connection) -> None:
    """WAL mode, then create or upgrade the schema; refuses a file from a newer llmmeter.

    Raises ``sqlite3.OperationalError`` ("database is locked") when another connection holds the
    file: the writer retries that with backoff.
    """
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        if found is not None and found > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {found} is newer than this llmmeter's ({SCHEMA_VERSION}); "
                "upgrade llmmeter or use another store"
            )
        for statement in _CREATE_TABLES:
            conn.execute(statement)
        _add_missing_columns(conn)
        for statement in _CREATE_INDEXES:
            conn.execute(statement)
        keep_rows_summary(conn)
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The version in the ``meta`` table, ``None`` for a new file."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else None


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Upgrade a file made by an older llmmeter: new columns are only ever added, nullable."""
    existing = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
    for name, sql_type in (*COLUMNS, *REPORT_COLUMNS):
        if name not in existing:
            conn.execute(f"ALTER TABLE records ADD COLUMN {name} {sql_type.replace(' NOT NULL', '')}")


def rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back, keeping the original error (SQLite may already have rolled back)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


# --- record -> row --------------------------------------------------------------------------------
def to_json(value: object) -> str | None:
    """``value`` as compact JSON (``None`` for ``None``); never raises.

    Lone surrogates are escaped by JSON (``ensure_ascii``) and come back unchanged; objects JSON
    does not know are stored as their ``str()``; keys that are not strings as their ``str()``.
    """
    if value is None:
        return None
    if value == {}:
        return "{}"
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError):  # non-string keys of mixed types, a cycle
        return _ENCODER.encode(_plain(value, 0))


# One encoder built once: json.dumps() with any non-default argument builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"), sort_keys=True)


def _plain(value: object, depth: int) -> object:
    if depth > 50:
        return "<too deep>"
    if isinstance(value, Mapping):
        return {_text(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _text(value)


def _text(value: object) -> str:
    try:
        return value if isinstance(value, str) else str(value)
    except Exception:
        return "<unprintable>"


def _fields(value: object | None, names: tuple[str, ...]) -> dict[str, Any] | None:
    if value is None:
        return None
    return {name: getattr(value, name) for name in names}


# --- the journal form: the record as the caller's thread can build it cheaply -----------------------
JOURNAL_FORM = 1
"""Version of :func:`journal_form`'s layout (written in every journal segment's header)."""

_TOP_FIELDS = (
    "operation",
    "provider",
    "request_model",
    "response_model",
    "name",
    "server_address",
    "server_port",
    "streaming",
    "error_type",
    "response_id",
    "finish_reasons",
    "service_tier",
    "request_params",
    "attributes",
    "trace_id",
    "span_id",
    "rollup_calls",
    "rollup_unpriced_calls",
    "content",
    "record_id",
)
_top = attrgetter(*_TOP_FIELDS)
_timings = attrgetter("start_time_unix_ns", "duration_s", "ttfc_s", "ttft_s", "tpot_s", "chunks")
_counts = attrgetter(*USAGE_COUNT_FIELDS, "estimate_method")


def _usage_form(usage: Usage | None) -> tuple[Any, ...] | None:
    return None if usage is None else (_counts(usage), usage.source._value_)


def journal_form(record: CallRecord) -> tuple[Any, ...]:
    """``record`` as nested tuples of plain values (strings, numbers, ``None``, dicts, lists): what
    the journal writes on the caller's thread. Built with C-level attribute getters, because every
    Python-level step here is paid by the application's call; :func:`row_from_form` (the writer's
    thread) lays it out as a row."""
    timings = record.timings
    cost = record.cost
    rollup_cost = record.rollup_cost
    return (
        _top(record),
        record.kind._value_,
        record.outcome._value_,
        record.cost_status._value_,
        _timings(timings),
        None if timings.server is None else _fields(timings.server, _SERVER_TIMING_FIELDS),
        _usage_form(record.usage),
        None
        if cost is None
        else (
            str(cost.amount),
            cost.currency,
            cost.source,
            cost.price_ref,
            {k: str(v) for k, v in cost.components.items()},
        ),
        _usage_form(record.rollup_usage),
        None if rollup_cost is None else str(rollup_cost),
        None if record.media is None else _fields(record.media, _MEDIA_FIELDS),
    )


_NO_USAGE: tuple[None, ...] = (None,) * (2 + len(USAGE_COUNT_FIELDS))
_NO_COST: tuple[None, ...] = (None,) * 5


def _usage_row(form: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if form is None:
        return _NO_USAGE
    counts, source = form
    return (source, counts[-1], *counts[:-1])


def row_from_form(form: Sequence[Any]) -> tuple[Any, ...]:
    """A :func:`journal_form` as the values of :data:`COLUMN_NAMES`, ready for SQLite."""
    top, kind, outcome, cost_status, timings, server, usage, cost, rollup_usage, rollup_cost, media = form
    (
        operation,
        provider,
        request_model,
        response_model,
        name,
        server_address,
        server_port,
        streaming,
        error_type,
        response_id,
        finish_reasons,
        service_tier,
        request_params,
        attributes,
        trace_id,
        span_id,
        rollup_calls,
        rollup_unpriced_calls,
        content,
        record_id,
    ) = top
    start, duration, ttfc, ttft, tpot, chunks = timings
    amount, currency, cost_source, price_ref, components = _NO_COST if cost is None else cost
    return (
        start,
        kind,
        operation,
        provider,
        request_model,
        response_model,
        name,
        server_address,
        server_port,
        int(streaming),
        outcome,
        error_type,
        duration,
        ttfc,
        ttft,
        tpot,
        chunks,
        to_json(server),
        *_usage_row(usage),
        amount,
        currency,
        cost_source,
        price_ref,
        to_json(components),
        cost_status,
        response_id,
        to_json(finish_reasons),
        service_tier,
        to_json(request_params),
        to_json(attributes),
        trace_id,
        span_id,
        *_usage_row(rollup_usage),
        rollup_cost,
        rollup_calls,
        rollup_unpriced_calls,
        to_json(content),
        to_json(media),
        record_id,
    )


_ATTRIBUTES = COLUMN_NAMES.index("attributes")
_COST_AMOUNT = COLUMN_NAMES.index("cost_amount")
_ROLLUP_COST = COLUMN_NAMES.index("rollup_cost")
_LATENCIES = tuple(COLUMN_NAMES.index(f"{metric}_s") for metric in ("ttft", "tpot", "duration"))


def with_report_columns(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row of :data:`COLUMN_NAMES` followed by its report columns, for :data:`INSERT_RECORD`."""
    latencies = [row[i] for i in _LATENCIES]
    return (*row, *written_values(row[_ATTRIBUTES], row[_COST_AMOUNT], row[_ROLLUP_COST], latencies))


def record_to_row(record: CallRecord) -> tuple[Any, ...]:
    """``record`` as the values of :data:`COLUMN_NAMES`, in that order, ready for SQLite."""
    return row_from_form(journal_form(record))


def storable_row(row: Iterable[Any]) -> tuple[Any, ...]:
    """``row`` with every value SQLite cannot bind made storable (see the module docstring)."""
    return tuple(_storable(value) for value in row)


def _storable(value: Any) -> Any:
    # Subclasses (an IntEnum, a str-based enum from an SDK) become their plain base type: marshal,
    # which writes the journal, takes exact types only.
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        number = int(value)
        return number if _INT64_MIN <= number <= _INT64_MAX else f"{BIGINT_PREFIX}{number}"
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        text = str.__str__(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return text
    return _storable(_text(value))


def row_from_mapping(values: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row in :data:`COLUMN_NAMES` order from named values (a journal line of any version)."""
    return tuple(values.get(name) for name in COLUMN_NAMES)


# --- row -> record --------------------------------------------------------------------------------
_E = TypeVar("_E", bound=StrEnum)


def _enum(enum_type: type[_E], value: Any, default: _E) -> _E:
    """``value`` as a member of ``enum_type``; ``default`` for NULL or a value from a newer llmmeter."""
    try:
        return enum_type(value)
    except ValueError:
        return default


def decode_number(value: Any) -> Any:
    """A numeric column's value: a ``"bigint:..."`` text back to its exact integer."""
    if isinstance(value, str) and value.startswith(BIGINT_PREFIX):
        return int(value[len(BIGINT_PREFIX) :])
    return value


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


def record_from_row(row: Mapping[str, Any]) -> CallRecord:
    """The record a row holds (numeric columns already decoded by :func:`decode_number`)."""
    finish_reasons = _loads(row.get("finish_reasons"))
    rollup_cost = row.get("rollup_cost")
    media = _loads(row.get("media"))
    record = CallRecord(
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
        media=None if media is None else MediaUnits(**media),
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
    stored_id = row.get("record_id")
    # Rows written before record ids existed get a stable id of their own.
    record.record_id = stored_id if stored_id is not None else f"row:{row.get('id')}"
    return record
