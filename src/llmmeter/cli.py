"""The ``llmmeter`` command line: ``llmmeter report`` (and ``llmmeter prices`` when installed).

Exit codes: 0 success, 1 the report could not be written to ``--output``, 2 bad arguments or a
missing / unreadable store (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from llmmeter._arguments import whole_number
from llmmeter.record import CallKind, CallRecord
from llmmeter.report.build import (
    GROUP_KEYS,
    LATENCY_OUTCOMES,
    SORT_ORDERS,
    LatencyOutcome,
    Report,
    ReportKind,
    SortOrder,
    attribute_name,
    build_report,
    parse_group_keys,
)
from llmmeter.report.html import render_html
from llmmeter.report.prometheus import (
    DEFAULT_MATCHERS,
    PrometheusQueryError,
    prometheus_report,
    render_prometheus_report,
)
from llmmeter.report.sql import SQLITE, Dialect, Run, query_report, unknown_group_keys
from llmmeter.report.text import printable
from llmmeter.store import STORE_ENV_VAR, StoreError, read_records, resolve_store_path
from llmmeter.store import cli as store_cli
from llmmeter.store.quarantine import quarantine_count
from llmmeter.store.read import reading_store

if TYPE_CHECKING:
    from llmmeter.report.figures import FiguresScan

__all__ = ["main", "parse_time"]

_T = TypeVar("_T")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

Renderer = Callable[[Report], str]
_FORMATS = ("table", "json", "csv", "html")
_PROGRESS_AFTER_S = 1.0
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``24h`` / ``30m`` / ``7d`` / ``2w`` / ``90s`` ago, or an ISO date or datetime.

    A relative time counts back from ``now`` (default: the current local time). An ISO value
    without a timezone is local time; a bare date means its midnight. A time before the year 1
    or after 9999 (``99999999999w``) is a ``ValueError``, like any text that is not a time.
    """
    reference = now if now is not None else datetime.now().astimezone()
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2)
        try:
            return reference - timedelta(seconds=amount * _UNIT_SECONDS[unit])
        except OverflowError:
            raise ValueError(f"{text.strip()!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use e.g. 24h, 7d, 30m, 2026-11-27 or 2026-11-27T09:30)"
        ) from None
    try:
        return moment if moment.tzinfo is not None else moment.astimezone()
    except (OverflowError, OSError):
        raise ValueError(f"{text.strip()!r} is out of the range of times this system handles") from None


