"""``llmmeter report``: calls, tokens, cost and latency percentiles, grouped, over a time window.

The report is computed from :class:`~llmmeter.record.CallRecord` objects (read back from the
local store by :func:`llmmeter.store.read_records`) in two steps: :func:`build_report`
aggregates them into a :class:`Report`, and ``render_table`` / ``render_json`` / ``render_csv``
turn that into text.

The numbers keep the record's honesty rules:

* a token kind no call reported is ``None`` (shown ``–``), not ``0``;
* cost is an exact ``Decimal`` sum over the *priced* calls, per currency; calls without a cost
  (unpriced model, no usage, pricing off or failed) are counted in ``unpriced_calls``, never
  added as zero;
* latency percentiles are taken over the calls where the value was observed (TTFT and TPOT
  exist only for streamed calls), using linear interpolation between closest ranks -- the
  method of ``numpy.percentile``'s default (Hyndman & Fan type 7).

By default only LLM calls count (``kind="llm"``): a step record carries the rolled-up numbers of
the LLM calls made inside it, so adding steps to calls would count those tokens twice. With
``kind="step"`` the steps are reported instead, each with its rolled-up tokens and cost.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from llmmeter.record import USAGE_COUNT_FIELDS, CallKind, CallRecord, Outcome, Usage, UsageSource

__all__ = [
    "GROUP_KEYS",
    "LATENCY_METRICS",
    "PERCENTILES",
    "PERCENTILE_METHOD",
    "GroupStats",
    "LatencySummary",
    "Report",
    "ReportKind",
    "build_report",
    "format_money",
    "format_seconds",
    "group_key_function",
    "latency_table_cells",
    "of_kind",
    "parse_group_keys",
    "percentile",
    "record_cost",
    "render_csv",
    "render_json",
    "render_table",
    "report_notes",
    "usage_table_cells",
    "window_label",
]

ReportKind = Literal["llm", "step", "all"]

PERCENTILES: tuple[int, ...] = (50, 95, 99)
PERCENTILE_METHOD = (
    "linear interpolation between closest ranks over observed values "
    "(numpy.percentile default 'linear', Hyndman & Fan type 7)"
)
LATENCY_METRICS: tuple[str, ...] = ("ttft", "tpot", "duration")

_USER_ATTRIBUTE_KEYS = ("user_id", "user.id", "user")
_ATTRIBUTE_PREFIX = "attr:"


def _attribute(record: CallRecord, *keys: str) -> str | None:
    for key in keys:
        value = record.attributes.get(key)
        if value is not None:
            return _label(value)
    return None


def _label(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


GROUP_KEYS: dict[str, Callable[[CallRecord], str | None]] = {
    "model": lambda r: r.request_model or r.response_model,
    "request_model": lambda r: r.request_model,
    "response_model": lambda r: r.response_model,
    "provider": lambda r: r.provider,
    "operation": lambda r: r.operation,
    "outcome": lambda r: r.outcome.value,
    "kind": lambda r: r.kind.value,
    "name": lambda r: r.name,
    "error_type": lambda r: r.error_type,
    "server_address": lambda r: r.server_address,
    "service_tier": lambda r: r.service_tier,
    "streaming": lambda r: _label(r.streaming),
    "usage_source": lambda r: None if r.usage is None else r.usage.source.value,
    "cost_status": lambda r: r.cost_status.value,
    "user": lambda r: _attribute(r, *_USER_ATTRIBUTE_KEYS),
    "team": lambda r: _attribute(r, "team"),
    "feature": lambda r: _attribute(r, "feature"),
}
"""Built-in group keys. ``model`` is the requested model (the responded one when no request model
was recorded); ``user`` is the ``user_id`` (or ``user.id``, ``user``) attribute. Any other key
names an attribution attribute; prefix ``attr:`` to reach an attribute that shadows a built-in."""


def parse_group_keys(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"model, team"`` or a list of keys -> ``("model", "team")``: trimmed, no empties or repeats."""
    if spec is None:
        return ()
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    keys: list[str] = []
    for part in parts:
        key = part.strip()
        if key and key not in keys:
            keys.append(key)
    return tuple(keys)


