"""``llmmeter report --baseline-model MODEL``: what each group's usage would have cost on MODEL.

Every group's recorded token counts, by token kind, are priced at the baseline model's price with
the same cost engine that priced the calls (:func:`llmmeter.pricing.registry.price_usage`), at the
price in force on the day of the calls (UTC), with the service tier the calls reported. One
``GROUP BY`` sums the tokens per group, day and service tier (call by call when the baseline's
current price has prompt-size tiers, whose rates depend on one request's input tokens); token
prices are linear in each count and the arithmetic is exact ``Decimal``, so pricing the sums equals
pricing the calls one by one and adding up.

Only calls that can be compared are: LLM calls with token counts *and* a cost in the baseline's
currency. Their cost is ``actual``; ``savings = baseline - actual`` (negative: the baseline was
cheaper), ``savings_pct = savings / baseline * 100``. The other calls (no token counts, unpriced,
another currency) are counted in ``not_compared_calls``, never priced as 0. A group none of whose
usage can be priced at the baseline has no ``baseline`` (``None``), not 0; one some of whose
calls fell on a day without a baseline price has no ``savings``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from llmmeter.pricing.models import ModelPrice
from llmmeter.pricing.registry import PricingRegistry, UsageInconsistentError, price_usage
from llmmeter.pricing.sources import ResolvedPrice
from llmmeter.record import USAGE_COUNT_FIELDS, Usage
from llmmeter.report.build import Report, parse_group_keys
from llmmeter.report.figures import DAY_NS, llm_window
from llmmeter.report.routes import grid
from llmmeter.report.sql import SQLITE, Dialect, Run
from llmmeter.report.sql import _key as group_key_sql  # the report's own group keys and labels
from llmmeter.report.text import decimal_text, format_money, json_text, printable

__all__ = [
    "BaselineError",
    "SavingsGroup",
    "SavingsReport",
    "add_savings",
    "query_savings",
    "render_savings_table",
]


class BaselineError(ValueError):
    """The baseline model cannot serve as one (unknown, or not priced by tokens): one line."""


@dataclass(slots=True)
class SavingsGroup:
    """One group's actual cost beside its usage priced at the baseline model."""

    key: tuple[str | None, ...]
    compared_calls: int = 0
    """LLM calls with token counts and a cost in the baseline's currency."""
    not_compared_calls: int = 0
    """Other calls of the group (no token counts, unpriced, another currency): left out."""
    actual: Decimal = Decimal(0)
    """Exact recorded cost of the compared calls."""
    baseline: Decimal | None = None
    """Their usage priced at the baseline; ``None`` when it could not be (absent, not 0)."""
    baseline_unpriced_calls: int = 0
    """Compared calls whose usage the baseline could not price (no price that day, bad usage)."""

    @property
    def savings(self) -> Decimal | None:
        """``baseline - actual``; ``None`` when the baseline is unknown or missed some calls."""
        if self.baseline is None or self.baseline_unpriced_calls:
            return None
        return self.baseline - self.actual

    @property
    def savings_pct(self) -> float | None:
        """``savings / baseline * 100``; ``None`` without savings or with a zero baseline."""
        savings = self.savings
        if savings is None or not self.baseline:
            return None
        return float(savings / self.baseline * 100)

    def add(self, other: SavingsGroup) -> None:
        """Add ``other``'s numbers (a total, an ``other`` row)."""
        self.compared_calls += other.compared_calls
        self.not_compared_calls += other.not_compared_calls
        self.actual += other.actual
        self.baseline_unpriced_calls += other.baseline_unpriced_calls
        if other.baseline is not None:
            self.baseline = other.baseline if self.baseline is None else self.baseline + other.baseline


@dataclass(slots=True)
class SavingsReport:
    """Savings against one baseline model, per group of ``group_by``."""

    baseline_model: str
    currency: str
    group_by: tuple[str, ...]
    groups: dict[tuple[str | None, ...], SavingsGroup] = field(default_factory=dict)

    def total(self, keys: Sequence[tuple[str | None, ...]] | None = None) -> SavingsGroup:
        """The groups of ``keys`` (default: all) added up."""
        total = SavingsGroup(key=())
        for key in self.groups if keys is None else keys:
            if key in self.groups:
                total.add(self.groups[key])
        return total


def _baseline_price(registry: PricingRegistry, model: str) -> ResolvedPrice:
    resolved = registry.lookup(model)
    if resolved is None:
        raise BaselineError(f"--baseline-model: no price for {printable(model)!r} (see llmmeter prices list)")
    price = resolved.price
    if not isinstance(price, ModelPrice) or price.per_request is not None or price.bills_media:
        raise BaselineError(f"--baseline-model: {printable(model)!r} is not priced by tokens alone")
    return resolved


