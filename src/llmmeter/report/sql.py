"""The report computed by the database: group, count and sum in SQL, not record by record in Python.

:func:`query_report` gives the same :class:`~llmmeter.report.build.Report` as
:func:`~llmmeter.report.build.build_report` over the same records, without loading them: one
``GROUP BY`` scan returns a row per group (and cost status and currency) with its counts, token
sums, exact cost sum, and the latency values of the group, which Python sorts to take the
percentiles (and merges for the total and the ``other`` row of ``--top``). Memory grows with the
number of *latency values* (8 bytes each), never with whole records.

The SQL here is shared by every backend. What differs between databases sits behind
:class:`Dialect` (a handful of methods): the parameter placeholder, how to read an attribute out
of the JSON ``attributes`` column, how to sum decimal-text costs exactly, and how to hand a
group's latency values back. :data:`SQLITE` is the local store's; a PostgreSQL backend supplies
its own (e.g. ``attributes::jsonb -> key``, ``sum(cost_amount::numeric)``,
``array_agg(x)``) and calls :func:`query_report` with a runner over its connection.

Percentiles are **exact**: the same linear interpolation between closest ranks as
:func:`~llmmeter.report.build.percentile` (``numpy.percentile``'s default), over the same values.
"""

from __future__ import annotations

import array
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Protocol

from llmmeter.record import USAGE_COUNT_FIELDS
from llmmeter.report.build import (
    GROUP_KEYS,
    LATENCY_METRICS,
    USER_ATTRIBUTE_KEYS,
    GroupStats,
    LatencyOutcome,
    LatencySummary,
    Report,
    ReportKind,
    SortOrder,
    attribute_name,
    label,
    parse_group_keys,
    sort_and_fold,
    unmatched_keys,
)
from llmmeter.store.read import unix_ns

__all__ = [
    "SQLITE",
    "Dialect",
    "LatencyValues",
    "Run",
    "SQLiteDialect",
    "query_report",
    "unknown_group_keys",
]

Run = Callable[[str, Sequence[object]], Iterable[Sequence[Any]]]
"""Runs one SQL statement with its parameters and yields the result rows."""

Progress = Callable[[str], None]
"""Told which step the report is at (``"counting and summing"``...), for a progress line."""

LatencyValues = dict[str, "array.array[float]"]
"""One group's observed latency values by metric (``ttft``, ``tpot``, ``duration``), any order."""


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


@dataclass(frozen=True)
class SQLiteDialect:
    """SQLite 3.38+ (the ``->`` JSON operator), as Python's ``sqlite3`` has."""

    param: str = "?"

    def prepare(self, run: Run) -> None:
        """Register ``llmmeter_cost_latency`` on the connection behind ``run`` (a
        :class:`~llmmeter.store.read.SQLiteRun`)."""
        connection = getattr(run, "connection", None)
        if connection is None:
            raise TypeError("the SQLite report needs the runner of llmmeter.store.read.reading_store")
        connection.create_aggregate("llmmeter_cost_latency", 2 + len(LATENCY_METRICS), _CostAndLatency)

    def attribute(self, key: str) -> tuple[str, list[object]]:
        """The attribute's JSON text (``->``): one JSON call per row, whole even with a NUL inside."""
        return "attributes -> ?", ['$."' + key + '"']

    def attribute_label(self, value: Any) -> str | None:
        """See :meth:`Dialect.attribute_label`."""
        return None if value is None else label(json.loads(value))

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
        return _Key(*_present(dialect, name), is_attribute=True)
    column = _COLUMN_KEYS.get(key)
    if column is not None:
        return _Key(column, [], is_attribute=False)
    parts = [_present(dialect, attribute) for attribute in _ATTRIBUTE_KEYS[key]]
    if len(parts) == 1:
        return _Key(*parts[0], is_attribute=True)
    sql = f"COALESCE({', '.join(sql for sql, _ in parts)})"
    return _Key(sql, [p for _, params in parts for p in params], is_attribute=True)


def _present(dialect: Dialect, name: str) -> tuple[str, list[object]]:
    """The attribute, NULL when it is JSON null too (the next of ``user``'s keys is then used)."""
    sql, params = dialect.attribute(name)
    return f"NULLIF({sql}, '{_JSON_NULL}')", params


# ---------------------------------------------------------------------------------------------
# The filter: time window, kind


@dataclass(frozen=True)
class _Window:
    since: datetime | None
    until: datetime | None
    kind: ReportKind

    def where(self, param: str) -> tuple[str, list[object]]:
        conditions: list[str] = ["1 = 1"]
        params: list[object] = []
        if self.since is not None:
            conditions.append(f"start_time_unix_ns >= {param}")
            params.append(unix_ns(self.since))
        if self.until is not None:
            conditions.append(f"start_time_unix_ns < {param}")
            params.append(unix_ns(self.until))
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


def _aggregates(dialect: Dialect, kind: ReportKind, latency_outcome: LatencyOutcome) -> list[str]:
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
    latencies = [f"{metric}_s" for metric in LATENCY_METRICS]
    return [
        "COUNT(*)",
        "SUM(CASE WHEN outcome = 'error' THEN 1 ELSE 0 END)",
        "SUM(CASE WHEN outcome IN ('aborted', 'abandoned') THEN 1 ELSE 0 END)",
        f"SUM({llm_calls})",
        *(f"SUM({_usage_column(name, kind)})" for name in USAGE_COUNT_FIELDS),
        f"SUM(CASE WHEN {has_usage} THEN 0 ELSE 1 END)",
        f"SUM(CASE WHEN {source} = 'estimated' THEN 1 ELSE 0 END)",
        f"SUM({priced})",
        f"SUM({unpriced})",
        *dialect.cost_and_latency(amount, latencies, _LATENCY_CONDITIONS[latency_outcome]),
    ]


