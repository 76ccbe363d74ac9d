"""A :class:`~llmmeter.report.build.Report` as a terminal table, JSON or CSV.

Every value that came from a record (a model name, an attribute) is treated as hostile here:

* the table escapes control characters, terminal escape sequences, NUL and lone surrogates
  (``\\x1b``, ``\\x00``, ``\\ud800``), and cuts a value longer than its column with ``…``; the
  default table fits :data:`TABLE_WIDTH` columns (kinds that do not fit are named in a note,
  and are all in JSON and CSV);
* JSON keeps every value whole; a lone surrogate is written as its ``\\uXXXX`` escape, which
  reads back as the same string;
* CSV keeps every value whole, but a text cell starting with ``=``, ``+``, ``-``, ``@``, tab or
  carriage return gets a leading ``'`` (the OWASP rule against spreadsheet formula injection),
  and a lone surrogate is written as its visible escape.

JSON and CSV have the same keys in every group: a token kind any record of the report reported
is present in every group (``null`` / an empty cell where that group's records did not report
it); a currency any cost was in likewise.
"""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, getcontext
from typing import TYPE_CHECKING, Any, Final

from llmmeter.record import USAGE_COUNT_FIELDS
from llmmeter.report.build import (
    LATENCY_METRICS,
    PERCENTILES,
    GroupStats,
    LatencySummary,
    Report,
)
from llmmeter.report.labels import LATENCY_LABELS, token_label

if TYPE_CHECKING:
    from llmmeter.report.figures import Figures, GroupFigures

__all__ = [
    "LATENCY_TITLE",
    "TABLE_WIDTH",
    "TableCells",
    "csv_text_cell",
    "decimal_text",
    "format_money",
    "format_seconds",
    "json_text",
    "latency_table_cells",
    "printable",
    "render_csv",
    "render_json",
    "render_table",
    "report_notes",
    "usage_table_cells",
    "window_label",
]

TABLE_WIDTH: Final = 100
"""Columns the default table fits in (when the numbers allow: a count is never cut)."""
_KEY_WIDTH: Final = 36
"""Columns the group-key cells share before other columns are dropped."""
_MIN_KEY_WIDTH: Final = 10
_MANY_GROUPS: Final = 50
_ALWAYS_SHOWN_TOKENS: Final = ("input_tokens", "output_tokens")
_NONE_LABEL: Final = "(none)"
_MISSING: Final = "–"
_ELLIPSIS: Final = "…"
LATENCY_TITLE = "Latency (over the calls where observed; TTFT and TPOT need streaming)"

# ---------------------------------------------------------------------------------------------
# Hostile values

# C0 and C1 controls, DEL, lone surrogates, and the bidirectional overrides that can make a
# terminal show text in another order than it is ("Trojan Source").
_UNPRINTABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CSV_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on, or could not encode, escaped."""
    return _UNPRINTABLE.sub(_escape, text)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + _ELLIPSIS


def json_text(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with lone surrogates as ``\\uXXXX``
    escapes: still the same strings once parsed, and encodable as UTF-8."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def csv_text_cell(text: str) -> str:
    """A text cell that a spreadsheet shows as text: never a formula, never unencodable."""
    safe = _SURROGATE.sub(_escape, text)
    return "'" + safe if safe.startswith(_CSV_FORMULA_STARTS) else safe


# ---------------------------------------------------------------------------------------------
# Shared formatting


def _key_label(value: str | None) -> str:
    return _NONE_LABEL if value is None else value


def window_label(report: Report) -> str:
    """The report's time window, e.g. ``2026-11-26T10:00:00+00:00 → now``."""
    since = report.since.isoformat(timespec="seconds") if report.since else "the beginning"
    until = report.until.isoformat(timespec="seconds") if report.until else "now"
    return f"{since} → {until}"


def _format_count(value: int | None) -> str:
    return _MISSING if value is None else f"{value:,}"