def _time_argument(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (``llmmeter report: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {printable(message)} (see {self.prog} --help)\n")


def _add_report_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    builtin_keys = ", ".join(GROUP_KEYS)
    parser = subparsers.add_parser(
        "report",
        help="calls, tokens, cost and latency percentiles from the local store (or Prometheus)",
        description="Summarize the local store: calls, errors, tokens by kind, cost, and "
        "p50/p95/p99 of TTFT, TPOT and duration, grouped and over a time window. "
        "The store computes the report in SQL: millions of records take seconds.",
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
        help=f"comma-separated group keys: {builtin_keys}, or an attribute key some record has "
        "(attr:KEY reaches one named like a built-in key)",
    )
    parser.add_argument("--since", type=_time_argument, metavar="TIME", help="24h, 7d, 30m... or ISO time")
    parser.add_argument("--until", type=_time_argument, metavar="TIME", help="24h, 7d, 30m... or ISO time")
    parser.add_argument(
        "--format", choices=_FORMATS, default="table", help="output format (html: one file with charts)"
    )
    parser.add_argument(
        "--kind",
        choices=("llm", "step", "all", "route"),
        default="llm",
        help="llm calls (default), steps (with their rolled-up numbers), all (double counts), or "
        "route: llmmeter.route() records (--by name, final_model...: escalation and fallback rates)",
    )
    parser.add_argument(
        "--baseline-model",
        metavar="MODEL",
        help="also price every group's token usage at MODEL's prices: baseline cost and savings",
    )
    parser.add_argument(
        "--prices",
        action="append",
        default=[],
        type=_price_file,
        metavar="FILE",
        help="also price with this price file (repeatable): cache savings, training costs, baseline",
    )
    parser.add_argument(
        "--top",
        type=whole_number(1),
        metavar="N",
        help="show the first N groups (in --sort order) and add the rest up into one 'other' row",
    )
    parser.add_argument(
        "--sort",
        choices=SORT_ORDERS,
        default="cost",
        help="group order: cost (default), calls, tokens, errors (largest first) or key",
    )
    parser.add_argument(
        "--outcome",
        choices=LATENCY_OUTCOMES,
        default=None,
        help="the calls latency percentiles are taken over: ok (default: failed and aborted calls "
        "and their retries would pull them), error, aborted, or all",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    fleet = parser.add_argument_group(
        "fleet-wide, from Prometheus",
        "Compute the report from the llmmeter metrics Prometheus scraped from every process "
        "(LLM calls; --since defaults to 24h; percentiles are bucket-interpolated estimates "
        "over calls of every outcome).",
    )
    fleet.add_argument("--prometheus", metavar="URL", help="Prometheus server, e.g. http://127.0.0.1:9090")
    fleet.add_argument(
        "--match",
        metavar="MATCHERS",
        default=DEFAULT_MATCHERS,
        help=f"PromQL label matchers selecting the series (default: {DEFAULT_MATCHERS})",
    )
    parser.set_defaults(func=_run_report)


class _Failure(Exception):
    """A one-line error for the user; the command exits with code 2."""


def _run_report(args: argparse.Namespace) -> int:
    try:
        _check_arguments(args)
        if args.kind == "route" or args.baseline_model is not None:  # issue 14: routes, savings
            report_text = _finops_report(args)
        elif args.prometheus:
            return _run_prometheus_report(args)
        else:
            report_text = _local_report(args)
    except (_Failure, StoreError) as exc:
        return _fail(str(exc))
    return _emit(report_text, args.output)


def _check_arguments(args: argparse.Namespace) -> None:
    since: datetime | None = args.since
    until: datetime | None = args.until
    if since is not None and until is not None and since >= until:
        raise _Failure("--since must be before --until")
    for key in parse_group_keys(args.by):
        name = key.removeprefix("attr:")
        if not name or printable(name) != name or '"' in name or "\\" in name:
            raise _Failure(
                f"--by: {printable(key)!r} is not a valid key (no quotes, backslashes or control characters)"
            )


def _local_report(args: argparse.Namespace) -> str:
    kind = cast(ReportKind, args.kind)
    outcome = cast(LatencyOutcome, args.outcome or "ok")
    sort = cast(SortOrder, args.sort)
    if args.format == "html":
        url = _fleet_url(args.store)
        if url is not None:
            return _fleet_html_report(args, url)
        path = resolve_store_path(args.store)
        records = read_records(path, since=args.since, until=args.until, kind=_record_kind(kind))
        report = _report_of_records(records, args)
        from llmmeter.report import finops

        sections, figures = finops.routing_sections(path, args), finops.store_figures(path, report, args)
        with reading_store(path) as run:
            _note_quarantine(run)
        return render_html(report, records, sections, figures=figures)  # + routes, figures (issue 14)
    with _sql_source(args.store) as (run, dialect), _progress_line() as progress:
        _check_keys(run, dialect, args)
        # The figures (issue 14: cache, training) need the price table: it loads while the
        # database scans (which holds no GIL), then their own scan runs beside the report's Python.
        figures_scan = _in_background(lambda: _figures_scan(run, dialect, args))
        report = query_report(
            run,
            dialect=dialect,
            by=args.by,
            kind=kind,
            since=args.since,
            until=args.until,
            latency_outcome=outcome,
            top=args.top,
            sort=sort,
            progress=progress,
            scanned=lambda: figures_scan.result().start(),
        )
        _note_quarantine(run)
        from llmmeter.report import finops

        return finops.render(report, args.format, figures_scan.result().result(report))


def _figures_scan(run: Run, dialect: Dialect, args: argparse.Namespace) -> FiguresScan:
    from llmmeter.report import finops  # with the price table: imported off the report's path

    return finops.figures_scan(run, dialect, args)


def _in_background(make: Callable[[], _T]) -> Future[_T]:
    """``make()`` on a thread of its own; its result (or exception) from ``.result()``."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmmeter-report-prepare")
    try:
        return pool.submit(make)
    finally:
        pool.shutdown(wait=False)  # the thread ends with ``make``


def _price_file(value: str) -> str:
    """``--prices FILE``, checked as it is parsed (see :func:`llmmeter.report.finops.price_file_argument`)."""
    from llmmeter.report import finops

    return finops.price_file_argument(value)


def _report_of_records(records: list[CallRecord], args: argparse.Namespace) -> Report:
    """The report of ``records`` read into memory (the HTML report's charts need them)."""
    _check_keys_in_memory(args.by, records)
    return build_report(
        records,
        by=args.by,
        kind=cast(ReportKind, args.kind),
        since=args.since,
        until=args.until,
        latency_outcome=cast(LatencyOutcome, args.outcome or "ok"),
        top=args.top,
        sort=cast(SortOrder, args.sort),
    )


def _fleet_url(store: str | None) -> str | None:
    """The fleet database ``--store`` (else ``LLMMETER_STORE``) names; ``None`` for a local store."""
    target = store if store is not None else os.environ.get(STORE_ENV_VAR)
    return target if target and target.strip().lower().startswith(_POSTGRES_SCHEMES) else None


def _fleet_html_report(args: argparse.Namespace, url: str) -> str:
    """The HTML report of the fleet store: its records read once for the charts, the cache and
    training figures computed by the server (the routing section is the local store's only)."""
    with _sql_source(url) as (run, dialect):
        from llmmeter.store.postgres import read_fleet_records

        kind = _record_kind(cast(ReportKind, args.kind))
        records = read_fleet_records(url, since=args.since, until=args.until, kind=kind)
        report = _report_of_records(records, args)
        from llmmeter.report import finops

        figures = finops.report_figures(run, dialect, report, args)
        _note_quarantine(run)
    return render_html(report, records, figures=figures)


def _note_quarantine(run: Run) -> None:
    """Say on stderr how many records the store refused: they are not in the report."""
    count = quarantine_count(run)
    if count:
        print(
            f"llmmeter: {count} records the store refused are not in this report "
            "(`llmmeter store quarantine` lists them with the reason)",
            file=sys.stderr,
        )


def _record_kind(kind: ReportKind) -> CallKind | None:
    return None if kind == "all" else CallKind(kind)


@contextlib.contextmanager
def _sql_source(store: str | None) -> Iterator[tuple[Run, Dialect]]:
    """The backend that computes the report: the local SQLite store, or a fleet database."""
    target = store if store is not None else os.environ.get(STORE_ENV_VAR)
    if target and target.strip().lower().startswith(_POSTGRES_SCHEMES):
        try:
            backend = importlib.import_module("llmmeter.store.postgres_report")
        except ImportError:
            raise _Failure(
                "this llmmeter cannot report from a PostgreSQL store yet (no SQL dialect for it)"
            ) from None
        reading_fleet_store = backend.reading_fleet_store
        with reading_fleet_store(target) as run:
            yield run, backend.POSTGRESQL_DIALECT
        return
    with reading_store(resolve_store_path(store)) as run:
        yield run, SQLITE


def _check_keys(run: Run, dialect: Dialect, args: argparse.Namespace) -> None:
    unknown = unknown_group_keys(
        run, args.by, dialect=dialect, since=args.since, until=args.until, kind=cast(ReportKind, args.kind)
    )
    if unknown and any(True for _ in run("SELECT 1 FROM records LIMIT 1", [])):
        raise _Failure(_unknown_keys_message(unknown, _attribute_keys(run, dialect)))


def _check_keys_in_memory(by: str, records: Sequence[CallRecord]) -> None:
    unknown = [
        key
        for key in parse_group_keys(by)
        if key in (attribute_name(key),) and not any(key in record.attributes for record in records)
    ]
    if unknown and records:
        attributes = sorted({name for record in records[-10_000:] for name in record.attributes})[:50]
        raise _Failure(_unknown_keys_message(unknown, attributes))


def _attribute_keys(run: Run, dialect: Dialect) -> list[str]:
    try:
        return [str(row[0]) for row in run(dialect.attribute_keys(50), [])]
    except Exception:  # the list only decorates an error message
        return []


def _unknown_keys_message(unknown: Sequence[str], attributes: Sequence[str]) -> str:
    names = ", ".join(repr(printable(key)) for key in unknown)
    seen = f"; attributes in the store: {', '.join(printable(a) for a in attributes)}" if attributes else ""
    return f"--by: no record has {names}: valid keys are {', '.join(GROUP_KEYS)}{seen}"


@contextlib.contextmanager
def _progress_line() -> Iterator[Callable[[str], None]]:
    """A ``step`` callback; on a terminal, once the report has run a second, a line on stderr
    says which step it is at and for how long, until the report is done."""
    if not _stderr_is_a_terminal():
        yield lambda _: None
        return
    started = time.monotonic()
    state = {"step": "starting"}
    done = threading.Event()
    shown = threading.Event()

    def show() -> None:
        if done.wait(_PROGRESS_AFTER_S):
            return
        while not done.wait(0.25):
            shown.set()
            sys.stderr.write(f"\rllmmeter report: {state['step']}… {time.monotonic() - started:.0f} s\x1b[K")
            sys.stderr.flush()

    thread = threading.Thread(target=show, name="llmmeter-report-progress", daemon=True)
    thread.start()
    try:
        yield lambda step: state.__setitem__("step", step)
    finally:
        done.set()
        thread.join()
        if shown.is_set():
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# --- issue 14: the route report and savings against a baseline model ----------------------------
def _finops_report(args: argparse.Namespace) -> str:
    if args.prometheus or args.format == "html":
        raise _Failure("--kind route and --baseline-model need the local store and table, json or csv")
    if args.kind == "route" and args.baseline_model is not None:
        raise _Failure("--baseline-model applies to LLM calls: leave out --kind route")
    if args.kind == "route" and args.top is not None:
        raise _Failure("--kind route shows every group, most requests first: --top does not apply")
    if args.kind not in ("llm", "route"):
        raise _Failure("--baseline-model applies to LLM calls: leave out --kind")
    from llmmeter.report import finops

    with _sql_source(args.store) as (run, dialect):
        try:
            if args.kind == "route":
                return finops.route_report(run, dialect, args)
            _check_keys(run, dialect, args)
            return finops.savings_report(run, dialect, args)
        except ValueError as exc:  # UnknownRouteKeyError, BaselineError: one line
            raise _Failure(str(exc)) from None


def _run_prometheus_report(args: argparse.Namespace) -> int:
    if args.format == "html":
        return _fail("--format html charts per-call records: use the local store (or table/json/csv)")
    if args.kind != "llm" or args.store:
        return _fail("--prometheus reports LLM calls from metrics: --kind and --store do not apply")
    if args.top is not None or args.outcome is not None:
        return _fail("--prometheus: --top and --outcome need per-call data: use the local store")
    try:
        report = prometheus_report(
            args.prometheus, by=args.by, since=args.since, until=args.until, matchers=args.match
        )
    except (PrometheusQueryError, ValueError) as exc:
        return _fail(str(exc))
    if args.format != "table":
        for key in report.unmatched_keys:
            print(f"llmmeter: no series has a value for '{printable(key)}'", file=sys.stderr)
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


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _OneLineParser(
        prog="llmmeter", description="Per-request LLM cost and latency telemetry."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_report_command(subparsers)
    _add_prices_command(subparsers, command)
    store_cli.add_subcommand(subparsers)
    return parser


def _add_prices_command(subparsers: Any, command: str | None) -> None:
    """``llmmeter prices`` in full when it is the command run; otherwise only its line in
    ``--help``: its arguments import the price table (≈ 0.2 s), which a report loads beside
    its scan instead."""
    if command == "prices":
        from llmmeter.pricing.cli import add_subcommand

        add_subcommand(subparsers)
    else:
        subparsers.add_parser("prices", help="show, list and diff prices, check a price file")


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` runs (its first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmmeter`` command line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(_command(argv))
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
