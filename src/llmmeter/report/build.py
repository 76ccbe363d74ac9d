"""The report's data: :class:`Report`, :class:`GroupStats`, and building one from records in memory.

A report comes from one of three sources and is rendered the same way whichever it is:

* :func:`build_report` aggregates :class:`~llmmeter.record.CallRecord` objects in Python (tests,
  the HTML page's charts, a few thousand records);
* :func:`llmmeter.report.sql.query_report` aggregates in the database (the local SQLite store, or
  another SQL backend), for millions of records;
* :func:`llmmeter.report.prometheus.prometheus_report` asks Prometheus, for a whole fleet.

The numbers keep the record's honesty rules:

* a token kind no call reported is ``None`` (shown ``–``), not ``0``;
* cost is an exact ``Decimal`` sum over the *priced* calls, per currency; ``unpriced_calls``
  counts the calls that reported token counts but got no cost (model without a price, pricing
  off or failed), never added as zero; calls without token counts (most failed calls) are
  ``usage_missing_calls``, their own column;
* latency percentiles are taken over the calls of one outcome (``ok`` by default, so failed
  calls and their retries do not pull them), where the value was observed (TTFT and TPOT exist
  only for streamed calls), using linear interpolation between closest ranks -- the method of
  ``numpy.percentile``'s default (Hyndman & Fan type 7).

By default only LLM calls count (``kind="llm"``): a step record carries the rolled-up numbers of
the LLM calls made inside it, so adding steps to calls would count those tokens twice. With
``kind="step"`` the steps are reported instead, each with its rolled-up tokens and cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal, get_args

from llmmeter.record import USAGE_COUNT_FIELDS, CallKind, CallRecord, Outcome, Usage, UsageSource

__all__ = [
    "GROUP_KEYS",
    "LATENCY_METRICS",
    "LATENCY_OUTCOMES",
    "PERCENTILES",
    "PERCENTILE_METHOD",
    "SORT_ORDERS",
    "GroupStats",
    "LatencyOutcome",
    "LatencySummary",
    "Report",
    "ReportKind",
    "SortOrder",
    "build_report",
    "group_key_function",
    "interpolate",
    "label",
    "latency_outcomes",
    "of_kind",
    "parse_group_keys",
    "percentile",
    "record_cost",
    "sort_and_fold",
]

ReportKind = Literal["llm", "step", "all"]
LatencyOutcome = Literal["ok", "error", "aborted", "all"]
LATENCY_OUTCOMES: Final[tuple[str, ...]] = get_args(LatencyOutcome)
SortOrder = Literal["cost", "calls", "tokens", "errors", "key"]
SORT_ORDERS: Final[tuple[str, ...]] = get_args(SortOrder)

PERCENTILES: tuple[int, ...] = (50, 95, 99)
PERCENTILE_METHOD = (
    "linear interpolation between closest ranks over observed values "
    "(numpy.percentile default 'linear', Hyndman & Fan type 7)"
)
LATENCY_METRICS: tuple[str, ...] = ("ttft", "tpot", "duration")

USER_ATTRIBUTE_KEYS: Final = ("user_id", "user.id", "user")
"""The attributes the ``user`` group key reads, first found wins."""
ATTRIBUTE_PREFIX: Final = "attr:"


def latency_outcomes(outcome: LatencyOutcome) -> frozenset[Outcome] | None:
    """The record outcomes whose latencies a report over ``outcome`` takes; ``None`` = all."""
    if outcome == "all":
        return None
    if outcome == "aborted":
        return frozenset((Outcome.ABORTED, Outcome.ABANDONED))
    return frozenset((Outcome(outcome),))


def _attribute(record: CallRecord, *keys: str) -> str | None:
    for key in keys:
        value = record.attributes.get(key)
        if value is not None:
            return label(value)
    return None


def label(value: object) -> str:
    """The group label of an attribute value: ``true``/``false`` for booleans, else ``str()``."""
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
    "streaming": lambda r: label(r.streaming),
    "usage_source": lambda r: None if r.usage is None else r.usage.source.value,
    "cost_status": lambda r: r.cost_status.value,
    "user": lambda r: _attribute(r, *USER_ATTRIBUTE_KEYS),
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


def attribute_name(key: str) -> str | None:
    """The attribute a group key reads (``"region"``, ``"attr:model"`` -> ``"model"``); ``None``
    for a built-in key."""
    if key.startswith(ATTRIBUTE_PREFIX):
        return key[len(ATTRIBUTE_PREFIX) :]
    return None if key in GROUP_KEYS else key


def group_key_function(key: str) -> Callable[[CallRecord], str | None]:
    """The function giving a record's value for the group ``key`` (see :data:`GROUP_KEYS`)."""
    name = attribute_name(key)
    if name is None:
        return GROUP_KEYS[key]
    return lambda r: _attribute(r, name)


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
    return interpolate(len(ordered), q, ordered.__getitem__)