_TOKENS: Final = slice(4, 4 + len(USAGE_COUNT_FIELDS))
_AFTER_TOKENS: Final = 4 + len(USAGE_COUNT_FIELDS)
_COST_AND_LATENCY: Final = _AFTER_TOKENS + 4


def _add_row(stats: GroupStats, status: str, values: Sequence[Any]) -> None:
    """Add one result row's counts and token sums to ``stats`` (a group has a row per cost
    status and currency)."""
    # int(): PostgreSQL's SUM of a BIGINT expression (a step's rolled-up calls) is NUMERIC.
    calls, errors, aborted, llm_calls = (int(value or 0) for value in values[:4])
    missing, estimated, priced, unpriced = (
        int(value or 0) for value in values[_AFTER_TOKENS:_COST_AND_LATENCY]
    )
    stats.calls += calls
    stats.errors += errors
    stats.aborted += aborted
    stats.llm_calls += llm_calls
    stats.usage_missing_calls += missing
    stats.usage_estimated_calls += estimated
    stats.priced_calls += priced
    stats.unpriced_calls += unpriced
    stats.cost_status[status] = stats.cost_status.get(status, 0) + calls
    tokens = stats.tokens
    for name, count in zip(USAGE_COUNT_FIELDS, values[_TOKENS], strict=True):
        if count is not None:
            tokens[name] = tokens.get(name, 0) + int(count)


@dataclass
class _Group:
    """A group as the scan returns it: its sums, and its latency values until they are ranked."""

    stats: GroupStats
    latency: LatencyValues = field(default_factory=_no_values)

    def add_latency(self, values: LatencyValues) -> None:
        for metric, observed in values.items():
            self.latency[metric].extend(observed)


@dataclass
class _Query:
    """One report's SQL pieces, shared by its statements."""

    dialect: Dialect
    window: _Window
    group_by: tuple[str, ...]
    latency_outcome: LatencyOutcome
    keys: list[_Key] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = [_key(self.dialect, key) for key in self.group_by]

    def scan(self, run: Run) -> dict[tuple[str | None, ...], _Group]:
        """Counts, token and exact cost sums, and latency values per group: one scan of the window."""
        kind = self.window.kind
        where, where_params = self.window.where(self.dialect.param)
        params = [*(p for key in self.keys for p in key.params), *where_params]
        labels = [*(key.sql for key in self.keys), "COALESCE(cost_status, 'no_usage')", _currency(kind)]
        aggregates = _aggregates(self.dialect, kind, self.latency_outcome)
        sql = (
            f"SELECT {', '.join(labels)}, {', '.join(aggregates)} FROM records WHERE {where} "
            f"GROUP BY {', '.join(str(i + 1) for i in range(len(labels)))}"
        )
        groups: dict[tuple[str | None, ...], _Group] = {}
        width = len(self.keys)
        for row in run(sql, params):
            key = self._label(row[:width])
            status, currency, values = row[width], row[width + 1], row[width + 2 :]
            group = groups.setdefault(key, _Group(GroupStats(key=key)))
            _add_row(group.stats, status, values)
            amount, latency = self.dialect.decode(values[_COST_AND_LATENCY:])
            if amount is not None and currency is not None:
                group.stats.cost[currency] = group.stats.cost.get(currency, Decimal(0)) + amount
            group.add_latency(latency)
        return groups

    def _label(self, raw: Sequence[Any]) -> tuple[str | None, ...]:
        return tuple(
            self.dialect.attribute_label(value) if key.is_attribute else value
            for key, value in zip(self.keys, raw, strict=True)
        )


def _summaries(values: LatencyValues) -> dict[str, LatencySummary]:
    return {metric: LatencySummary.of(values[metric]) for metric in LATENCY_METRICS}


def _merged_summaries(groups: Sequence[_Group]) -> dict[str, LatencySummary]:
    """The percentiles of several groups' values together, one metric at a time (a million
    values take 8 MB as an array, 32 MB as the sorted list)."""
    summaries = {}
    for metric in LATENCY_METRICS:
        merged: array.array[float] = array.array("d")
        for group in groups:
            merged.extend(group.latency[metric])
        summaries[metric] = LatencySummary.of(merged)
    return summaries


# ---------------------------------------------------------------------------------------------
# The report


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
) -> Report:
    """The report of the ``records`` table that ``run`` queries, computed by the database.

    Same arguments and same result as :func:`~llmmeter.report.build.build_report` over the
    records of the window ``[since, until)``; ``progress`` is told each step as it starts.
    """
    step = progress or (lambda _: None)
    group_by = parse_group_keys(by)
    query = _Query(dialect, _Window(since, until, kind), group_by, latency_outcome)
    dialect.prepare(run)
    step("counting and summing")
    groups = query.scan(run)
    step("percentiles")
    total = GroupStats(key=(), latency=_merged_summaries(list(groups.values())))
    for group in groups.values():
        total.add_counts(group.stats)
    kept, rest = sort_and_fold((group.stats for group in groups.values()), sort, top)
    other: GroupStats | None = None
    if rest:
        other = GroupStats(key=(), folded_groups=len(rest))
        for stats in rest:
            other.add_counts(stats)
        other.latency = _merged_summaries([groups[stats.key] for stats in rest])
    for stats in kept:
        stats.latency = _summaries(groups[stats.key].latency)
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
