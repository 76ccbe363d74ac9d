"""The report computed by the database: group, count and sum in SQL, not record by record in Python.

:func:`query_report` gives the same :class:`~llmmeter.report.build.Report` as
:func:`~llmmeter.report.build.build_report` over the same records, without loading them: one
``GROUP BY`` scan returns a row per group (and cost status and currency) with its counts, token
sums, exact cost sum and the latency buckets of the group. No Python function runs per row on a
store written by this llmmeter: the store keeps the common group keys, the cost as an exact
integer and the latency buckets in columns of their own
(:mod:`llmmeter.store.report_columns`), so SQLite's own aggregates do the work, and they run on
a thread per CPU over row-id ranges (SQLite releases the GIL). Rows written by an older llmmeter
are read from the record's columns in the same statement, more slowly.

The SQL here is shared by every backend. What differs between databases sits behind
:class:`Dialect` (a handful of methods): the parameter placeholder, how to read an attribute out
of the JSON ``attributes`` column, how to sum costs exactly, and how to hand a group's latencies
back. :data:`SQLITE` is the local store's; PostgreSQL's is
:data:`~llmmeter.store.postgres_report.POSTGRESQL_DIALECT`.

Costs are **exact**: integer sums of 10^-12 units where every amount is exactly that, decimal
sums of the others (PostgreSQL: ``NUMERIC``). Percentiles are **within 0.05 %** of the exact ones:
each latency is counted in a log-spaced bucket whose value is within 0.05 % of every value in it
(:mod:`llmmeter.store.report_columns` describes the method), then the same linear interpolation
between closest ranks as :func:`~llmmeter.report.build.percentile` (``numpy.percentile``'s
default) is taken over the bucket values at those ranks. Bucket counts add up exactly, so the
total and ``--top``'s ``other`` row are merged histograms, and memory grows with the number of
groups and distinct buckets, not with the number of records.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import itertools
import json
import math
import os
import sqlite3
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import accumulate
from typing import Any, Final, Protocol

from llmmeter.record import USAGE_COUNT_FIELDS
from llmmeter.report.build import (
    GROUP_KEYS,
    LATENCY_METRICS,
    PERCENTILES,
    USER_ATTRIBUTE_KEYS,
    GroupStats,
    LatencyOutcome,
    LatencySummary,
    Report,
    ReportKind,
    SortOrder,
    attribute_name,
    interpolate,
    label,
    parse_group_keys,
    percentile_ranks,
    sort_and_fold,
    unmatched_keys,
)
from llmmeter.store.read import SQLiteRun, unix_ns
from llmmeter.store.report_columns import (
    ROWS_SEEN_KEY,
    ROWS_SUMMARY_KEY,
    RowsSummary,
    attribute_column,
    bucket_value,
    latency_bucket,
    latency_bucket_sql,
    rows_summary,
    units_to_decimal,
)
from llmmeter.store.schema import StoreError

__all__ = [
    "BUCKETED_PERCENTILE_METHOD",
    "SQLITE",
    "BucketPiece",
    "Dialect",
    "GroupLabels",
    "Histogram",
    "LatencyValues",
    "Part",
    "Run",
    "SQLiteDialect",
    "query_report",
    "sum_present",
    "time_window",
    "unknown_group_keys",
]

Run = Callable[[str, Sequence[object]], Iterable[Sequence[Any]]]
"""Runs one SQL statement with its parameters and yields the result rows."""

Progress = Callable[[str], None]
"""Told which step the report is at (``"counting and summing"``...), for a progress line."""

LatencyValues = dict[str, "array.array[float]"]
"""One group's observed latency values by metric (``ttft``, ``tpot``, ``duration``), any order."""

Histogram = Counter[int]
"""Latency values counted by bucket: the total's and ``other``'s, whatever their size."""

BucketPiece = Sequence[int] | str
"""A metric's latency buckets on one result row: a sequence, or their decimal text separated by
commas, left unparsed until its group is summarized (then parsed once, with its other rows')."""


@dataclass(frozen=True)
class Part:
    """One part of the report's scan, run on a thread of its own: a runner and a row condition."""

    run: Run
    where: str = "1 = 1"
    params: Sequence[object] = ()
    close: Callable[[], None] = lambda: None
    dialect: Dialect | None = None
    """How to read these rows, when not as the report's dialect does (rows known to hold only
    what this llmmeter writes)."""
    token_kinds: frozenset[str] | None = None
    """The token kinds these rows may have (the others are NULL on every one); ``None``: any."""


