"""What budgets cost with a fleet (PostgreSQL) store: the server-side read of other processes'
spend, and what a call pays on its own thread.

A throwaway PostgreSQL cluster (``tests/postgres_cluster.py``; Debian's ``postgresql`` binaries)
gets ``--rows`` priced LLM records of *another* process, spread over this month so far (20 teams,
1,000 users), written with ``COPY`` as the fleet's writers would. This process then configures
two budgets, a monthly one per team and a daily one per user, and measures:

* a process's first read (every row of the month: paid once, on the reading thread, from
  ``configure()`` until the budgets know the fleet's spend),
* a read with nothing new, the history having been vacuumed (its BRIN ranges summarized, as
  autovacuum does by then),
* a read after each of ``--repeat`` batches of 1,000 new rows (the rows of the last 60 s, not
  yet settled, are read again each time: the steady state of a busy fleet, every 10 s),
* on the caller's thread: ``check()`` of a covered call between reads (the interval not yet
  passed), the same without a store, and when a read is due (it wakes the reading thread).

Run: ``python benchmarks/fleet_budget_read.py [--rows 1000000] [--quick]``. Wall times, median
of ``--repeat`` runs; the machine's load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.postgres_cluster import PostgresCluster, _bin_dir  # noqa: E402

import llmmeter  # noqa: E402
from llmmeter.budgets import BudgetBook  # noqa: E402
from llmmeter.record import CallRecord, Cost, Timings  # noqa: E402
from llmmeter.store.postgres import PostgresStore  # noqa: E402

TEAMS, USERS = 20, 1_000
_COLUMNS = "start_time_unix_ns, kind, operation, attributes, cost_amount, record_id, inserted_at"


def fill(url: str, rows: int, first: int, *, history: bool) -> None:
    """``rows`` priced calls of another host, started between the month's start and now; the
    ``history`` ones inserted as they started (settled), the others just now."""
    import psycopg

    now = time.time_ns()
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = int(month.timestamp()) * 1_000_000_000 if history else now - 1_000_000_000
    step = max(1, (now - start) // max(rows, 1))
    copy_sql = f"COPY llmmeter.records ({_COLUMNS}) FROM STDIN"
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor().copy(copy_sql) as copy:
        for i in range(first, first + rows):
            started = start + (i - first) * step
            inserted = datetime.fromtimestamp(started / 1e9, UTC) if history else datetime.now(UTC)
            attributes = json.dumps({"team": f"t{i % TEAMS}", "user_id": f"u{i % USERS}"})
            copy.write_row((started, "llm", "chat", attributes, "0.0125", f"otherhost.{i:x}", inserted))


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median wall seconds of ``action``."""
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 2 repeats")
    args = parser.parse_args()
    rows, repeat = (10_000, 2) if args.quick else (args.rows, args.repeat)
    bin_dir = _bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="llmmeter-bench-pg-"))
    os.environ["XDG_DATA_HOME"] = str(root / "data")  # the spools and the feedback outbox
    os.environ["LLMMETER_BUDGET_REFRESH_S"] = "3600"  # reads only when measured
    cluster = PostgresCluster(bin_dir, root)
    try:
        cluster.init()
        cluster.start()
        print(report(cluster.new_database(), rows, repeat, root))
    finally:
        llmmeter.configure(store=None, pricing=None)
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def report(url: str, rows: int, repeat: int, root: Path) -> str:
    """Fill the store, measure, and return the table."""
    filled = _history(url, rows, root)
    budgets = [
        llmmeter.Budget(limit_usd="1e9", per="month", match={"team": "*"}, action="raise"),
        llmmeter.Budget(limit_usd="1e9", per="day", match={"user_id": "*"}, action="raise"),
    ]
    first = timed(lambda: _first_read(url, budgets, root), repeat)
    settings = llmmeter.configure(store=url, budgets=budgets)
    book = settings.budgets
    assert isinstance(book, BudgetBook) and book.refresh(600)
    idle = timed(lambda: book.refresh(600), repeat)
    added = [rows + 1]

    def after_thousand_more() -> float:
        fill(url, 1_000, added[0], history=False)
        added[0] += 1_000
        return timed(lambda: book.refresh(600), 1)

    incremental = statistics.median(after_thousand_more() for _ in range(repeat))
    attributes = {"team": "t1", "user_id": "u1"}
    between = _check_ns(book, attributes, settings)
    due = timed(lambda: _due_check(book, attributes, settings), repeat)
    assert book.refresh(600)
    spent = book.spent(budgets[0], {"team": "t1"})
    local = llmmeter.configure(store=None, budgets=budgets)
    assert local.budgets is not None
    without_store = _check_ns(local.budgets, attributes, local)
    lines = [
        f"## Fleet budgets: reading other processes' spend ({rows:,} rows this month; load {_load()})",
        "",
        "| what | wall |",
        "|---|---|",
        f"| fill: COPY {rows:,} rows and VACUUM (not llmmeter's cost) | {filled:.2f} s |",
        f"| a process's first read, from configure() (median of {repeat}) | {first * 1000:.1f} ms |",
        f"| a read with nothing new (median of {repeat}) | {idle * 1000:.1f} ms |",
        f"| a read after 1,000 new rows, each time (median of {repeat}) | {incremental * 1000:.1f} ms |",
        f"| caller's thread: check() of a covered call between reads | {between:.0f} ns |",
        f"| caller's thread: the same check(), no store | {without_store:.0f} ns |",
        f"| caller's thread: check() when a read is due (wakes the reading thread) | {due * 1e6:.1f} µs |",
        "",
        f"team t1's spend read: {spent} USD (expected {_expected(rows + 1_000 * repeat)})",
    ]
    return "\n".join(lines)


def _history(url: str, rows: int, root: Path) -> float:
    """The month's rows of another process, then VACUUM (as autovacuum would have); seconds."""
    import psycopg

    writer = PostgresStore(url, spool_dir=root / "other-host")  # creates the schema and partitions
    writer.write(
        CallRecord(
            operation="chat",
            provider="acme",
            timings=Timings(time.time_ns(), 0.1),
            cost=Cost(Decimal(0)),
            record_id="x.0",
        )
    )
    writer.close()
    began = time.perf_counter()
    fill(url, rows, 1, history=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE llmmeter.records")
    return time.perf_counter() - began


def _expected(rows: int) -> Decimal:
    """Team t1's spend: every 20th row (i % 20 == 1), 0.0125 USD each."""
    return sum((Decimal("0.0125") for i in range(1, rows + 1) if i % TEAMS == 1), Decimal(0))


def _first_read(url: str, budgets: list[llmmeter.Budget], root: Path) -> None:
    """A new process's books: from their making (as in configure()) to their first answered read."""
    store = PostgresStore(url, spool_dir=root / "reader")
    reader = BudgetBook(budgets, None, store)._store
    assert reader is not None
    while not getattr(reader, "reads", 0):
        time.sleep(0.001)
    store.close()


def _check_ns(book: BudgetBook, attributes: dict[str, str], settings: llmmeter.Settings) -> float:
    """Median ns of one ``check()`` of a covered call, over 3 runs of 100,000 calls."""
    calls = 100_000

    def many() -> None:
        for _ in range(calls):
            book.check(attributes, settings.telemetry)

    return timed(many, 3) / calls * 1e9


def _due_check(book: BudgetBook, attributes: dict[str, str], settings: llmmeter.Settings) -> None:
    reader = book._store
    assert reader is not None
    reader.due_at = 0.0
    book.check(attributes, settings.telemetry)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
