"""The report computed by the database: group, count, sum and rank in SQL, not in Python.

:func:`query_report` gives the same :class:`~llmmeter.report.build.Report` as
:func:`~llmmeter.report.build.build_report` over the same records, without loading them: the
database returns one row per group (and currency and cost status) with its counts and sums, and
for the percentiles only the two values around each rank. Memory stays flat whatever the number
of records; time grows with them (see ``benchmarks/report_scale.py``).

The SQL here is shared by every backend. What differs between databases sits behind
:class:`Dialect` (a handful of methods): how to read an attribute out of the JSON ``attributes``
column, how to sum decimal-text costs exactly, the parameter placeholder, and how to compute
percentiles. :data:`SQLITE` is the local store's; a PostgreSQL backend supplies its own (e.g.
``attributes::jsonb ->> key``, ``sum(cost_amount::numeric)`` and ``percentile_cont``) and calls
:func:`query_report` with a connection running its SQL.

Percentiles are **exact**: the same linear interpolation between closest ranks as
:func:`~llmmeter.report.build.percentile` (``numpy.percentile``'s default), over the same
values; in SQLite a window function numbers each group's values in order, and only the rows at
the ranks ``floor((n - 1) * p / 100)`` and the one after are returned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
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
    parse_group_keys,
    sort_and_fold,
    unmatched_keys,
)
from llmmeter.store.read import unix_ns

__all__ = ["SQLITE", "Dialect", "Run", "SQLiteDialect", "query_report", "unknown_group_keys"]

Run = Callable[[str, Sequence[object]], Iterable[Sequence[Any]]]
"""Runs one SQL statement with its parameters and yields the result rows."""

Progress = Callable[[str], None]
"""Told which step the report is at (``"counting"``, ``"percentiles"``...), for a progress line."""


class Dialect(Protocol):
    """What one SQL database does differently; the report's queries are otherwise shared."""

    @property
    def param(self) -> str:
        """The parameter placeholder: ``?`` (sqlite3) or ``%s`` (psycopg)."""
        ...

    def attribute(self, key: str) -> tuple[str, list[object]]:
        """SQL for the text label of attribute ``key`` in the JSON ``attributes`` column:
        ``'true'``/``'false'`` for booleans, the value as text otherwise, NULL when absent or null."""
        ...

    def exact_sum(self, amount: str) -> tuple[str, ...]:
        """Aggregate expressions summing the decimal-text expression ``amount`` exactly."""
        ...

    def sum_value(self, values: Sequence[Any]) -> Decimal | None:
        """The exact sum from the values of :meth:`exact_sum`'s expressions (``None``: no rows)."""
        ...

    def inexact(self, amount: str) -> str:
        """SQL condition true for the amounts :meth:`exact_sum` cannot add (added in Python)."""
        ...

    def null_safe_equal(self, left: str, right: str) -> str:
        """SQL true when ``left`` and ``right`` are equal or both NULL."""
        ...

    def bind_text(self, value: str | None) -> tuple[str, object]:
        """A placeholder and its parameter for a group key value read back from the database
        (which may hold a lone surrogate, from a JSON attribute)."""
        ...

    def attribute_keys(self, limit: int) -> str:
        """SQL listing up to ``limit`` distinct attribute keys of recent records (for a message)."""
        ...

    def percentile_rows(self, source: str, keys: int) -> str:
        """SQL over ``source`` (columns ``k0..k{keys-1}, m, x``: group key, metric index, value)
        giving ``k0.., m, n, i, x`` rows: ``n`` values in the group and metric, and at least the
        values ``x`` at the 0-based ranks ``i`` that
        :func:`~llmmeter.report.build.percentile_ranks` names."""
        ...