class Dialect(Protocol):
    """What one SQL database does differently; the report's queries are otherwise shared."""

    @property
    def param(self) -> str:
        """The parameter placeholder: ``?`` (sqlite3) or ``%s`` (psycopg)."""
        ...

    def prepare(self, run: Run) -> None:
        """Get the connection behind ``run`` ready for :meth:`cost_and_latency` (or do nothing)."""
        ...

    def attribute(self, key: str) -> tuple[str, list[object]]:
        """SQL for attribute ``key`` of the JSON ``attributes`` column, in any form that
        :meth:`attribute_label` turns into the value's label; NULL when absent."""
        ...

    def attribute_label(self, value: Any) -> str | None:
        """The group label of a value :meth:`attribute` selected: ``None`` for JSON null, ``'true'``
        / ``'false'`` for booleans, ``str()`` of anything else (as the in-memory report labels it)."""
        ...

    def cost_and_latency(self, amount: str, metrics: Sequence[str], latency_rows: str) -> tuple[str, ...]:
        """Aggregates over a group's rows giving the exact sum of the decimal-text expression
        ``amount``, and the values of the ``metrics`` columns on the rows where the condition
        ``latency_rows`` holds; :meth:`decode` reads them."""
        ...

    def decode(self, values: Sequence[Any]) -> tuple[Decimal | None, LatencyValues]:
        """The cost sum (``None``: no amount) and the latency values by metric, from the values
        of :meth:`cost_and_latency`'s aggregates."""
        ...

    def attribute_keys(self, limit: int) -> str:
        """SQL listing up to ``limit`` distinct attribute keys of recent records (for a message)."""
        ...

    def parts(self, run: Run) -> list[Part]:
        """The report's scan split into parts that run at once (one part: no split)."""
        ...

    def exact_cost(self, amount: str, units: str) -> tuple[str, ...]:
        """Aggregates giving the exact sum of the decimal ``amount``, for the rows where the
        store has its integer form ``units`` (a SQLite column) or for all (a decimal type), and
        the count of rows with an amount left to add with :meth:`decimal_sum`."""
        ...

    def read_exact_cost(self, values: Sequence[Any]) -> tuple[Decimal | None, int]:
        """The sum (``None``: no amount) and the rows left, from :meth:`exact_cost`'s values."""
        ...

    def widened(self, error: Exception) -> Dialect | None:
        """When ``error`` says a sum overflowed, a dialect whose sums cannot (the statement is
        then run again with it); else ``None``."""
        ...

    def decimal_sum(self, amount: str) -> str:
        """An aggregate giving the exact sum of the decimal ``amount``, read with ``Decimal(str())``."""
        ...

    def latency_buckets(self, metrics: Sequence[str], latency_rows: str) -> tuple[str, ...]:
        """Aggregates handing back the latencies of ``metrics`` (``ttft``...) on the rows where
        ``latency_rows`` holds, in any form :meth:`read_latency_buckets` reads."""
        ...

    def read_latency_buckets(self, values: Sequence[Any]) -> Sequence[BucketPiece | None]:
        """Per metric, the bucket of each value (``None``: no value)."""
        ...


def _no_values() -> LatencyValues:
    return {metric: array.array("d") for metric in LATENCY_METRICS}


class _CostAndLatency:
    """SQLite aggregate ``llmmeter_cost_latency(amount, latency_row, ttft, tpot, duration)``.

    SQLite has no decimal type: the amounts (decimal text) are added as :class:`~decimal.Decimal`
    here, exactly. The latency values of the rows flagged ``latency_row`` are kept in float
    arrays. An aggregate returns one scalar, so it returns a handle to what it collected.
    """

    handed_back: Final[dict[int, tuple[Decimal | None, LatencyValues]]] = {}
    _ids: Final = itertools.count(1)

    def __init__(self) -> None:
        self.cost: Decimal | None = None
        self.values = _no_values()
        self._ttft, self._tpot, self._duration = (self.values[m].append for m in LATENCY_METRICS)

    def step(
        self,
        amount: str | None,
        latency_row: int,
        ttft: float | None,
        tpot: float | None,
        duration: float | None,
    ) -> None:
        if amount is not None:
            self.cost = Decimal(amount) if self.cost is None else self.cost + Decimal(amount)
        if latency_row:
            if ttft is not None:
                self._ttft(ttft)
            if tpot is not None:
                self._tpot(tpot)
            if duration is not None:
                self._duration(duration)

    def finalize(self) -> int:
        handle = next(self._ids)
        self.handed_back[handle] = (self.cost, self.values)
        return handle


class _DecimalSum:
    """SQLite aggregate ``llmmeter_decimal_sum(amount)``: decimal texts added exactly."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, amount: str | None) -> None:
        if amount is not None:
            self.total = Decimal(amount) if self.total is None else self.total + Decimal(amount)

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


def _has_math_functions() -> bool:
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("SELECT ln(2.0), ceil(0.5)")
    except sqlite3.Error:
        return False
    return True


def _old_row_bucket(metric: str) -> str:
    """The bucket of a row an older llmmeter wrote: in SQL where SQLite has math functions (no
    Python call per row), else by the Python function."""
    if _MATH_FUNCTIONS:
        return latency_bucket_sql(f"{metric}_s")
    return f"llmmeter_latency_bucket({metric}_s)"


_MATH_FUNCTIONS: Final = _has_math_functions()


def _sqlite_bucket(value: float | None) -> int | None:
    try:
        return latency_bucket(value)
    except (TypeError, ValueError):  # a value an odd writer stored as text
        return None


_SHARD_MIN_ROWS: Final = 100_000
"""Below this many rows a report is quick on one thread."""
_MAX_THREADS: Final = 4
_UNITS_SPLIT: Final = 30
"""Integer costs are summed as their high and low bits apart: no 64-bit overflow at any size."""


def _rows_summary(run: Run) -> RowsSummary | None:
    """What the rows the store's trigger has seen hold; ``None`` for a store without one."""
    try:
        values = run("SELECT key, value FROM meta WHERE key IN (?, ?)", [ROWS_SUMMARY_KEY, ROWS_SEEN_KEY])
        return rows_summary({str(key): str(value) for key, value in values})
    except StoreError:  # a store without a meta table: nothing known
        return None


def _sqlite_run(run: Run) -> SQLiteRun:
    if not isinstance(run, SQLiteRun):
        raise TypeError("the SQLite report needs the runner of llmmeter.store.read.reading_store")
    return run


