"""Columns the local store writes beside each record so that ``llmmeter report`` reads less.

The record's own columns (:data:`~llmmeter.store.schema.COLUMNS`) hold what the record says. A
report over a million of them spends its time parsing the ``attributes`` JSON for the group key,
adding decimal-text costs in Python and ranking latency values. So the writer (on the pipeline's
thread, never the caller's) also stores, per row, in :data:`REPORT_COLUMNS`:

* ``report_form``: ``1`` when the columns below were written; ``NULL`` on rows written by an older
  llmmeter, for which the report computes the same values from the record's columns instead;
* ``attr_user_id``, ``attr_team``, ``attr_feature``: the attribute's value as compact JSON (what
  SQLite's ``attributes -> '$."team"'`` gives), ``NULL`` when absent or JSON null;
* ``cost_units`` / ``rollup_cost_units``: the cost as an integer count of 10^-12 of its currency
  when it is exactly that (every price table's per-token prices are), else ``NULL``: the report
  then adds that row's decimal text exactly in Python;
* ``ttft_bucket``, ``tpot_bucket``, ``duration_bucket``: the latency's log-spaced bucket
  (:func:`latency_bucket`), from which the report's percentiles are read.

**Percentiles from buckets.** A positive value ``x`` falls in bucket ``i = ceil(log(x) / log(γ))``,
the interval ``(γ^(i-1), γ^i]``, with ``γ = (1 + α) / (1 - α)`` and ``α = 0.0005``; the bucket
stands for ``2 γ^i / (γ + 1)`` (:func:`bucket_value`), which is within ``α`` (0.05 %) of every
value in it (the relative-accuracy sketch of DDSketch, Masson et al., VLDB 2019). Counts per bucket add
up exactly across groups, so the total's and the ``other`` row's percentiles are merged, not
re-sorted. A percentile is the same linear interpolation between closest ranks as the in-memory
report (``numpy.percentile``'s default), over the bucket values at those ranks, so it is within
0.05 % of the exact percentile (an interpolation of values each within 0.05 %). Zero and the
non-finite values have buckets of their own and come back exactly.

**What the rows hold** (schema 4). Most token kinds are never reported by a given service, and the
report pays a sum per kind per row. A trigger on ``records`` keeps, in the ``meta`` table, which
token kinds any row inserted since the trigger was created has had (not NULL), and whether any
of those rows lacks its report columns (:class:`RowsSummary`): the report then sums only those
kinds and reads only the report columns over those rows. A trigger, not the writer's Python: it
sees every insert, an older llmmeter's still-running writer's too, and costs one indexed lookup
per row. Rows inserted before it (a store made by an older llmmeter) are read as before.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, overload

from llmmeter.record import USAGE_COUNT_FIELDS

__all__ = [
    "MATERIALIZED_ATTRIBUTES",
    "RELATIVE_ACCURACY",
    "REPORT_COLUMNS",
    "REPORT_COLUMN_NAMES",
    "ROWS_SEEN_KEY",
    "ROWS_SUMMARY_KEY",
    "UNITS_EXPONENT",
    "RowsSummary",
    "attribute_column",
    "bucket_value",
    "cost_units",
    "keep_rows_summary",
    "latency_bucket",
    "latency_bucket_sql",
    "rows_summary",
    "units_to_decimal",
    "written_values",
]

RELATIVE_ACCURACY: Final = 0.0005
"""How far (relative) a bucket's value may be from a value in it: percentiles are within 0.05 %
(a latency shown with three digits, ``300 ms``, reads the same)."""
_GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA: Final = math.log(_GAMMA)
_LOG_MIDDLE: Final = math.log(2 / (_GAMMA + 1))
"""A bucket's value is ``2 γ^i / (γ + 1)``, computed in logs: no overflow at the largest float."""

# Finite positive floats land in buckets -745,000..710,000; these stand apart from them.
_ZERO: Final = 2_000_000
_POSITIVE_INFINITY: Final = 3_000_000
_NEGATIVE_INFINITY: Final = -3_000_000
_NAN: Final = 4_000_000
_NEGATIVE: Final = -10_000_000
"""A negative value ``-x`` is stored as ``_NEGATIVE + latency_bucket(x)``."""
_NEGATIVE_SPAN: Final = 1_000_000

