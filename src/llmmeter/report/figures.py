"""Always-on FinOps figures beside a report's usage: what prompt caching saved, and each window's
share of fine-tunes' training costs (issue 14 §3 and §6).

**Cache savings.** One ``GROUP BY`` sums the token counts of the window's LLM calls per report
group, model (response and request model, provider: the names the call was priced by), price
period and service tier. A price period is a run of UTC days over which no called model's price
changes (every day each model's rows span is looked up): one period, and one scan, unless a
price changed within the window; then a second scan cuts the window at the changes. Each sum's
cache parts are priced at that model's price of that period with the rate card the cost engine
bills with
(:func:`~llmmeter.pricing.registry.cache_figures`: the same amounts as pricing the usage with
and without its cache parts). Token prices are linear in every count and the arithmetic is exact
``Decimal``, so this equals pricing each call and adding up. A call above the smallest
prompt-size threshold of any price the registry lists gets a row of its own (its tier depends on
its own prompt size).

* ``cache_read_savings``: what the cache reads would have cost at the full input rate, minus
  what they cost at the cached rate;
* ``cache_write_premium``: what the cache writes cost above the full input rate (Anthropic bills
  writes at 1.25x or 2x input; negative if a price makes writes cheaper);
* ``cache_savings = cache_read_savings - cache_write_premium``: what this usage would have cost
  with no prompt caching at all, minus what it cost. Negative when writes were not read back
  enough to pay for themselves: that is what the prices say.

Each is absent where the group's priced calls had no such tokens, and leaves out calls whose
model has no token price that day (unpriced, or priced by GPU time: caching changes no token
bill there), as the cost column leaves out unpriced calls.

**Training cost.** A price declaring ``training_cost`` spreads it evenly over ``amortize_days``
days from ``trained_on``. A report window ``[since, until)`` (``until`` unset: now; ``since``
unset: the amortization's start) takes ``training_cost * overlap / amortize_days``, the overlap
counted to the microsecond. That share is split across the report's groups in proportion to
the tokens (input plus output) their calls to the fine-tune used in the window, by call count
when none reported tokens; shares are rounded to 10 decimal places so that they add up exactly to
the window's share. A fine-tune with no call in the window allocates nothing to any group
(:attr:`Amortization.allocated` is false; the report says so).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

from llmmeter.pricing.models import GpuHourPrice, ModelPrice
from llmmeter.pricing.registry import CacheTokens, PricingRegistry, cache_figures
from llmmeter.pricing.sources import PriceEntry, ResolvedPrice
from llmmeter.report.build import Report, ReportKind, parse_group_keys
from llmmeter.report.sql import SQLITE, Dialect, GroupLabels, Run, sum_present, time_window
from llmmeter.report.sql import _key as group_key_sql  # the report's own group keys and labels
from llmmeter.store.read import SQLiteRun

__all__ = [
    "Amortization",
    "Figures",
    "FiguresScan",
    "GroupFigures",
    "llm_window",
    "query_figures",
    "window_share",
]

Key = tuple[str | None, ...]

DAY_NS: Final = 86_400 * 10**9
_DAY_US: Final = 86_400 * 10**6
_DAY: Final = f"start_time_unix_ns / {DAY_NS}"
"""A record's UTC day, as days since the epoch."""
_PLACES: Final = 10
"""Decimal places of a group's share of a training cost (the shares add up to the window's)."""
_CACHE_FIELDS: Final = ("cache_read_input_tokens", "cache_write_input_tokens")
_SUMMED: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "audio_cache_read_input_tokens",
    "cache_write_input_tokens",
    "cache_write_1h_input_tokens",
)
"""The token counts a row sums, in this order."""
_FIRST_DAY, _LAST_DAY, _COUNTS = 6, 7, 8
"""Where a row's first and last day and its counts follow its group key."""
_MAX_LOOKUP_DAYS: Final = 100_000
"""Most model-days looked up for price changes (6 models over 30 days: 180); beyond, as with
timestamps years apart, the scan groups by day instead."""


def _added(target: dict[str, Decimal], currency: str, amount: Decimal) -> None:
    target[currency] = target.get(currency, Decimal(0)) + amount