def _key_function(key: str) -> Callable[[CallRecord], str | None]:
    if key.startswith(_ATTRIBUTE_PREFIX):
        name = key[len(_ATTRIBUTE_PREFIX) :]
        return lambda r: _attribute(r, name)
    builtin = GROUP_KEYS.get(key)
    if builtin is not None:
        return builtin
    return lambda r: _attribute(r, key)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values``; ``None`` for no values.

    Linear interpolation between closest ranks, as ``numpy.percentile(values, q)`` computes by
    default: with the values sorted, rank ``h = (n - 1) * q / 100`` and the result
    ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + fraction * (ordered[high] - ordered[low])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles (seconds) of one latency over the calls where it was observed."""

    count: int
    percentiles: dict[int, float | None]
    """Keyed by :data:`PERCENTILES`; ``None`` when ``count`` is 0."""

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencySummary:
        """Summarize the observed ``values``."""
        return cls(count=len(values), percentiles={p: percentile(values, p) for p in PERCENTILES})


@dataclass(slots=True)
class GroupStats:
    """The aggregated numbers of one group of records."""

    key: tuple[str | None, ...]
    calls: int = 0
    """Records in the group (LLM calls, or steps with ``kind="step"``)."""
    errors: int = 0
    aborted: int = 0
    """Calls the caller stopped early or abandoned (outcome ``aborted`` / ``abandoned``)."""
    llm_calls: int = 0
    """LLM calls behind the records: 1 per LLM call, the rolled-up count for a step."""
    tokens: dict[str, int] = field(default_factory=dict)
    """Summed token counts by :class:`Usage` field; a kind no record reported is absent."""
    usage_missing_calls: int = 0
    """Records with no token counts at all: token sums leave them out."""
    usage_estimated_calls: int = 0
    """Records whose token counts are local estimates."""
    cost: dict[str, Decimal] = field(default_factory=dict)
    """Exact cost of the priced calls, by currency."""
    priced_calls: int = 0
    unpriced_calls: int = 0
    """LLM calls with no cost (unpriced model, no usage, pricing disabled or failed)."""
    cost_status: dict[str, int] = field(default_factory=dict)
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    """Keyed by :data:`LATENCY_METRICS`: ``ttft``, ``tpot``, ``duration``."""

    def token(self, kind: str) -> int | None:
        """The summed count of one token kind, ``None`` when no record reported it."""
        return self.tokens.get(kind)


@dataclass(slots=True)
class Report:
    """An aggregated report: one :class:`GroupStats` per group, and the total."""

    group_by: tuple[str, ...]
    kind: ReportKind
    groups: list[GroupStats]
    total: GroupStats
    since: datetime | None = None
    until: datetime | None = None
    unmatched_keys: tuple[str, ...] = ()
    """Group keys that no record had a value for (a typo, or an attribute never set)."""

    @property
    def token_kinds(self) -> tuple[str, ...]:
        """The token kinds reported by at least one record, in :class:`Usage` field order."""
        return tuple(kind for kind in USAGE_COUNT_FIELDS if kind in self.total.tokens)

    @property
    def currencies(self) -> tuple[str, ...]:
        """The currencies costs were reported in, sorted."""
        return tuple(sorted(self.total.cost))


# ---------------------------------------------------------------------------------------------
# Aggregation


class _Accumulator:
    """Collects the records of one group."""

    def __init__(self, key: tuple[str | None, ...]) -> None:
        self.stats = GroupStats(key=key)
        self.samples: dict[str, list[float]] = {metric: [] for metric in LATENCY_METRICS}

    def add(self, record: CallRecord) -> None:
        stats = self.stats
        stats.calls += 1
        stats.errors += record.outcome is Outcome.ERROR
        stats.aborted += record.outcome in (Outcome.ABORTED, Outcome.ABANDONED)
        is_step = record.kind is CallKind.STEP
        stats.llm_calls += record.rollup_calls if is_step else 1
        self._add_usage((record.rollup_usage or record.usage) if is_step else record.usage)
        self._add_cost(record, is_step)
        self._add_latency(record)

    def _add_usage(self, usage: Usage | None) -> None:
        stats = self.stats
        if usage is None or usage.source is UsageSource.MISSING:
            stats.usage_missing_calls += 1
            if usage is None:
                return
        if usage.source is UsageSource.ESTIMATED:
            stats.usage_estimated_calls += 1
        for kind, count in usage.counts().items():
            stats.tokens[kind] = stats.tokens.get(kind, 0) + count

    def _add_cost(self, record: CallRecord, is_step: bool) -> None:
        stats = self.stats
        status = record.cost_status.value
        stats.cost_status[status] = stats.cost_status.get(status, 0) + 1
        amount, currency = record_cost(record)
        if amount is not None:
            stats.cost[currency] = stats.cost.get(currency, Decimal(0)) + amount
        if is_step:
            stats.priced_calls += max(record.rollup_calls - record.rollup_unpriced_calls, 0)
            stats.unpriced_calls += record.rollup_unpriced_calls
        elif amount is None:
            stats.unpriced_calls += 1
        else:
            stats.priced_calls += 1

    def _add_latency(self, record: CallRecord) -> None:
        timings = record.timings
        for metric, value in (
            ("ttft", timings.ttft_s),
            ("tpot", timings.tpot_s),
            ("duration", timings.duration_s),
        ):
            if value is not None:
                self.samples[metric].append(value)

    def finish(self) -> GroupStats:
        self.stats.latency = {metric: LatencySummary.of(values) for metric, values in self.samples.items()}
        return self.stats


def record_cost(record: CallRecord) -> tuple[Decimal | None, str]:
    """A record's cost and currency: its own, or (a step without one) its rolled-up cost in USD."""
    if record.cost is not None:
        return record.cost.amount, record.cost.currency
    if record.kind is CallKind.STEP and record.rollup_cost is not None:
        # Rolled-up costs come from the price registry, whose prices are in USD.
        return record.rollup_cost, "USD"
    return None, "USD"