UNITS_EXPONENT: Final = -12
"""``cost_units`` counts 10^-12 of the currency."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

MATERIALIZED_ATTRIBUTES: Final = ("user_id", "team", "feature")
"""The attributes stored in a column of their own: the keys a cost report is grouped by most."""


def attribute_column(name: str) -> str | None:
    """The column holding attribute ``name``'s JSON value, ``None`` if it has none."""
    return f"attr_{name}" if name in MATERIALIZED_ATTRIBUTES else None


REPORT_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("report_form", "INTEGER"),
    *((f"attr_{name}", "TEXT") for name in MATERIALIZED_ATTRIBUTES),
    ("cost_units", "INTEGER"),
    ("rollup_cost_units", "INTEGER"),
    ("ttft_bucket", "INTEGER"),
    ("tpot_bucket", "INTEGER"),
    ("duration_bucket", "INTEGER"),
)
REPORT_COLUMN_NAMES: Final = tuple(name for name, _ in REPORT_COLUMNS)
_REPORT_FORM: Final = 1
_NOT_WRITTEN: Final = (None,) * len(REPORT_COLUMNS)


@overload
def latency_bucket(value: float) -> int: ...
@overload
def latency_bucket(value: None) -> None: ...
def latency_bucket(value: float | None) -> int | None:
    """The bucket of a latency value in seconds (``None`` for ``None``); see the module docstring."""
    if value is None:
        return None
    x = float(value)
    if x > 0:
        return _POSITIVE_INFINITY if x == math.inf else math.ceil(math.log(x) / _LOG_GAMMA)
    if x == 0:
        return _ZERO
    if x < 0:
        return _NEGATIVE_INFINITY if x == -math.inf else _NEGATIVE + math.ceil(math.log(-x) / _LOG_GAMMA)
    return _NAN


_SPECIAL_VALUES: Final = {
    _ZERO: 0.0,
    _POSITIVE_INFINITY: math.inf,
    _NEGATIVE_INFINITY: -math.inf,
    _NAN: math.nan,
}


def latency_bucket_sql(column: str) -> str:
    """SQL computing :func:`latency_bucket` of ``column`` with SQLite's math functions (``ln``,
    ``ceil``: SQLite 3.35+ built with them). A value on a bucket's edge may land in the
    neighbouring bucket, whose value is still within :data:`RELATIVE_ACCURACY` plus rounding."""
    log_gamma = repr(_LOG_GAMMA)
    return (
        f"CASE WHEN {column} > 0 THEN CASE WHEN {column} > 1e308 THEN {_POSITIVE_INFINITY} "
        f"ELSE CAST(ceil(ln({column}) / {log_gamma}) AS INTEGER) END "
        f"WHEN {column} = 0 THEN {_ZERO} "
        f"WHEN {column} < 0 THEN CASE WHEN {column} < -1e308 THEN {_NEGATIVE_INFINITY} "
        f"ELSE {_NEGATIVE} + CAST(ceil(ln(-{column}) / {log_gamma}) AS INTEGER) END END"
    )


def bucket_value(bucket: int) -> float:
    """The value a bucket stands for: within :data:`RELATIVE_ACCURACY` of every value in it."""
    special = _SPECIAL_VALUES.get(bucket)
    if special is not None:
        return special
    if abs(bucket - _NEGATIVE) < _NEGATIVE_SPAN:
        return -bucket_value(bucket - _NEGATIVE)
    try:
        return math.exp(bucket * _LOG_GAMMA + _LOG_MIDDLE)
    except OverflowError:  # no bucket this llmmeter writes: a store edited by other hands
        return math.inf


def cost_units(amount: Any) -> int | None:
    """A decimal-text cost as an integer count of 10^-12 when it is exactly that and fits 64 bits."""
    if amount is None:
        return None
    try:
        sign, digits, exponent = Decimal(amount).as_tuple()
    except (InvalidOperation, TypeError, ValueError):
        return None
    if not isinstance(exponent, int):  # NaN, Infinity
        return None
    shift = exponent - UNITS_EXPONENT
    magnitude = int("".join(map(str, digits)) or "0")
    if shift >= 0:
        magnitude *= 10**shift
    else:
        magnitude, remainder = divmod(magnitude, 10**-shift)
        if remainder:
            return None
    units = -magnitude if sign else magnitude
    return units if _INT64_MIN <= units <= _INT64_MAX else None


def units_to_decimal(units: int) -> Decimal:
    """An exact :class:`~decimal.Decimal` of a sum of :func:`cost_units` (no context rounding)."""
    return Decimal(f"{units}E{UNITS_EXPONENT}")