@dataclass(slots=True)
class GroupFigures:
    """One group's figures by currency; a currency a figure has no entry for is absent, not 0."""

    cache_read_savings: dict[str, Decimal] = field(default_factory=dict)
    """Cache reads at the full input rate minus at the cached rate."""
    cache_write_premium: dict[str, Decimal] = field(default_factory=dict)
    """Cache writes at their rate minus at the full input rate."""
    training_cost_share: dict[str, Decimal] = field(default_factory=dict)
    """The window's amortized training cost of the fine-tunes the group called, its share."""

    @property
    def cache_savings(self) -> dict[str, Decimal]:
        """``cache_read_savings - cache_write_premium``, per currency either has."""
        currencies = sorted(set(self.cache_read_savings) | set(self.cache_write_premium))
        reads, writes, zero = self.cache_read_savings, self.cache_write_premium, Decimal(0)
        return {c: reads.get(c, zero) - writes.get(c, zero) for c in currencies}

    def add(self, other: GroupFigures) -> None:
        """Add ``other``'s figures (the ``other`` row, the total)."""
        for mine, theirs in (
            (self.cache_read_savings, other.cache_read_savings),
            (self.cache_write_premium, other.cache_write_premium),
            (self.training_cost_share, other.training_cost_share),
        ):
            for currency, amount in theirs.items():
                _added(mine, currency, amount)


@dataclass(frozen=True, slots=True)
class Amortization:
    """One declared training cost over the report's window."""

    model: str
    """The price table key that declares it (a name or a pattern)."""
    provider: str | None
    currency: str
    training_cost: Decimal
    amortize_days: int
    trained_on: dt.date
    window_share: Decimal
    """The part of the training cost that falls in the window (10 decimal places)."""
    allocated: bool
    """Whether calls in the window took the share (else no group shows it)."""


@dataclass(slots=True)
class Figures:
    """The figures of a report's groups, keyed as the report's groups are."""

    groups: dict[Key, GroupFigures] = field(default_factory=dict)
    amortizations: list[Amortization] = field(default_factory=list)

    def of(self, keys: Iterable[Key]) -> GroupFigures:
        """The figures of the groups of ``keys`` added up (groups without figures add nothing)."""
        summed = GroupFigures()
        for key in keys:
            figures = self.groups.get(key)
            if figures is not None:
                summed.add(figures)
        return summed

    def total(self) -> GroupFigures:
        """Every group's figures added up."""
        return self.of(self.groups)

    @property
    def cache_currencies(self) -> tuple[str, ...]:
        """The currencies any cache figure is in, sorted."""
        total = self.total()
        return tuple(sorted(set(total.cache_read_savings) | set(total.cache_write_premium)))

    @property
    def training_currencies(self) -> tuple[str, ...]:
        """The currencies any group's training share is in, sorted."""
        return tuple(sorted(self.total().training_cost_share))


# ---------------------------------------------------------------------------------------------
# Training cost over a window


def window_share(price: ModelPrice | GpuHourPrice, since: dt.datetime | None, until: dt.datetime) -> Fraction:
    """The exact part of ``price``'s training cost amortized within ``[since, until)``."""
    start_day = price.amortization_start
    if price.training_cost is None or price.amortize_days is None or start_day is None:
        return Fraction(0)
    start = dt.datetime.combine(start_day, dt.time(), dt.UTC)
    end = start + dt.timedelta(days=price.amortize_days)
    low = start if since is None else max(start, since.astimezone(dt.UTC))  # naive: local, as unix_ns
    high = min(end, until.astimezone(dt.UTC))
    if high <= low:
        return Fraction(0)
    overlap_us = (high - low) // dt.timedelta(microseconds=1)
    return Fraction(price.training_cost) * overlap_us / (price.amortize_days * _DAY_US)


def _units(amount: Fraction) -> int:
    return round(amount * 10**_PLACES)


def _from_units(units: int) -> Decimal:
    return Decimal(units).scaleb(-_PLACES)


def _split(units: int, weights: dict[Key, int]) -> dict[Key, Decimal]:
    """``units`` split in proportion to ``weights`` (largest remainders get the odd units)."""
    whole = sum(weights.values())
    exact = {key: Fraction(units * weight, whole) for key, weight in weights.items()}
    shares = {key: math.floor(value) for key, value in exact.items()}
    left = units - sum(shares.values())
    by_remainder = sorted(exact, key=lambda key: (-(exact[key] - shares[key]), _sortable(key)))
    for key in by_remainder[:left]:
        shares[key] += 1
    return {key: _from_units(share) for key, share in shares.items()}


def _sortable(key: Key) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for value in key)


def _declaration(entry_model: str, provider: str | None, price: ModelPrice | GpuHourPrice) -> tuple[Any, ...]:
    """What identifies one declared training cost, whether found in a table or by a lookup."""
    return (entry_model, provider, price.currency, price.training_cost, price.amortize_days, price.trained_on)


@dataclass
class _Usage:
    """Tokens and calls of one group on one fine-tune."""

    tokens: int = 0
    calls: int = 0


