#!/usr/bin/env python3
"""Instructions each instrumentation adds per openai call and per streamed chunk (callgrind).

Not part of the shared harness: llmmeter's driver for ``overhead.py --count``. For every variant
it runs one ``overhead.py --variant V --count`` process under
``valgrind --tool=callgrind --dump-before=os_getsid`` and reads the instruction count of every
A/B block; per scenario, instructions per call = (I(2K) - I(K)) / K for A (instrumentation
switched off) and B (on), added = B - A. Per chunk: the slope of the added count between the
N=1 and N=64 streams. Instruction counts do not depend on the machine's load, so one run each
is enough (they vary by well under 1 % between runs).

    PY=$PEERS_VENV/bin/python python benchmarks/peers/count_instructions.py \\
        --variants "otel-v2 openllmetry llmmeter" [--jobs 2] [--out benchmarks/results/x]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import _bench  # noqa: E402

SCENARIOS = [
    ("chat-sync", "non-stream sync"),
    ("chat-async", "non-stream async"),
    ("embed-sync", "embed sync"),
    ("stream-sync/1", "stream N=1 sync"),
    ("stream-sync/64", "stream N=64 sync"),
    ("stream-async/1", "stream N=1 async"),
    ("stream-async/64", "stream N=64 async"),
]


def count(py: str, variant: str, plan: str, extra: list[str]) -> dict:
    argv = [py, str(HERE / "overhead.py"), "--variant", variant, "--count", "--count-plan", plan, *extra]
    counts = _bench.callgrind_segments(argv)
    ks = {item.split(":")[0]: int(item.split(":")[1]) for item in plan.split(",") if item}
    out = {}
    for scen, k in ks.items():
        a = _bench.per_call(counts, f"{scen}/A", k)
        b = _bench.per_call(counts, f"{scen}/B", k)
        out[scen] = {"A": a, "B": b, "delta": b - a, "k": k}
    for mode in ("sync", "async"):
        one, many = out.get(f"stream-{mode}/1"), out.get(f"stream-{mode}/64")
        if one and many:
            out[f"stream-{mode}/per-chunk"] = {
                "A": (many["A"] - one["A"]) / 63,
                "B": (many["B"] - one["B"]) / 63,
                "delta": (many["delta"] - one["delta"]) / 63,
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="otel-v2 openllmetry llmmeter")
    ap.add_argument("--plan", default=None, help="overhead.py --count-plan (default: its own)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=None, help="folder for counts.json and counts.md")
    ap.add_argument("--extra", default="", help="extra overhead.py flags")
    args = ap.parse_args()
    if not _bench.valgrind_available():
        print("valgrind not found: apt-get update && apt-get install -y valgrind", file=sys.stderr)
        return 2
    py = os.environ.get("PY", sys.executable)
    plan = args.plan
    if plan is None:
        sys.path.insert(0, str(HERE))
        import overhead

        plan = overhead.COUNT_PLAN
    variants = args.variants.split()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {v: pool.submit(count, py, v, plan, args.extra.split()) for v in variants}
        results = {v: f.result() for v, f in futures.items()}
    cols = [
        *SCENARIOS,
        ("stream-sync/per-chunk", "per chunk sync"),
        ("stream-async/per-chunk", "per chunk async"),
    ]
    any_variant = next(iter(results.values()))
    cols = [c for c in cols if c[0] in any_variant]
    rows = [["(A = uninstrumented, instr/call)"] + [f"{any_variant[k]['A']:,.0f}" for k, _ in cols]]
    for v, res in results.items():
        rows.append([v] + [f"{res[k]['delta']:+,.0f} (×{res[k]['B'] / res[k]['A']:.3f})" for k, _ in cols])
    text = (
        "## Instructions added per call / per chunk (callgrind, in-process A/B)\n\n"
        f"{_bench.machine_line()}; plan {plan}; Δ = B - A instructions, (×ratio B/A)\n\n"
        + _bench.table(["variant", *(c[1] for c in cols)], rows)
        + "\n"
    )
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "counts.json").write_text(json.dumps(results, indent=1))
        (out / "counts.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
