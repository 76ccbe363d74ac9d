"""What the report's always-on figures (cache savings, amortized training cost) add to a report.

Generates the store of ``report_scale.py`` (a busy service: 8,000 users, 6 models, 30 days, 30 %
of the calls with cached input tokens), then, in one process, times the report's own query
(:func:`llmmeter.report.sql.query_report`) and the figures' query over the same window and
groups (:func:`llmmeter.report.figures.query_figures`), best of the runs, for a few groupings::

    python benchmarks/report_figures.py                   # 200,000 records, 3 runs
    python benchmarks/report_figures.py --records 1000000
    python benchmarks/report_figures.py --quick           # 20,000 records, 1 run
    python benchmarks/report_figures.py --store PATH      # keep (or reuse) the generated store
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llmmeter.pricing.registry import PricingRegistry
from llmmeter.report.figures import query_figures
from llmmeter.report.sql import query_report
from llmmeter.store.read import reading_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_scale import generate, store_arguments  # the report benchmark's generated store

GROUPINGS = ("model", "team", "user_id")


def best_times(store: Path, by: str, runs: int) -> tuple[float, float, int]:
    """Best wall seconds of the report's query and of the figures' query; the figure groups."""
    registry = PricingRegistry.default()
    since = datetime.now(UTC) - timedelta(days=30)
    report_s, figures_s, groups = [], [], 0
    for _ in range(runs):
        with reading_store(store) as run:
            started = time.perf_counter()
            report = query_report(run, by=by, since=since)
            reported = time.perf_counter()
            figures = query_figures(run, report, registry=registry)
            done = time.perf_counter()
        report_s.append(reported - started)
        figures_s.append(done - reported)
        groups = len(figures.groups)
    return min(report_s), min(figures_s), groups


def main() -> None:
    args, records, runs = store_arguments(__doc__, 200_000)
    with tempfile.TemporaryDirectory(prefix="llmmeter-report-figures-") as tmp:
        store = args.store or Path(tmp) / "records.sqlite3"
        if not store.exists():
            generate(store, records)
        rows = [(by, *best_times(store, by, runs)) for by in GROUPINGS]
    print("## llmmeter report: the figures' query beside the report's own (in-process, best of runs)\n")
    print(f"store: {records:,} records; {runs} run(s)\n")
    print("| --by | report s | figures s | figures / report | figure groups |")
    print("|---|---|---|---|---|")
    for by, report_s, figures_s, groups in rows:
        print(f"| {by} | {report_s:.2f} | {figures_s:.2f} | {figures_s / report_s:.0%} | {groups:,} |")


if __name__ == "__main__":
    main()