@dataclass(frozen=True)
class SQLiteDialect:
    """SQLite 3.38+ (the ``->`` JSON operator), as Python's ``sqlite3`` has."""

    param: str = "?"
    report_form: bool = False
    """Every row read has its report columns (:mod:`llmmeter.store.report_columns`): read those
    alone, without the per-row test for a row an older llmmeter wrote."""
    wide_sums: bool = False
    """Costs summed as two halves, which cannot overflow 64 bits; otherwise as one ``SUM``
    (SQLite stops with "integer overflow" past 9.2 million of a currency in one result row,
    and the statement is run again with this set: :meth:`widened`)."""

    def prepare(self, run: Run) -> None:
        """Register the report's Python functions (used on rows older llmmeters wrote) on the
        connection behind ``run`` (a :class:`~llmmeter.store.read.SQLiteRun`)."""
        # Any: typeshed's aggregate protocol knows only one-integer aggregates.
        connection: Any = _sqlite_run(run).connection
        connection.create_aggregate("llmmeter_cost_latency", 2 + len(LATENCY_METRICS), _CostAndLatency)
        connection.create_aggregate("llmmeter_decimal_sum", 1, _DecimalSum)
        connection.create_function("llmmeter_latency_bucket", 1, _sqlite_bucket, deterministic=True)

    def attribute(self, key: str) -> tuple[str, list[object]]:
        """The attribute's JSON text: its column when the store keeps one (rows of this llmmeter),
        else ``->`` (one JSON call per row, whole even with a NUL inside)."""
        column = attribute_column(key)
        path = '$."' + key + '"'
        if column is None:
            return "attributes -> ?", [path]
        if self.report_form:
            return column, []
        return f"CASE WHEN report_form IS NULL THEN attributes -> ? ELSE {column} END", [path]

    def attribute_label(self, value: Any) -> str | None:
        """See :meth:`Dialect.attribute_label`."""
        if value is None or value == _JSON_NULL:
            return None
        if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"' and "\\" not in value:
            return value[1:-1]  # a JSON string without escapes is its own text: no parse
        return label(json.loads(value))

    def cost_and_latency(self, amount: str, metrics: Sequence[str], latency_rows: str) -> tuple[str, ...]:
        """One aggregate (a Python one: exact decimal sums, float arrays), called once per row."""
        flag = f"CASE WHEN {latency_rows} THEN 1 ELSE 0 END"
        return (f"llmmeter_cost_latency({amount}, {flag}, {', '.join(metrics)})",)

    def decode(self, values: Sequence[Any]) -> tuple[Decimal | None, LatencyValues]:
        """See :meth:`Dialect.decode`."""
        return _CostAndLatency.handed_back.pop(int(values[0]))

    def attribute_keys(self, limit: int) -> str:
        """See :meth:`Dialect.attribute_keys`: the keys of the last 10,000 records."""
        return (
            "SELECT DISTINCT j.key FROM (SELECT attributes FROM records ORDER BY id DESC LIMIT 10000) r, "
            f"json_each(r.attributes) j ORDER BY 1 LIMIT {int(limit)}"
        )

    def parts(self, run: Run) -> list[Part]:
        """Row-id ranges, one per CPU (at most 4), each on a read-only connection of its own, cut
        where the store's summary of what its rows hold starts (rows it covers are read leaner)."""
        # Two subqueries: SQLite reads min() or max() of a rowid from the b-tree's ends, but
        # scans every row for the two in one query (0.17 s at a million).
        low, high = next(iter(run("SELECT (SELECT min(id) FROM records), (SELECT max(id) FROM records)", [])))
        if low is None:
            return [Part(run)]
        summary = _rows_summary(run)  # after max(id): it covers every row up to it
        threads = min(os.cpu_count() or 1, _MAX_THREADS)
        split = threads >= 2 and high - low >= _SHARD_MIN_ROWS
        edges = (
            {low + (high + 1 - low) * i // threads for i in range(threads + 1)} if split else {low, high + 1}
        )
        if summary is not None and low < summary.from_id <= high:
            edges.add(summary.from_id)
        parts: list[Part] = []
        for first, end in itertools.pairwise(sorted(edges)):
            runner, close = run, Part.close
            if parts:
                another = _sqlite_run(run).another()
                self.prepare(another)
                runner, close = another, another.close
            known = summary if summary is not None and first >= summary.from_id else None
            parts.append(
                Part(
                    runner,
                    "id >= ? AND id < ?",
                    (first, end),
                    close,
                    dialect=None if known is None else SQLiteDialect(report_form=known.report_form),
                    token_kinds=None if known is None else known.token_kinds,
                )
            )
        return parts

    def exact_cost(self, amount: str, units: str) -> tuple[str, ...]:
        """The integer units summed (exact, no Python per row: in two halves with
        :attr:`wide_sums`, else in one ``SUM`` and ``NULL``), and the count of rows whose
        amount is not a whole number of units."""
        left = _count_where(f"{amount} IS NOT NULL AND {units} IS NULL")
        if not self.wide_sums:
            return f"SUM({units})", "NULL", left
        mask = (1 << _UNITS_SPLIT) - 1
        return f"SUM({units} >> {_UNITS_SPLIT})", f"SUM({units} & {mask})", left

    def read_exact_cost(self, values: Sequence[Any]) -> tuple[Decimal | None, int]:
        """See :meth:`Dialect.read_exact_cost` (either form of :meth:`exact_cost`)."""
        high, low, left = values
        if high is None:
            return None, int(left or 0)
        units = int(high) if low is None else (int(high) << _UNITS_SPLIT) + int(low)
        return units_to_decimal(units), int(left or 0)

    def widened(self, error: Exception) -> SQLiteDialect | None:
        """See :meth:`Dialect.widened`: the costs summed in two halves."""
        if self.wide_sums or "integer overflow" not in str(error):
            return None
        return dataclasses.replace(self, wide_sums=True)

    def decimal_sum(self, amount: str) -> str:
        """A Python aggregate, for the few rows whose amount has no integer form."""
        return f"llmmeter_decimal_sum({amount})"

    def latency_buckets(self, metrics: Sequence[str], latency_rows: str) -> tuple[str, ...]:
        """Each metric's stored buckets (computed here for older rows) as decimal text separated
        by commas, NULL for none: parsed once per group, when it is summarized."""
        buckets = (
            f"{metric}_bucket"
            if self.report_form
            else f"CASE WHEN report_form IS NULL THEN {_old_row_bucket(metric)} ELSE {metric}_bucket END"
            for metric in metrics
        )
        return tuple(f"group_concat({bucket}) FILTER (WHERE {latency_rows})" for bucket in buckets)

    def read_latency_buckets(self, values: Sequence[Any]) -> Sequence[BucketPiece | None]:
        """See :meth:`Dialect.read_latency_buckets`: the texts, as they are."""
        return values


SQLITE: Final = SQLiteDialect()
"""The local store's dialect."""


# ---------------------------------------------------------------------------------------------
# Group keys as SQL

_COLUMN_KEYS: Final = {
    "model": "COALESCE(NULLIF(request_model, ''), response_model)",
    "request_model": "request_model",
    "response_model": "response_model",
    "provider": "COALESCE(provider, '')",
    "operation": "COALESCE(operation, '')",
    "outcome": "COALESCE(outcome, 'ok')",
    "kind": "COALESCE(kind, 'llm')",
    "name": "name",
    "error_type": "error_type",
    "server_address": "server_address",
    "service_tier": "service_tier",
    "streaming": "CASE WHEN streaming THEN 'true' ELSE 'false' END",
    "usage_source": "usage_source",
    "cost_status": "COALESCE(cost_status, 'no_usage')",
}
_ATTRIBUTE_KEYS: Final = {"user": USER_ATTRIBUTE_KEYS, "team": ("team",), "feature": ("feature",)}
_JSON_NULL: Final = "null"

# Every built-in key has SQL: a key added to GROUP_KEYS without it fails here, at import.
_MISSING_KEY_SQL = set(GROUP_KEYS) - set(_COLUMN_KEYS) - set(_ATTRIBUTE_KEYS)
if _MISSING_KEY_SQL:  # pragma: no cover - a programming error, caught by any test run
    raise ImportError(f"report group keys without SQL: {sorted(_MISSING_KEY_SQL)}")


@dataclass(frozen=True)
class _Key:
    sql: str
    params: list[object]
    is_attribute: bool


def _key(dialect: Dialect, key: str) -> _Key:
    name = attribute_name(key)
    if name is not None:
        if not name or '"' in name or "\\" in name:
            raise ValueError(f"not a valid attribute key: {key!r}")
        return _Key(*dialect.attribute(name), is_attribute=True)
    column = _COLUMN_KEYS.get(key)
    if column is not None:
        return _Key(column, [], is_attribute=False)
    attributes = _ATTRIBUTE_KEYS[key]
    if len(attributes) == 1:  # JSON null is labelled None: no NULLIF per row
        return _Key(*dialect.attribute(attributes[0]), is_attribute=True)
    # JSON null made NULL: the next of ``user``'s keys is then used.
    parts = [_present(dialect, attribute) for attribute in attributes]
    sql = f"COALESCE({', '.join(sql for sql, _ in parts)})"
    return _Key(sql, [p for _, params in parts for p in params], is_attribute=True)


class GroupLabels:
    """A result row's group key as the report labels it: each attribute's JSON decoded once per
    distinct value (a report's rows repeat a group's value per cost status, currency, part)."""

    def __init__(self, dialect: Dialect, keys: Sequence[_Key]) -> None:
        self._dialect = dialect
        self._attribute = [key.is_attribute for key in keys]
        self._memo: dict[Any, str | None] = {}

    def __call__(self, raw: Sequence[Any]) -> tuple[str | None, ...]:
        """The labels of the key values ``raw`` (the row's first columns)."""
        return tuple(
            self._one(value) if is_attribute else value
            for is_attribute, value in zip(self._attribute, raw, strict=True)
        )

    def _one(self, value: Any) -> str | None:
        try:
            return self._memo[value]
        except KeyError:
            found = self._memo[value] = self._dialect.attribute_label(value)
            return found


def _present(dialect: Dialect, name: str) -> tuple[str, list[object]]:
    """The attribute, NULL when it is JSON null too (the next of ``user``'s keys is then used)."""
    sql, params = dialect.attribute(name)
    return f"NULLIF({sql}, '{_JSON_NULL}')", params


# ---------------------------------------------------------------------------------------------
# The filter: time window, kind


def time_window(param: str, since: datetime | None, until: datetime | None) -> tuple[list[str], list[object]]:
    """The conditions of ``[since, until)`` on a record's start (none for an open end), and their
    parameters: every report query's window."""
    conditions: list[str] = []
    params: list[object] = []
    if since is not None:
        conditions.append(f"start_time_unix_ns >= {param}")
        params.append(unix_ns(since))
    if until is not None:
        conditions.append(f"start_time_unix_ns < {param}")
        params.append(unix_ns(until))
    return conditions, params


@dataclass(frozen=True)
class _Window:
    since: datetime | None
    until: datetime | None
    kind: ReportKind

    def where(self, param: str) -> tuple[str, list[object]]:
        window, params = time_window(param, self.since, self.until)
        conditions = ["1 = 1", *window]
        if self.kind != "all":
            conditions.append(f"COALESCE(kind, 'llm') = {param}")
            params.append(self.kind)
        return " AND ".join(conditions), params


# ---------------------------------------------------------------------------------------------
# One scan: a row per group, cost status and currency


def _usage_column(name: str, kind: ReportKind) -> str:
    """A usage column; a step's rolled-up one when the step has rolled-up usage."""
    if kind == "llm":
        return name
    return f"CASE WHEN kind = 'step' AND rollup_usage_source IS NOT NULL THEN rollup_{name} ELSE {name} END"


def _amount(kind: ReportKind) -> str:
    if kind == "llm":
        return "cost_amount"
    return "COALESCE(cost_amount, CASE WHEN kind = 'step' THEN rollup_cost END)"


def _currency(kind: ReportKind) -> str:
    # Rolled-up costs come from the price registry, whose prices are in USD.
    return f"CASE WHEN {_amount(kind)} IS NOT NULL THEN COALESCE(cost_currency, 'USD') END"


_LATENCY_CONDITIONS: Final = {
    "ok": "COALESCE(outcome, 'ok') = 'ok'",
    "error": "outcome = 'error'",
    "aborted": "outcome IN ('aborted', 'abandoned')",
    "all": "1 = 1",
}


def _units(kind: ReportKind) -> str:
    """The integer form of :func:`_amount` (SQLite's report columns)."""
    if kind == "llm":
        return "cost_units"
    return "CASE WHEN cost_amount IS NOT NULL THEN cost_units WHEN kind = 'step' THEN rollup_cost_units END"


def _counts(kind: ReportKind, token_kinds: frozenset[str] | None) -> list[str]:
    source = _usage_column("usage_source", kind)
    has_usage = f"({source} IS NOT NULL AND {source} <> 'missing')"
    amount = _amount(kind)
    step = "kind = 'step'"
    llm_calls = "1" if kind == "llm" else f"CASE WHEN {step} THEN COALESCE(rollup_calls, 0) ELSE 1 END"
    rollup_unpriced = "COALESCE(rollup_unpriced_calls, 0)"
    # CASE, not MAX(a, b): SQLite's two-argument MAX is GREATEST in PostgreSQL.
    step_priced_calls = f"COALESCE(rollup_calls, 0) - {rollup_unpriced}"
    step_priced = f"CASE WHEN {step_priced_calls} > 0 THEN {step_priced_calls} ELSE 0 END"
    priced = f"CASE WHEN {amount} IS NOT NULL THEN 1 ELSE 0 END"
    unpriced = f"CASE WHEN {amount} IS NULL AND {has_usage} THEN 1 ELSE 0 END"
    if kind != "llm":
        priced = f"CASE WHEN {step} THEN {step_priced} ELSE {priced} END"
        unpriced = f"CASE WHEN {step} THEN {rollup_unpriced} ELSE {unpriced} END"
    return [
        "COUNT(*)",
        _count_where("outcome = 'error'"),
        _count_where("outcome IN ('aborted', 'abandoned')"),
        "COUNT(*)" if kind == "llm" else f"SUM({llm_calls})",  # the same aggregate: computed once
        *(_token_sum(name, kind, token_kinds) for name in USAGE_COUNT_FIELDS),
        _count_where(f"NOT {has_usage}"),
        _count_where(f"{source} = 'estimated'"),
        _count_where(f"{amount} IS NOT NULL") if kind == "llm" else f"SUM({priced})",
        _count_where(f"{amount} IS NULL AND {has_usage}") if kind == "llm" else f"SUM({unpriced})",
    ]


def _count_where(condition: str) -> str:
    """An aggregate counting the group's rows where ``condition`` holds.

    ``FILTER``, not ``SUM(CASE ...)``: the database steps the aggregate only on the rows that
    count, where a ``SUM`` is stepped on every row (a function call per row and aggregate)."""
    return f"COUNT(*) FILTER (WHERE {condition})"


def _token_sum(name: str, kind: ReportKind, token_kinds: frozenset[str] | None) -> str:
    """The sum of token kind ``name``; NULL, not summed, where the rows are known to have none
    (``token_kinds``: the kinds an LLM call's row may have)."""
    if kind == "llm" and token_kinds is not None and name not in token_kinds:
        return "NULL"
    return sum_present(_usage_column(name, kind))


def sum_present(value: str) -> str:
    """``SUM(value)``, stepped only where ``value`` is not NULL: most token kinds are NULL on
    most rows, and a group without any keeps the sum NULL (absent, not 0)."""
    return f"SUM({value}) FILTER (WHERE {value} IS NOT NULL)"


_TOKENS_AT: Final = 4
_AFTER_TOKENS: Final = 4 + len(USAGE_COUNT_FIELDS)
_COUNTS: Final = _AFTER_TOKENS + 4


TokenColumns = Sequence[tuple[int, str]]
"""Where in a result row each token kind a statement sums is, and its name (a kind known to be
NULL on every row the statement reads is not summed: :func:`_token_sum`)."""


def _token_columns(kind: ReportKind, token_kinds: frozenset[str] | None) -> TokenColumns:
    return [
        (_TOKENS_AT + i, name)
        for i, name in enumerate(USAGE_COUNT_FIELDS)
        if _token_sum(name, kind, token_kinds) != "NULL"
    ]


def _add_row(stats: GroupStats, status: str, values: Sequence[Any], token_columns: TokenColumns) -> None:
    """Add one result row's counts and token sums to ``stats`` (a group has a row per cost
    status and currency)."""
    calls, errors, aborted, llm_calls = values[:4]
    missing, estimated, priced, unpriced = values[_AFTER_TOKENS:_COUNTS]
    # int(): PostgreSQL's SUM of a BIGINT expression (a step's rolled-up calls) is NUMERIC; the
    # counts that are SUMs for a report of steps are NULL over no rows.
    calls = int(calls)
    stats.calls += calls
    stats.errors += int(errors)
    stats.aborted += int(aborted)
    stats.llm_calls += int(llm_calls or 0)
    stats.usage_missing_calls += int(missing)
    stats.usage_estimated_calls += int(estimated)
    stats.priced_calls += int(priced or 0)
    stats.unpriced_calls += int(unpriced or 0)
    cost_status = stats.cost_status
    cost_status[status] = cost_status.get(status, 0) + calls
    tokens = stats.tokens
    for at, name in token_columns:
        count = values[at]
        if count is not None:
            tokens[name] = tokens.get(name, 0) + int(count)


def _add_cost(stats: GroupStats, currency: str | None, amount: Decimal | None) -> None:
    if amount is not None and currency is not None:
        stats.cost[currency] = stats.cost.get(currency, Decimal(0)) + amount


def _no_histograms() -> dict[str, Histogram]:
    return {metric: Counter() for metric in LATENCY_METRICS}


def _no_pieces() -> dict[str, list[BucketPiece]]:
    return {metric: [] for metric in LATENCY_METRICS}


@dataclass
class _Group:
    """A group as the scan returns it: its sums, and its latency buckets until they are ranked."""

    stats: GroupStats
    latency: dict[str, list[BucketPiece]] = field(default_factory=_no_pieces)
    """Per metric, the pieces the group's result rows brought (:func:`_buckets` reads them)."""


def _buckets(pieces: Sequence[BucketPiece]) -> list[int]:
    """A group's buckets of one metric, from its rows' pieces, in no particular order."""
    texts = [piece for piece in pieces if isinstance(piece, str)]
    # JSON's C parser reads comma-separated integers faster than int() per value; one call per
    # group and metric, and no array kept between the scan and the percentiles.
    values: list[int] = json.loads(f"[{','.join(texts)}]") if texts else []
    if len(texts) < len(pieces):
        for piece in pieces:
            if not isinstance(piece, str):
                values.extend(piece)
    return values


@dataclass
class _Scan:
    """The groups of a report being added up from the scan's rows."""

    groups: dict[tuple[str | None, ...], _Group] = field(default_factory=dict)
    decimal_rows: int = 0
    """Rows whose amount the integer sums left out (see :meth:`Dialect.exact_cost`)."""

    def group(self, key: tuple[str | None, ...]) -> _Group:
        found = self.groups.get(key)
        if found is None:
            found = self.groups[key] = _Group(GroupStats(key=key))
        return found


@dataclass
class _Query:
    """One report's SQL pieces, shared by its statements."""

    dialect: Dialect
    window: _Window
    group_by: tuple[str, ...]
    latency_outcome: LatencyOutcome
    keys: list[_Key] = field(default_factory=list)
    _label: GroupLabels = field(init=False)

    def __post_init__(self) -> None:
        self.keys = [_key(self.dialect, key) for key in self.group_by]
        self._label = GroupLabels(self.dialect, self.keys)

    def _statement(
        self, aggregates: Sequence[str], where: str, params: Sequence[object], keys: Sequence[_Key] = ()
    ) -> tuple[str, list[object]]:
        """``SELECT`` the group labels (keys, cost status, currency) and ``aggregates`` over the
        window's rows where ``where`` holds, a row per group (``keys``: the group keys' SQL,
        when not the report dialect's)."""
        keys = keys or self.keys
        window, window_params = self.window.where(self.dialect.param)
        kind = self.window.kind
        labels = [*(key.sql for key in keys), "COALESCE(cost_status, 'no_usage')", _currency(kind)]
        sql = (
            f"SELECT {', '.join(labels)}, {', '.join(aggregates)} FROM records WHERE {window} AND {where} "
            f"GROUP BY {', '.join(str(i + 1) for i in range(len(labels)))}"
        )
        return sql, [*(p for key in keys for p in key.params), *window_params, *params]

    def _aggregates(self, dialect: Dialect, token_kinds: frozenset[str] | None) -> tuple[list[str], int]:
        kind = self.window.kind
        cost = dialect.exact_cost(_amount(kind), _units(kind))
        latency = dialect.latency_buckets(LATENCY_METRICS, _LATENCY_CONDITIONS[self.latency_outcome])
        return [*_counts(kind, token_kinds), *cost, *latency], len(cost)

    def _part_statement(self, part: Part, dialect: Dialect) -> tuple[str, list[object]]:
        """The scan's statement over ``part``'s rows, read as ``dialect`` says."""
        keys = [_key(dialect, key) for key in self.group_by]
        aggregates, _ = self._aggregates(dialect, part.token_kinds)
        return self._statement(aggregates, part.where, part.params, keys)

    def scan(self, parts: Sequence[Part], scanned: Callable[[], None]) -> _Scan:
        """Counts, token and exact cost sums, and latency histograms per group: one scan of the
        window, its parts on threads of their own (the database works without the GIL);
        ``scanned`` is called once the database has returned every part's rows."""
        _, cost_width = self._aggregates(self.dialect, None)
        scan = _Scan()
        for part, rows in zip(parts, _fetch_in_parts(parts, self._fetch_part, scanned), strict=True):
            self._add_rows(scan, rows, cost_width, _token_columns(self.window.kind, part.token_kinds))
        return scan

    def _fetch_part(self, part: Part) -> list[Sequence[Any]]:
        """``part``'s result rows; again with wider sums if a sum overflowed."""
        dialect = part.dialect or self.dialect
        try:
            return list(part.run(*self._part_statement(part, dialect)))
        except Exception as error:  # the database's own error type
            wider = dialect.widened(error)
            if wider is None:
                raise
            return list(part.run(*self._part_statement(part, wider)))

    def _add_rows(
        self, scan: _Scan, rows: Iterable[Sequence[Any]], cost_width: int, token_columns: TokenColumns
    ) -> None:
        width, latency_at = len(self.keys), _COUNTS + cost_width
        read_cost, read_buckets = self.dialect.read_exact_cost, self.dialect.read_latency_buckets
        group, previous_key = None, None
        for row in rows:
            raw_key = row[:width]
            if group is None or raw_key != previous_key:  # a group's rows mostly come together
                group, previous_key = scan.group(self._label(raw_key)), raw_key
            currency, values = row[width + 1], row[width + 2 :]
            _add_row(group.stats, row[width], values, token_columns)
            amount, left = read_cost(values[_COUNTS:latency_at])
            _add_cost(group.stats, currency, amount)
            scan.decimal_rows += left
            for pieces, piece in zip(group.latency.values(), read_buckets(values[latency_at:]), strict=True):
                if piece:
                    pieces.append(piece)

    def add_decimal_costs(self, scan: _Scan, run: Run) -> None:
        """Add the amounts the integer sums left out, exactly (a second, narrower statement)."""
        kind = self.window.kind
        amount, units = _amount(kind), _units(kind)
        sql, params = self._statement(
            [self.dialect.decimal_sum(amount)], f"{amount} IS NOT NULL AND {units} IS NULL", ()
        )
        width = len(self.keys)
        for row in run(sql, params):
            total = row[width + 2]
            if total is not None:
                _add_cost(scan.group(self._label(row[:width])).stats, row[width + 1], Decimal(str(total)))


def _fetch_in_parts(
    parts: Sequence[Part], fetch: Callable[[Part], list[Sequence[Any]]], scanned: Callable[[], None]
) -> Iterator[list[Sequence[Any]]]:
    """``fetch(part)`` of each part, part by part, the parts running at once on threads of their
    own (the database works without the GIL); ``scanned`` is called when all are in."""
    if len(parts) == 1:
        rows = fetch(parts[0])
        scanned()
        yield rows
        return
    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="llmmeter-report") as pool:
        results = [pool.submit(fetch, part) for part in parts]
        wait(results)
        scanned()
        for result in results:
            yield result.result()


