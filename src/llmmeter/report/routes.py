"""``llmmeter report --kind route``: how a router behaves, from its route records, in SQL.

A route's own record (a step whose operation is ``route``, see :mod:`llmmeter.routing`) carries
whether it escalated or fell back, its attempts, final model and rolled-up cost and duration.
:func:`query_route_report` groups them with one ``GROUP BY`` scan: per group the number of
route ``requests``, ``escalations`` (routes that escalated at least once), ``fallbacks`` (routes
that recovered from a failed call) and their rates, attempts per request, the cost per request,
and the duration percentiles (p50, p95). The durations of a group come back from the database
through the dialect's latency aggregate and are ranked in Python (exact, the same interpolation
as the rest of the report).

Cost per request is taken over the *fully priced* routes only: a route one of whose calls had
no price has no exact cost and is counted in ``unpriced_requests`` instead (never as 0).
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, cast

from llmmeter import semconv as sc
from llmmeter.report.build import (
    LATENCY_METRICS,
    PERCENTILE_METHOD,
    USER_ATTRIBUTE_KEYS,
    LatencyOutcome,
    LatencySummary,
    interpolate,
    parse_group_keys,
)
from llmmeter.report.sql import SQLITE, Dialect, Run, time_window
from llmmeter.report.text import (
    csv_text_cell,
    decimal_text,
    format_money,
    format_seconds,
    json_text,
    printable,
)

__all__ = [
    "ROUTE_GROUP_KEYS",
    "ROUTE_PERCENTILES",
    "FeedbackLink",
    "RouteGroup",
    "RouteReport",
    "UnknownRouteKeyError",
    "check_route_keys",
    "grid",
    "query_route_report",
    "render_route_csv",
    "render_route_json",
    "render_route_table",
    "route_notes",
    "route_table_cells",
]

ROUTE_PERCENTILES: Final = (50, 95)
"""The duration percentiles a route group shows."""

_ROUTE_ATTRIBUTES: Final = {
    "final_model": sc.ROUTE_FINAL_MODEL,
    "final_provider": sc.ROUTE_FINAL_PROVIDER,
    "escalated": sc.ROUTE_ESCALATED,
    "fallback": sc.ROUTE_FALLBACK,
    "escalation_reason": sc.ROUTE_ESCALATION_REASON,
    "fallback_reason": sc.ROUTE_FALLBACK_REASON,
}
_ROUTE_COLUMNS: Final = {
    "name": "name",
    "outcome": "COALESCE(outcome, 'ok')",
    "error_type": "error_type",
}
ROUTE_GROUP_KEYS: Final = (*_ROUTE_COLUMNS, *_ROUTE_ATTRIBUTES, "user", "team", "feature")
"""Built-in group keys of the route report; any other key names an attribute of the route record."""

_LATENCY_ROWS: Final = {
    "ok": "COALESCE(outcome, 'ok') = 'ok'",
    "error": "outcome = 'error'",
    "aborted": "outcome IN ('aborted', 'abandoned')",
    "all": "1 = 1",
}


class UnknownRouteKeyError(ValueError):
    """A ``--by`` key of the route report that no route record has (one-line message)."""


@dataclass(frozen=True, slots=True)
class RouteGroup:
    """The numbers of one group of route records."""

    key: tuple[str | None, ...]
    requests: int
    """Finished routes (route records) in the group."""
    escalations: int
    """Routes that called ``escalate()`` at least once."""
    fallbacks: int
    """Routes where a failed call was followed by a successful one."""
    attempts: int
    """LLM calls started inside the group's routes."""
    errors: int
    """Routes that ended with an exception."""
    priced_requests: int
    """Routes whose every call was priced: the cost below is theirs."""
    cost: Decimal | None
    """Exact rolled-up cost (USD) of the priced routes; ``None`` when none was priced."""
    duration: LatencySummary
    feedback_count: int = 0
    """``llmmeter.feedback()`` judgements of calls made inside the group's routes."""
    feedback_scored: int = 0
    """Of those, the judgements with a score."""
    feedback_score_sum: float = 0.0

    @property
    def feedback_mean(self) -> float | None:
        """Mean score of the scored judgements; ``None`` when none had a score."""
        return self.feedback_score_sum / self.feedback_scored if self.feedback_scored else None

    @property
    def escalation_rate(self) -> float:
        """``escalations / requests``."""
        return self.escalations / self.requests

    @property
    def fallback_rate(self) -> float:
        """``fallbacks / requests``."""
        return self.fallbacks / self.requests

    @property
    def attempts_per_request(self) -> float:
        """Mean LLM calls per route."""
        return self.attempts / self.requests

    @property
    def unpriced_requests(self) -> int:
        """Routes with at least one unpriced call, or no call at all (no exact cost)."""
        return self.requests - self.priced_requests

    @property
    def cost_per_request(self) -> Decimal | None:
        """Mean cost (USD) of a priced route; ``None`` when no route of the group was priced."""
        if self.cost is None or not self.priced_requests:
            return None
        return self.cost / self.priced_requests


