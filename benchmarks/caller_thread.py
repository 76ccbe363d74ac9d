"""What llmmeter costs the caller's thread, and all threads together, per call (callgrind).

Since the record pipeline (issue 12), a finished call's span end, metric points, store write and
``on_record`` callbacks run on llmmeter's pipeline thread; the caller's thread keeps the clock,
the span start, the record, pricing, the roll-up and the queueing. This benchmark counts both
sides with callgrind: with ``--separate-threads=yes`` a dump triggered on the caller's thread
holds the caller's thread's instructions alone; a second run without it sums every thread (the
pipeline thread, the span processor's, the store's writer), as the other benchmarks do.

Configurations, each with spans (SDK TracerProvider, BatchSpanProcessor), metrics (SDK
MeterProvider, InMemoryMetricReader), bundled pricing and the local SQLite store on:

* ``pipeline``: the default; then the same with pricing off, and with the store off (its journal
  is written on the caller's thread), to show their shares;
* ``all on the caller``: the pipeline's queue bound set to 0, so every record's work runs on the
  caller's thread, as before the pipeline (the same code, for a same-run comparison).

Every segment ends by draining the pipeline and flushing the spans, so the background threads'
work for the segment's calls is inside it. Per call = (I(2K) - I(K)) / K; per chunk = the slope
between 1- and 64-chunk streams.

    python benchmarks/caller_thread.py            # needs valgrind; prints a Markdown table
    python benchmarks/caller_thread.py --quick    # the default configuration, chat calls, caller's
                                                  # thread only (≈ 3 min: for trying a change)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _bench

K = {"chat-sync": 30, "stream-sync/1": 30, "stream-sync/64": 10}
CONFIGS: dict[str, dict[str, object]] = {
    "pipeline": {},
    "pipeline, pricing off": {"pricing": None},
    "pipeline, store off": {"store": None},
    "all on the caller (as before the pipeline)": {},
}
_ALL_ON_THE_CALLER = "all on the caller (as before the pipeline)"
_DUMP = re.compile(r"\.(\d+)-01$")


def child(quick: bool = False) -> None:
    from openai_overhead import Clients, peers

    import llmmeter
    from llmmeter.pipeline import get_pipeline

    telemetry = _bench.make_telemetry()
    clients = Clients()
    segments = _bench.Segments(enabled=True)
    with tempfile.TemporaryDirectory(prefix="llmmeter-bench-store-") as tmp:
        for index, (config, overrides) in enumerate(_configs(quick).items()):
            settings: dict[str, object] = {
                "tracer_provider": telemetry.tracer_provider,
                "meter_provider": telemetry.meter_provider,
                "store": Path(tmp) / f"store-{index}.sqlite3",
                **overrides,
            }
            llmmeter.configure(**settings)  # type: ignore[arg-type]
            get_pipeline().max_queue = 0 if config == _ALL_ON_THE_CALLER else 10_000
            for scenario, k in _scenarios(quick).items():
                name, _, chunks = scenario.partition("/")
                if chunks:
                    clients.server.stream_events = peers.build_sse_events(int(chunks))
                run_a, run_b = clients.runner(clients.a, name), clients.runner(clients.b, name)
                _bench.count_ab(segments, f"{config}|{scenario}", run_a, run_b, k, telemetry, warmup=3)
                assert llmmeter.flush(timeout=60)
        get_pipeline().max_queue = 10_000
        clients.close()
        telemetry.shutdown()


def _configs(quick: bool) -> dict[str, dict[str, object]]:
    return {"pipeline": {}} if quick else CONFIGS


def _scenarios(quick: bool) -> dict[str, int]:
    return {"chat-sync": K["chat-sync"]} if quick else K


def quick_run(argv: list[str]) -> int:
    """The caller's thread's Δ per chat call in the default configuration only."""
    counts = caller_counts([*argv, "--quick"])
    k = K["chat-sync"]
    delta = per_call(counts, "pipeline|chat-sync/B", k) - per_call(counts, "pipeline|chat-sync/A", k)
    print(f"chat-sync, pipeline (the default): Δ caller's thread {delta:+,.0f} instructions per call")
    return 0


def caller_counts(argv: list[str]) -> dict[str, int]:
    """Run ``argv`` under callgrind with one profile per thread; {segment label: instructions of
    the caller's thread}. A dump triggered on the caller's thread holds that thread's counters
    only (the others accumulate until they dump themselves), hence a second run for the totals."""
    with tempfile.TemporaryDirectory(prefix="llmmeter-callgrind-") as tmp:
        out = Path(tmp) / "cg.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            f"--dump-before={_bench.MARKER_FUNCTION}",
            *argv,
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=7200, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"callgrind run failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
        segment_lines = [line for line in proc.stdout.splitlines() if line.startswith('{"type": "segment"')]
        labels = [json.loads(line)["label"] for line in segment_lines]
        by_dump: dict[int, int] = {}
        for path in Path(tmp).glob("cg.out.*-01"):
            match = _DUMP.search(path.name)
            if match:
                by_dump[int(match[1])] = _bench._total_instructions(path)
        dumps = [by_dump[n] for n in sorted(by_dump)]
        if len(dumps) < 2 * len(labels):
            raise RuntimeError(f"expected {2 * len(labels)} dumps, got {len(dumps)}")
        return {label: dumps[2 * i + 1] for i, label in enumerate(labels)}


def per_call(counts: dict[str, int], label: str, k: int) -> float:
    return (counts[f"{label}@{2 * k}"] - counts[f"{label}@{k}"]) / k


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(quick="--quick" in sys.argv)
        return 0
    if not _bench.valgrind_available():
        print("valgrind not found: apt-get update && apt-get install -y valgrind")
        return 1
    argv = _bench.self_command(Path(__file__), "--child")
    if "--quick" in sys.argv:
        return quick_run(argv)
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two valgrind runs side by side
        caller_run = pool.submit(caller_counts, argv)
        total_run = pool.submit(_bench.callgrind_segments, argv)
        counts = {True: caller_run.result(), False: total_run.result()}
    rows = []
    for config in CONFIGS:
        delta: dict[tuple[str, bool], float] = {}
        for scenario, k in K.items():
            for caller_only in (True, False):
                a = per_call(counts[caller_only], f"{config}|{scenario}/A", k)
                b = per_call(counts[caller_only], f"{config}|{scenario}/B", k)
                delta[scenario, caller_only] = b - a
        per_chunk = {
            caller_only: (delta["stream-sync/64", caller_only] - delta["stream-sync/1", caller_only]) / 63
            for caller_only in (True, False)
        }
        rows.append(
            [
                config,
                f"{delta['chat-sync', True]:+,.0f}",
                f"{delta['chat-sync', False]:+,.0f}",
                f"{delta['stream-sync/1', True]:+,.0f}",
                f"{delta['stream-sync/1', False]:+,.0f}",
                f"{per_chunk[True]:+,.0f}",
                f"{per_chunk[False]:+,.0f}",
            ]
        )
    print("## Instructions llmmeter adds: the caller's thread and all threads (callgrind)\n")
    print(f"{_bench.machine_line()}; spans, metrics, pricing and the SQLite store on; K = {K}\n")
    headers = [
        "configuration",
        "chat Δ caller",
        "chat Δ all threads",
        "1-chunk stream Δ caller",
        "1-chunk stream Δ all",
        "per chunk Δ caller",
        "per chunk Δ all",
    ]
    print(_bench.table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