def query_savings(
    run: Run,
    baseline_model: str,
    *,
    dialect: Dialect = SQLITE,
    by: str | Sequence[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    registry: PricingRegistry | None = None,
) -> SavingsReport:
    """The LLM calls of ``[since, until)`` grouped by ``by``: actual cost beside the baseline's."""
    registry = registry or PricingRegistry.default()
    price = _baseline_price(registry, baseline_model).price
    group_by = parse_group_keys(by)
    keys = [group_key_sql(dialect, key) for key in group_by]
    # A prompt-size tier depends on one request's input tokens: such a baseline prices call by call.
    per_call = isinstance(price, ModelPrice) and bool(price.tiers)
    sql, params = _savings_sql(
        dialect, keys, price.currency, per_call, llm_window(dialect.param, since, until)
    )
    dialect.prepare(run)
    report = SavingsReport(baseline_model, price.currency, group_by)
    width = len(keys)
    for row in run(sql, params):
        key = tuple(
            dialect.attribute_label(value) if k.is_attribute else value
            for k, value in zip(keys, row[:width], strict=True)
        )
        group = report.groups.setdefault(key, SavingsGroup(key=key))
        _add_row(group, row[width:], dialect, registry, baseline_model)
    return report


def _savings_sql(
    dialect: Dialect, keys: Sequence[Any], currency: str, per_call: bool, where: tuple[str, list[object]]
) -> tuple[str, list[object]]:
    """One ``GROUP BY`` per group key, comparable or not, UTC day and service tier (and call)."""
    comparable = (
        f"(cost_amount IS NOT NULL AND COALESCE(cost_currency, 'USD') = {dialect.param} "
        "AND usage_source IS NOT NULL AND usage_source <> 'missing')"
    )
    labels = [
        *(key.sql for key in keys),
        f"CASE WHEN {comparable} THEN 1 ELSE 0 END",
        f"CASE WHEN {comparable} THEN start_time_unix_ns / {DAY_NS} END",
        f"CASE WHEN {comparable} THEN service_tier END",
        f"CASE WHEN {comparable} THEN id END" if per_call else "NULL",
    ]
    aggregates = [
        "COUNT(*)",
        *(f"SUM({name})" for name in USAGE_COUNT_FIELDS),
        *dialect.cost_and_latency(f"CASE WHEN {comparable} THEN cost_amount END", ["NULL"] * 3, "1 = 0"),
    ]
    sql = (
        f"SELECT {', '.join(labels)}, {', '.join(aggregates)} FROM records WHERE {where[0]} "
        f"GROUP BY {', '.join(str(i + 1) for i in range(len(labels)))}"
    )
    return sql, [*(p for key in keys for p in key.params), *[currency] * (4 + per_call), *where[1]]


def _add_row(
    group: SavingsGroup, values: Sequence[Any], dialect: Dialect, registry: PricingRegistry, model: str
) -> None:
    """Add one result row (after the key columns) to ``group``, pricing its usage at ``model``."""
    is_comparable, day, service_tier, _ = values[:4]
    calls, *token_sums = values[4 : 5 + len(USAGE_COUNT_FIELDS)]
    if not is_comparable:
        group.not_compared_calls += calls
        return
    cost, _ = dialect.decode(values[5 + len(USAGE_COUNT_FIELDS) :])
    group.compared_calls += calls
    group.actual += cost or Decimal(0)
    counts: dict[str, Any] = {
        n: int(v) for n, v in zip(USAGE_COUNT_FIELDS, token_sums, strict=True) if v is not None
    }
    baseline = _price_on(registry, model, int(day), Usage(**counts), service_tier)
    if baseline is None:
        group.baseline_unpriced_calls += calls
    else:
        group.baseline = baseline if group.baseline is None else group.baseline + baseline


def _price_on(
    registry: PricingRegistry, model: str, day: int, usage: Usage, service_tier: str | None
) -> Decimal | None:
    """``usage`` priced at ``model``'s price of UTC day number ``day``; ``None`` if it cannot be."""
    resolved = registry.lookup(model, at=dt.datetime.fromtimestamp(day * 86_400, dt.UTC))
    if resolved is None:
        return None
    try:
        cost = price_usage(resolved, usage, service_tier=service_tier)
    except UsageInconsistentError:
        return None
    return None if cost is None else cost.amount


# ---------------------------------------------------------------------------------------------
# Rendering beside the report


def _money_text(amount: Decimal | None) -> str | None:
    return None if amount is None else decimal_text(amount)


def _savings_fields(group: SavingsGroup) -> dict[str, Any]:
    return {
        "compared_calls": group.compared_calls,
        "not_compared_calls": group.not_compared_calls,
        "actual_cost": decimal_text(group.actual),
        "baseline_cost": _money_text(group.baseline),
        "baseline_unpriced_calls": group.baseline_unpriced_calls,
        "savings": _money_text(group.savings),
        "savings_pct": group.savings_pct,
    }


def _shown_keys(report: Report) -> list[tuple[str | None, ...]]:
    return [stats.key for stats in report.groups]


def _other_keys(report: Report, savings: SavingsReport) -> list[tuple[str | None, ...]]:
    shown = set(_shown_keys(report))
    return [key for key in savings.groups if key not in shown]


def _with_json(text: str, report: Report, savings: SavingsReport) -> str:
    document = json.loads(text)
    document["baseline"] = {"model": savings.baseline_model, "currency": savings.currency}
    for group, key in zip(document["groups"], _shown_keys(report), strict=True):
        group["baseline"] = _savings_fields(savings.total([key]))
    if document.get("other") is not None:
        document["other"]["baseline"] = _savings_fields(savings.total(_other_keys(report, savings)))
    document["total"]["baseline"] = _savings_fields(savings.total())
    return json_text(json.dumps(document, ensure_ascii=False, indent=2)) + "\n"


_CSV_FIELDS: Final = (
    "compared_calls",
    "not_compared_calls",
    "actual_cost",
    "baseline_cost",
    "baseline_unpriced_calls",
    "savings",
    "savings_pct",
)


def _with_csv(text: str, report: Report, savings: SavingsReport) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    columns = [f"baseline_{name}" for name in _CSV_FIELDS]
    groups = [savings.total([key]) for key in _shown_keys(report)]
    if report.other is not None:
        groups.append(savings.total(_other_keys(report, savings)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*rows[0], *columns])
    for row, group in zip(rows[1:], groups, strict=True):
        fields = _savings_fields(group)
        writer.writerow([*row, *("" if fields[name] is None else fields[name] for name in _CSV_FIELDS)])
    return buffer.getvalue()


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} %"