def format_money(amount: Decimal) -> str:
    """An amount for display, to a millionth below 1, a ten-thousandth below 1,000, a hundredth
    above, with thousands separators (the exact values are in JSON and CSV)."""
    places = 6 if abs(amount) < 1 else 4 if abs(amount) < 1000 else 2
    rounded = amount.quantize(Decimal(1).scaleb(-places))
    if rounded == 0 and amount != 0:
        return "<0.000001"
    return f"{rounded:,.{places}f}"


def _format_cost(amount: Decimal | None) -> str:
    return _MISSING if amount is None else format_money(amount)


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


# ---------------------------------------------------------------------------------------------
# Table

TableCells = tuple[list[str], list[list[str]], int]
"""Headers, rows and how many leading columns are labels (left-aligned); the rest are numbers."""


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    cell: Callable[[GroupStats], str]
    optional: bool = False
    """Left out of the terminal table when it does not fit (it is in JSON and CSV)."""
    keep: int = 0
    """Among optional columns, those with the lowest ``keep`` are left out first."""


@dataclass(frozen=True, slots=True)
class _RowFigures:
    """Each row's figures (a group, the ``other`` row, the total) and the currencies they are
    in, worked out once per report: ``Figures.cache_currencies`` and ``training_currencies``
    each add up every group again, and a group's own figures need no adding up."""

    by_row: dict[int, GroupFigures]
    """By ``id()`` of the row's stats."""
    cache_currencies: tuple[str, ...]
    training_currencies: tuple[str, ...]

    @classmethod
    def of(cls, report: Report, figures: Figures) -> _RowFigures:
        """The figures of ``report``'s rows."""
        no_figures = figures.of(())
        by_row = {id(stats): figures.groups.get(stats.key, no_figures) for stats in report.groups}
        if report.other is not None:
            shown = {stats.key for stats in report.groups}
            by_row[id(report.other)] = figures.of(key for key in figures.groups if key not in shown)
        total = figures.total()
        by_row[id(report.total)] = total
        cache = tuple(sorted(set(total.cache_read_savings) | set(total.cache_write_premium)))
        return cls(by_row, cache, tuple(sorted(total.training_cost_share)))

    def __getitem__(self, stats: GroupStats) -> GroupFigures:
        return self.by_row[id(stats)]


def _figure_columns(report: Report, figures: Figures | None) -> list[_Column]:
    """``cache saved`` and ``training`` money columns, when some row has such a figure."""
    if figures is None:
        return []
    rows = _RowFigures.of(report, figures)
    columns = []
    for title, currencies, amounts in (
        ("cache saved", rows.cache_currencies, lambda g: g.cache_savings),
        ("training", rows.training_currencies, lambda g: g.training_cost_share),
    ):
        for currency in currencies:
            columns.append(
                _Column(
                    title if len(currencies) == 1 else f"{title} ({currency})",
                    lambda s, c=currency, of=amounts: _format_cost(of(rows[s]).get(c)),  # type: ignore[misc]
                    optional=True,
                    keep=1,
                )
            )
    return columns


def _usage_columns(report: Report, figures: Figures | None = None) -> list[_Column]:
    currencies = report.currencies
    totals = report.total
    columns = [_Column("calls", lambda s: _format_count(s.calls))]
    if report.kind != "llm":
        columns.append(_Column("LLM calls", lambda s: _format_count(s.llm_calls)))
    columns.append(_Column("errors", lambda s: _format_count(s.errors)))
    for kind in USAGE_COUNT_FIELDS:
        if kind in _ALWAYS_SHOWN_TOKENS or totals.tokens.get(kind):
            columns.append(
                _Column(
                    f"{token_label(kind)} tok",
                    lambda s, kind=kind: _format_count(s.token(kind)),  # type: ignore[misc]
                    optional=kind not in _ALWAYS_SHOWN_TOKENS,
                )
            )
    if totals.usage_missing_calls:
        columns.append(_Column("no usage", lambda s: _format_count(s.usage_missing_calls)))
    if totals.usage_estimated_calls:
        columns.append(_Column("estimated", lambda s: _format_count(s.usage_estimated_calls), optional=True))
    for currency in currencies or ("",):
        header = f"cost ({currency})" if currency else "cost"
        columns.append(_Column(header, lambda s, c=currency: _format_cost(s.cost.get(c))))  # type: ignore[misc]
    columns.append(_Column("unpriced", lambda s: _format_count(s.unpriced_calls)))
    return columns + _figure_columns(report, figures)