@dataclass(frozen=True)
class SQLiteDialect:
    """SQLite 3.25+ (window functions) with the JSON1 functions, as Python's ``sqlite3`` has."""

    param: str = "?"

    def attribute(self, key: str) -> tuple[str, list[object]]:
        """See :meth:`Dialect.attribute`; the JSON path is a parameter, so any key is safe."""
        path = '$."' + key + '"'
        sql = (
            "CASE WHEN json_type(attributes, ?) IN ('true', 'false') THEN json_type(attributes, ?) "
            "ELSE CAST(json_extract(attributes, ?) AS TEXT) END"
        )
        return sql, [path, path, path]

    def exact_sum(self, amount: str) -> tuple[str, ...]:
        """Whole units, then two 9-digit slices of the fraction, each summed as integers: exact
        to 18 decimals, and no sum overflows before billions of rows."""
        dot = f"instr({amount} || '.', '.')"
        fraction = f"substr({amount}, {dot} + 1) || '000000000000000000'"
        exact = f"CASE WHEN NOT ({self.inexact(amount)}) THEN "
        return (
            f"SUM({exact}CAST(substr({amount}, 1, {dot} - 1) AS INTEGER) END)",
            f"SUM({exact}CAST(substr({fraction}, 1, 9) AS INTEGER) END)",
            f"SUM({exact}CAST(substr({fraction}, 10, 9) AS INTEGER) END)",
        )

    def sum_value(self, values: Sequence[Any]) -> Decimal | None:
        """See :meth:`Dialect.sum_value`."""
        units, high, low = values
        if units is None:
            return None
        return Decimal(units) + Decimal(high).scaleb(-9) + Decimal(low).scaleb(-18)

    def inexact(self, amount: str) -> str:
        """Amounts that are not plain ``digits[.digits]`` with at most 12 whole and 18 decimal
        digits: ``1E-7``, negative amounts, more precision (rare: summed as ``Decimal``)."""
        return (
            f"({amount} IS NOT NULL AND ({amount} NOT GLOB '[0-9]*' OR {amount} GLOB '*[^0-9.]*' "
            f"OR {amount} GLOB '*.*.*' OR instr({amount} || '.', '.') > 13 "
            f"OR length({amount}) - instr({amount} || '.', '.') > 18))"
        )

    def null_safe_equal(self, left: str, right: str) -> str:
        """See :meth:`Dialect.null_safe_equal`."""
        return f"{left} IS {right}"

    def bind_text(self, value: str | None) -> tuple[str, object]:
        """A lone surrogate cannot be bound as text: bind the bytes SQLite's JSON functions
        produced for it (its 3-byte form) and make them text again in SQL."""
        if value is None or not _SURROGATE.search(value):
            return self.param, value
        return f"CAST({self.param} AS TEXT)", value.encode("utf-8", "surrogatepass")

    def attribute_keys(self, limit: int) -> str:
        """See :meth:`Dialect.attribute_keys`: the keys of the last 10,000 records."""
        return (
            "SELECT DISTINCT j.key FROM (SELECT attributes FROM records ORDER BY id DESC LIMIT 10000) r, "
            f"json_each(r.attributes) j ORDER BY 1 LIMIT {int(limit)}"
        )

    def percentile_rows(self, source: str, keys: int) -> str:
        """Number each group's values in order; keep the rows at the ranks each percentile needs."""
        partition = ", ".join([*(f"k{i}" for i in range(keys)), "m"])
        ranks = " OR ".join(f"i = (n - 1) * {p} / 100 OR i = (n - 1) * {p} / 100 + 1" for p in PERCENTILES)
        return (
            f"SELECT {partition}, n, i, x FROM ("
            f"SELECT {partition}, x, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY x) - 1 AS i, "
            f"COUNT(*) OVER (PARTITION BY {partition}) AS n FROM ({source})"
            f") WHERE {ranks}"
        )


_SURROGATE: Final = re.compile("[\ud800-\udfff]")

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