@dataclass(frozen=True, slots=True)
class RouteReport:
    """Route groups, largest first, and the total over all of them."""

    group_by: tuple[str, ...]
    groups: list[RouteGroup]
    total: RouteGroup
    since: datetime | None = None
    until: datetime | None = None
    latency_outcome: LatencyOutcome = "ok"


# ---------------------------------------------------------------------------------------------
# SQL


def _key_sql(dialect: Dialect, key: str) -> tuple[str, list[object], bool]:
    """(SQL, parameters, whether it is an attribute) of one group key."""
    column = _ROUTE_COLUMNS.get(key)
    if column is not None:
        return column, [], False
    names = USER_ATTRIBUTE_KEYS if key == "user" else (_ROUTE_ATTRIBUTES.get(key, key.removeprefix("attr:")),)
    if any(not name or '"' in name or "\\" in name for name in names):
        raise UnknownRouteKeyError(f"--by: {printable(key)!r} is not a valid key")
    parts = [dialect.attribute(name) for name in names]
    sql = ", ".join(f"NULLIF({part}, 'null')" for part, _ in parts)
    return (sql if len(parts) == 1 else f"COALESCE({sql})"), [p for _, ps in parts for p in ps], True


def _where(dialect: Dialect, since: datetime | None, until: datetime | None) -> tuple[str, list[object]]:
    window, params = time_window(dialect.param, since, until)
    return " AND ".join([f"kind = 'step' AND operation = {dialect.param}", *window]), [
        sc.ROUTE_OPERATION,
        *params,
    ]


def _flag(dialect: Dialect, attribute: str) -> tuple[str, list[object]]:
    """1 when the route record's boolean attribute is true, else 0."""
    sql, params = dialect.attribute(attribute)
    return f"CASE WHEN {sql} = 'true' THEN 1 ELSE 0 END", params


def _aggregates(dialect: Dialect, latency_outcome: LatencyOutcome) -> tuple[list[str], list[object]]:
    escalated, escalated_params = _flag(dialect, sc.ROUTE_ESCALATED)
    fallback, fallback_params = _flag(dialect, sc.ROUTE_FALLBACK)
    attempts, attempts_params = dialect.attribute(sc.ROUTE_ATTEMPTS)
    amount = (
        "CASE WHEN COALESCE(rollup_unpriced_calls, 0) = 0 AND COALESCE(rollup_calls, 0) > 0 "
        "THEN COALESCE(cost_amount, rollup_cost) END"
    )
    columns = [
        "COUNT(*)",
        f"SUM({escalated})",
        f"SUM({fallback})",
        f"SUM(CAST({attempts} AS INTEGER))",
        "SUM(CASE WHEN outcome = 'error' THEN 1 ELSE 0 END)",
        f"SUM(CASE WHEN ({amount}) IS NOT NULL THEN 1 ELSE 0 END)",
        "SUM(fb_count)",
        "SUM(fb_scored)",
        "SUM(fb_score_sum)",
        *dialect.cost_and_latency(
            amount, [f"{metric}_s" for metric in LATENCY_METRICS], _LATENCY_ROWS[latency_outcome]
        ),
    ]
    return columns, [*escalated_params, *fallback_params, *attempts_params]