BUCKETED_PERCENTILE_METHOD: Final = (
    "linear interpolation between closest ranks (numpy.percentile default 'linear', Hyndman & Fan "
    "type 7) over the observed values counted in log-spaced buckets: within 0.05 % of exact"
)
"""How :func:`query_report` computes percentiles (see the module docstring)."""

_ORDINARY: Final = range(-1_000_000, 1_000_000)
"""Buckets of finite positive values, whose order is their values' order."""


def _value_order(bucket: int) -> tuple[bool, float]:
    value = bucket_value(bucket)
    return math.isnan(value), value


def _empty_summary() -> LatencySummary:
    return LatencySummary(count=0, percentiles=dict.fromkeys(PERCENTILES))


class _Percentiles:
    """Percentiles of bucketed latencies, for one report: each bucket's value computed once, and
    the ranks each percentile lies between once per count (a report's groups repeat both)."""

    def __init__(self) -> None:
        self._values: dict[int, float] = {}
        self._ranks: dict[int, list[tuple[int, int, int, float]]] = {}

    def _value(self, bucket: int) -> float:
        value = self._values.get(bucket)
        if value is None:
            value = self._values[bucket] = bucket_value(bucket)
        return value

    def _ranks_of(self, count: int) -> list[tuple[int, int, int, float]]:
        ranks = self._ranks.get(count)
        if ranks is None:
            ranks = self._ranks[count] = [(p, *percentile_ranks(count, p)) for p in PERCENTILES]
        return ranks

    def summarize(self, buckets: Sequence[int]) -> LatencySummary:
        """The percentiles of ``buckets``, one per value: :func:`summarize`."""
        if not buckets:
            return _empty_summary()
        ordered = sorted(buckets)
        if ordered[0] not in _ORDINARY or ordered[-1] not in _ORDINARY:
            ordered.sort(key=_value_order)  # zero, negative or non-finite values: rare
        value = self._value
        percentiles: dict[int, float | None] = {}
        for p, low, high, fraction in self._ranks_of(len(ordered)):
            # interpolate()'s arithmetic, term for term: the same float.
            low_value = value(ordered[low])
            percentiles[p] = (
                low_value + fraction * (value(ordered[high]) - low_value) if fraction else low_value
            )
        return LatencySummary(count=len(ordered), percentiles=percentiles)