def _labeled_rows(report: Report, *, with_total: bool) -> list[tuple[list[str], GroupStats]]:
    """The rows of a table: each group's key values, the ``other`` row, then the total."""
    key_columns = max(len(report.group_by), 1)
    padding = [""] * (key_columns - 1)
    rows = [([printable(_key_label(v)) for v in g.key] or ["all"], g) for g in report.groups]
    if report.other is not None:
        rows.append((["(other)", *padding], report.other))  # the notes say how many groups
    if with_total and report.group_by and len(rows) > 1:
        rows.append((["TOTAL", *padding], report.total))
    return rows


def _clip_labels(labels: list[str], key_columns: int, width: int | None) -> list[str]:
    if width is None:
        return labels
    return [_clip(label, width) if i < key_columns else label for i, label in enumerate(labels)]


def _usage_cells(report: Report, columns: Sequence[_Column], key_width: int | None) -> TableCells:
    key_columns = max(len(report.group_by), 1)
    headers = [*_key_headers(report), *(c.header for c in columns)]
    rows = [
        [*_clip_labels(label, key_columns, key_width), *(c.cell(stats) for c in columns)]
        for label, stats in _labeled_rows(report, with_total=True)
    ]
    return _clip_labels(headers, key_columns, key_width), rows, key_columns


def _key_headers(report: Report) -> list[str]:
    return [printable(key) for key in report.group_by] or ["group"]


def usage_table_cells(report: Report, figures: Figures | None = None) -> TableCells:
    """The tokens-and-cost table as formatted cells, every column (the HTML report's table);
    with ``figures``, the cache savings and training cost columns too."""
    return _usage_cells(report, _usage_columns(report, figures), None)