def _key_sql(dialect: Dialect, key: str) -> tuple[str, list[object]]:
    name = attribute_name(key)
    if name is not None:
        if not name or '"' in name or "\\" in name:
            raise ValueError(f"not a valid attribute key: {key!r}")
        return dialect.attribute(name)
    column = _COLUMN_KEYS.get(key)
    if column is not None:
        return column, []
    parts = [dialect.attribute(attribute) for attribute in _ATTRIBUTE_KEYS[key]]
    if len(parts) == 1:
        return parts[0]
    return f"COALESCE({', '.join(sql for sql, _ in parts)})", [p for _, params in parts for p in params]


# Every built-in key has SQL: a key added to GROUP_KEYS without it fails here, at import.
_MISSING_KEY_SQL = set(GROUP_KEYS) - set(_COLUMN_KEYS) - set(_ATTRIBUTE_KEYS)
if _MISSING_KEY_SQL:  # pragma: no cover - a programming error, caught by any test run
    raise ImportError(f"report group keys without SQL: {sorted(_MISSING_KEY_SQL)}")


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
# Counts and sums: one row per group, currency and cost status


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


def _aggregates(dialect: Dialect, kind: ReportKind) -> list[str]:
    source = _usage_column("usage_source", kind)
    has_usage = f"({source} IS NOT NULL AND {source} <> 'missing')"
    amount = _amount(kind)
    step = "kind = 'step'"
    llm_calls = "1" if kind == "llm" else f"CASE WHEN {step} THEN COALESCE(rollup_calls, 0) ELSE 1 END"
    rollup_unpriced = "COALESCE(rollup_unpriced_calls, 0)"
    step_priced = f"MAX(COALESCE(rollup_calls, 0) - {rollup_unpriced}, 0)"
    priced = f"CASE WHEN {amount} IS NOT NULL THEN 1 ELSE 0 END"
    unpriced = f"CASE WHEN {amount} IS NULL AND {has_usage} THEN 1 ELSE 0 END"
    if kind != "llm":
        priced = f"CASE WHEN {step} THEN {step_priced} ELSE {priced} END"
        unpriced = f"CASE WHEN {step} THEN {rollup_unpriced} ELSE {unpriced} END"
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
        f"SUM(CASE WHEN {dialect.inexact(amount)} THEN 1 ELSE 0 END)",
        *dialect.exact_sum(amount),
    ]


def _stats_from_row(stats: GroupStats, status: str, currency: str | None, values: Sequence[Any]) -> int:
    """Add one result row to ``stats``; returns how many costs it could not sum exactly."""
    calls, errors, aborted, llm_calls = values[:4]
    tokens = values[4 : 4 + len(USAGE_COUNT_FIELDS)]
    missing, estimated, priced, unpriced, inexact = values[
        4 + len(USAGE_COUNT_FIELDS) : 9 + len(USAGE_COUNT_FIELDS)
    ]
    stats.add_counts(
        GroupStats(
            key=stats.key,
            calls=calls,
            errors=errors,
            aborted=aborted,
            llm_calls=llm_calls,
            tokens={
                name: int(n) for name, n in zip(USAGE_COUNT_FIELDS, tokens, strict=True) if n is not None
            },
            usage_missing_calls=missing,
            usage_estimated_calls=estimated,
            priced_calls=priced,
            unpriced_calls=unpriced,
            cost_status={status: calls},
        )
    )
    return int(inexact)


