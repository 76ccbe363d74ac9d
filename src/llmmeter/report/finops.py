"""The FinOps reports of ``llmmeter report`` (issue 14), from the command line's arguments.

``--kind route`` renders :mod:`llmmeter.report.routes`; ``--baseline-model MODEL`` computes the
usual report and adds :mod:`llmmeter.report.savings` to it. Both read the store through the same
query runner and SQL dialect as the rest of the report; bad keys and models raise ``ValueError``
with a one-line message.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import cast

from llmmeter.report.build import LatencyOutcome, SortOrder
from llmmeter.report.routes import (
    RouteReport,
    check_route_keys,
    query_route_report,
    render_route_csv,
    render_route_json,
    render_route_table,
)
from llmmeter.report.savings import add_savings, query_savings
from llmmeter.report.sql import Dialect, Run, query_report
from llmmeter.report.text import render_csv, render_json, render_table

__all__ = ["route_report", "savings_report"]

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