def _fitted_usage_cells(
    report: Report, width: int, figures: Figures | None = None
) -> tuple[TableCells, list[str], int]:
    """The usage table within ``width`` columns, the headers of the columns left out, and the
    width the key cells were cut to. Optional columns go first (the lowest ``keep``, then the
    last one first), then the key cells are cut, down to :data:`_MIN_KEY_WIDTH`."""
    columns = _usage_columns(report, figures)
    key_columns = max(len(report.group_by), 1)
    headers, rows, _ = _usage_cells(report, columns, None)
    natural = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    key_width = max(_MIN_KEY_WIDTH, _KEY_WIDTH // key_columns)
    kept = list(range(len(columns)))

    def table_width() -> int:
        keys = sum(min(w, key_width) for w in natural[:key_columns])
        values = sum(natural[key_columns + i] for i in kept)
        return keys + values + 2 * (key_columns + len(kept) - 1)

    while table_width() > width:
        optional = [i for i in kept if columns[i].optional]
        if optional:
            kept.remove(max(optional, key=lambda i: (-columns[i].keep, i)))
        elif key_width > _MIN_KEY_WIDTH:
            key_width -= 1
        else:
            break
    dropped = [columns[i].header for i in range(len(columns)) if i not in kept]
    return _usage_cells(report, [columns[i] for i in kept], key_width), dropped, key_width


def _latency_cells(report: Report, key_width: int | None) -> TableCells:
    key_columns = max(len(report.group_by), 1)
    headers = [*_key_headers(report), "latency", "n", *(f"p{p}" for p in PERCENTILES)]
    rows: list[list[str]] = []
    for label, stats in _labeled_rows(report, with_total=False):
        for i, metric in enumerate(LATENCY_METRICS):
            summary = stats.latency[metric]
            rows.append(
                [
                    *(_clip_labels(label, key_columns, key_width) if i == 0 else [""] * key_columns),
                    LATENCY_LABELS[metric],
                    _format_count(summary.count),
                    *(format_seconds(summary.percentiles[p]) for p in PERCENTILES),
                ]
            )
    return _clip_labels(headers, key_columns, key_width), rows, key_columns + 1


def latency_table_cells(report: Report) -> TableCells:
    """The latency table (a row per group and metric) as formatted cells."""
    return _latency_cells(report, None)


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


_WHAT: Final = {"llm": "LLM calls", "step": "steps", "all": "records (LLM calls and steps)"}


def render_table(report: Report, width: int = TABLE_WIDTH, figures: Figures | None = None) -> str:
    """The report as aligned text tables for a terminal, within ``width`` columns: usage and
    cost (with ``figures``: cache savings and training cost), then latency, then the notes a
    reader needs."""
    by = f", by {', '.join(printable(key) for key in report.group_by)}" if report.group_by else ""
    title = f"llmmeter report: {report.total.calls:,} {_WHAT[report.kind]}, {window_label(report)}{by}"
    lines = [title, ""]
    if not report.groups:
        lines.append("No records in this window.")
        return "\n".join(lines) + "\n"
    usage, dropped, key_width = _fitted_usage_cells(report, width, figures)
    lines += ["Tokens and cost", *_grid(*usage), ""]
    lines += [LATENCY_TITLE, *_grid(*_latency_cells(report, key_width)), ""]
    notes = report_notes(report, figures)
    if dropped:
        notes.append(f"Not shown to fit {width} columns: {', '.join(dropped)} (see --format json or csv).")
    lines.append("Notes:")
    for note in notes:
        lines += textwrap.wrap(note, width, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


_LATENCY_POPULATION: Final = {
    "ok": "successful calls only (failed and aborted calls are left out; see --outcome)",
    "error": "failed calls only",
    "aborted": "aborted and abandoned calls only",
    "all": "every call, whatever its outcome",
}


def report_notes(report: Report, figures: Figures | None = None) -> list[str]:
    """What a reader must know to read the numbers right (cost coverage, method, caveats)."""
    notes = [
        "Cost sums priced calls only; 'unpriced' counts calls with token counts but no price "
        "(never added as 0).",
        f"Percentiles: {report.percentile_method}, over {_LATENCY_POPULATION[report.latency_outcome]}.",
    ]
    if report.total.usage_missing_calls:
        notes.append(
            "'no usage': calls that reported no token counts (most failed calls); token sums leave them out."
        )
    if report.total.usage_estimated_calls:
        notes.append("'estimated': calls whose token counts are local (tiktoken) estimates.")
    if report.kind == "all":
        notes.append("Steps repeat the tokens and cost of the LLM calls inside them: group --by kind.")
    if report.other is None and len(report.groups) > _MANY_GROUPS:
        notes.append(f"{len(report.groups):,} groups: --top N shows the N largest and adds the rest up.")
    if report.other is not None:
        shown = len(report.groups)
        notes.append(
            f"The top {shown:,} of {shown + report.other.folded_groups:,} groups by {report.sort}; "
            "'other' adds up the rest."
        )
    for key in report.unmatched_keys:
        notes.append(f"No record has a value for '{printable(key)}'.")
    return notes + (_figure_notes(figures) if figures is not None else [])


def _figure_notes(figures: Figures) -> list[str]:
    notes = []
    if figures.cache_currencies:
        notes.append(
            "'cache saved': the cached input at the full input rate minus at the cached rate, less what "
            "cache writes cost above the input rate (negative: the writes were not read back enough to pay "
            "for themselves), at each call's model's price of its day; '–': no cached tokens in priced calls."
        )
    for amortization in figures.amortizations:
        name = printable(amortization.model)
        declared = (
            f"{name}: training cost {decimal_text(amortization.training_cost)} {amortization.currency} "
            f"over {amortization.amortize_days} days from {amortization.trained_on}"
        )
        share = f"{decimal_text(amortization.window_share)} {amortization.currency}"
        if amortization.allocated:
            notes.append(f"'training': {declared}; {share} in this window, split by its calls' tokens.")
        elif amortization.window_share:
            notes.append(f"{declared}; {share} in this window, which has no call to it to charge.")
    return notes


# ---------------------------------------------------------------------------------------------
# JSON and CSV


_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))
"""One encoder, in C: ``indent`` would switch ``json`` to its pure-Python encoder, which takes
seconds for thousands of groups."""