def _money(amount: Decimal | None) -> str:
    return "–" if amount is None else format_money(amount)


def _table_row(labels: Sequence[str], group: SavingsGroup) -> list[str]:
    return [
        *labels,
        f"{group.compared_calls:,}",
        _money(group.actual),
        _money(group.baseline if not group.baseline_unpriced_calls else None),
        _money(group.savings),
        _pct(group.savings_pct),
    ]


def render_savings_table(report: Report, savings: SavingsReport) -> str:
    """The savings section below the report's table: the report's groups in its order."""
    model = printable(savings.baseline_model)
    title = f"Savings against {model} (the same usage priced at {model}, {savings.currency})"
    if not savings.groups:
        return f"{title}\n  No LLM calls in this window.\n"
    key_count = len(report.group_by)
    rows = [
        _table_row([printable(v or "(none)")[:36] for v in key], savings.total([key]))
        for key in _shown_keys(report)
    ]
    if report.other is not None:
        rows.append(
            _table_row(["(other)", *[""] * (key_count - 1)], savings.total(_other_keys(report, savings)))
        )
    if key_count:
        rows.append(_table_row(["total", *[""] * (key_count - 1)], savings.total()))
    headers = [
        *(printable(k) for k in report.group_by),
        "compared",
        "actual",
        "baseline",
        "savings",
        "savings %",
    ]
    notes = [
        "  compared: calls with token counts and a cost in the baseline's currency; the others are left",
        "    out. baseline: their tokens by kind at the baseline's price of each call's day; '–': it has",
        "    no price for some of them. savings = baseline - actual (negative: the baseline is cheaper).",
    ]
    return "\n".join([title, *grid(headers, rows, key_count), *notes]) + "\n"


def add_savings(text: str, output_format: str, report: Report, savings: SavingsReport) -> str:
    """The rendered ``report`` (``table``, ``json`` or ``csv``) with the savings added: a section
    below the table, a ``baseline`` object in every JSON group, ``baseline_*`` CSV columns."""
    if output_format == "json":
        return _with_json(text, report, savings)
    if output_format == "csv":
        return _with_csv(text, report, savings)
    return f"{text}\n{render_savings_table(report, savings)}"