@dataclass
class _Training:
    """What the window's calls to one fine-tune used, by group."""

    entry_model: str
    provider: str | None
    price: ModelPrice | GpuHourPrice
    by_group: dict[Key, _Usage] = field(default_factory=dict)

    def add(self, key: Key, tokens: int, calls: int) -> None:
        used = self.by_group.setdefault(key, _Usage())
        used.tokens += tokens
        used.calls += calls

    def weights(self) -> dict[Key, int]:
        by_tokens = {key: used.tokens for key, used in self.by_group.items()}
        if any(by_tokens.values()):
            return {key: tokens for key, tokens in by_tokens.items() if tokens}
        return {key: used.calls for key, used in self.by_group.items() if used.calls}


def _each_declaration(
    declared: Sequence[PriceEntry], used: dict[tuple[Any, ...], _Training]
) -> list[_Training]:
    """Every declared training cost once: with the window's use of it, if any (a plugged source's
    declarations are known only from the calls that resolved to them)."""
    seen: dict[tuple[Any, ...], _Training] = {}
    for training in [*(_Training(e.model, e.provider, e.price) for e in declared), *used.values()]:
        identity = _declaration(training.entry_model, training.provider, training.price)
        seen.setdefault(identity, used.get(identity, training))
    return list(seen.values())


def _amortization(
    training: _Training, since: dt.datetime | None, until: dt.datetime
) -> tuple[Amortization, dict[Key, Decimal]]:
    """One declared training cost over the window, and its share of it by group."""
    price = training.price
    start, cost, days = price.amortization_start, price.training_cost, price.amortize_days
    assert start is not None and cost is not None and days is not None  # validated together
    units = _units(window_share(price, since, until))
    weights = training.weights()
    shares = _split(units, weights) if units and weights else {}
    amortization = Amortization(
        model=training.entry_model,
        provider=training.provider,
        currency=price.currency,
        training_cost=cost,
        amortize_days=days,
        trained_on=start,
        window_share=_from_units(units),
        allocated=bool(shares),
    )
    return amortization, shares


def _amortize(
    figures: Figures,
    declared: Sequence[PriceEntry],
    used: dict[tuple[Any, ...], _Training],
    since: dt.datetime | None,
    until: dt.datetime,
) -> None:
    """Each declared training cost's window share, split across the groups that called it."""
    for training in _each_declaration(declared, used):
        amortization, shares = _amortization(training, since, until)
        figures.amortizations.append(amortization)
        for key, share in shares.items():
            _added(
                figures.groups.setdefault(key, GroupFigures()).training_cost_share,
                amortization.currency,
                share,
            )


# ---------------------------------------------------------------------------------------------
# Cache savings of one row


def _add_cache(
    group: GroupFigures,
    resolved: ResolvedPrice,
    tokens: CacheTokens,
    service_tier: str | None,
    prompt_tokens: int | None,
) -> None:
    """Add one row's cache read savings and cache write premium at ``resolved``."""
    found = cache_figures(resolved, tokens, service_tier=service_tier, prompt_tokens=prompt_tokens)
    if found is None:  # not priced per token, or parts above totals: unknown, left out
        return
    read_savings, write_premium = found
    currency = resolved.price.currency
    if tokens.cache_read:
        _added(group.cache_read_savings, currency, read_savings)
    if tokens.cache_write:
        _added(group.cache_write_premium, currency, write_premium)


# ---------------------------------------------------------------------------------------------
# The query


def llm_window(param: str, since: dt.datetime | None, until: dt.datetime | None) -> tuple[str, list[object]]:
    """The ``WHERE`` of a report's LLM calls in ``[since, until)``, and its parameters."""
    window, params = time_window(param, since, until)
    return " AND ".join(["COALESCE(kind, 'llm') = 'llm'", *window]), params


@dataclass(frozen=True)
class _Window:
    """What the figures' scan reads: the report's group keys, kind and time window."""

    group_by: tuple[str, ...]
    kind: ReportKind
    since: dt.datetime | None
    until: dt.datetime | None


def _tier_floor(entries: Sequence[PriceEntry]) -> int | None:
    """The smallest prompt-size threshold of any listed price: calls at most this big are in no tier."""
    prices = [entry.price for entry in entries if isinstance(entry.price, ModelPrice)]
    return min((tier.above_input_tokens for price in prices for tier in price.tiers), default=None)


