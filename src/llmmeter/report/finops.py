"""The FinOps reports of ``llmmeter report`` (issue 14), from the command line's arguments.

``--kind route`` renders :mod:`llmmeter.report.routes`; ``--baseline-model MODEL`` computes the
usual report and adds :mod:`llmmeter.report.savings` to it. Both read the store through the same
query runner and SQL dialect as the rest of the report; bad keys and models raise ``ValueError``
with a one-line message.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Callable
from pathlib import Path
from typing import cast

from llmmeter.report.build import LatencyOutcome, SortOrder
from llmmeter.report.html import _table_html as table_html  # the page's own table markup
from llmmeter.report.routes import (
    RouteReport,
    check_route_keys,
    query_route_report,
    render_route_csv,
    render_route_json,
    render_route_table,
    route_notes,
    route_table_cells,
)
from llmmeter.report.savings import add_savings, query_savings
from llmmeter.report.sql import Dialect, Run, query_report
from llmmeter.report.text import render_csv, render_json, render_table
from llmmeter.store.read import reading_store

__all__ = ["route_report", "routing_sections", "savings_report"]

_ROUTE_RENDERERS: dict[str, Callable[[RouteReport], str]] = {
    "table": render_route_table,
    "json": render_route_json,
    "csv": render_route_csv,
}


def route_report(run: Run, dialect: Dialect, args: argparse.Namespace) -> str:
    """``llmmeter report --kind route``: route records grouped ``--by`` (default ``name``)."""
    by = args.by or "name"
    check_route_keys(run, by, dialect=dialect, since=args.since, until=args.until)
    report = query_route_report(
        run,
        dialect=dialect,
        by=by,
        since=args.since,
        until=args.until,
        latency_outcome=cast(LatencyOutcome, args.outcome or "ok"),
    )
    return _ROUTE_RENDERERS[args.format](report)


def savings_report(run: Run, dialect: Dialect, args: argparse.Namespace) -> str:
    """``llmmeter report --baseline-model MODEL``: the LLM-call report plus the savings."""
    savings = query_savings(
        run, args.baseline_model, dialect=dialect, by=args.by, since=args.since, until=args.until
    )
    report = query_report(
        run,
        dialect=dialect,
        by=args.by,
        since=args.since,
        until=args.until,
        latency_outcome=cast(LatencyOutcome, args.outcome or "ok"),
        top=args.top,
        sort=cast(SortOrder, args.sort),
    )
    renderers = {"table": render_table, "json": render_json, "csv": render_csv}
    return add_savings(renderers[args.format](report), args.format, report, savings)


def routing_sections(path: Path, args: argparse.Namespace) -> list[str]:
    """The HTML report's routing section: the route report by name, then by name and final
    model; nothing when the window has no route records."""
    with reading_store(path) as run:
        by_name, by_final_model = (
            query_route_report(
                run,
                by=by,
                since=args.since,
                until=args.until,
                latency_outcome=cast(LatencyOutcome, args.outcome or "ok"),
            )
            for by in ("name", "name,final_model")
        )
        if not by_name.groups:
            return []
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in route_notes(by_name))
        return [
            "<h2>Routing: escalation, fallback, cost and feedback per route</h2>",
            table_html(route_table_cells(by_name)),
            "<h2>Routing: the model each route ended on</h2>",
            table_html(route_table_cells(by_final_model)),
            f"<ul class='muted'>{notes}</ul>",
        ]