def summarize(buckets: Sequence[int]) -> LatencySummary:
    """The percentiles of bucketed latencies, one bucket per value (within 0.05 % of exact)."""
    return _Percentiles().summarize(buckets)


def summarize_histogram(histogram: Histogram) -> LatencySummary:
    """The percentiles of latencies counted by bucket (within 0.05 % of exact)."""
    buckets = sorted((bucket for bucket, count in histogram.items() if count > 0), key=_value_order)
    if not buckets:
        return _empty_summary()
    ends = list(accumulate(histogram[bucket] for bucket in buckets))
    count = ends[-1]

    def value_at(rank: int) -> float:
        return bucket_value(buckets[bisect_right(ends, rank)])

    return LatencySummary(count=count, percentiles={p: interpolate(count, p, value_at) for p in PERCENTILES})


def _histogram_summaries(histograms: dict[str, Histogram]) -> dict[str, LatencySummary]:
    return {metric: summarize_histogram(histograms[metric]) for metric in LATENCY_METRICS}


def _rank_latencies(
    groups: dict[tuple[str | None, ...], _Group], folded: set[tuple[str | None, ...]]
) -> tuple[dict[str, Histogram], dict[str, Histogram]]:
    """Set each shown group's latency percentiles; the histograms of the total and of the folded
    groups (``other``). Each group's buckets are parsed once, here, and dropped once counted."""
    total, other, percentiles = _no_histograms(), _no_histograms(), _Percentiles()
    for key, group in groups.items():
        shown = key not in folded
        latency = {}
        for metric, pieces in group.latency.items():
            buckets = _buckets(pieces)
            total[metric].update(buckets)
            if shown:
                latency[metric] = percentiles.summarize(buckets)
            else:
                other[metric].update(buckets)
        group.latency = _no_pieces()
        if shown:
            group.stats.latency = latency
    return total, other


