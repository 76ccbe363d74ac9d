#!/usr/bin/env python3
"""CPU overhead that ``@llmmeter.metered`` adds to a trivial function.

Spans (TracerProvider + BatchSpanProcessor into a counting exporter) and metrics (MeterProvider
+ InMemoryMetricReader) on, local store off, bundled pricing on. Variants, each A = the plain
function, B = the same function decorated:

* ``sync-llm``   ``@metered(model="gpt-4o-mini", provider="openai")`` on a function returning an
  OpenAI-style response dict with usage: one LLM record (span, 9 metric points, priced);
* ``async-llm``  the same on an ``async def``;
* ``sync-step``  ``@metered(name=...)`` on a function returning an int: one step span, no metrics;
* ``rollup``     a ``@metered(name=...)`` step calling three ``@metered(model=...)`` calls: four
  records per call, the step span carrying the rolled-up tokens and cost.

Reported: µs added per call (median over interleaved A/B block pairs of B - A), process CPU and
wall clock; with ``--callgrind`` also instructions added per call (valgrind, K vs 2K calls).

    python benchmarks/metered_overhead.py                 # A/B timing
    python benchmarks/metered_overhead.py --callgrind     # + instruction counts
    python benchmarks/metered_overhead.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench

RESPONSE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 52,
        "completion_tokens": 88,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 32},
        "completion_tokens_details": {"reasoning_tokens": 16},
    },
}
VARIANTS = ("sync-llm", "async-llm", "sync-step", "rollup")
RECORDS_PER_CALL = {"sync-llm": 1, "async-llm": 1, "sync-step": 1, "rollup": 4}


def build_variants() -> dict[str, tuple[Callable[[int], None], Callable[[int], None]]]:
    """For every variant: (run m plain calls, run m decorated calls)."""
    import llmmeter

    def llm_call(x: int) -> dict[str, Any]:
        return RESPONSE

    async def allm_call(x: int) -> dict[str, Any]:
        return RESPONSE

    def step(x: int) -> int:
        return x + 1

    metered_llm = llmmeter.metered(model="gpt-4o-mini", provider="openai")(llm_call)
    metered_allm = llmmeter.metered(model="gpt-4o-mini", provider="openai")(allm_call)
    metered_step = llmmeter.metered(name="trivial-step")(step)

    def agent(x: int) -> int:
        for i in range(3):
            llm_call(x + i)
        return x

    @llmmeter.metered(name="agent-step")
    def metered_agent(x: int) -> int:
        for i in range(3):
            metered_llm(x + i)
        return x

    loop = asyncio.new_event_loop()

    def sync_runner(fn: Callable[[int], Any]) -> Callable[[int], None]:
        def run(m: int) -> None:
            for i in range(m):
                fn(i)

        return run

    def async_runner(fn: Callable[[int], Any]) -> Callable[[int], None]:
        async def calls(m: int) -> None:
            for i in range(m):
                await fn(i)

        def run(m: int) -> None:
            loop.run_until_complete(calls(m))

        return run

    return {
        "sync-llm": (sync_runner(llm_call), sync_runner(metered_llm)),
        "async-llm": (async_runner(allm_call), async_runner(metered_allm)),
        "sync-step": (sync_runner(step), sync_runner(metered_step)),
        "rollup": (sync_runner(agent), sync_runner(metered_agent)),
    }


def run_timing(args: argparse.Namespace) -> None:
    telemetry = _bench.make_telemetry()
    pricing = _bench.configure_llmmeter(telemetry)
    variants = build_variants()
    rows = []
    for name in VARIANTS:
        run_a, run_b = variants[name]
        res = _bench.ab_blocks(
            run_a, run_b, calls_per_block=args.calls, pairs=args.pairs, telemetry=telemetry
        )
        expected = args.pairs * args.calls * RECORDS_PER_CALL[name]
        if res.spans_a != 0 or res.spans_b != expected:
            raise SystemExit(f"{name}: spans A={res.spans_a} B={res.spans_b}, expected 0 / {expected}")
        s = res.summary()
        rows.append(
            [
                name,
                _bench.fmt(s["cpu_a"], 2),
                _bench.fmt(s["cpu_b"], 1),
                _bench.fmt(s["cpu_delta"], 1, True),
                _bench.fmt(s["wall_delta"], 1, True),
                _bench.fmt(s["cpu_delta"] / RECORDS_PER_CALL[name], 1, True),
            ]
        )
    print("## @llmmeter.metered: µs added per call (in-process A/B)\n")
    print(
        f"{_bench.machine_line()}; spans + metrics on (batch span processor), store off, {pricing}; "
        f"{args.pairs} A/B block pairs of {args.calls} calls; medians of paired (B - A)\n"
    )
    print(
        _bench.table(
            [
                "variant",
                "A µs/call (cpu)",
                "B µs/call (cpu)",
                "Δ cpu µs/call",
                "Δ wall µs/call",
                "Δ cpu µs/record",
            ],
            rows,
        )
    )
    print()
    telemetry.shutdown()


def run_callgrind_child(args: argparse.Namespace) -> None:
    telemetry = _bench.make_telemetry()
    _bench.configure_llmmeter(telemetry)
    variants = build_variants()
    segments = _bench.Segments(enabled=True)
    k = args.k
    for name in VARIANTS:
        run_a, run_b = variants[name]
        _bench.count_ab(segments, name, run_a, run_b, k, telemetry, warmup=20)
    telemetry.shutdown()


def run_callgrind(args: argparse.Namespace) -> None:
    if not _bench.valgrind_available():
        print("valgrind not found: apt-get update && apt-get install -y valgrind")
        return
    command = _bench.self_command(Path(__file__), "--callgrind-child", "--k", str(args.k))
    counts = _bench.callgrind_segments(command)
    rows = []
    for name in VARIANTS:
        a = _bench.per_call(counts, f"{name}/A", args.k)
        b = _bench.per_call(counts, f"{name}/B", args.k)
        per_record = (b - a) / RECORDS_PER_CALL[name]
        rows.append([name, f"{a:,.0f}", f"{b:,.0f}", f"{b - a:+,.0f}", f"{per_record:+,.0f}"])
    print("## @llmmeter.metered: instructions added per call (callgrind)\n")
    print(
        f"{_bench.machine_line()}; (I(2K) - I(K)) / K with K = {args.k}, one process, segments "
        "split by --dump-before markers; exporter-thread instructions included\n"
    )
    print(_bench.table(["variant", "A instr/call", "B instr/call", "Δ instr/call", "Δ instr/record"], rows))
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per block")
    ap.add_argument("--pairs", type=int, default=10, help="A/B block pairs")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions with valgrind")
    ap.add_argument("--no-timing", action="store_true", help="skip the A/B timing")
    ap.add_argument("--k", type=int, default=200, help="calls per callgrind segment (K vs 2K)")
    ap.add_argument("--quick", action="store_true", help="smoke run: a few calls, no valgrind")
    ap.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.callgrind_child:
        run_callgrind_child(args)
        return 0
    if args.quick:
        args.calls, args.pairs, args.callgrind = 20, 2, False
    if not args.no_timing:
        run_timing(args)
    if args.callgrind:
        run_callgrind(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
