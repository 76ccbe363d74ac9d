"""Durability of the local store (issue 12's targets): records lost to a burst, a kill, a locked
file, a fork and an odd record, and what the journal costs the caller.

Every scenario runs the writing application as a real subprocess (``llmmeter.configure(store=...)``
and ``@llmmeter.metered`` calls: the whole pipeline) and counts afterwards what is in the store:
first as that process left it, then after :func:`llmmeter.store.read_records` replayed the journals
of dead processes. "Lost" is the number of records whose call had returned and that are in neither.

    python benchmarks/durability.py            # full sizes (the 15 s lock makes it take ~1 min)
    python benchmarks/durability.py --quick    # tiny sizes, seconds

The journal's cost per record is counted with callgrind (``_bench.callgrind_segments``: K and 2K
``journal()`` calls, the difference divided by K, so fixed costs cancel; the store's writer thread is
not started, so only the caller's work is counted) and timed in µs (median of blocks).
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench

QUICK = "--quick" in sys.argv
K = 200 if QUICK else 2_000

APP = textwrap.dedent(
    """
    import json, os, resource, signal, sys, time
    import llmmeter

    path, count, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    llmmeter.configure(store=path)

    @llmmeter.metered(name="job", provider="openai", model="gpt-4o-mini")
    def job(i):
        return i

    started = time.perf_counter()
    for i in range(count):
        job(i)
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate": count / seconds, "rss_mb": rss_mb}), flush=True)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    elif how == "os_exit":
        os._exit(0)
    elif how == "flush":
        print(json.dumps({"flushed": llmmeter.flush(120)}), flush=True)
    # "exit": a normal interpreter exit, no flush()
    """
)

STORE_BURST = textwrap.dedent(
    """
    import json, resource, sys, time
    from llmmeter.record import CallRecord, Timings, Usage
    from llmmeter.store import SQLiteStore

    path, count = sys.argv[1], int(sys.argv[2])
    store = SQLiteStore(path)
    records = [CallRecord(operation="chat", provider="openai", request_model="gpt-4o-mini",
                          timings=Timings(start_time_unix_ns=time.time_ns(), duration_s=0.3),
                          usage=Usage(input_tokens=100, output_tokens=20)) for _ in range(count)]
    started = time.perf_counter()
    for record in records:
        store.journal(record)  # what the pipeline does on the caller's thread
        store.accept(record)   # and on its own thread
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate": count / seconds, "rss_mb": rss_mb, "spilled": store.stats.spilled}), flush=True)
    # a normal exit, no flush(): the exit hook has 2 s, the journal keeps the rest
    """
)

LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    """
)

FORKING_APP = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import llmmeter

    path, child_count = sys.argv[1], int(sys.argv[2])
    llmmeter.configure(store=path)

    @llmmeter.metered(name="job", provider="openai", model="gpt-4o-mini")
    def job(i):
        return i

    def burst(count):
        for i in range(count):
            job(i)

    burst(500)
    llmmeter.flush(10)
    busy = threading.Thread(target=burst, args=(20_000,))
    busy.start()
    time.sleep(0.2)  # the parent's pipeline and writer are busy
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        burst(child_count)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    child_seconds = time.monotonic() - started
    busy.join()
    print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status), "child_seconds": child_seconds,
                      "flushed": llmmeter.flush(60)}), flush=True)
    """
)


def run(script: str, *args: str, timeout: float = 600) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the application printed nothing (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode, lines


def rows(path: Path) -> int:
    """Rows in SQLite as the processes left it (no replay)."""
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])


def after_replay(path: Path) -> tuple[int, int]:
    """(records, distinct record ids) after read_records replayed the dead processes' journals."""
    from llmmeter.store import read_records

    records = read_records(path)
    return len(records), len({r.record_id for r in records})


def scenario_app(directory: Path, name: str, count: int, how: str, script: str = APP) -> dict[str, Any]:
    path = directory / f"{len(list(directory.iterdir()))}.sqlite3"
    code, lines = run(script, str(path), str(count), how)
    left = rows(path)
    total, distinct = after_replay(path)
    return {
        "scenario": name,
        "handed": count,
        "rate": lines[0]["rate"],
        "rss_mb": lines[0]["rss_mb"],
        "exit": code,
        "in_sqlite_at_exit": left,
        "after_replay": total,
        "duplicates": total - distinct,
        "lost": count - distinct,
    }