def of_kind(records: Iterable[CallRecord], kind: ReportKind) -> list[CallRecord]:
    """The records a report of ``kind`` counts: LLM calls, steps, or all."""
    if kind == "all":
        return list(records)
    wanted = CallKind(kind)
    return [r for r in records if r.kind is wanted]


def group_key_function(key: str) -> Callable[[CallRecord], str | None]:
    """The function giving a record's value for the group ``key`` (see :data:`GROUP_KEYS`)."""
    return _key_function(key)


def build_report(
    records: Iterable[CallRecord],
    *,
    by: str | Sequence[str] | None = None,
    kind: ReportKind = "llm",
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """Aggregate ``records`` into one group per distinct value of the ``by`` keys.

    ``kind`` keeps LLM calls (default), steps, or both (``"all"``: steps then repeat the numbers
    of the calls inside them). ``since`` / ``until`` are only labels here: filter the records
    by time when reading them (see :func:`llmmeter.store.read_records`).
    """
    group_by = parse_group_keys(by)
    key_functions = [_key_function(key) for key in group_by]
    groups: dict[tuple[str | None, ...], _Accumulator] = {}
    total = _Accumulator(())
    for record in of_kind(records, kind):
        key = tuple(f(record) for f in key_functions)
        accumulator = groups.get(key)
        if accumulator is None:
            accumulator = groups[key] = _Accumulator(key)
        accumulator.add(record)
        total.add(record)
    finished = sorted((acc.finish() for acc in groups.values()), key=_group_order)
    unmatched = tuple(
        key for i, key in enumerate(group_by) if finished and all(g.key[i] is None for g in finished)
    )
    return Report(
        group_by=group_by,
        kind=kind,
        groups=finished,
        total=total.finish(),
        since=since,
        until=until,
        unmatched_keys=unmatched,
    )


def _group_order(stats: GroupStats) -> tuple[Decimal, int, tuple[tuple[bool, str], ...]]:
    """Most expensive first, then most calls, then by key (missing values last)."""
    key = tuple((value is None, value or "") for value in stats.key)
    return -sum(stats.cost.values(), Decimal(0)), -stats.calls, key


# ---------------------------------------------------------------------------------------------
# Rendering: shared helpers

_TOKEN_LABELS: dict[str, str] = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cached in",
    "cache_write_input_tokens": "cache write",
    "cache_write_1h_input_tokens": "cache write 1h",
    "reasoning_output_tokens": "reasoning",
    "text_input_tokens": "text in",
    "image_input_tokens": "image in",
    "audio_input_tokens": "audio in",
    "text_output_tokens": "text out",
    "image_output_tokens": "image out",
    "audio_output_tokens": "audio out",
    "audio_cache_read_input_tokens": "cached audio in",
    "accepted_prediction_tokens": "prediction ok",
    "rejected_prediction_tokens": "prediction rejected",
}
_ALWAYS_SHOWN_TOKENS = ("input_tokens", "output_tokens")
_METRIC_LABELS = {"ttft": "TTFT", "tpot": "TPOT", "duration": "duration"}
_NONE_LABEL = "(none)"
_MISSING = "–"


