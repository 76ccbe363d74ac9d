"""``llmmeter report --format html``: one self-contained HTML file with charts.

The charts are inline SVG drawn here, in Python: the file needs no network, no JavaScript and
no fonts beyond the browser's own, so it opens anywhere (an e-mail attachment, an air-gapped
laptop) and a Content-Security-Policy forbids it from loading anything at all. SVG ``<title>``
elements give each bar and box a tooltip with its exact numbers.

Charts: cost over time stacked by model, cost by team and by feature, TTFT / TPOT / duration
distributions per model, tokens by kind and modality stacked by model. Costs in the charts are
those of the report's main currency; calls without a cost are counted, never drawn as zero.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from llmmeter.record import USAGE_COUNT_FIELDS, CallRecord
from llmmeter.report.build import (
    PERCENTILES,
    Report,
    group_key_function,
    of_kind,
    percentile,
    record_cost,
)
from llmmeter.report.labels import token_label
from llmmeter.report.text import (
    LATENCY_TITLE,
    format_money,
    format_seconds,
    json_text,
    latency_table_cells,
    report_notes,
    usage_table_cells,
    window_label,
)

if TYPE_CHECKING:
    from llmmeter.report.figures import Figures

__all__ = ["render_html"]

_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C6D31", "#F0E442")
_OTHER_COLOR = "#9E9E9E"
_OTHER = "other"
_NONE = "(none)"
_MAX_SERIES = len(_PALETTE)
_MAX_BARS = 15
_WIDTH = 960

_BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400)
_MAX_BUCKETS = 48


def _esc(text: object) -> str:
    # A lone surrogate (from a hostile attribute) cannot be written as UTF-8: show its escape.
    return html.escape(json_text(str(text)), quote=True)


def _model(record: CallRecord) -> str:
    return group_key_function("model")(record) or _NONE


# ---------------------------------------------------------------------------------------------
# Scales and small SVG pieces


def _nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Round axis ticks from 0 to at least ``maximum`` (steps of 1, 2, 2.5 or 5 x 10^k)."""
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw)
    steps = math.ceil(maximum / step - 1e-9)
    return [i * step for i in range(steps + 1)]


def _short_number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if abs(value) >= 10_000:
        return f"{value / 1000:.3g}k"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _legend(series: Sequence[str], colors: dict[str, str]) -> str:
    items = "".join(
        f'<span class="key"><i style="background:{colors[name]}"></i>{_esc(name)}</span>' for name in series
    )
    return f'<div class="legend">{items}</div>'


def _series_colors(series: Sequence[str]) -> dict[str, str]:
    colors = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(s for s in series if s != _OTHER)}
    colors[_OTHER] = _OTHER_COLOR
    return colors


def _top_series(totals: dict[str, float], limit: int) -> list[str]:
    """The ``limit - 1`` biggest names, plus ``other`` when there are more."""
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    if len(ranked) <= limit:
        return ranked
    return [*ranked[: limit - 1], _OTHER]


def _fold(name: str, kept: Sequence[str]) -> str:
    return name if name in kept else _OTHER


# ---------------------------------------------------------------------------------------------
# Chart: stacked columns (cost over time)


@dataclass(frozen=True, slots=True)
class _Columns:
    labels: list[str]
    series: list[str]
    values: list[dict[str, float]]
    """One dict per column: series -> value."""
    value_label: Callable[[float], str]


def _stacked_columns_svg(chart: _Columns, colors: dict[str, str], aria: str) -> str:
    height, left, right, top, bottom = 300, 78, 16, 14, 46
    plot_w, plot_h = _WIDTH - left - right, height - top - bottom
    totals = [sum(column.values()) for column in chart.values]
    ticks = _nice_ticks(max(totals, default=0.0))
    y_max = ticks[-1]
    slot = plot_w / max(len(chart.labels), 1)
    parts = [_y_axis(ticks, left, top, plot_w, plot_h, chart.value_label)]
    label_every = max(1, math.ceil(len(chart.labels) / 12))
    for i, (label, column) in enumerate(zip(chart.labels, chart.values, strict=True)):
        x = left + i * slot + slot * 0.1
        y = float(top + plot_h)
        for name in chart.series:
            value = column.get(name, 0.0)
            if value <= 0:
                continue
            h = value / y_max * plot_h
            y -= h
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{h:.1f}" '
                f'fill="{colors[name]}"><title>{_esc(name)} · {_esc(label)}: '
                f"{_esc(chart.value_label(value))}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text class="tick" x="{x + slot * 0.4:.1f}" y="{top + plot_h + 16}" '
                f'text-anchor="middle">{_esc(label)}</text>'
            )
    return _svg(height, aria, parts)


