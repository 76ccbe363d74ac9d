"""Always-on FinOps figures beside a report's usage: what prompt caching saved, and each window's
share of fine-tunes' training costs (issue 14 §3 and §6).

**Cache savings.** One ``GROUP BY`` sums the token counts of the window's LLM calls per report
group, model (response and request model, provider: the names the call was priced by), price
period and service tier. A price period is a run of UTC days over which no called model's price
changes (every day each model's rows span is looked up): one period, and one scan, unless a
price changed within the window; then a second scan cuts the window at the changes. On a local
store the scan reads the rows its summary covers as the report does (their report columns, only
the token kinds they have). Each sum's cache parts are priced at that model's price of that
period with the rate card the cost engine bills with
(:func:`~llmmeter.pricing.registry.cache_rates`, as
:func:`~llmmeter.pricing.registry.cache_figures` prices: the same amounts as pricing the usage
with and without its cache parts). Token prices are linear in every count, so each group's
counts times each rate are summed as exact integers (the rates in units of ``10**-15`` per
million tokens, or finer where a rate has more places) and turned into ``Decimal`` once per
group: equal to the last digit to pricing each call and adding up. Calls above a prompt-size
threshold of a price the registry lists are summed apart, by the largest such threshold they
are above: the calls of one such bucket are in the same tier at every price.

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
import json
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

from llmmeter.pricing.models import GpuHourPrice, ModelPrice
from llmmeter.pricing.registry import CacheRates, PricingRegistry, cache_rates
from llmmeter.pricing.sources import PriceEntry, ResolvedPrice
from llmmeter.report.build import Report, ReportKind, parse_group_keys
from llmmeter.report.sql import SQLITE, Dialect, GroupLabels, Run, SQLiteDialect, sum_present, time_window
from llmmeter.report.sql import _key as group_key_sql  # the report's own group keys and labels
from llmmeter.report.sql import _rows_summary as rows_summary_of  # what the store's rows hold
from llmmeter.store.read import SQLiteRun
from llmmeter.store.schema import StoreError

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
_CACHE_PARTS: Final = (
    "cache_read_input_tokens",
    "audio_cache_read_input_tokens",
    "cache_write_input_tokens",
    "cache_write_1h_input_tokens",
)
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
# Cache savings of summed rows


def _integer_at(value: Decimal, exponent: int) -> int:
    """``value`` as a whole number of ``10**exponent`` (at most its own exponent), exactly."""
    sign, digits, own = value.as_tuple()
    assert isinstance(own, int)  # prices are finite
    whole = int("".join(map(str, digits)) + "0" * (own - exponent))
    return -whole if sign else whole


_RATE_EXPONENT: Final = -15
"""The unit of every rate finer than it: a group's sums at all its prices then add up as one
integer (a rate with more decimal places gets a unit, and a sum, of its own)."""


@dataclass(frozen=True, slots=True)
class _UnitRates:
    """A price's :class:`~llmmeter.pricing.registry.CacheRates` as whole numbers of
    ``10**exponent`` per million tokens: a row's figures are then integer sums, exact."""

    currency: str
    exponent: int
    text_read: int
    audio_read: int
    write_5m: int
    write_1h: int

    @classmethod
    def of(cls, rates: CacheRates | None) -> _UnitRates | None:
        """The rates in units (``None``: not priced per token, or a rate that is not a number)."""
        if rates is None:
            return None
        values = (
            rates.text_read_savings,
            rates.audio_read_savings,
            rates.write_premium,
            rates.write_1h_premium,
        )
        if not all(value.is_finite() for value in values):
            return None
        exponent = min(_RATE_EXPONENT, *(int(value.as_tuple().exponent) for value in values))
        return cls(rates.currency, exponent, *(_integer_at(value, exponent) for value in values))


def _amount(units: int, exponent: int) -> Decimal:
    """``units`` of ``10**exponent`` per million tokens, in money (exact: no context rounds it)."""
    return Decimal(f"{units}E{exponent - 6}")


@dataclass(frozen=True, slots=True)
class _RowPrice:
    """What pricing a result row needs, the same for every row of one model, provider, price
    period, service tier and prompt-size bucket."""

    resolved: ResolvedPrice
    rates: _UnitRates | None
    """``None``: not priced per token (GPU time): caching changes no token bill."""


