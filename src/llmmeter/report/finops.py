"""The FinOps reports of ``llmmeter report`` (issue 14), from the command line's arguments.

``--kind route`` renders :mod:`llmmeter.report.routes`; ``--baseline-model MODEL`` computes the
usual report and adds :mod:`llmmeter.report.savings` to it; every report of LLM calls from the
store gets :mod:`llmmeter.report.figures` (cache savings, amortized training cost), priced with
the bundled table and the ``--prices`` files. All read the store through the same query runner
and SQL dialect as the rest of the report; bad keys, models and price files raise ``ValueError``
(or ``argparse.ArgumentTypeError``) with a one-line message.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Callable
from pathlib import Path
from typing import cast

from llmmeter.pricing.files import PriceFileError, parse_price_file
from llmmeter.pricing.registry import PricingRegistry
from llmmeter.report.build import LatencyOutcome, Report, ReportKind, SortOrder
from llmmeter.report.figures import Figures, FiguresScan, query_figures
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
from llmmeter.report.sql import SQLITE, Dialect, Run, query_report
from llmmeter.report.text import printable, render_csv, render_json, render_table
from llmmeter.store.read import reading_store

__all__ = [
    "price_file_argument",
    "render",
    "report_figures",
    "report_registry",
    "route_report",
    "routing_sections",
    "savings_report",
    "store_figures",
]

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


def price_file_argument(path: str) -> str:
    """``--prices FILE``: the path of a valid price file; else one line naming its first problem."""
    try:
        parse_price_file(path)
    except PriceFileError as exc:
        more = f" (and {len(exc.problems) - 1} more: llmmeter prices check)" if len(exc.problems) > 1 else ""
        raise argparse.ArgumentTypeError(printable(str(exc.problems[0])) + more) from None
    return path


def report_registry(args: argparse.Namespace) -> PricingRegistry:
    """The bundled price table with the ``--prices`` files loaded over it."""
    registry = PricingRegistry.default()
    for path in getattr(args, "prices", None) or ():
        registry.load(path)
    return registry


def report_figures(run: Run, dialect: Dialect, report: Report, args: argparse.Namespace) -> Figures:
    """The cache savings and amortized training cost of ``report``'s groups (see
    :mod:`llmmeter.report.figures`), from the store ``run`` reads."""
    return query_figures(run, report, dialect=dialect, registry=report_registry(args))


def figures_scan(run: Run, dialect: Dialect, args: argparse.Namespace) -> FiguresScan:
    """:func:`report_figures` of the report ``args`` ask for, its scan to be started beside the
    report's own work (:class:`~llmmeter.report.figures.FiguresScan`)."""
    kind = cast(ReportKind, args.kind)
    return FiguresScan.of(
        run,
        by=args.by,
        kind=kind,
        since=args.since,
        until=args.until,
        dialect=dialect,
        registry=report_registry(args),
    )


def store_figures(path: Path, report: Report, args: argparse.Namespace) -> Figures:
    """:func:`report_figures` from the local store at ``path`` (the HTML report's tables)."""
    with reading_store(path) as run:
        return report_figures(run, SQLITE, report, args)


def render(report: Report, output_format: str, figures: Figures) -> str:
    """``report`` as ``table``, ``json`` or ``csv``, with its figures."""
    if output_format == "json":
        return render_json(report, figures)
    if output_format == "csv":
        return render_csv(report, figures)
    return render_table(report, figures=figures)


def savings_report(run: Run, dialect: Dialect, args: argparse.Namespace) -> str:
    """``llmmeter report --baseline-model MODEL``: the LLM-call report plus the savings."""
    registry = report_registry(args)
    savings = query_savings(
        run,
        args.baseline_model,
        dialect=dialect,
        by=args.by,
        since=args.since,
        until=args.until,
        registry=registry,
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
    figures = query_figures(run, report, dialect=dialect, registry=registry)
    return add_savings(render(report, args.format, figures), args.format, report, savings)


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