def _y_axis(
    ticks: Sequence[float], left: int, top: int, plot_w: int, plot_h: int, fmt: Callable[[float], str]
) -> str:
    lines = []
    for tick in ticks:
        y = top + plot_h - tick / ticks[-1] * plot_h
        lines.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_esc(fmt(tick))}</text>'
        )
    return "".join(lines)


def _svg(height: int, aria: str, parts: Sequence[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" '
        f'role="img" aria-label="{_esc(aria)}">{"".join(parts)}</svg>'
    )


# ---------------------------------------------------------------------------------------------
# Chart: horizontal bars, optionally stacked (cost by team, tokens by kind)


@dataclass(frozen=True, slots=True)
class _Bar:
    label: str
    segments: list[tuple[str, float]]
    note: str


def _bars_svg(bars: Sequence[_Bar], colors: dict[str, str], fmt: Callable[[float], str], aria: str) -> str:
    row_h, left, right, top = 26, 180, 260, 8
    plot_w = _WIDTH - left - right
    height = top + row_h * len(bars) + 24
    ticks = _nice_ticks(max((sum(v for _, v in bar.segments) for bar in bars), default=0.0))
    parts: list[str] = []
    for tick in ticks:
        x = left + tick / ticks[-1] * plot_w
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - 20}"/>'
            f'<text class="tick" x="{x:.1f}" y="{height - 6}" text-anchor="middle">{_esc(fmt(tick))}</text>'
        )
    for i, bar in enumerate(bars):
        y = top + i * row_h
        parts.append(
            f'<text class="label" x="{left - 8}" y="{y + row_h * 0.65:.1f}" text-anchor="end">'
            f"{_esc(_clip(bar.label, 26))}<title>{_esc(bar.label)}</title></text>"
        )
        x = float(left)
        for name, value in bar.segments:
            if value <= 0:
                continue
            w = value / ticks[-1] * plot_w
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" '
                f'fill="{colors[name]}"><title>{_esc(bar.label)} · {_esc(name)}: {_esc(fmt(value))}'
                "</title></rect>"
            )
            x += w
        parts.append(f'<text class="note" x="{x + 6:.1f}" y="{y + row_h * 0.65:.1f}">{_esc(bar.note)}</text>')
    return _svg(height, aria, parts)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Chart: one box per model (latency distributions)


def _boxes_svg(rows: Sequence[tuple[str, list[float]]], aria: str) -> str:
    row_h, left, right, top = 30, 180, 300, 8
    plot_w = _WIDTH - left - right
    height = top + row_h * len(rows) + 24
    summaries = [(label, _five_numbers(values), len(values)) for label, values in rows]
    # The axis ends at the largest p99: a single outlier must not squash every box.
    ticks = _nice_ticks(max(s["p99"] for _, s, _ in summaries))

    def x_of(value: float) -> float:
        return left + min(value / ticks[-1], 1.0) * plot_w

    parts: list[str] = []
    for tick in ticks:
        parts.append(
            f'<line class="grid" x1="{x_of(tick):.1f}" x2="{x_of(tick):.1f}" y1="{top}" y2="{height - 20}"/>'
            f'<text class="tick" x="{x_of(tick):.1f}" y="{height - 6}" text-anchor="middle">'
            f"{_esc(format_seconds(tick) if tick else '0')}</text>"
        )
    for i, (label, s, count) in enumerate(summaries):
        y, mid = top + i * row_h, top + i * row_h + row_h / 2
        x = {name: x_of(value) for name, value in s.items()}
        parts += [
            f'<text class="label" x="{left - 8}" y="{mid + 4:.1f}" text-anchor="end">'
            f"{_esc(_clip(label, 26))}</text>",
            f'<g class="box"><title>{_esc(_box_tooltip(label, s, count))}</title>',
            f'<line class="whisker" x1="{x["min"]:.1f}" x2="{x["p99"]:.1f}" y1="{mid}" y2="{mid}"/>',
            f'<rect x="{x["p25"]:.1f}" y="{y + 6}" width="{max(x["p75"] - x["p25"], 1):.1f}" '
            f'height="{row_h - 12}" fill="{_PALETTE[0]}" fill-opacity="0.35" stroke="{_PALETTE[0]}"/>',
            f'<line class="median" x1="{x["p50"]:.1f}" x2="{x["p50"]:.1f}" '
            f'y1="{y + 4}" y2="{y + row_h - 4}"/>',
            f'<line class="p95" x1="{x["p95"]:.1f}" x2="{x["p95"]:.1f}" y1="{y + 8}" y2="{y + row_h - 8}"/>',
            "</g>",
            f'<text class="note" x="{left + plot_w + 8}" y="{mid + 4:.1f}">'
            f"p50 {_esc(format_seconds(s['p50']))} · p95 {_esc(format_seconds(s['p95']))} · "
            f"p99 {_esc(format_seconds(s['p99']))} (n={count})</text>",
        ]
    return _svg(height, aria, parts)