class _CacheSums:
    """Cache read savings and write premiums per raw group key, currency and rate exponent, as
    exact integers: prices are linear in the token counts, so the rows' counts times the rates
    summed are each row priced and added up."""

    def __init__(self) -> None:
        self.reads: dict[tuple[Any, str, int], int] = {}
        self.writes: dict[tuple[Any, str, int], int] = {}

    def add(self, raw_key: Any, rates: _UnitRates, counts: Sequence[int]) -> None:
        """Add one row's cache parts (``counts``: input, output, cache read, audio cache read,
        cache write, one-hour cache write: of calls whose parts fit, as
        :func:`~llmmeter.pricing.registry.cache_figures` prices only those)."""
        _, _, read, audio_read, write, write_1h = counts
        at = (raw_key, rates.currency, rates.exponent)
        if read:
            units = (read - audio_read) * rates.text_read + audio_read * rates.audio_read
            self.reads[at] = self.reads.get(at, 0) + units
        if write:
            units = (write - write_1h) * rates.write_5m + write_1h * rates.write_1h
            self.writes[at] = self.writes.get(at, 0) + units

    def add_to(self, figures: Figures, label: GroupLabels) -> None:
        """Add the sums to the groups of ``figures``, each raw key labelled as the report does."""
        for sums, figure in ((self.reads, "cache_read_savings"), (self.writes, "cache_write_premium")):
            for (raw_key, currency, exponent), units in sums.items():
                group = figures.groups.setdefault(label(raw_key), GroupFigures())
                _added(getattr(group, figure), currency, _amount(units, exponent))


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


@dataclass(frozen=True)
class _Rows:
    """Rows of the store read one way: those the store's summary covers (their report columns
    alone, only the token kinds they have), or the others, in full."""

    dialect: Dialect
    where: str = "1 = 1"
    params: tuple[object, ...] = ()
    token_kinds: frozenset[str] | None = None
    """The token kinds these rows may have (the others are NULL on every one); ``None``: any."""


def _rows_of(run: Run, dialect: Dialect) -> list[_Rows]:
    """The store's rows in the ways to read them: a local store's summary of what its rows hold
    covers the rows from its first id up to the last one when it is read (later rows, and a store
    without a summary, are read in full, as is the fleet store)."""
    if not isinstance(run, SQLiteRun):
        return [_Rows(dialect)]
    ((last,),) = list(run("SELECT max(id) FROM records", []))
    summary = rows_summary_of(run)  # after max(id): it covers every row up to it
    if last is None or summary is None:
        return [_Rows(dialect)]
    return [  # row id ranges apart: SQLite reads each range of the table alone (none: at once)
        _Rows(dialect, "id < ?", (summary.from_id,)),
        _Rows(dialect, "id > ?", (last,)),
        _Rows(
            SQLiteDialect(report_form=summary.report_form),
            "id >= ? AND id <= ?",
            (summary.from_id, last),
            summary.token_kinds,
        ),
    ]


def _tier_thresholds(entries: Sequence[PriceEntry]) -> list[int]:
    """Every prompt-size threshold of a listed price, largest first: calls at most the smallest
    are in no tier."""
    prices = [entry.price for entry in entries if isinstance(entry.price, ModelPrice)]
    return sorted({tier.above_input_tokens for price in prices for tier in price.tiers}, reverse=True)


def _bucket_sql(thresholds: Sequence[int]) -> str:
    """The largest threshold a call's input is above (NULL: none). Every price's tiers are cut at
    some of these, so the calls of one bucket are in the same tier at every price."""
    if not thresholds:
        return "NULL"
    above = " ".join(f"WHEN input_tokens > {int(t)} THEN {int(t)}" for t in thresholds)
    return f"CASE WHEN input_tokens > {int(thresholds[-1])} THEN CASE {above} END END"


def _count(name: str, token_kinds: frozenset[str] | None) -> str:
    """A row's token count, 0 when it has none (``"0"``: no row of these has any)."""
    return "0" if token_kinds is not None and name not in token_kinds else f"COALESCE({name}, 0)"


def _cache_parts_fit(token_kinds: frozenset[str] | None) -> str:
    """SQL of :func:`~llmmeter.pricing.registry.cache_parts_fit` on one call: a call whose cache
    parts exceed their totals is left out of the cache sums on its own, not hidden in a sum."""
    read, audio_read, write, write_1h = (_count(name, token_kinds) for name in _CACHE_PARTS)
    cached = " + ".join(count for count in (read, write) if count != "0") or "0"
    bounds = [
        ("0", audio_read),
        (audio_read, read),
        ("0", write_1h),
        (write_1h, write),
        (cached, "input_tokens"),
    ]
    return " AND ".join(f"{low} <= {high}" for low, high in bounds if low != high)


def _summed(name: str, token_kinds: frozenset[str] | None) -> str:
    """The sum of a token count, 0 without any (the counts are only multiplied); a cache part
    only over the calls whose cache parts fit."""
    if token_kinds is not None and name not in token_kinds:
        return "0"
    if name in _CACHE_PARTS:
        return f"COALESCE(SUM({name}) FILTER (WHERE {_cache_parts_fit(token_kinds)}), 0)"
    return f"COALESCE({sum_present(name)}, 0)"