def _filtered_window(dialect: Dialect, cache_only: bool, window: _Window) -> tuple[str, list[object]]:
    """The ``WHERE`` of the rows the figures read, and its parameters."""
    where, params = llm_window(dialect.param, window.since, window.until)
    if cache_only:
        where += " AND (" + " OR ".join(f"{name} > 0" for name in _CACHE_FIELDS) + ")"
    return where, params


def _figures_sql(
    dialect: Dialect,
    keys: Sequence[Any],
    floor: int | None,
    cache_only: bool,
    window: _Window,
    period: str,
) -> tuple[str, list[object]]:
    where, where_params = _filtered_window(dialect, cache_only, window)
    labels = [
        *(key.sql for key in keys),
        "response_model",
        "request_model",
        "provider",
        period,
        "service_tier",
        "NULL" if floor is None else f"CASE WHEN input_tokens > {dialect.param} THEN record_id END",
    ]
    aggregates = [f"MIN({_DAY})", f"MAX({_DAY})", "COUNT(*)", *(sum_present(name) for name in _SUMMED)]
    sql = (
        f"SELECT {', '.join(labels)}, {', '.join(aggregates)} FROM records WHERE {where} "
        f"GROUP BY {', '.join(str(i + 1) for i in range(len(labels)))}"
    )
    floor_params: list[object] = [] if floor is None else [floor]
    return sql, [*(p for key in keys for p in key.params), *floor_params, *where_params]


class _Resolver:
    """The price a call was priced at (response model first, then request model), per day."""

    def __init__(self, registry: PricingRegistry) -> None:
        self._registry = registry
        self._memo: dict[tuple[Any, ...], ResolvedPrice | None] = {}

    def __call__(self, names: Sequence[Any], provider: str | None, day: int) -> ResolvedPrice | None:
        key = (*names, provider, day)
        if key not in self._memo:
            at = dt.datetime.fromtimestamp(day * 86_400, dt.UTC)
            self._memo[key] = next(
                (
                    found
                    for name in dict.fromkeys(n for n in names if n)
                    if (found := self._registry.lookup(name, provider=provider, at=at)) is not None
                ),
                None,
            )
        return self._memo[key]


def _period_sql(changes: Sequence[int]) -> str:
    """A row's price period: ``0`` before the first day of ``changes``, ``1`` from it, and so on."""
    if not changes:
        return "0"
    cases = " ".join(f"WHEN {_DAY} < {int(day)} THEN {i}" for i, day in enumerate(changes))
    return f"CASE {cases} ELSE {len(changes)} END"


def _price_changes(rows: Iterable[Sequence[Any]], width: int, resolve: _Resolver) -> list[int] | None:
    """Every day on which the price of a model the rows name differs from the day before, within
    the days the rows span for that model (a price source may be plugged in and cannot list its
    prices: each day is looked up); ``None`` when the spans are too long to look each day up."""
    spans: dict[tuple[Any, ...], tuple[int, int]] = {}
    for row in rows:
        names = tuple(row[width : width + 3])
        first, last = int(row[width + _FIRST_DAY]), int(row[width + _LAST_DAY])
        known = spans.get(names)
        spans[names] = (first, last) if known is None else (min(known[0], first), max(known[1], last))
    if sum(last - first + 1 for first, last in spans.values()) > _MAX_LOOKUP_DAYS:
        return None
    changes: set[int] = set()
    for (response_model, request_model, provider), (first, last) in spans.items():
        prices = [resolve((response_model, request_model), provider, day) for day in range(first, last + 1)]
        changes.update(first + i for i in range(1, len(prices)) if prices[i] != prices[i - 1])
    return sorted(changes)


def query_figures(
    run: Run,
    report: Report,
    *,
    dialect: Dialect = SQLITE,
    registry: PricingRegistry | None = None,
    now: dt.datetime | None = None,
) -> Figures:
    """The cache savings and training cost shares of ``report``'s groups, from the store ``run``
    reads (the same window and group keys; LLM calls only: a ``step`` report has none).

    ``now`` ends a window without ``until`` (default: the current time)."""
    scope = _Window(report.group_by, report.kind, report.since, report.until)
    return FiguresScan(run, scope, dialect=dialect, registry=registry).result(report, now=now)