def _key_label(value: str | None) -> str:
    return _NONE_LABEL if value is None else value


def window_label(report: Report) -> str:
    """The report's time window, e.g. ``2026-11-26T10:00:00+00:00 → now``."""
    since = report.since.isoformat(timespec="seconds") if report.since else "the beginning"
    until = report.until.isoformat(timespec="seconds") if report.until else "now"
    return f"{since} → {until}"


# ---------------------------------------------------------------------------------------------
# Table


def _format_count(value: int | None) -> str:
    return _MISSING if value is None else f"{value:,}"


def format_money(amount: Decimal) -> str:
    """An amount for display: 6 decimals, thousands separators (exact values are in JSON/CSV)."""
    rounded = amount.quantize(Decimal("0.000001"))
    if rounded == 0 and amount != 0:
        return "<0.000001"
    return f"{rounded:,.6f}"


def _format_cost(cost: dict[str, Decimal], currencies: Sequence[str]) -> str:
    if not cost:
        return _MISSING
    if len(currencies) == 1:
        return format_money(cost[currencies[0]])
    return " + ".join(f"{format_money(cost[c])} {c}" for c in currencies if c in cost)


def format_seconds(value: float | None) -> str:
    """A duration for display with its unit: ``412 ms``, ``12.3 ms``, ``1.25 s``; ``–`` if unknown."""
    if value is None:
        return _MISSING
    if value >= 0.9995:  # would round to "1000 ms"
        return f"{value:,.2f} s"
    millis = value * 1000
    if millis >= 100:
        return f"{millis:.0f} ms"
    if millis >= 10:
        return f"{millis:.1f} ms"
    return f"{millis:.2f} ms"


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]], left_columns: int) -> list[str]:
    """Aligned text columns: the first ``left_columns`` left-aligned, the rest right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i < left_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return [line(headers), rule, *(line(row) for row in rows)]


def _shown_token_kinds(report: Report) -> list[str]:
    """Totals always; a part only when some call reported a non-zero count (JSON/CSV keep all)."""
    totals = report.total.tokens
    return [kind for kind in USAGE_COUNT_FIELDS if kind in _ALWAYS_SHOWN_TOKENS or totals.get(kind)]


TableCells = tuple[list[str], list[list[str]], int]
"""Headers, rows and how many leading columns are labels (left-aligned); the rest are numbers."""


def usage_table_cells(report: Report) -> TableCells:
    """The tokens-and-cost table as formatted cells (shared by the text and HTML reports)."""
    currencies = report.currencies
    token_kinds = _shown_token_kinds(report)
    show_llm_calls = report.kind != "llm"
    show_missing = report.total.usage_missing_calls > 0
    show_estimated = report.total.usage_estimated_calls > 0
    cost_header = f"cost ({currencies[0]})" if len(currencies) == 1 else "cost"
    headers = [
        *(report.group_by or ["group"]),
        "calls",
        *(["LLM calls"] if show_llm_calls else []),
        "errors",
        *(f"{_TOKEN_LABELS[kind]} tok" for kind in token_kinds),
        *(["no usage"] if show_missing else []),
        *(["estimated"] if show_estimated else []),
        cost_header,
        "unpriced",
    ]

    def row(stats: GroupStats, label: Sequence[str]) -> list[str]:
        return [
            *label,
            _format_count(stats.calls),
            *([_format_count(stats.llm_calls)] if show_llm_calls else []),
            _format_count(stats.errors),
            *(_format_count(stats.token(kind)) for kind in token_kinds),
            *([_format_count(stats.usage_missing_calls)] if show_missing else []),
            *([_format_count(stats.usage_estimated_calls)] if show_estimated else []),
            _format_cost(stats.cost, currencies),
            _format_count(stats.unpriced_calls),
        ]

    key_columns = max(len(report.group_by), 1)
    rows = [row(g, [_key_label(v) for v in g.key] or ["all"]) for g in report.groups]
    if report.group_by and len(report.groups) > 1:
        rows.append(row(report.total, ["TOTAL", *([""] * (key_columns - 1))]))
    return headers, rows, key_columns


def latency_table_cells(report: Report) -> TableCells:
    """The latency table (a row per group and metric) as formatted cells."""
    key_columns = max(len(report.group_by), 1)
    headers = [*(report.group_by or ["group"]), "latency", "n", *(f"p{p}" for p in PERCENTILES)]
    rows: list[list[str]] = []
    for stats in report.groups:
        label = [_key_label(v) for v in stats.key] or ["all"]
        for i, metric in enumerate(LATENCY_METRICS):
            summary = stats.latency[metric]
            rows.append(
                [
                    *(label if i == 0 else [""] * key_columns),
                    _METRIC_LABELS[metric],
                    _format_count(summary.count),
                    *(format_seconds(summary.percentiles[p]) for p in PERCENTILES),
                ]
            )
    return headers, rows, key_columns + 1


def render_table(report: Report) -> str:
    """The report as aligned text tables for a terminal: usage and cost, then latency."""
    what = {"llm": "LLM calls", "step": "steps", "all": "records (LLM calls and steps)"}[report.kind]
    by = f", by {', '.join(report.group_by)}" if report.group_by else ""
    lines = [f"llmmeter report: {report.total.calls:,} {what}, {window_label(report)}{by}", ""]
    if not report.groups:
        lines.append("No records in this window.")
        return "\n".join(lines) + "\n"
    lines += ["Tokens and cost", *_grid(*usage_table_cells(report)), ""]
    lines += [LATENCY_TITLE, *_grid(*latency_table_cells(report)), ""]
    lines += ["Notes:", *(f"  {note}" for note in report_notes(report))]
    return "\n".join(lines) + "\n"


LATENCY_TITLE = "Latency (over the calls where observed; TTFT and TPOT need streaming)"


def report_notes(report: Report) -> list[str]:
    """What a reader must know to read the numbers right (cost coverage, method, caveats)."""
    notes = [
        "Cost sums priced calls only; 'unpriced' counts calls with no cost (never added as 0).",
        f"Percentiles: {PERCENTILE_METHOD}.",
    ]
    if report.total.usage_missing_calls:
        notes.append("'no usage': calls that reported no token counts; token sums leave them out.")
    if report.total.usage_estimated_calls:
        notes.append("'estimated': calls whose token counts are local (tiktoken) estimates.")
    if report.kind == "all":
        notes.append("Steps repeat the tokens and cost of the LLM calls inside them: group --by kind.")
    for key in report.unmatched_keys:
        notes.append(f"No record has a value for '{key}'.")
    return notes


# ---------------------------------------------------------------------------------------------
# JSON and CSV


def _group_json(stats: GroupStats, group_by: Sequence[str]) -> dict[str, Any]:
    return {
        "key": dict(zip(group_by, stats.key, strict=True)),
        "calls": stats.calls,
        "llm_calls": stats.llm_calls,
        "errors": stats.errors,
        "aborted": stats.aborted,
        "tokens": {kind: stats.tokens[kind] for kind in USAGE_COUNT_FIELDS if kind in stats.tokens},
        "usage_missing_calls": stats.usage_missing_calls,
        "usage_estimated_calls": stats.usage_estimated_calls,
        "cost": {currency: str(amount) for currency, amount in sorted(stats.cost.items())},
        "priced_calls": stats.priced_calls,
        "unpriced_calls": stats.unpriced_calls,
        "cost_status": dict(sorted(stats.cost_status.items())),
        "latency_s": {
            metric: {"count": summary.count, **{f"p{p}": v for p, v in summary.percentiles.items()}}
            for metric, summary in stats.latency.items()
        },
    }


def render_json(report: Report) -> str:
    """The report as JSON. Costs are decimal strings (exact); latencies are seconds."""
    document = {
        "kind": report.kind,
        "since": report.since.isoformat() if report.since else None,
        "until": report.until.isoformat() if report.until else None,
        "group_by": list(report.group_by),
        "percentile_method": PERCENTILE_METHOD,
        "groups": [_group_json(g, report.group_by) for g in report.groups],
        "total": _group_json(report.total, ()),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _csv_columns(report: Report) -> list[str]:
    currencies = report.currencies or ("USD",)
    return [
        *report.group_by,
        "calls",
        "llm_calls",
        "errors",
        "aborted",
        *USAGE_COUNT_FIELDS,
        "usage_missing_calls",
        "usage_estimated_calls",
        *(f"cost_{currency}" for currency in currencies),
        "priced_calls",
        "unpriced_calls",
        *(f"{metric}_{part}" for metric in LATENCY_METRICS for part in _LATENCY_CSV_PARTS),
    ]


_LATENCY_CSV_PARTS = ("count", *(f"p{p}_s" for p in PERCENTILES))


def _csv_row(stats: GroupStats, report: Report) -> list[object]:
    currencies = report.currencies or ("USD",)
    latency: list[object] = []
    for metric in LATENCY_METRICS:
        summary = stats.latency[metric]
        latency += [summary.count, *(_blank(summary.percentiles[p]) for p in PERCENTILES)]
    return [
        *(_blank(v) for v in stats.key),
        stats.calls,
        stats.llm_calls,
        stats.errors,
        stats.aborted,
        *(_blank(stats.token(kind)) for kind in USAGE_COUNT_FIELDS),
        stats.usage_missing_calls,
        stats.usage_estimated_calls,
        *(_blank(stats.cost.get(currency)) for currency in currencies),
        stats.priced_calls,
        stats.unpriced_calls,
        *latency,
    ]


def _blank(value: object) -> object:
    """CSV cell: an unobserved value is an empty cell, never 0."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def render_csv(report: Report) -> str:
    """The report as CSV, one row per group (no total row). Empty cell = not observed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_csv_columns(report))
    for stats in report.groups:
        writer.writerow(_csv_row(stats, report))
    return buffer.getvalue()