def interpolate(count: int, q: float, value_at: Callable[[int], float]) -> float:
    """The ``q``-th percentile of ``count`` sorted values, reading only the two it needs.

    ``value_at(i)`` is the ``i``-th smallest value (0-based). Shared by the in-memory report and
    the SQL one, which fetches just those ranks from the database.
    """
    low, high, fraction = percentile_ranks(count, q)
    low_value = value_at(low)
    return low_value + fraction * (value_at(high) - low_value) if fraction else low_value


def percentile_ranks(count: int, q: float) -> tuple[int, int, float]:
    """The two 0-based ranks the ``q``-th percentile of ``count`` values lies between, and where."""
    rank = (count - 1) * q / 100
    low = math.floor(rank)
    return low, min(low + 1, count - 1), rank - low


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles (seconds) of one latency over the calls where it was observed."""

    count: int
    percentiles: dict[int, float | None]
    """Keyed by :data:`PERCENTILES`; ``None`` when ``count`` is 0."""

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencySummary:
        """Summarize the observed ``values``."""
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            percentiles={
                p: interpolate(len(ordered), p, ordered.__getitem__) if ordered else None for p in PERCENTILES
            },
        )


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
    """LLM calls that reported token counts but have no cost (model without a price, pricing
    disabled or failed). Calls without token counts are in ``usage_missing_calls`` instead."""
    cost_status: dict[str, int] = field(default_factory=dict)
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    """Keyed by :data:`LATENCY_METRICS`: ``ttft``, ``tpot``, ``duration``."""
    folded_groups: int = 0
    """For the ``other`` row of a ``top`` report: how many groups it adds up; 0 otherwise."""

    def token(self, kind: str) -> int | None:
        """The summed count of one token kind, ``None`` when no record reported it."""
        return self.tokens.get(kind)

    def add_counts(self, other: GroupStats) -> None:
        """Add ``other``'s counts, tokens and costs to these (latency is not additive)."""
        for name in _COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for target, source in ((self.tokens, other.tokens), (self.cost_status, other.cost_status)):
            for name, count in source.items():
                target[name] = target.get(name, 0) + count
        for currency, amount in other.cost.items():
            self.cost[currency] = self.cost.get(currency, Decimal(0)) + amount


_COUNT_FIELDS: Final = (
    "calls",
    "errors",
    "aborted",
    "llm_calls",
    "usage_missing_calls",
    "usage_estimated_calls",
    "priced_calls",
    "unpriced_calls",
)


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
    latency_outcome: LatencyOutcome = "ok"
    """The outcome of the calls the latency percentiles are taken over (``all``: every call)."""
    other: GroupStats | None = None
    """With ``top``: the groups after the first ``top``, added up into one row."""
    sort: SortOrder = "cost"
    percentile_method: str = PERCENTILE_METHOD
    """How the percentiles were computed (the Prometheus source estimates them from buckets)."""

    @property
    def token_kinds(self) -> tuple[str, ...]:
        """The token kinds reported by at least one record, in :class:`Usage` field order.

        Every group of the JSON output has exactly these token keys (``null`` where the group's
        records did not report that kind)."""
        return tuple(kind for kind in USAGE_COUNT_FIELDS if kind in self.total.tokens)

    @property
    def currencies(self) -> tuple[str, ...]:
        """The currencies costs were reported in, sorted."""
        return tuple(sorted(self.total.cost))


# ---------------------------------------------------------------------------------------------
# Aggregation in memory