_COUNTS: Final = 8
"""Integer aggregates before the feedback score sum: requests ... priced, feedback, scored."""
_NO_FEEDBACK: Final = (
    "SELECT NULL AS fb_route_id, 0 AS fb_count, 0 AS fb_scored, NULL AS fb_score_sum WHERE 1 = 0"
)
_LINK_WINDOW_NS: Final = 86_400 * 10**9
"""A judged call is linked to a route that started at most this long before it."""


@dataclass(frozen=True)
class FeedbackLink:
    """How a store links judgements (its ``feedback`` table, alias ``f``) to route records."""

    route_key: str
    """The ``records`` column that identifies a route record."""
    judged_calls: str
    """SQL of the judged calls (``SELECT f.score, c.* ...``: ``c`` a row of ``records``)."""
    route_name_of_call: str
    """SQL of the route name in the judged call's attributes (``c.attributes``), as text."""
    params: list[object]
    """Parameters of ``route_name_of_call``."""


_SQLITE_FEEDBACK_LINK: Final = FeedbackLink(
    route_key="id",
    judged_calls="SELECT f.score, c.* FROM feedback f JOIN records c ON c.record_id = f.record_id",
    route_name_of_call="(c.attributes ->> ?)",
    params=[f'$."{sc.ROUTE_NAME}"'],
)


def _feedback_link(run: Run, dialect: Dialect) -> FeedbackLink | None:
    """The store's link, ``None`` when it keeps no feedback (a dialect links through its
    ``feedback_link(run)`` method, when it has one)."""
    if dialect is not SQLITE:
        link = getattr(dialect, "feedback_link", None)
        return None if link is None else cast(FeedbackLink | None, link(run))
    if not any(
        True for _ in run("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'", [])
    ):
        return None
    return _SQLITE_FEEDBACK_LINK


def _feedback_per_route(run: Run, dialect: Dialect) -> tuple[str, str, list[object]]:
    """SQL of (route row key, judgements, scored judgements, score sum) per judged route, the
    ``records`` column that key is, and the parameters.

    A judgement's call is linked to the route of the call's ``llmmeter.route.name`` whose run
    contains the call's start (the latest such one, in the same trace when both have one; the
    record has no other link to its route)."""
    link = _feedback_link(run, dialect)
    if link is None:
        return _NO_FEEDBACK, "record_id", []
    route_of_call = (
        f"SELECT r.{link.route_key} FROM records r WHERE r.kind = 'step' AND r.operation = {dialect.param} "
        f"AND r.name = {link.route_name_of_call} "
        f"AND r.start_time_unix_ns BETWEEN c.start_time_unix_ns - {_LINK_WINDOW_NS} AND c.start_time_unix_ns "
        "AND c.start_time_unix_ns <= r.start_time_unix_ns + CAST(COALESCE(r.duration_s, 0) * 1e9 AS BIGINT) "
        "AND (NULLIF(r.trace_id, '') IS NULL OR NULLIF(c.trace_id, '') IS NULL OR r.trace_id = c.trace_id) "
        "ORDER BY r.start_time_unix_ns DESC LIMIT 1"
    )
    sql = (
        "SELECT route_id AS fb_route_id, COUNT(*) AS fb_count, COUNT(score) AS fb_scored, "
        "SUM(score) AS fb_score_sum FROM ("
        f"SELECT c.score, ({route_of_call}) AS route_id FROM ({link.judged_calls}) c"
        ") judged_routes GROUP BY route_id"
    )
    return sql, link.route_key, [sc.ROUTE_OPERATION, *link.params]


