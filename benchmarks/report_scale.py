"""``llmmeter report`` at scale: time and peak memory of a report over a generated store.

Generates a store of N records shaped like a busy service (8,000 users, 24 teams, 12 features,
6 models, 30 days; 3 % failed calls without usage, 1 % aborted, 70 % streamed, 5 % unpriced),
then runs the command a user runs, in a fresh process each time::

    llmmeter report --store STORE --by user_id --since 30d --format json

and reports its wall time and peak RSS (``ru_maxrss`` of the child), best and median of the runs.

    python benchmarks/report_scale.py                      # 1,000,000 records, 3 runs
    python benchmarks/report_scale.py --records 10000000 --runs 1
    python benchmarks/report_scale.py --quick              # 20,000 records: seconds
    python benchmarks/report_scale.py --store PATH         # keep (or reuse) the generated store
    python benchmarks/report_scale.py --store PATH --timeline   # and when each phase of one run ends

Rows are written straight into SQLite in the store's own layout (``llmmeter.store.schema``, with
the report's columns the writer adds, and the store's trigger keeping what the rows hold) from one
template record, varied per row: generating through the record pipeline would take longer than
the report being measured. The output names the store's schema version and where its rows
summary starts: a store made by an older llmmeter (``--store`` reused) is read the slower way.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from llmmeter.record import CallRecord, Cost, CostStatus, Timings, Usage
from llmmeter.store.report_columns import rows_summary
from llmmeter.store.schema import (
    COLUMN_NAMES,
    INSERT_RECORD,
    prepare_for_writing,
    record_to_row,
    to_json,
    with_report_columns,
)

MODELS = {  # model: (USD per 1M input tokens, per 1M output tokens); None = no price
    "gpt-4o": (Decimal("2.5"), Decimal("10")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.6")),
    "claude-3-5-sonnet": (Decimal("3"), Decimal("15")),
    "gemini-1.5-flash": (Decimal("0.075"), Decimal("0.3")),
    "o3-mini": (Decimal("1.1"), Decimal("4.4")),
    "llama-local": None,
}
USERS, TEAMS, FEATURES = 8000, 24, 12
DAYS = 30
REPORT_ARGS = ("--by", "user_id", "--since", "30d", "--format", "json")


def _template() -> list[object]:
    record = CallRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o",
        response_model="gpt-4o-2024-08-06",
        server_address="api.openai.com",
        server_port=443,
        streaming=True,
        timings=Timings(duration_s=1.0, ttft_s=0.3, tpot_s=0.02, chunks=50),
        usage=Usage(input_tokens=1000, output_tokens=200, cache_read_input_tokens=0),
        cost=Cost(amount=Decimal("0.0045")),
        cost_status=CostStatus.PRICED,
        finish_reasons=("stop",),
        request_params={"temperature": 0.2, "max_tokens": 1024},
        attributes={"user_id": "u-1", "team": "t-1", "feature": "f-1"},
    )
    return list(record_to_row(record))


_COLUMN = {name: i for i, name in enumerate(COLUMN_NAMES)}


def _row(
    template: list[object], i: int, rng: random.Random, start_ns: int, span_ns: int
) -> tuple[object, ...]:
    row = template.copy()
    model = rng.choice(list(MODELS))
    roll = rng.random()
    outcome = "error" if roll < 0.03 else "aborted" if roll < 0.04 else "ok"
    streaming = rng.random() < 0.7
    duration = rng.lognormvariate(0.0, 0.6)
    input_tokens, output_tokens = rng.randint(50, 6000), rng.randint(10, 1200)
    price = MODELS[model]
    values: dict[str, object] = {
        "start_time_unix_ns": start_ns + i * span_ns,
        "request_model": model,
        "response_model": model,
        "streaming": int(streaming),
        "outcome": outcome,
        "error_type": "APIStatusError" if outcome == "error" else None,
        "duration_s": duration,
        "ttft_s": duration * rng.uniform(0.1, 0.5) if streaming and outcome != "error" else None,
        "tpot_s": rng.uniform(0.005, 0.05) if streaming and outcome == "ok" else None,
        # What schema.to_json writes for these attributes, without its cost per row.
        "attributes": (
            f'{{"feature":"feature-{rng.randrange(FEATURES)}","team":"team-{rng.randrange(TEAMS)}",'
            f'"user_id":"u-{rng.randrange(USERS)}"}}'
        ),
        "record_id": f"bench-{i:012d}",
    }
    if outcome == "error":
        values |= {"usage_source": None, "input_tokens": None, "output_tokens": None}
        values |= {"cache_read_input_tokens": None, "cost_amount": None, "cost_currency": None}
        values |= {"cost_source": None, "cost_price_ref": None, "cost_components": None}
        values["cost_status"] = "no_usage"
    else:
        values |= {"input_tokens": input_tokens, "output_tokens": output_tokens}
        values["cache_read_input_tokens"] = rng.randint(0, input_tokens) if rng.random() < 0.3 else 0
        if price is None:
            values |= {"cost_amount": None, "cost_currency": None, "cost_source": None}
            values |= {"cost_price_ref": None, "cost_components": None, "cost_status": "unpriced"}
        else:
            amount = (input_tokens * price[0] + output_tokens * price[1]) / Decimal(1_000_000)
            values["cost_amount"] = str(amount)
    for name, value in values.items():
        row[_COLUMN[name]] = value
    return tuple(row)


def _check_attributes_form() -> None:
    """The hand-written attributes JSON above is what the store writes (sorted, compact)."""
    sample = _row(_template(), 0, random.Random(1), 0, 1)[_COLUMN["attributes"]]
    assert isinstance(sample, str)
    assert to_json(json.loads(sample)) == sample


def generate(path: Path, records: int, seed: int = 7) -> None:
    """Write ``records`` rows into a new store at ``path``, spread over the last :data:`DAYS` days."""
    _check_attributes_form()
    conn = sqlite3.connect(path, isolation_level=None)
    prepare_for_writing(conn)
    conn.execute("PRAGMA synchronous = OFF")  # a generated benchmark store: no crash safety needed
    rng = random.Random(seed)
    template = _template()
    span_ns = (DAYS - 1) * 86_400 * 10**9 // max(records, 1)
    start_ns = time.time_ns() - (DAYS - 1) * 86_400 * 10**9
    batch = 50_000
    for first in range(0, records, batch):
        rows = [
            with_report_columns(_row(template, i, rng, start_ns, span_ns))
            for i in range(first, min(first + batch, records))
        ]
        conn.execute("BEGIN")
        conn.executemany(INSERT_RECORD, rows)
        conn.execute("COMMIT")
        print(f"  generated {first + len(rows):,} / {records:,}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    conn.close()


def run_report(store: Path) -> tuple[float, float, float, int]:
    """One ``llmmeter report`` in a fresh process: wall seconds, CPU seconds (all its threads),
    peak RSS in MB, groups printed."""
    code = (
        "import resource, sys\n"
        "from llmmeter.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "sys.stdout.flush()\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(usage.ru_utime + usage.ru_stime, usage.ru_maxrss, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, "report", "--store", str(store), *REPORT_ARGS],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"llmmeter report failed ({done.returncode}): {done.stderr.strip()}")
    cpu_s, peak_kib = done.stderr.strip().splitlines()[-1].split()
    return elapsed, float(cpu_s), int(peak_kib) / 1024, len(json.loads(done.stdout)["groups"])


_TIMELINE_CODE = """
import json, sys, time
started = time.perf_counter()
ends = {}
def mark(phase):
    ends[phase] = (time.perf_counter() - started, time.process_time())