# ---------------------------------------------------------------------------------------------
# The report


@contextlib.contextmanager
def _scan_parts(dialect: Dialect, run: Run) -> Iterator[list[Part]]:
    """The parts a scan of the store ``run`` reads is split into (:meth:`Dialect.parts`), their
    connections closed on leaving."""
    parts = dialect.parts(run)
    try:
        yield parts
    finally:
        for part in parts:
            part.close()


def query_report(
    run: Run,
    *,
    dialect: Dialect = SQLITE,
    by: str | Sequence[str] | None = None,
    kind: ReportKind = "llm",
    since: datetime | None = None,
    until: datetime | None = None,
    latency_outcome: LatencyOutcome = "ok",
    top: int | None = None,
    sort: SortOrder = "cost",
    progress: Progress | None = None,
    scanned: Callable[[], None] | None = None,
) -> Report:
    """The report of the ``records`` table that ``run`` queries, computed by the database.

    Same arguments and same result as :func:`~llmmeter.report.build.build_report` over the
    records of the window ``[since, until)`` (percentiles within 0.05 %, see the module
    docstring); ``progress`` is told each step as it starts. ``scanned`` is called once the
    database has returned the scan's rows, before the Python work on them (a second or more at
    a million records): the moment to start other database work on another thread, which then
    runs beside it (as :class:`~llmmeter.report.figures.FiguresScan` does).
    """
    step = progress or (lambda _: None)
    group_by = parse_group_keys(by)
    query = _Query(dialect, _Window(since, until, kind), group_by, latency_outcome)
    dialect.prepare(run)
    step("counting and summing")
    with _scan_parts(dialect, run) as parts:
        scan = query.scan(parts, scanned or (lambda: None))
    if scan.decimal_rows:
        step("adding decimal costs")
        query.add_decimal_costs(scan, run)
    step("percentiles")
    groups = scan.groups
    total = GroupStats(key=())
    for group in groups.values():
        total.add_counts(group.stats)
    kept, rest = sort_and_fold((group.stats for group in groups.values()), sort, top)
    total_latency, other_latency = _rank_latencies(groups, {stats.key for stats in rest})
    total.latency = _histogram_summaries(total_latency)
    other: GroupStats | None = None
    if rest:
        other = GroupStats(key=(), folded_groups=len(rest), latency=_histogram_summaries(other_latency))
        for stats in rest:
            other.add_counts(stats)
    return Report(
        group_by=group_by,
        kind=kind,
        groups=kept,
        total=total,
        since=since,
        until=until,
        unmatched_keys=unmatched_keys(group_by, [group.stats for group in groups.values()]),
        latency_outcome=latency_outcome,
        other=other,
        sort=sort,
        percentile_method=BUCKETED_PERCENTILE_METHOD,
    )


def unknown_group_keys(
    run: Run,
    by: str | Sequence[str] | None,
    *,
    dialect: Dialect = SQLITE,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: ReportKind = "llm",
) -> tuple[str, ...]:
    """The keys of ``by`` that are neither built in nor an attribute any record of the window has.

    Cheap when every key is known: the search for an attribute stops at its first record."""
    where, where_params = _Window(since, until, kind).where(dialect.param)
    unknown = []
    for key in parse_group_keys(by):
        if key in GROUP_KEYS or key.startswith("attr:"):
            continue
        sql, params = _present(dialect, key)
        found = run(
            f"SELECT 1 FROM records WHERE {where} AND {sql} IS NOT NULL LIMIT 1", [*where_params, *params]
        )
        if not any(True for _ in found):
            unknown.append(key)
    return tuple(unknown)