class FiguresScan:
    """A report's figures (:func:`query_figures`), their database scan started ahead.

    :meth:`start` runs the scan on a connection and a thread of its own; passed as
    :func:`~llmmeter.report.sql.query_report`'s ``scanned``, the database reads it while the
    report does its Python work on its own rows (SQLite releases the GIL; at a million records
    each takes 1.5-2 s). :meth:`result` then prices the rows. A store without a second
    connection (the fleet store) is scanned in :meth:`result`, as :func:`query_figures` does.
    """

    def __init__(
        self, run: Run, window: _Window, *, dialect: Dialect = SQLITE, registry: PricingRegistry | None = None
    ) -> None:
        self._run, self._window, self._dialect = run, window, dialect
        self._registry = registry or PricingRegistry.default()
        self._entries = self._registry.entries()
        self._declared = [entry for entry in self._entries if entry.price.training_cost is not None]
        self._keys = [group_key_sql(dialect, key) for key in window.group_by]
        self._started: Future[list[Sequence[Any]]] | None = None

    @classmethod
    def of(
        cls,
        run: Run,
        *,
        by: str | Sequence[str] | None,
        kind: ReportKind,
        since: dt.datetime | None,
        until: dt.datetime | None,
        dialect: Dialect = SQLITE,
        registry: PricingRegistry | None = None,
    ) -> FiguresScan:
        """The figures of the report :func:`~llmmeter.report.sql.query_report` makes with these
        arguments."""
        return cls(run, _Window(parse_group_keys(by), kind, since, until), dialect=dialect, registry=registry)

    def _statement(self, period: str) -> tuple[str, list[object]]:
        floor, cache_only = _tier_floor(self._entries), not self._declared
        return _figures_sql(self._dialect, self._keys, floor, cache_only, self._window, period)

    def start(self) -> None:
        """Run the first scan on a connection and thread of its own (once; a report of steps,
        which has no figures, or a store without a second connection: nothing)."""
        if self._started is not None or self._window.kind == "step" or not isinstance(self._run, SQLiteRun):
            return
        another, statement = self._run.another(), self._statement(_period_sql(()))

        def scan() -> list[Sequence[Any]]:
            try:
                return list(another(*statement))
            finally:
                another.close()

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmmeter-figures")
        self._started = pool.submit(scan)
        pool.shutdown(wait=False)  # the thread ends with its scan

    def result(self, report: Report, *, now: dt.datetime | None = None) -> Figures:
        """The figures of ``report``'s groups; ``now`` ends a window without ``until``."""
        window = _Window(report.group_by, report.kind, report.since, report.until)
        if window != self._window:  # not the report this scan was made for
            return FiguresScan(self._run, window, dialect=self._dialect, registry=self._registry).result(
                report, now=now
            )
        started = None if self._started is None else self._started.result()
        figures = Figures()
        has_cache = any(report.total.tokens.get(name) for name in _CACHE_FIELDS)
        if report.kind == "step" or (not has_cache and not self._declared):
            return figures  # nothing to compute
        # One scan when no called model's price changed within the window (the usual case), else a
        # second one cut at the changes.
        rows = started if started is not None else list(self._run(*self._statement(_period_sql(()))))
        resolve = _Resolver(self._registry)
        changes = _price_changes(rows, len(self._keys), resolve)
        if changes is None or changes:
            period = _DAY if changes is None else _period_sql(changes)  # None: odd dates, each day apart
            rows = list(self._run(*self._statement(period)))
        return self._priced(figures, rows, resolve, report, now)

    def _priced(
        self,
        figures: Figures,
        rows: list[Sequence[Any]],
        resolve: _Resolver,
        report: Report,
        now: dt.datetime | None,
    ) -> Figures:
        """The cache figures and training shares of the scan's ``rows``, added to ``figures``."""
        label, width = GroupLabels(self._dialect, self._keys), len(self._keys)
        used: dict[tuple[Any, ...], _Training] = {}
        for row in rows:
            response_model, request_model, provider, _, service_tier, own_row = row[width : width + 6]
            # The period's first day the row's calls were made: any of its days has the same price.
            resolved = resolve((response_model, request_model), provider, int(row[width + _FIRST_DAY]))
            if resolved is None:
                continue
            key = label(row[:width])
            calls, input_tokens, output_tokens, *cache = (int(value or 0) for value in row[width + _COUNTS :])
            tokens = CacheTokens(input_tokens, *cache)
            if tokens.cache_read or tokens.cache_write:
                prompt_tokens = None if own_row is None else input_tokens  # own row: one call above a tier
                group = figures.groups.setdefault(key, GroupFigures())
                _add_cache(group, resolved, tokens, service_tier, prompt_tokens)
            price = resolved.price
            if price.training_cost is not None:
                identity = _declaration(resolved.model, resolved.provider, price)
                training = used.setdefault(identity, _Training(resolved.model, resolved.provider, price))
                training.add(key, input_tokens + output_tokens, calls)
        _amortize(figures, self._declared, used, report.since, report.until or now or dt.datetime.now(dt.UTC))
        return figures