def _summary(values: Sequence[float]) -> LatencySummary:
    ordered = sorted(values)
    return LatencySummary(
        count=len(ordered),
        percentiles={
            p: interpolate(len(ordered), p, ordered.__getitem__) if ordered else None
            for p in ROUTE_PERCENTILES
        },
    )


def _group(
    key: tuple[str | None, ...],
    numbers: Sequence[Any],
    score_sum: float,
    cost: Decimal | None,
    durations: Sequence[float],
) -> RouteGroup:
    requests, escalations, fallbacks, attempts, errors, priced, judged, scored = (
        int(n or 0) for n in numbers
    )
    return RouteGroup(
        key=key,
        requests=requests,
        escalations=escalations,
        fallbacks=fallbacks,
        attempts=attempts,
        errors=errors,
        priced_requests=priced,
        feedback_count=judged,
        feedback_scored=scored,
        feedback_score_sum=score_sum,
        cost=cost if priced else None,
        duration=_summary(durations),
    )


def check_route_keys(
    run: Run,
    by: str | Sequence[str] | None,
    *,
    dialect: Dialect = SQLITE,
    since: datetime | None = None,
    until: datetime | None = None,
) -> None:
    """Raise :class:`UnknownRouteKeyError` for a key of ``by`` that is not built in and that no
    route record of the window has (when there are route records at all)."""
    where, params = _where(dialect, since, until)
    unknown = []
    for key in parse_group_keys(by):
        if key in ROUTE_GROUP_KEYS:
            continue
        sql, key_params, _ = _key_sql(dialect, key)
        if not any(
            True
            for _ in run(
                f"SELECT 1 FROM records WHERE {where} AND {sql} IS NOT NULL LIMIT 1", [*params, *key_params]
            )
        ):
            unknown.append(key)
    if unknown and any(True for _ in run(f"SELECT 1 FROM records WHERE {where} LIMIT 1", params)):
        names = ", ".join(repr(printable(key)) for key in unknown)
        raise UnknownRouteKeyError(
            f"--by: no route record has {names}: valid keys are {', '.join(ROUTE_GROUP_KEYS)} "
            "or an attribute set on the routes"
        )


def query_route_report(
    run: Run,
    *,
    dialect: Dialect = SQLITE,
    by: str | Sequence[str] | None = "name",
    since: datetime | None = None,
    until: datetime | None = None,
    latency_outcome: LatencyOutcome = "ok",
) -> RouteReport:
    """The route report of the ``records`` table ``run`` queries, over ``[since, until)``.

    One ``GROUP BY`` over the route records; groups come most requests first, then by key.
    Duration percentiles are over the routes whose outcome is ``latency_outcome``.
    """
    group_by = parse_group_keys(by)
    keys = [_key_sql(dialect, key) for key in group_by]
    dialect.prepare(run)
    sql, params = _route_sql(run, dialect, keys, _where(dialect, since, until), latency_outcome)
    groups: list[RouteGroup] = []
    durations: list[float] = []
    width = max(len(keys), 1)
    for row in run(sql, params):
        key = tuple(
            dialect.attribute_label(value) if is_attribute else value
            for (_, _, is_attribute), value in zip(keys, row[:width], strict=False)
        )
        numbers, score_sum = row[width : width + _COUNTS], float(row[width + _COUNTS] or 0)
        cost, latency = dialect.decode(row[width + _COUNTS + 1 :])
        groups.append(_group(key, numbers, score_sum, cost, latency["duration"]))
        durations.extend(latency["duration"])
    groups.sort(key=lambda g: (-g.requests, tuple((v is None, v or "") for v in g.key)))
    return RouteReport(group_by, groups, _total(groups, durations), since, until, latency_outcome)


