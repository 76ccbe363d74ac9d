"""The ``llmmeter`` command line: ``llmmeter report`` (and ``llmmeter prices`` when installed).

Exit codes: 0 success, 1 the report could not be written to ``--output``, 2 bad arguments or a
missing / unreadable store (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from llmmeter.record import CallKind, CallRecord
from llmmeter.report import (
    GROUP_KEYS,
    Report,
    ReportKind,
    build_report,
    render_csv,
    render_json,
    render_table,
)
from llmmeter.report_html import render_html
from llmmeter.report_prometheus import (
    DEFAULT_MATCHERS,
    PrometheusQueryError,
    prometheus_report,
    render_prometheus_report,
)
from llmmeter.store import STORE_ENV_VAR, StoreError, read_records, resolve_store_path
from llmmeter.store import cli as store_cli

__all__ = ["main", "parse_time"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

Renderer = Callable[[Report], str]
_FORMATS = ("table", "json", "csv", "html")


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``24h`` / ``30m`` / ``7d`` / ``2w`` / ``90s`` ago, or an ISO date or datetime.

    A relative time counts back from ``now`` (default: the current local time). An ISO value
    without a timezone is local time; a bare date means its midnight.
    """
    reference = now if now is not None else datetime.now().astimezone()
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2)
        return reference - timedelta(seconds=amount * _UNIT_SECONDS[unit])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use e.g. 24h, 7d, 30m, 2026-11-27 or 2026-11-27T09:30)"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _time_argument(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _render(output_format: str, report: Report, records: Sequence[CallRecord]) -> str:
    if output_format == "html":
        return render_html(report, records)
    renderers: dict[str, Renderer] = {"table": render_table, "json": render_json, "csv": render_csv}
    return renderers[output_format](report)


def _add_report_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    builtin_keys = ", ".join(GROUP_KEYS)
    parser = subparsers.add_parser(
        "report",
        help="calls, tokens, cost and latency percentiles from the local store (or Prometheus)",
        description="Summarize the local store: calls, errors, tokens by kind, cost, and "
        "p50/p95/p99 of TTFT, TPOT and duration, grouped and over a time window.",
    )
    parser.add_argument(
        "--store",
        metavar="PATH",
        help=f"the store file (default: ${STORE_ENV_VAR}, else the XDG data dir's llmmeter/records.sqlite3)",
    )
    parser.add_argument(
        "--by",
        metavar="KEYS",
        default="",
        help=f"comma-separated group keys: {builtin_keys}, or any attribute key (attr:KEY forces one)",
    )
    parser.add_argument("--since", type=_time_argument, metavar="TIME", help="24h, 7d, 30m... or ISO time")
    parser.add_argument("--until", type=_time_argument, metavar="TIME", help="24h, 7d, 30m... or ISO time")
    parser.add_argument(
        "--format", choices=_FORMATS, default="table", help="output format (html: one file with charts)"
    )
    parser.add_argument(
        "--kind",
        choices=("llm", "step", "all"),
        default="llm",
        help="llm calls (default), steps (with their rolled-up numbers), or all (double counts)",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    fleet = parser.add_argument_group(
        "fleet-wide, from Prometheus",
        "Compute the report from the llmmeter metrics Prometheus scraped from every process "
        "(LLM calls; --since defaults to 24h; percentiles are bucket-interpolated estimates).",
    )
    fleet.add_argument("--prometheus", metavar="URL", help="Prometheus server, e.g. http://127.0.0.1:9090")
    fleet.add_argument(
        "--match",
        metavar="MATCHERS",
        default=DEFAULT_MATCHERS,
        help=f"PromQL label matchers selecting the series (default: {DEFAULT_MATCHERS})",
    )
    parser.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    since: datetime | None = args.since
    until: datetime | None = args.until
    if since is not None and until is not None and since >= until:
        return _fail("--since must be before --until")
    if args.prometheus:
        return _run_prometheus_report(args)
    kind = cast(ReportKind, args.kind)
    path = resolve_store_path(args.store)
    try:
        records = read_records(path, since=since, until=until, kind=None if kind == "all" else CallKind(kind))
    except StoreError as exc:
        return _fail(str(exc))
    report = build_report(records, by=args.by, kind=kind, since=since, until=until)
    text = _render(args.format, report, records)
    if args.format != "table":
        for key in report.unmatched_keys:
            print(f"llmmeter: no record has a value for '{key}'", file=sys.stderr)
    return _emit(text, args.output)


def _run_prometheus_report(args: argparse.Namespace) -> int:
    if args.format == "html":
        return _fail("--format html charts per-call records: use the local store (or table/json/csv)")
    if args.kind != "llm" or args.store:
        return _fail("--prometheus reports LLM calls from metrics: --kind and --store do not apply")
    try:
        report = prometheus_report(
            args.prometheus, by=args.by, since=args.since, until=args.until, matchers=args.match
        )
    except (PrometheusQueryError, ValueError) as exc:
        return _fail(str(exc))
    if args.format != "table":
        for key in report.unmatched_keys:
            print(f"llmmeter: no series has a value for '{key}'", file=sys.stderr)
    return _emit(render_prometheus_report(report, args.format, args.prometheus), args.output)


def _emit(text: str, output: str | None) -> int:
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"llmmeter: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"llmmeter: wrote {output}", file=sys.stderr)
    return 0


def _fail(message: str) -> int:
    print(f"llmmeter: {message}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmmeter", description="Per-request LLM cost and latency telemetry."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_report_command(subparsers)
    try:
        from llmmeter.pricing.cli import add_subcommand
    except ImportError:
        pass
    else:
        add_subcommand(subparsers)
    store_cli.add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmmeter`` command line; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], int | None] = args.func
        return handler(args) or 0
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    except BrokenPipeError:  # `llmmeter report | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
