"""``llmmeter report``: calls, tokens, cost and latency percentiles, grouped, over a time window.

``build.py`` the data (:class:`Report`, :class:`GroupStats`) and :func:`build_report`, which
aggregates records in memory; ``sql.py`` the same report computed by the database
(:func:`~llmmeter.report.sql.query_report`); ``text.py`` the table, JSON and CSV; ``html.py`` the
one-file HTML page; ``prometheus.py`` the fleet report from Prometheus (a source, not a
renderer); ``labels.py`` the one table of token-kind labels.

The names below were those of the ``llmmeter.report`` module and stay importable from here.
"""

from __future__ import annotations

from llmmeter.report.build import (
    GROUP_KEYS,
    LATENCY_METRICS,
    LATENCY_OUTCOMES,
    PERCENTILE_METHOD,
    PERCENTILES,
    SORT_ORDERS,
    GroupStats,
    LatencyOutcome,
    LatencySummary,
    Report,
    ReportKind,
    SortOrder,
    build_report,
    group_key_function,
    of_kind,
    parse_group_keys,
    percentile,
    record_cost,
)
from llmmeter.report.text import (
    LATENCY_TITLE,
    format_money,
    format_seconds,
    latency_table_cells,
    render_csv,
    render_json,
    render_table,
    report_notes,
    usage_table_cells,
    window_label,
)

__all__ = [
    "GROUP_KEYS",
    "LATENCY_METRICS",
    "LATENCY_OUTCOMES",
    "LATENCY_TITLE",
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
    "format_money",
    "format_seconds",
    "group_key_function",
    "latency_table_cells",
    "of_kind",
    "parse_group_keys",
    "percentile",
    "record_cost",
    "render_csv",
    "render_json",
    "render_table",
    "report_notes",
    "usage_table_cells",
    "window_label",
]