@dataclass
class _Query:
    """One report's SQL pieces, shared by its statements."""

    dialect: Dialect
    run: Run
    window: _Window
    group_by: tuple[str, ...]
    latency_outcome: LatencyOutcome
    keys_sql: list[str] = field(default_factory=list)
    keys_params: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in self.group_by:
            sql, params = _key_sql(self.dialect, key)
            self.keys_sql.append(sql)
            self.keys_params.extend(params)

    @property
    def width(self) -> int:
        return len(self.group_by)

    def sums(self) -> dict[tuple[str | None, ...], GroupStats]:
        """Counts, token and cost sums per group: one scan of the window."""
        kind = self.window.kind
        where, where_params = self.window.where(self.dialect.param)
        labels = [*self.keys_sql, "COALESCE(cost_status, 'no_usage')", _currency(kind)]
        sql = (
            f"SELECT {', '.join(labels)}, {', '.join(_aggregates(self.dialect, kind))} "
            f"FROM records WHERE {where} GROUP BY {', '.join(str(i + 1) for i in range(len(labels)))}"
        )
        groups: dict[tuple[str | None, ...], GroupStats] = {}
        inexact_groups: set[tuple[str | None, ...]] = set()
        for row in self.run(sql, [*self.keys_params, *where_params]):
            key = tuple(row[: self.width])
            status, currency = row[self.width], row[self.width + 1]
            values = row[self.width + 2 :]
            stats = groups.setdefault(key, GroupStats(key=key))
            if _stats_from_row(stats, status, currency, values):
                inexact_groups.add(key)
            amount = self.dialect.sum_value(values[9 + len(USAGE_COUNT_FIELDS) :])
            if amount is not None and currency is not None:
                stats.cost[currency] = stats.cost.get(currency, Decimal(0)) + amount
        if inexact_groups:
            self._add_inexact_costs(groups)
        return groups

    def _add_inexact_costs(self, groups: Mapping[tuple[str | None, ...], GroupStats]) -> None:
        kind = self.window.kind
        amount = _amount(kind)
        where, where_params = self.window.where(self.dialect.param)
        sql = (
            f"SELECT {', '.join([*self.keys_sql, _currency(kind), amount])} FROM records "
            f"WHERE {where} AND {self.dialect.inexact(amount)}"
        )
        for row in self.run(sql, [*self.keys_params, *where_params]):
            stats = groups[tuple(row[: self.width])]
            currency, value = row[self.width], Decimal(row[self.width + 1])
            stats.cost[currency] = stats.cost.get(currency, Decimal(0)) + value

    # --- percentiles ------------------------------------------------------------------------

    def _latency_source(self, keys_sql: Sequence[str], extra: str = "") -> str:
        """``k0.., m, x`` rows: one per observed latency value of a call in the population."""
        param = self.dialect.param
        where, _ = self.window.where(param)
        if self.latency_outcome == "ok":
            where += " AND COALESCE(outcome, 'ok') = 'ok'"
        elif self.latency_outcome == "error":
            where += " AND outcome = 'error'"
        elif self.latency_outcome == "aborted":
            where += " AND outcome IN ('aborted', 'abandoned')"
        keys = [f"{sql} AS k{i}" for i, sql in enumerate(keys_sql)]
        selects = [
            f"SELECT {', '.join([*keys, f'{m} AS m', f'{metric}_s AS x'])} FROM records "
            f"WHERE {where} AND {metric}_s IS NOT NULL{extra}"
            for m, metric in enumerate(LATENCY_METRICS)
        ]
        return " UNION ALL ".join(selects)

    def _latency_params(self, keys_params: Sequence[object], extra: Sequence[object] = ()) -> list[object]:
        _, where_params = self.window.where(self.dialect.param)
        return [*keys_params, *where_params, *extra] * len(LATENCY_METRICS)

    def percentiles(self, *, per_group: bool) -> dict[tuple[str | None, ...], dict[str, LatencySummary]]:
        """Latency percentiles of every group (``per_group``) or of the whole window."""
        keys_sql, keys_params = (self.keys_sql, self.keys_params) if per_group else ([], [])
        source = self._latency_source(keys_sql)
        sql = self.dialect.percentile_rows(source, len(keys_sql))
        return _summaries(self.run(sql, self._latency_params(keys_params)), len(keys_sql))

    def percentiles_except(self, kept: Sequence[tuple[str | None, ...]]) -> dict[str, LatencySummary]:
        """Latency percentiles of the calls in none of the ``kept`` groups (the ``other`` row)."""
        matches = " AND ".join(
            self.dialect.null_safe_equal(f"t.k{i}", f"({sql})") for i, sql in enumerate(self.keys_sql)
        )
        bound = [[self.dialect.bind_text(value) for value in key] for key in kept]
        values = ", ".join(f"({', '.join(sql for sql, _ in key)})" for key in bound)
        columns = ", ".join(f"k{i}" for i in range(self.width))
        extra = f" AND NOT EXISTS (SELECT 1 FROM ({_values_table(values, columns)}) t WHERE {matches})"
        source = self._latency_source([], extra)
        sql = self.dialect.percentile_rows(source, 0)
        extra_params = [*(param for key in bound for _, param in key), *self.keys_params]
        rows = self.run(sql, self._latency_params([], extra_params))
        return _summaries(rows, 0).get((), _no_latency())