def _json_value(value: object) -> str:
    """``value`` as compact JSON text, a lone surrogate as its escape (see :func:`json_text`)."""
    text = _COMPACT.encode(value)
    return text if text.isascii() else json_text(text)


def _exact_amount(value: object) -> str:
    """What :data:`_VALUES` writes for a ``Decimal``: its exact decimal text (a JSON string)."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_VALUES: Final = json.JSONEncoder(
    ensure_ascii=False, separators=("\n", ": "), check_circular=False, default=_exact_amount
)
"""Encodes a list of plain values (numbers, ``None``, text, ``Decimal``) one per line: the JSON
of a plain value never has a raw line break (a string's is escaped), so the lines split apart."""


def _json_texts(values: list[object]) -> list[str]:
    """The JSON text of each of ``values``, from one call of the C encoder."""
    if not values:
        return []
    encoded = _VALUES.encode(values)
    if not encoded.isascii():
        encoded = json_text(encoded)
    texts = encoded.split("\n")
    texts[0] = texts[0].removeprefix("[")  # the list's brackets: not copying the whole text
    texts[-1] = texts[-1].removesuffix("]")
    return texts


# A row template is filled twice: its counts first (an int's str() is its JSON, and 60 % of a
# row's values are counts), then its other values' JSON texts.
_COUNT: Final = "%s"
"""A count's slot in a row template."""
_VALUE: Final = "%%s"
"""Any other value's slot: ``%s`` once the counts are in."""


def _template_text(text: str) -> str:
    """``text`` as it stands in a row template: each ``%`` as one once both fillings are done."""
    return text.replace("%", "%%%%")


def _object_template(fields: Iterable[tuple[str, str]]) -> str:
    """A JSON object template of ``(name, value template)`` fields, the names encoded as JSON."""
    members = (f"{_template_text(_json_value(name))}: {value}" for name, value in fields)
    return "{" + ", ".join(members) + "}"


def _slots(names: Iterable[str], slot: str = _VALUE) -> str:
    """A JSON object template with a ``slot`` for the value of each of ``names``."""
    return _object_template((name, slot) for name in names)


_JsonShape = tuple[Any, ...]
"""What a row's JSON template depends on beyond the report: how the row opens (a group's key,
the ``other`` row's count of groups, the total), its cost statuses, its latency metrics and
their percentiles."""


class _JsonRows:
    """Rows of a report (groups, ``other``, the total) as compact JSON objects: what
    ``json.dumps`` with ``separators=(", ", ": ")`` gives for each row's document.

    Thousands of groups render in a fraction of a second: the keys of a row are the same in every
    row, so they are a text template made once (per set of cost statuses); the counts of all
    rows fill their slots in one ``%`` formatting, the other values are encoded in one call of
    the C encoder and fill theirs in another.
    """

    def __init__(self, report: Report, figures: _RowFigures | None) -> None:
        self._key_opening = '{"key": ' + _slots(report.group_by) + ", "
        self._key_length = len(report.group_by)
        self._token_kinds = report.token_kinds
        self._currencies = report.currencies
        self._figures = figures
        self._no_amounts = (None,) * (0 if figures is None else len(figures.cache_currencies))
        self._templates: dict[_JsonShape, str] = {}
        self._counts: list[object] = []
        self._values: list[object] = []

    def group(self, stats: GroupStats) -> str:
        """Add a group's row; its template."""
        if len(stats.key) != self._key_length:
            raise ValueError(f"group key {stats.key!r} does not match the report's keys")
        self._values += stats.key
        return self._add(self._key_opening, stats)

    def other(self, stats: GroupStats) -> str:
        """Add the ``other`` row (the groups after the top ones); its template."""
        self._counts.append(stats.folded_groups)
        return self._add(f'{{"groups": {_COUNT}, ', stats)

    def total(self, stats: GroupStats) -> str:
        """Add the total row; its template."""
        return self._add('{"key": {}, ', stats)

    def fill(self, template: str) -> str:
        """``template``, with the templates of the rows added in their order, filled with the
        rows' counts and values."""
        counts: Sequence[object] = self._counts
        if not set(map(type, counts)) <= {int}:  # %s would not write a bool or None as JSON
            counts = _json_texts(self._counts)
        return template % tuple(counts) % tuple(_json_texts(self._values))

    def _add(self, opening: str, stats: GroupStats) -> str:
        counts, values, cost_status = self._counts, self._values, stats.cost_status
        statuses = sorted(cost_status)
        # Each list in the order of its slots: the counts and the other values interleave in a row.
        counts += (
            *(stats.calls, stats.llm_calls, stats.errors, stats.aborted),
            *(stats.usage_missing_calls, stats.usage_estimated_calls),
            *(stats.priced_calls, stats.unpriced_calls),
        )
        values += map(stats.tokens.get, self._token_kinds)
        values += map(stats.cost.get, self._currencies)
        if self._figures is not None:
            self._add_figures(self._figures.by_row[id(stats)], self._figures)
        counts += map(cost_status.__getitem__, statuses)
        # Unambiguous as one flat tuple: statuses (text) end at None; a metric's name (text)
        # is followed by its percentiles (numbers).
        shape: list[object] = [opening, *statuses, None]
        for metric, summary in stats.latency.items():
            percentiles = summary.percentiles
            counts.append(summary.count)
            values += percentiles.values()
            shape.append(metric)
            shape += percentiles
        key = tuple(shape)
        return self._templates.get(key) or self._template(key, opening, statuses, stats.latency)

    def _add_figures(self, group: GroupFigures, figures: _RowFigures) -> None:
        values, cache = self._values, figures.cache_currencies
        reads, writes = group.cache_read_savings, group.cache_write_premium
        if writes:
            values += map(group.cache_savings.get, cache)
            values += map(reads.get, cache)
            values += map(writes.get, cache)
        else:  # the savings are the read savings (less nothing), without a dictionary per group
            read_savings = [
                None if amount is None else decimal_text(amount) for amount in map(reads.get, cache)
            ]
            values += read_savings
            values += read_savings
            values += self._no_amounts
        if figures.training_currencies:
            values += map(group.training_cost_share.get, figures.training_currencies)

    def _template(
        self, shape: _JsonShape, opening: str, statuses: list[str], latency: dict[str, LatencySummary]
    ) -> str:
        figure_fields = []
        if self._figures is not None:
            cache, training = self._figures.cache_currencies, self._figures.training_currencies
            figure_fields = [
                ("cache_savings", _slots(cache)),
                ("cache_read_savings", _slots(cache)),
                ("cache_write_premium", _slots(cache)),
                ("training_cost_share", _slots(training)),
            ]
        latency_fields = (
            (metric, _object_template([("count", _COUNT), *((f"p{p}", _VALUE) for p in summary.percentiles)]))
            for metric, summary in latency.items()
        )
        fields = [
            *((name, _COUNT) for name in ("calls", "llm_calls", "errors", "aborted")),
            ("tokens", _slots(self._token_kinds)),
            ("usage_missing_calls", _COUNT),
            ("usage_estimated_calls", _COUNT),
            ("cost", _slots(self._currencies)),
            ("priced_calls", _COUNT),
            ("unpriced_calls", _COUNT),
            *figure_fields,
            ("cost_status", _slots(statuses, _COUNT)),
            ("latency_s", _object_template(latency_fields)),
        ]
        template = self._templates[shape] = opening + _object_template(fields).removeprefix("{")
        return template


def _amortizations_json(figures: Figures) -> list[dict[str, Any]]:
    return [
        {
            "model": a.model,
            "provider": a.provider,
            "currency": a.currency,
            "training_cost": decimal_text(a.training_cost),
            "amortize_days": a.amortize_days,
            "trained_on": a.trained_on.isoformat(),
            "window_share": decimal_text(a.window_share),
            "allocated": a.allocated,
        }
        for a in figures.amortizations
    ]


def render_json(report: Report, figures: Figures | None = None) -> str:
    """The report as JSON. Costs are decimal strings (exact); latencies are seconds; every group
    has the same token and currency keys (``null`` where unobserved). With ``figures``, every
    group has ``cache_savings``, ``cache_read_savings``, ``cache_write_premium`` and
    ``training_cost_share`` too, and the document lists the ``training_costs`` it amortized."""
    header = {
        "kind": report.kind,
        "since": report.since.isoformat() if report.since else None,
        "until": report.until.isoformat() if report.until else None,
        "group_by": list(report.group_by),
        "sort": report.sort,
        "percentile_method": report.percentile_method,
        "latency_outcome": report.latency_outcome,
        **({} if figures is None else {"training_costs": _amortizations_json(figures)}),
    }
    rows = _JsonRows(report, None if figures is None else _RowFigures.of(report, figures))
    groups = [rows.group(stats) for stats in report.groups]
    other = "null" if report.other is None else rows.other(report.other)
    total = rows.total(report.total)
    # The whole document is one template, filled in one go: one key per line, one group per line.
    lines = [f"  {_COMPACT.encode(name)}: {_COMPACT.encode(value)}" for name, value in header.items()]
    head = _template_text(json_text(",\n".join(lines)))
    groups_line = '  "groups": [\n    ' + ",\n    ".join(groups) + "\n  ]" if groups else '  "groups": []'
    return rows.fill(f'{{\n{head},\n{groups_line},\n  "other": {other},\n  "total": {total}\n}}\n')


_LATENCY_CSV_PARTS: Final = ("count", *(f"p{p}_s" for p in PERCENTILES))
_CACHE_CSV_FIGURES: Final = ("cache_savings", "cache_read_savings", "cache_write_premium")


def _figure_csv_currencies(figures: _RowFigures) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The currencies of the cache figures' columns and of the training shares' (``USD``: none)."""
    return figures.cache_currencies or ("USD",), figures.training_currencies or ("USD",)


def _csv_columns(report: Report, figures: _RowFigures | None) -> list[str]:
    figure_columns = []
    if figures is not None:
        cache, training = _figure_csv_currencies(figures)
        figure_columns = [
            *(f"{name}_{c}" for c in cache for name in _CACHE_CSV_FIGURES),
            *(f"training_cost_share_{c}" for c in training),
        ]
    return [
        *(csv_text_cell(key) for key in report.group_by),
        "calls",
        "llm_calls",
        "errors",
        "aborted",
        *USAGE_COUNT_FIELDS,
        "usage_missing_calls",
        "usage_estimated_calls",
        *(f"cost_{currency}" for currency in report.currencies or ("USD",)),
        "priced_calls",
        "unpriced_calls",
        *figure_columns,
        *(f"{metric}_{part}" for metric in LATENCY_METRICS for part in _LATENCY_CSV_PARTS),
    ]


def _amount_cell(amount: Decimal | None) -> str | None:
    return None if amount is None else decimal_text(amount)


class _CsvRows:
    """The cells of a report's rows, in the order of :func:`_csv_columns`. An unobserved value is
    ``None``, which ``csv`` writes as an empty cell (never 0); a float is written as its
    ``repr``, the shortest text that reads back as the same number."""

    def __init__(self, report: Report, figures: _RowFigures | None) -> None:
        self._currencies = report.currencies or ("USD",)
        self._figures = figures
        self._figure_currencies = None if figures is None else _figure_csv_currencies(figures)

    def cells(self, key_cells: Sequence[str | None], stats: GroupStats) -> list[object]:
        """The row of ``stats``, after its ``key_cells``."""
        cells: list[object] = [*key_cells, stats.calls, stats.llm_calls, stats.errors, stats.aborted]
        cells += map(stats.tokens.get, USAGE_COUNT_FIELDS)
        cells += (stats.usage_missing_calls, stats.usage_estimated_calls)
        cells += map(_amount_cell, map(stats.cost.get, self._currencies))
        cells += (stats.priced_calls, stats.unpriced_calls)
        if self._figures is not None and self._figure_currencies is not None:
            _add_figure_cells(cells, self._figures.by_row[id(stats)], *self._figure_currencies)
        for metric in LATENCY_METRICS:
            summary = stats.latency[metric]
            cells.append(summary.count)
            cells += map(summary.percentiles.__getitem__, PERCENTILES)
        return cells


def _add_figure_cells(
    cells: list[object], group: GroupFigures, cache: tuple[str, ...], training: tuple[str, ...]
) -> None:
    reads, writes = group.cache_read_savings, group.cache_write_premium
    if writes:
        savings = group.cache_savings
        for currency in cache:
            cells += map(_amount_cell, (savings.get(currency), reads.get(currency), writes.get(currency)))
    else:  # the savings are the read savings (see _JsonRows._add_figures)
        for currency in cache:
            read_savings = _amount_cell(reads.get(currency))
            cells += (read_savings, read_savings, None)
    cells += map(_amount_cell, map(group.training_cost_share.get, training))


def decimal_text(amount: Decimal) -> str:
    """An exact amount as plain decimal text without trailing zeros: ``0.03``, ``12``, ``0.00000015``
    (never ``1.5E-7``), the same whichever source summed it."""
    text = str(amount)
    # Most sums have no exponent: their plain text is str() without trailing zeros, at a third of
    # the cost of normalize() -- which also rounds to the context's precision: not when shorter.
    if "E" not in text and amount.is_finite():
        plain = text.rstrip("0").removesuffix(".") if "." in text else text
        if plain != "-0" and len(plain) <= getcontext().prec:
            return plain
    normalized = amount.normalize()
    return f"{normalized:f}" if normalized else "0"


def render_csv(report: Report, figures: Figures | None = None) -> str:
    """The report as CSV, one row per group (then ``other`` with ``--top``; no total row).
    Empty cell = not observed; text cells are neutralised against formula injection. With
    ``figures``: ``cache_savings_<CUR>``, ``cache_read_savings_<CUR>``,
    ``cache_write_premium_<CUR>`` and ``training_cost_share_<CUR>`` columns."""
    row_figures = None if figures is None else _RowFigures.of(report, figures)
    rows = _CsvRows(report, row_figures)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_csv_columns(report, row_figures))
    writer.writerows(rows.cells([_csv_key(v) for v in stats.key], stats) for stats in report.groups)
    if report.other is not None:
        label = f"(other: {report.other.folded_groups} groups)"
        writer.writerow(rows.cells([label] * len(report.group_by), report.other))
    return buffer.getvalue()


def _csv_key(value: str | None) -> str | None:
    return None if value is None else csv_text_cell(value)