def written_values(
    attributes: str | None, cost_amount: Any, rollup_cost: Any, latencies: Sequence[Any]
) -> tuple[Any, ...]:
    """The values of :data:`REPORT_COLUMNS` for a row with these record columns (``latencies``:
    ``ttft_s``, ``tpot_s``, ``duration_s``); all ``NULL`` (the report then reads the record's own
    columns) for values that are not what llmmeter writes."""
    try:
        decoded = json.loads(attributes) if attributes and attributes != "{}" else {}
        return (
            _REPORT_FORM,
            *(_attribute_json(decoded, name) for name in MATERIALIZED_ATTRIBUTES),
            cost_units(cost_amount),
            cost_units(rollup_cost),
            *(latency_bucket(value) for value in latencies),
        )
    except Exception:  # a row a damaged or foreign writer made: the report reads it the slow way
        return _NOT_WRITTEN


def _attribute_json(attributes: dict[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if value is None:
        return None
    return _ENCODER.encode(value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


# ---------------------------------------------------------------------------------------------
# What the rows hold: a summary the store keeps (schema 4)

ROWS_SUMMARY_KEY: Final = "report_rows"
"""``meta`` key: ``{"from_id": N, "kinds": [...]}``, the first row id the trigger has seen and
the token kinds its bits stand for, in bit order."""
ROWS_SEEN_KEY: Final = "report_rows_seen"
"""``meta`` key: the trigger's bit mask over those rows (bit ``i``: kind ``i`` was not NULL on
some row; the bit after the kinds: some row has no report columns)."""
_TRIGGER: Final = "llmmeter_report_rows"


def _row_bits(kinds: Sequence[str]) -> str:
    """SQL of an inserted row's bits (``NEW``: the trigger's row)."""
    bits = [f"((NEW.{kind} IS NOT NULL) << {i})" for i, kind in enumerate(kinds)]
    bits.append(f"((NEW.report_form IS NULL) << {len(kinds)})")
    return " | ".join(bits)


def keep_rows_summary(conn: sqlite3.Connection) -> None:
    """Start (or keep) the rows summary of a store being prepared for writing, in its open
    transaction: idempotent. The summary starts after the rows already stored, and starts over
    when this llmmeter's token kinds are not the ones the stored bits stand for."""
    kinds = list(USAGE_COUNT_FIELDS)
    found = conn.execute("SELECT value FROM meta WHERE key = ?", (ROWS_SUMMARY_KEY,)).fetchone()
    if found is not None and _stored_kinds(found[0]) == kinds:
        return
    (next_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM records").fetchone()
    summary = json.dumps({"from_id": next_id, "kinds": kinds})
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (ROWS_SUMMARY_KEY, summary))
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '0')", (ROWS_SEEN_KEY,))
    bits = _row_bits(kinds)
    conn.execute(f"DROP TRIGGER IF EXISTS {_TRIGGER}")
    conn.execute(
        f"CREATE TRIGGER {_TRIGGER} AFTER INSERT ON records "
        f"WHEN ({bits}) & ~(SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{ROWS_SEEN_KEY}') <> 0 "
        f"BEGIN UPDATE meta SET value = CAST(value AS INTEGER) | ({bits}) WHERE key = '{ROWS_SEEN_KEY}'; END"
    )


def _stored_kinds(value: str) -> list[str] | None:
    try:
        kinds = json.loads(value)["kinds"]
    except (ValueError, TypeError, KeyError):
        return None
    return kinds if isinstance(kinds, list) else None


@dataclass(frozen=True)
class RowsSummary:
    """What every row from :attr:`from_id` on holds, as the store's trigger recorded it."""

    from_id: int
    token_kinds: frozenset[str]
    """The token kinds some of those rows have (the others are NULL on all of them)."""
    report_form: bool
    """Whether all of those rows have their report columns."""


def rows_summary(values: dict[str, str]) -> RowsSummary | None:
    """The summary in the ``meta`` values ``values`` (key: value); ``None`` when there is none
    (a store an older llmmeter made) or it is not one this llmmeter reads."""
    try:
        stored = json.loads(values[ROWS_SUMMARY_KEY])
        seen = int(values[ROWS_SEEN_KEY])
        from_id, kinds = int(stored["from_id"]), stored["kinds"]
    except (KeyError, ValueError, TypeError):
        return None
    if kinds != list(USAGE_COUNT_FIELDS):
        return None
    return RowsSummary(
        from_id=from_id,
        token_kinds=frozenset(kind for i, kind in enumerate(kinds) if seen >> i & 1),
        report_form=not seen >> len(kinds) & 1,
    )