def _values_table(values: str, columns: str) -> str:
    """A literal table with named columns, in SQL that SQLite and PostgreSQL both accept."""
    return f"WITH v({columns}) AS (VALUES {values}) SELECT * FROM v"


def _summaries(
    rows: Iterable[Sequence[Any]], keys: int
) -> dict[tuple[str | None, ...], dict[str, LatencySummary]]:
    ranked: dict[tuple[tuple[str | None, ...], int], tuple[int, dict[int, float]]] = {}
    for row in rows:
        key, metric, count, rank, value = (
            tuple(row[:keys]),
            row[keys],
            row[keys + 1],
            row[keys + 2],
            row[keys + 3],
        )
        ranked.setdefault((key, metric), (count, {}))[1][rank] = value
    result: dict[tuple[str | None, ...], dict[str, LatencySummary]] = {}
    for (key, metric), (count, values) in ranked.items():
        summary = LatencySummary(
            count=count, percentiles={p: interpolate(count, p, values.__getitem__) for p in PERCENTILES}
        )
        result.setdefault(key, {})[LATENCY_METRICS[metric]] = summary
    return result


def _no_latency() -> dict[str, LatencySummary]:
    return {
        metric: LatencySummary(count=0, percentiles=dict.fromkeys(PERCENTILES)) for metric in LATENCY_METRICS
    }


def _with_latency(stats: GroupStats, latency: Mapping[str, LatencySummary] | None) -> GroupStats:
    stats.latency = {**_no_latency(), **(latency or {})}
    return stats


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
    query = _Query(dialect, run, _Window(since, until, kind), group_by, latency_outcome)
    step("counting and summing")
    groups = query.sums()
    step("percentiles per group")
    latencies = query.percentiles(per_group=True) if group_by else {}
    step("percentiles of the total")
    total = GroupStats(key=())
    for stats in groups.values():
        total.add_counts(stats)
    _with_latency(total, query.percentiles(per_group=False).get(()))
    kept, rest = sort_and_fold(groups.values(), sort, top)
    other: GroupStats | None = None
    if rest:
        step("percentiles of the other groups")
        other = GroupStats(key=())
        for stats in rest:
            other.add_counts(stats)
        other.folded_groups = len(rest)
        _with_latency(other, query.percentiles_except([stats.key for stats in kept]))
    finished = [
        _with_latency(stats, latencies.get(stats.key) if group_by else total.latency) for stats in kept
    ]
    return Report(
        group_by=group_by,
        kind=kind,
        groups=finished,
        total=total,
        since=since,
        until=until,
        unmatched_keys=unmatched_keys(group_by, list(groups.values())),
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
        sql, params = dialect.attribute(key)
        found = run(
            f"SELECT 1 FROM records WHERE {where} AND ({sql}) IS NOT NULL LIMIT 1", [*where_params, *params]
        )
        if not any(True for _ in found):
            unknown.append(key)
    return tuple(unknown)