import llmmeter.cli as cli
import llmmeter.report.sql as sql
mark("imports")
def marked(owner, name, phase, at_start=None):
    function = getattr(owner, name)
    def wrapped(*args, **kwargs):
        if at_start:
            mark(at_start)
        result = function(*args, **kwargs)
        mark(phase)
        return result
    setattr(owner, name, wrapped)
marked(sql._Query, "_fetch_part", "the report's SQL (both parts)")
marked(sql, "_rank_latencies", "percentiles (parsed, sorted, counted)", at_start="rows into groups")
figures_scan = cli._figures_scan
def figures(*args, **kwargs):
    scan = figures_scan(*args, **kwargs)
    mark("the price table (on its own thread)")
    marked(scan, "result", "the figures (their SQL beside the report's Python)")
    from llmmeter.report import finops
    marked(finops, "render", "JSON")
    return scan
cli._figures_scan = figures
code = cli.main(sys.argv[1:])
mark("exit")
print(json.dumps(sorted(ends.items(), key=lambda item: item[1][0])), file=sys.stderr)
sys.exit(code)
"""
"""One report in a fresh process with a time mark where each phase ends. It wraps private
functions of ``llmmeter.report.sql`` and ``llmmeter.cli``: update it with them."""


def timeline(store: Path) -> str:
    """When each phase of one ``llmmeter report`` ends (wall and CPU seconds from its start), as
    a table."""
    done = subprocess.run(
        [sys.executable, "-c", _TIMELINE_CODE, "report", "--store", str(store), *REPORT_ARGS],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"llmmeter report failed ({done.returncode}): {done.stderr.strip()}")
    ends = json.loads(done.stderr.strip().splitlines()[-1])
    rows = [f"| {phase} | {wall:.2f} | {cpu:.2f} |" for phase, (wall, cpu) in ends]
    return "\n".join(
        ["| phase of one run | ends at (wall s) | CPU s so far (all threads) |", "|---|---|---|", *rows]
    )


def _layout(store: Path) -> str:
    """The store's schema version and where its rows summary starts (what the report can skip)."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        meta = {str(key): str(value) for key, value in conn.execute("SELECT key, value FROM meta")}
    finally:
        conn.close()
    summary = rows_summary(meta)
    known = "no rows summary" if summary is None else f"rows summary from id {summary.from_id:,}"
    return f"schema {meta.get('schema_version', '?')}, {known}"