def _cache_condition(token_kinds: frozenset[str] | None) -> str:
    """Rows with cache reads or writes (of the kinds the rows may have)."""
    names = [name for name in _CACHE_FIELDS if token_kinds is None or name in token_kinds]
    return "(" + " OR ".join(f"{name} > 0" for name in names) + ")" if names else "0 = 1"


def _figures_sql(
    rows: _Rows,
    keys: Sequence[Any],
    thresholds: Sequence[int],
    cache_only: bool,
    window: _Window,
    period: str,
) -> tuple[str, list[object]]:
    where, where_params = llm_window(rows.dialect.param, window.since, window.until)
    if cache_only:
        where += " AND " + _cache_condition(rows.token_kinds)
    bucket = _bucket_sql(thresholds)
    labels = [
        *((key.sql, True) for key in keys),
        ("response_model", True),
        ("request_model", True),
        ("provider", True),
        (period, period != _ONE_PERIOD),  # a constant is selected, not grouped by
        ("service_tier", True),
        (bucket, bucket != "NULL"),
    ]
    aggregates = [
        f"MIN(start_time_unix_ns) / {DAY_NS}",  # the first time's day is the first day
        f"MAX(start_time_unix_ns) / {DAY_NS}",
        "COUNT(*)",
        *(_summed(name, rows.token_kinds) for name in _SUMMED),
    ]
    grouped = ", ".join(str(i + 1) for i, (_, varies) in enumerate(labels) if varies)
    sql = (
        f"SELECT {', '.join(sql for sql, _ in labels)}, {', '.join(aggregates)} FROM records "
        f"WHERE {where} AND {rows.where} GROUP BY {grouped}"
    )
    return sql, [*(p for key in keys for p in key.params), *where_params, *rows.params]


def _read(run: Run, sql: str, params: list[object], columns: int, dialect: Dialect) -> list[Sequence[Any]]:
    """The rows of ``sql``: read as one text from SQLite (:func:`_as_one_text`), row by row
    where that cannot hold them (a BLOB value) and from other databases."""
    if isinstance(dialect, SQLiteDialect):
        try:
            ((text,),) = list(run(_as_one_text(sql, columns), params))
        except StoreError:  # "JSON cannot hold BLOB values": a store written by other hands
            pass
        else:
            return [tuple(row) for row in json.loads(text)]  # rows as the database gives them
    return list(run(sql, params))


def _as_one_text(sql: str, columns: int) -> str:
    """``sql``'s result rows as one JSON text, a list of rows (SQLite).

    The figures' scan runs on a thread of its own while the report's Python work holds the GIL:
    read row by row, each row is a step that waits for the GIL (up to Python's 5 ms switch
    interval), so the rows' reading ran only once the report was done (0.2 s at a million
    records). Every group is summed, and the rows made one text, before anything comes back."""
    names = [f"c{i}" for i in range(columns)]
    return (
        f"WITH figures({', '.join(names)}) AS MATERIALIZED ({sql}) "
        f"SELECT json_group_array(json_array({', '.join(names)})) FROM figures"
    )


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


class _RowPrices:
    """The price of each result row, looked up once per model, provider, price period, service
    tier and prompt-size bucket: within a period no model's price changes, so any day of it
    (the row's first) gives the price of every call of that row."""

    def __init__(self, resolve: _Resolver, width: int) -> None:
        self._resolve, self._width = resolve, width
        self._memo: dict[tuple[Any, ...], _RowPrice | None] = {}

    def __call__(self, row: Sequence[Any]) -> _RowPrice | None:
        """The row's price (``None``: unpriced)."""
        width = self._width
        at = tuple(row[width : width + 6])
        try:
            return self._memo[at]
        except KeyError:
            found = self._memo[at] = self._look_up(at, int(row[width + _FIRST_DAY]))
            return found

    def _look_up(self, at: tuple[Any, ...], day: int) -> _RowPrice | None:
        response_model, request_model, provider, _, service_tier, bucket = at
        resolved = self._resolve((response_model, request_model), provider, day)
        if resolved is None:
            return None
        # A bucket's calls are all above its threshold and in the same tier: one above it stands for them.
        prompt_tokens = None if bucket is None else int(bucket) + 1
        rates = cache_rates(resolved, service_tier=service_tier, prompt_tokens=prompt_tokens)
        return _RowPrice(resolved, _UnitRates.of(rates))


_ONE_PERIOD: Final = "0"
"""The price period of every row when no price changes within the window."""


def _period_sql(changes: Sequence[int]) -> str:
    """A row's price period: ``0`` before the first day of ``changes``, ``1`` from it, and so on."""
    if not changes:
        return _ONE_PERIOD
    cases = " ".join(f"WHEN {_DAY} < {int(day)} THEN {i}" for i, day in enumerate(changes))
    return f"CASE {cases} ELSE {len(changes)} END"