def _route_sql(
    run: Run,
    dialect: Dialect,
    keys: Sequence[tuple[str, list[object], bool]],
    where: tuple[str, list[object]],
    latency_outcome: LatencyOutcome,
) -> tuple[str, list[object]]:
    """The one ``GROUP BY`` over the route records, joined to their feedback."""
    aggregates, aggregate_params = _aggregates(dialect, latency_outcome)
    selected = [sql for sql, _, _ in keys] or ["''"]
    feedback, route_key, feedback_params = _feedback_per_route(run, dialect)
    sql = (
        f"SELECT {', '.join(selected)}, {', '.join(aggregates)} FROM records "
        f"LEFT JOIN ({feedback}) judged ON judged.fb_route_id = records.{route_key} WHERE {where[0]} "
        f"GROUP BY {', '.join(str(i + 1) for i in range(len(selected)))}"
    )
    return sql, [*(p for _, ps, _ in keys for p in ps), *aggregate_params, *feedback_params, *where[1]]


def _total(groups: Sequence[RouteGroup], durations: Sequence[float]) -> RouteGroup:
    """All groups added up, with the percentiles of all their durations."""
    costs = [g.cost for g in groups if g.cost is not None]
    return _group(
        (),
        [
            sum(getattr(g, name) for g in groups)
            for name in (
                "requests",
                "escalations",
                "fallbacks",
                "attempts",
                "errors",
                "priced_requests",
                "feedback_count",
                "feedback_scored",
            )
        ],
        sum(g.feedback_score_sum for g in groups),
        sum(costs, Decimal(0)) if costs else None,
        durations,
    )


# ---------------------------------------------------------------------------------------------
# Rendering


def _rate(value: float) -> str:
    return f"{value:.1%}"


def _money(amount: Decimal | None) -> str:
    return "–" if amount is None else format_money(amount)


def _table_row(labels: Sequence[str], group: RouteGroup) -> list[str]:
    return [
        *labels,
        f"{group.requests:,}",
        f"{group.escalations:,}",
        _rate(group.escalation_rate),
        f"{group.fallbacks:,}",
        _rate(group.fallback_rate),
        f"{group.attempts_per_request:.2f}",
        _money(group.cost_per_request),
        f"{group.feedback_count:,}",
        "–" if group.feedback_mean is None else f"{group.feedback_mean:.2f}",
        *(format_seconds(group.duration.percentiles[p]) for p in ROUTE_PERCENTILES),
    ]


def grid(headers: Sequence[str], rows: Sequence[Sequence[str]], left_columns: int) -> list[str]:
    """Aligned text columns: the first ``left_columns`` left-aligned, the rest right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for cells in (headers, ["-" * w for w in widths], *rows):
        parts = [
            c.ljust(w) if i < left_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def _clipped(value: str | None) -> str:
    text = "(none)" if value is None else printable(value)
    return text if len(text) <= 40 else text[:39] + "…"


def route_table_cells(report: RouteReport) -> tuple[list[str], list[list[str]], int]:
    """Headers, rows (a total row when there are several groups) and how many leading columns
    are keys, of the route report's table."""
    headers = [
        *(printable(k) for k in report.group_by),
        "requests",
        "escalated",
        "esc. rate",
        "fallbacks",
        "fb. rate",
        "calls/req",
        "cost/req",
        "judged",
        "score",
        *(f"p{p}" for p in ROUTE_PERCENTILES),
    ]
    rows = [_table_row([_clipped(v) for v in g.key], g) for g in report.groups]
    if len(report.groups) > 1 and report.group_by:
        rows.append(_table_row(["total", *[""] * (len(report.group_by) - 1)], report.total))
    return headers, rows, len(report.group_by)