def scenario_lock(directory: Path, count: int, seconds: float) -> dict[str, Any]:
    path = directory / "locked.sqlite3"
    run(APP, str(path), "1", "flush")  # the store exists, in WAL mode
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    code, lines = run(APP, str(path), str(count), "flush")
    holder.wait(seconds + 30)
    left = rows(path) - 1
    total, distinct = after_replay(path)
    return {
        "scenario": f"{seconds:g} s exclusive lock by another process",
        "handed": count,
        "rate": lines[0]["rate"],
        "rss_mb": lines[0]["rss_mb"],
        "exit": code,
        "in_sqlite_at_exit": left,
        "after_replay": total - 1,
        "duplicates": total - distinct,
        "lost": count - (distinct - 1),
        "note": f"flush(120) -> {lines[1]['flushed']} after {time.monotonic() - started:.1f} s",
    }


def scenario_fork(directory: Path, child_count: int) -> dict[str, Any]:
    path = directory / "fork.sqlite3"
    code, lines = run(FORKING_APP, str(path), str(child_count))
    outcome = lines[-1]
    from llmmeter.store import read_records

    records = read_records(path)
    # The child's @metered calls are the ones beyond the parent's 500 + 20,000.
    distinct = len({r.record_id for r in records})
    child = distinct - 20_500
    return {
        "child_count": child_count,
        "child_written": child,
        "duplicates": len(records) - distinct,
        "child_seconds": outcome["child_seconds"],
        "child_exit": outcome["child_exit"],
        "exit": code,
    }


def scenario_odd_record(directory: Path) -> dict[str, Any]:
    from llmmeter.record import CallRecord, Timings, Usage
    from llmmeter.store import SQLiteStore, read_records

    path = directory / "odd.sqlite3"
    store = SQLiteStore(path)
    batch = [
        CallRecord(operation="chat", provider="openai", name=f"r{i}", timings=Timings(start_time_unix_ns=i))
        for i in range(300)
    ]
    batch[1].usage = Usage(input_tokens=2**64 + 1)
    batch[2].request_model = "gpt-\ud800"
    batch[3].response_id = "a\x00b"
    batch[4].error_type = "x" * 200_000
    batch[5].timings = Timings(start_time_unix_ns=None)  # type: ignore[arg-type]  # refused: NOT NULL
    for record in batch:
        store.write(record)
    store.close(30)
    return {"batch": 300, "written": len(read_records(path)), "quarantined": store.stats.quarantined}


# --- the journal's cost on the caller's thread ----------------------------------------------------
def _records(count: int) -> list[Any]:
    from llmmeter.record import CallRecord, Cost, CostStatus, Timings, Usage

    return [
        CallRecord(
            operation="chat",
            provider="openai",
            request_model="gpt-4o-mini",
            response_model="gpt-4o-mini-2024-07-18",
            server_address="api.openai.com",
            server_port=443,
            timings=Timings(start_time_unix_ns=time.time_ns(), duration_s=0.412, ttft_s=0.2, chunks=None),
            usage=Usage(input_tokens=1200, output_tokens=350, cache_read_input_tokens=1024),
            cost=Cost(amount=__import__("decimal").Decimal("0.000399"), price_ref="openai/gpt-4o-mini"),
            cost_status=CostStatus.PRICED,
            response_id="chatcmpl-Bx9d2kPq0aZ",
            finish_reasons=("stop",),
            request_params={"gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 512},
            attributes={"user_id": "u-17", "feature": "search"},
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
        )
        for _ in range(count)
    ]


def journal_child() -> None:
    """Under callgrind: K and 2K journal() calls on prepared records; and new_record_id()."""
    from llmmeter.record import new_record_id
    from llmmeter.store import SQLiteStore

    segments = _bench.Segments(enabled=True)
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "cost.sqlite3", segment_records=10**9)
        for record in _records(50):
            store.journal(record)
        for m in (K, 2 * K):
            records = _records(m)
            with segments.measure(f"journal@{m}"):
                for record in records:
                    store.journal(record)
        for m in (K, 2 * K):
            with segments.measure(f"record_id@{m}"):
                for _ in range(m):
                    new_record_id()
        store._journal.release()