def _box_tooltip(label: str, s: dict[str, float], count: int) -> str:
    points = ", ".join(f"p{p} {format_seconds(s[f'p{p}'])}" for p in (25, 50, 75, *PERCENTILES[1:]))
    return f"{label}: n={count}, min {format_seconds(s['min'])}, {points}, max {format_seconds(s['max'])}"


def _five_numbers(values: list[float]) -> dict[str, float]:
    points = {f"p{p}": percentile(values, p) for p in (25, 50, 75, 95, 99)}
    points["min"], points["max"] = min(values), max(values)
    return {name: value or 0.0 for name, value in points.items()}


# ---------------------------------------------------------------------------------------------
# From records to chart data


def _main_currency(report: Report) -> str:
    costs = report.total.cost
    return max(costs, key=lambda c: costs[c]) if costs else "USD"


def _bucket_width(span_s: float) -> int:
    return next((width for width in _BUCKETS_S if span_s / width <= _MAX_BUCKETS), _BUCKETS_S[-1])


def _cost_over_time(records: Sequence[CallRecord], report: Report, currency: str) -> str:
    priced: list[tuple[CallRecord, Decimal]] = []
    for record in records:
        amount, cost_currency = record_cost(record)
        if amount is not None and cost_currency == currency:
            priced.append((record, amount))
    if not priced:
        return _empty("No priced calls in this window.")
    starts = [r.timings.start_time_unix_ns / 1e9 for r, _ in priced]
    first = report.since.timestamp() if report.since else min(starts)
    last = report.until.timestamp() if report.until else max(starts)
    width = _bucket_width(max(last - first, 1.0))
    offset = datetime.fromtimestamp(first).astimezone().utcoffset()
    shift = offset.total_seconds() if offset else 0.0
    origin = math.floor((first + shift) / width) * width - shift
    count = max(1, math.floor((last - origin) / width) + 1)
    model_totals: dict[str, float] = {}
    for record, amount in priced:
        model_totals[_model(record)] = model_totals.get(_model(record), 0.0) + float(amount)
    series = _top_series(model_totals, _MAX_SERIES)
    columns: list[dict[str, float]] = [{} for _ in range(count)]
    for (record, amount), start in zip(priced, starts, strict=True):
        index = min(max(math.floor((start - origin) / width), 0), count - 1)
        name = _fold(_model(record), series)
        columns[index][name] = columns[index].get(name, 0.0) + float(amount)
    time_format = "%Y-%m-%d" if width >= 86_400 else "%m-%d %H:%M"
    labels = [
        datetime.fromtimestamp(origin + i * width).astimezone().strftime(time_format) for i in range(count)
    ]
    colors = _series_colors(series)
    chart = _Columns(labels, series, columns, _money_label(currency))
    per = _duration_words(width)
    return _legend(series, colors) + _stacked_columns_svg(chart, colors, f"cost per {per} stacked by model")