def _spans(rows: Iterable[Sequence[Any]], width: int) -> dict[tuple[Any, ...], list[int]]:
    """The first and last day of each model and provider the rows name."""
    spans: dict[tuple[Any, ...], list[int]] = {}
    first_at, last_at = width + _FIRST_DAY, width + _LAST_DAY
    for row in rows:
        names = tuple(row[width : width + 3])
        first, last = row[first_at], row[last_at]
        span = spans.get(names)
        if span is None:
            spans[names] = [first, last]
        else:
            if first < span[0]:
                span[0] = first
            if last > span[1]:
                span[1] = last
    return spans


def _price_changes(rows: Iterable[Sequence[Any]], width: int, resolve: _Resolver) -> list[int] | None:
    """Every day on which the price of a model the rows name differs from the day before, within
    the days the rows span for that model (a price source may be plugged in and cannot list its
    prices: each day is looked up); ``None`` when the spans are too long to look each day up."""
    spans = {names: (int(first), int(last)) for names, (first, last) in _spans(rows, width).items()}
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
    each takes 1-1.5 s). :meth:`result` then prices the rows. A store without a second
    connection (the fleet store) is scanned in :meth:`result`, as :func:`query_figures` does.
    """

    def __init__(
        self, run: Run, window: _Window, *, dialect: Dialect = SQLITE, registry: PricingRegistry | None = None
    ) -> None:
        self._run, self._window, self._dialect = run, window, dialect
        self._registry = registry or PricingRegistry.default()
        self._entries = self._registry.entries()
        self._declared = [entry for entry in self._entries if entry.price.training_cost is not None]
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

    def _scan(self, run: Run, period: str) -> list[Sequence[Any]]:
        """The result rows of the window's LLM calls, each part of the store read as it may be."""
        thresholds, cache_only = _tier_thresholds(self._entries), not self._declared
        found: list[Sequence[Any]] = []
        for rows in _rows_of(run, self._dialect):
            keys = [group_key_sql(rows.dialect, key) for key in self._window.group_by]
            sql, params = _figures_sql(rows, keys, thresholds, cache_only, self._window, period)
            found.extend(_read(run, sql, params, len(keys) + _COUNTS + 1 + len(_SUMMED), rows.dialect))
        return found

    def start(self) -> None:
        """Run the first scan on a connection and thread of its own (once; a report of steps,
        which has no figures, or a store without a second connection: nothing)."""
        if self._started is not None or self._window.kind == "step" or not isinstance(self._run, SQLiteRun):
            return
        another = self._run.another()

        def scan() -> list[Sequence[Any]]:
            try:
                return self._scan(another, _ONE_PERIOD)
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
        rows = started if started is not None else self._scan(self._run, _ONE_PERIOD)
        resolve = _Resolver(self._registry)
        width = len(window.group_by)
        changes = _price_changes(rows, width, resolve)
        if changes is None or changes:
            period = _DAY if changes is None else _period_sql(changes)  # None: odd dates, each day apart
            rows = self._scan(self._run, period)
        return self._priced(figures, rows, _RowPrices(resolve, width), report, now)

    def _priced(
        self,
        figures: Figures,
        rows: list[Sequence[Any]],
        price_of: _RowPrices,
        report: Report,
        now: dt.datetime | None,
    ) -> Figures:
        """The cache figures and training shares of the scan's ``rows``, added to ``figures``."""
        width = len(self._window.group_by)
        label = GroupLabels(
            self._dialect, [group_key_sql(self._dialect, key) for key in self._window.group_by]
        )
        sums = _CacheSums()
        used: dict[tuple[Any, ...], _Training] = {}
        for row in rows:
            price = price_of(row)
            if price is None:
                continue
            calls, *counts = map(int, row[width + _COUNTS :])
            if price.rates is not None and (counts[2] or counts[4]):  # cache reads or writes
                sums.add(row[:width], price.rates, counts)
            if price.resolved.price.training_cost is not None:
                self._add_training(used, label(row[:width]), price.resolved, counts[0] + counts[1], calls)
        sums.add_to(figures, label)
        _amortize(figures, self._declared, used, report.since, report.until or now or dt.datetime.now(dt.UTC))
        return figures

    @staticmethod
    def _add_training(
        used: dict[tuple[Any, ...], _Training], key: Key, resolved: ResolvedPrice, tokens: int, calls: int
    ) -> None:
        """Count a row's tokens and calls on the fine-tune whose price declares a training cost."""
        price = resolved.price
        identity = _declaration(resolved.model, resolved.provider, price)
        training = used.setdefault(identity, _Training(resolved.model, resolved.provider, price))
        training.add(key, tokens, calls)