def journal_microseconds(sync: bool) -> float:
    from llmmeter.store import SQLiteStore

    blocks = []
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "cost.sqlite3", sync_journal=sync, segment_records=10**9)
        size = 50 if sync else 1_000
        for _ in range(5 if QUICK else 15):
            records = _records(size)
            started = time.perf_counter()
            for record in records:
                store.journal(record)
            blocks.append((time.perf_counter() - started) / size * 1e6)
        store._journal.release()
    return statistics.median(blocks)


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        journal_child()
        return 0
    sizes = (
        {"burst": 2_000, "kill": 500, "lock": 500, "lock_s": 2.0, "fork": 100}
        if QUICK
        else {"burst": 20_000, "kill": 5_000, "lock": 5_000, "lock_s": 15.0, "fork": 500}
    )
    with tempfile.TemporaryDirectory(prefix="llmmeter-durability-") as tmp:
        directory = Path(tmp)
        results = [
            scenario_app(
                directory, "burst of @metered calls, normal exit (no flush)", sizes["burst"], "exit"
            ),
            scenario_app(
                directory, "burst straight into the store, normal exit", sizes["burst"], "-", STORE_BURST
            ),
        ]
        for how in ("sigkill", "os_exit", "sigterm"):
            results.append(
                scenario_app(directory, f"{how} right after the calls returned", sizes["kill"], how)
            )
        results.append(scenario_lock(directory, sizes["lock"], sizes["lock_s"]))
        fork = scenario_fork(directory, sizes["fork"])
        odd = scenario_odd_record(directory)

    print("## Durability: records lost (issue 12 targets: 0)\n")
    print(f"{_bench.machine_line()}\n")
    headers = [
        "scenario",
        "handed in",
        "calls/s",
        "peak RSS MB",
        "in SQLite when it died/exited",
        "after replay",
        "duplicates",
        "lost",
    ]
    table_rows = [
        [
            r["scenario"],
            f"{r['handed']:,}",
            f"{r['rate']:,.0f}",
            f"{r['rss_mb']:.0f}",
            f"{r['in_sqlite_at_exit']:,}",
            f"{r['after_replay']:,}",
            str(r["duplicates"]),
            str(r["lost"]),
        ]
        for r in results
    ]
    print(_bench.table(headers, table_rows))
    for r in results:
        if "note" in r:
            print(f"\n{r['scenario']}: {r['note']}")
    print(
        f"\nfork() while the parent's pipeline and writer are busy: child wrote {fork['child_written']} of "
        f"{fork['child_count']}, {fork['duplicates']} duplicates, child exited (code {fork['child_exit']}) "
        f"{fork['child_seconds']:.2f} s after the fork"
    )
    print(
        f"\none odd record (2^64+1 tokens, a lone surrogate, NUL, 200k chars, and one the database refuses) "
        f"in a batch of {odd['batch']}: {odd['written']} written, {odd['quarantined']} quarantined, "
        f"{odd['batch'] - odd['written'] - odd['quarantined']} lost"
    )

    print("\n## The journal's cost on the caller's thread\n")
    if _bench.valgrind_available():
        counts = _bench.callgrind_segments(
            _bench.self_command(Path(__file__), "--child", *(["--quick"] if QUICK else []))
        )
        journal_instr = _bench.per_call(counts, "journal", K)
        id_instr = _bench.per_call(counts, "record_id", K)
        instr = [f"{journal_instr:,.0f}", f"{id_instr:,.0f}"]
    else:
        instr = ["(valgrind not found)", "-"]
    rows_ = [
        [
            "journal(record): one os.write(), no fsync (the default)",
            instr[0],
            f"{journal_microseconds(False):.1f}",
        ],
        [
            "journal(record) with sync_journal=True (fsync per record)",
            "-",
            f"{journal_microseconds(True):.0f}",
        ],
        ["new_record_id() (in CallRecord's construction)", instr[1], "-"],
    ]
    print(_bench.table(["per record", "instructions", "µs (median)"], rows_))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