def store_arguments(description: str | None, default_records: int) -> tuple[argparse.Namespace, int, int]:
    """The options of a benchmark over a generated store (``--records``, ``--runs``, ``--store``,
    ``--quick``), parsed: (arguments, records, runs)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=default_records)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--store", type=Path, help="generate here (reused if it exists) instead of a temp dir"
    )
    parser.add_argument("--quick", action="store_true", help="20,000 records, 1 run")
    parser.add_argument("--timeline", action="store_true", help="then one more run, phase by phase")
    args = parser.parse_args()
    records, runs = (20_000, 1) if args.quick else (args.records, args.runs)
    return args, records, runs


def main() -> None:
    args, records, runs = store_arguments(__doc__, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="llmmeter-report-scale-") as tmp:
        store = args.store or Path(tmp) / "records.sqlite3"
        if not store.exists():
            started = time.perf_counter()
            generate(store, records)
            print(f"generated {records:,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        size_mb = os.path.getsize(store) / 1e6
        layout = _layout(store)
        results = [run_report(store) for _ in range(runs)]
        phases = timeline(store) if args.timeline else None
    times, cpus, peaks = ([r[i] for r in results] for i in range(3))
    groups = results[0][3]
    print(f"## llmmeter report {' '.join(REPORT_ARGS)}\n")
    print(f"store: {records:,} records, {size_mb:,.0f} MB; {groups:,} groups; {runs} run(s); {layout}\n")
    print("| records | wall s (best) | wall s (median) | CPU s (median) | peak RSS MB (max) |")
    print("|---|---|---|---|---|")
    print(
        f"| {records:,} | {min(times):.2f} | {statistics.median(times):.2f} | "
        f"{statistics.median(cpus):.2f} | {max(peaks):.0f} |"
    )
    load = os.getloadavg()[0]
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load:.1f} (other processes share the CPUs)")
    if phases is not None:
        print(f"\n{phases}")


if __name__ == "__main__":
    main()