def _duration_words(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            amount = seconds // size
            return unit if amount == 1 else f"{amount} {unit}s"
    return f"{seconds} s"


def _money_label(currency: str) -> Callable[[float], str]:
    return lambda value: f"{_short_number(value)} {currency}"


def _cost_by(records: Sequence[CallRecord], key: str, currency: str) -> str:
    key_of = group_key_function(key)
    costs: dict[str, Decimal] = {}
    unpriced: dict[str, int] = {}
    for record in records:
        label = key_of(record) or _NONE
        amount, cur = record_cost(record)
        if amount is not None and cur == currency:
            costs[label] = costs.get(label, Decimal(0)) + amount
        elif amount is None:
            unpriced[label] = unpriced.get(label, 0) + 1
    labels = sorted(set(costs) | set(unpriced), key=lambda k: (-costs.get(k, Decimal(0)), k))
    if not labels or set(labels) == {_NONE}:
        return _empty(f"No record has a '{key}' attribute.")
    bars = [
        _Bar(
            label,
            [("cost", float(costs.get(label, 0)))],
            _cost_note(costs.get(label), unpriced.get(label, 0), currency),
        )
        for label in labels[:_MAX_BARS]
    ]
    hidden = len(labels) - len(bars)
    svg = _bars_svg(bars, {"cost": _PALETTE[0]}, _money_label(currency), f"cost by {key}")
    return svg + (f'<p class="muted">{hidden} smaller groups not shown.</p>' if hidden > 0 else "")


def _cost_note(amount: Decimal | None, unpriced: int, currency: str) -> str:
    text = f"{format_money(amount)} {currency}" if amount is not None else "no priced calls"
    return text + (f" · {unpriced} unpriced" if unpriced else "")


def _latency_by_model(records: Sequence[CallRecord], metric: str) -> str:
    samples: dict[str, list[float]] = {}
    for record in records:
        value = getattr(record.timings, f"{metric}_s")
        if value is not None:
            samples.setdefault(_model(record), []).append(value)
    if not samples:
        return _empty(f"No call in this window has a {metric.upper()} (it needs streaming).")
    rows = sorted(samples.items(), key=lambda item: (-len(item[1]), item[0]))[:_MAX_BARS]
    return _boxes_svg(rows, f"{metric} distribution per model")


def _tokens_by_kind(records: Sequence[CallRecord], report: Report) -> str:
    kinds = [k for k in USAGE_COUNT_FIELDS if k in report.total.tokens]
    if not kinds:
        return _empty("No call in this window reported token counts.")
    per_model: dict[str, dict[str, int]] = {}
    for record in records:
        usage = (record.rollup_usage or record.usage) if record.kind.value == "step" else record.usage
        if usage is None:
            continue
        counts = per_model.setdefault(_model(record), {})
        for kind, value in usage.counts().items():
            counts[kind] = counts.get(kind, 0) + value
    totals = {
        model: float(counts.get("input_tokens", 0) + counts.get("output_tokens", 0))
        for model, counts in per_model.items()
    }
    series = _top_series(totals, _MAX_SERIES)
    colors = _series_colors(series)
    bars = []
    for kind in kinds:
        folded: dict[str, float] = {}
        for model, counts in per_model.items():
            name = _fold(model, series)
            folded[name] = folded.get(name, 0.0) + counts.get(kind, 0)
        segments = [(name, folded.get(name, 0.0)) for name in series]
        bars.append(_Bar(token_label(kind), segments, f"{report.total.tokens[kind]:,} tokens"))
    svg = _bars_svg(bars, colors, _short_number, "tokens by kind, stacked by model")
    return _legend(series, colors) + svg


def _empty(message: str) -> str:
    return f'<p class="muted empty">{_esc(message)}</p>'


# ---------------------------------------------------------------------------------------------
# Page


def _table_html(cells: tuple[list[str], list[list[str]], int]) -> str:
    headers, rows, left_columns = cells

    def row(tag: str, values: Sequence[str]) -> str:
        cells = (
            f'<{tag} class="{"text" if i < left_columns else "num"}">{_esc(v)}</{tag}>'
            for i, v in enumerate(values)
        )
        return "<tr>" + "".join(cells) + "</tr>"

    body = "".join(row("td", r) for r in rows)
    return f"<table><thead>{row('th', headers)}</thead><tbody>{body}</tbody></table>"


def _figure_cards(figures: Figures | None, currency: str) -> list[tuple[str, str]]:
    """Cards for the window's cache savings and amortized training cost, when it has them."""
    if figures is None:
        return []
    total = figures.total()
    return [
        (f"{name} ({currency})", format_money(amounts[currency]))
        for name, amounts in (("cache saved", total.cache_savings), ("training", total.training_cost_share))
        if currency in amounts
    ]


def _cards(report: Report, currency: str, figures: Figures | None) -> str:
    total = report.total
    cost = total.cost.get(currency)
    ttft, duration = total.latency["ttft"].percentiles, total.latency["duration"].percentiles
    cards = [
        ("calls", f"{total.calls:,}"),
        ("errors", f"{total.errors:,}"),
        (f"cost ({currency})", format_money(cost) if cost is not None else "–"),
        *_figure_cards(figures, currency),
        ("unpriced calls", f"{total.unpriced_calls:,}"),
        ("TTFT p50 / p95", f"{format_seconds(ttft[50])} / {format_seconds(ttft[95])}"),
        ("duration p50 / p95", f"{format_seconds(duration[50])} / {format_seconds(duration[95])}"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="muted">{_esc(name)}</div>'
            f'<div class="big">{_esc(value)}</div></div>'
            for name, value in cards
        )
        + "</div>"
    )


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
  max-width:1000px;color:#1d1d1f;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#6e6e73}.empty{font-style:italic}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #e3e3e8;border-radius:8px;padding:8px 12px;min-width:130px}
.big{font-size:18px;font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:12px;margin:4px 0}
.key i{display:inline-block;width:11px;height:11px;margin-right:5px;border-radius:2px;vertical-align:-1px}
svg.chart{max-width:100%;height:auto}
.tick,.note,.label{font-size:11px;fill:#3a3a3c}.label{font-size:12px}
.grid{stroke:#ececf0}.whisker{stroke:#0072B2}
.median{stroke:#1d1d1f;stroke-width:2.5}.p95{stroke:#D55E00;stroke-width:2}
.bar:hover,.box:hover{opacity:.8}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{padding:3px 10px;border-bottom:1px solid #eee}th{background:#f5f5f7}
.num{text-align:right;font-variant-numeric:tabular-nums}.text{text-align:left}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'"
"""Nothing may load: the page is complete as it is."""


_BOX_LEGEND = (
    "Boxes: p25–p75, black line p50, orange line p95, whisker min–p99 (the axis ends at the largest p99)."
)


def _tables(report: Report, figures: Figures | None) -> list[str]:
    if not report.groups:
        return ["<h2>Tokens and cost</h2>", _empty("No records in this window.")]
    return [
        "<h2>Tokens and cost</h2>",
        _table_html(usage_table_cells(report, figures)),
        f"<h2>{_esc(LATENCY_TITLE)}</h2>",
        _table_html(latency_table_cells(report)),
    ]


def render_html(
    report: Report,
    records: Sequence[CallRecord],
    extra_sections: Sequence[str] = (),
    *,
    figures: Figures | None = None,
) -> str:
    """The report as one self-contained HTML page with SVG charts.

    ``records`` are those the report was built from (already limited to its time window); they
    feed the charts that need more than the aggregates (cost over time, latency distributions).
    ``extra_sections`` are more HTML fragments (escaped already) shown after the tables: the
    routing section of :mod:`llmmeter.report.finops`. ``figures`` (cache savings, amortized
    training cost) add their columns to the tokens-and-cost table and their notes.
    """
    chosen = of_kind(records, report.kind)
    currency = _main_currency(report)
    by = f" · by {', '.join(report.group_by)}" if report.group_by else ""
    what = {"llm": "LLM calls", "step": "steps", "all": "LLM calls and steps"}[report.kind]
    sections = [
        ("Cost over time, by model", _cost_over_time(chosen, report, currency)),
        ("Cost by team", _cost_by(chosen, "team", currency)),
        ("Cost by feature", _cost_by(chosen, "feature", currency)),
        ("Time to first token (TTFT) per model", _latency_by_model(chosen, "ttft")),
        ("Time per output token (TPOT) per model", _latency_by_model(chosen, "tpot")),
        ("Duration per model", _latency_by_model(chosen, "duration")),
        ("Tokens by kind and modality", _tokens_by_kind(chosen, report)),
    ]
    notes = [*report_notes(report, figures), _BOX_LEGEND]
    subtitle = f"{what} · {window_label(report)}{by}"
    body = [
        f"<h1>llmmeter report</h1><div class='muted'>{_esc(subtitle)}</div>",
        _cards(report, currency, figures),
        *(f"<h2>{_esc(title)}</h2>{content}" for title, content in sections),
        *_tables(report, figures),
        *extra_sections,
        "<h2>Notes</h2><ul>" + "".join(f"<li>{_esc(note)}</li>" for note in notes) + "</ul>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>llmmeter report · {_esc(window_label(report))}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