def route_notes(report: RouteReport) -> list[str]:
    """What a reader of the route table must know."""
    return [
        "escalated: routes that called escalate(); fallbacks: routes where a failed call was followed "
        "by a successful one; rates are per route request.",
        "cost/req: mean rolled-up cost (USD) of the routes whose every call was priced. judged: "
        "llmmeter.feedback() judgements of the routes' calls; score: their mean score.",
        f"p50/p95: duration of the whole route over {report.latency_outcome} routes; {PERCENTILE_METHOD}.",
    ]


def render_route_table(report: RouteReport) -> str:
    """The route report as an aligned text table with its notes."""
    by = f", by {', '.join(printable(k) for k in report.group_by)}" if report.group_by else ""
    since = report.since.isoformat(timespec="seconds") if report.since else "the beginning"
    until = report.until.isoformat(timespec="seconds") if report.until else "now"
    lines = [f"llmmeter route report: {report.total.requests:,} routes, {since} → {until}{by}", ""]
    if not report.groups:
        return "\n".join([*lines, "No route records in this window."]) + "\n"
    lines += [*grid(*route_table_cells(report)), "", "Notes:"]
    for note in route_notes(report):
        lines += textwrap.wrap(note, 100, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


def _group_json(group: RouteGroup, group_by: Sequence[str]) -> dict[str, Any]:
    return {
        "key": dict(zip(group_by, group.key, strict=True)),
        "requests": group.requests,
        "escalations": group.escalations,
        "escalation_rate": group.escalation_rate,
        "fallbacks": group.fallbacks,
        "fallback_rate": group.fallback_rate,
        "attempts": group.attempts,
        "attempts_per_request": group.attempts_per_request,
        "errors": group.errors,
        "priced_requests": group.priced_requests,
        "unpriced_requests": group.unpriced_requests,
        "cost_usd": None if group.cost is None else decimal_text(group.cost),
        "cost_per_request_usd": None
        if group.cost_per_request is None
        else decimal_text(group.cost_per_request),
        "feedback_count": group.feedback_count,
        "feedback_mean": group.feedback_mean,
        "duration_s": {
            "count": group.duration.count,
            **{f"p{p}": v for p, v in group.duration.percentiles.items()},
        },
    }


def render_route_json(report: RouteReport) -> str:
    """The route report as JSON: exact costs as decimal strings, rates as fractions, seconds."""
    document = {
        "kind": "route",
        "since": report.since.isoformat() if report.since else None,
        "until": report.until.isoformat() if report.until else None,
        "group_by": list(report.group_by),
        "percentile_method": PERCENTILE_METHOD,
        "latency_outcome": report.latency_outcome,
        "groups": [_group_json(g, report.group_by) for g in report.groups],
        "total": _group_json(report.total, ()),
    }
    return json_text(json.dumps(document, ensure_ascii=False, indent=2)) + "\n"


_CSV_NUMBERS: Final = (
    "requests",
    "escalations",
    "escalation_rate",
    "fallbacks",
    "fallback_rate",
    "attempts",
    "attempts_per_request",
    "errors",
    "priced_requests",
    "unpriced_requests",
    "cost_usd",
    "cost_per_request_usd",
    "feedback_count",
    "feedback_mean",
)


def render_route_csv(report: RouteReport) -> str:
    """The route report as CSV, one row per group; an empty cell is a value not observed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            *(csv_text_cell(k) for k in report.group_by),
            *_CSV_NUMBERS,
            *(f"duration_p{p}_s" for p in ROUTE_PERCENTILES),
        ]
    )
    for group in report.groups:
        document = _group_json(group, report.group_by)
        keys = ["" if v is None else csv_text_cell(v) for v in group.key]
        numbers = ["" if document[name] is None else document[name] for name in _CSV_NUMBERS]
        durations = [
            "" if (v := group.duration.percentiles[p]) is None else repr(v) for p in ROUTE_PERCENTILES
        ]
        writer.writerow([*keys, *numbers, *durations])
    return buffer.getvalue()