class _Accumulator:
    """Collects the records of one group."""

    def __init__(self, key: tuple[str | None, ...], latency_outcomes: frozenset[Outcome] | None) -> None:
        self.stats = GroupStats(key=key)
        self.samples: dict[str, list[float]] = {metric: [] for metric in LATENCY_METRICS}
        self._latency_outcomes = latency_outcomes

    def add(self, record: CallRecord) -> None:
        stats = self.stats
        stats.calls += 1
        stats.errors += record.outcome is Outcome.ERROR
        stats.aborted += record.outcome in (Outcome.ABORTED, Outcome.ABANDONED)
        is_step = record.kind is CallKind.STEP
        stats.llm_calls += record.rollup_calls if is_step else 1
        usage = (record.rollup_usage or record.usage) if is_step else record.usage
        self._add_usage(usage)
        self._add_cost(
            record, is_step, has_usage=usage is not None and usage.source is not UsageSource.MISSING
        )
        if self._latency_outcomes is None or record.outcome in self._latency_outcomes:
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

    def _add_cost(self, record: CallRecord, is_step: bool, *, has_usage: bool) -> None:
        stats = self.stats
        status = record.cost_status.value
        stats.cost_status[status] = stats.cost_status.get(status, 0) + 1
        amount, currency = record_cost(record)
        if amount is not None:
            stats.cost[currency] = stats.cost.get(currency, Decimal(0)) + amount
        if is_step:
            stats.priced_calls += max(record.rollup_calls - record.rollup_unpriced_calls, 0)
            stats.unpriced_calls += record.rollup_unpriced_calls
        elif amount is not None:
            stats.priced_calls += 1
        elif has_usage:
            stats.unpriced_calls += 1

    def _add_latency(self, record: CallRecord) -> None:
        timings = record.timings
        for metric, value in (
            ("ttft", timings.ttft_s),
            ("tpot", timings.tpot_s),
            ("duration", timings.duration_s),
        ):
            if value is not None:
                self.samples[metric].append(value)

    def absorb(self, other: _Accumulator) -> None:
        """Add another group's records to this one (the ``other`` row of a top-N report)."""
        self.stats.add_counts(other.stats)
        self.stats.folded_groups += 1
        for metric, values in other.samples.items():
            self.samples[metric].extend(values)

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


def build_report(
    records: Iterable[CallRecord],
    *,
    by: str | Sequence[str] | None = None,
    kind: ReportKind = "llm",
    since: datetime | None = None,
    until: datetime | None = None,
    latency_outcome: LatencyOutcome = "ok",
    top: int | None = None,
    sort: SortOrder = "cost",
) -> Report:
    """Aggregate ``records`` into one group per distinct value of the ``by`` keys.

    ``kind`` keeps LLM calls (default), steps, or both (``"all"``: steps then repeat the numbers
    of the calls inside them). ``since`` / ``until`` are only labels here: filter the records
    by time when reading them (see :func:`llmmeter.store.read_records`). Latency percentiles are
    over the calls whose outcome is ``latency_outcome``. ``top`` keeps the first ``top`` groups
    in ``sort`` order and adds the rest up into :attr:`Report.other`.
    """
    group_by = parse_group_keys(by)
    key_functions = [group_key_function(key) for key in group_by]
    outcomes = latency_outcomes(latency_outcome)
    groups: dict[tuple[str | None, ...], _Accumulator] = {}
    total = _Accumulator((), outcomes)
    for record in of_kind(records, kind):
        key = tuple(f(record) for f in key_functions)
        accumulator = groups.get(key)
        if accumulator is None:
            accumulator = groups[key] = _Accumulator(key, outcomes)
        accumulator.add(record)
        total.add(record)
    kept, rest = sort_and_fold((acc.stats for acc in groups.values()), sort, top)
    other: GroupStats | None = None
    if rest:
        folded = _Accumulator((), outcomes)
        for stats in rest:
            folded.absorb(groups[stats.key])
        other = folded.finish()
    finished = [groups[stats.key].finish() for stats in kept]
    return Report(
        group_by=group_by,
        kind=kind,
        groups=finished,
        total=total.finish(),
        since=since,
        until=until,
        unmatched_keys=unmatched_keys(group_by, [acc.stats for acc in groups.values()]),
        latency_outcome=latency_outcome,
        other=other,
        sort=sort,
    )


def unmatched_keys(group_by: Sequence[str], groups: Sequence[GroupStats]) -> tuple[str, ...]:
    """The keys of ``group_by`` that no group has a value for."""
    return tuple(key for i, key in enumerate(group_by) if groups and all(g.key[i] is None for g in groups))


def group_order(stats: GroupStats, sort: SortOrder = "cost") -> tuple[object, ...]:
    """Sort key of a group: by ``sort`` (largest first; ``key``: alphabetical), then the most
    expensive, then most calls, then by key (missing values last)."""
    key = tuple((value is None, value or "") for value in stats.key)
    cost = -sum(stats.cost.values(), Decimal(0))
    tie_break = (cost, -stats.calls, key)
    if sort == "calls":
        return (-stats.calls, *tie_break)
    if sort == "tokens":
        return (-(stats.tokens.get("input_tokens", 0) + stats.tokens.get("output_tokens", 0)), *tie_break)
    if sort == "errors":
        return (-stats.errors, *tie_break)
    if sort == "key":
        return (key,)
    return tie_break


def sort_and_fold(
    groups: Iterable[GroupStats], sort: SortOrder, top: int | None
) -> tuple[list[GroupStats], list[GroupStats]]:
    """``groups`` in ``sort`` order, split into the first ``top`` and the rest."""
    ordered = sorted(groups, key=lambda stats: group_order(stats, sort))
    if top is None or len(ordered) <= top:
        return ordered, []
    return ordered[:top], ordered[top:]
