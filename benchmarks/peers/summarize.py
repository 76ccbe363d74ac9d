#!/usr/bin/env python3
# ruff: noqa  -- a copy of shared harness code, kept close to the original for diffing
# COPY of ../shared/bench-peers/summarize.py (shared project material), unchanged.
"""Aggregate overhead.py JSON lines (several interleaved rounds) into Markdown tables.

    python summarize.py results.jsonl [leak.jsonl ...] [--json summary.json]

For every (variant, scenario) it takes the median over rounds of each process's
µs/call (wall-clock mean from perf_counter_ns, the primary number; also the per-call
median and process CPU time).  Streaming cost per round is fitted as t(N) = a + b*N
over N in the run (1, 64, 512): b = µs per chunk, a = fixed µs per streaming call.
Overhead = median(variant) - median(baseline); ratio = median(variant) / median(baseline).
"paired" = median over rounds of (variant_r - baseline_r), with its min..max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict

METRICS = {
    "wall": "us_per_call_mean",
    "wall_median": "us_per_call_median",
    "wall_p10": "us_per_call_p10",
    "cpu": "cpu_us_per_call",
    "blockmin": "us_per_call_blockmin",
    "blockmed": "us_per_call_blockmed",
}
ORDER = ["baseline", "otel-v2", "openllmetry", "openinference", "langfuse", "openlit", "llmmeter"]


TTFT = ("time_to_first", "ttft", "first_token", "first_chunk", "first token", "completion_start")
TPOT = ("time_per_output", "tpot", "per_output_token", "per_output_chunk", "time_between", "generate")


def derive_features(rows):
    """TTFT / TPOT / cost signals per variant, from metric names and sampled spans."""
    names = defaultdict(set)
    for r in rows:
        if r.get("type") == "result" and r["scenario"] != "leak":
            names[r["variant"]].update(r.get("metrics", {}).keys())
            for sp in r.get("span_sample", []):
                names[r["variant"]].update(sp["attrs"])
                names[r["variant"]].update(sp["events"])
        elif r.get("type") == "features":
            names[r["variant"]].update(r.get("metric_names", []))
            names[r["variant"]].update(r.get("span_event_names", []))
    out = {}
    for v, ns in names.items():
        hit = lambda needles: sorted(x for x in ns if any(n in x.lower() for n in needles))  # noqa
        out[v] = {"ttft": hit(TTFT), "tpot": hit(TPOT), "cost": hit(("cost",))}
    return out


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    return rows


def fit(points):
    xs, ys = zip(*points)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=1, signed=False):
    if x is None:
        return "–"
    return f"{x:+.{nd}f}" if signed else f"{x:.{nd}f}"


def ab_table(ab, ab_ok, n, out):
    """In-process A/B rows: per process, the median over block pairs of (B - A)."""
    # per-chunk slope per round: fit A and B block medians over N, per mode
    derived = defaultdict(dict)
    for mode in ("sync", "async"):
        by_v_round = defaultdict(lambda: defaultdict(list))
        for (v, key), rounds in ab.items():
            if key.startswith(f"stream-{mode}-N"):
                for rnd, r in rounds.items():
                    by_v_round[v][rnd].append(r)
        for v, rounds in by_v_round.items():
            for rnd, rs in rounds.items():
                if len(rs) < 2:
                    continue
                a0, a1 = fit([(r["n_chunks"], r["A_us_median"]) for r in rs])
                b0, b1 = fit([(r["n_chunks"], r["B_us_median"]) for r in rs])
                d0, d1 = fit([(r["n_chunks"], r["delta_us_median"]) for r in rs])
                derived[(v, f"stream-{mode}-per-chunk")][rnd] = {
                    "delta_us_median": d1,
                    "A_us_median": a1,
                    "B_us_median": b1,
                    "ratio_median": b1 / a1 if a1 else None,
                }
                derived[(v, f"stream-{mode}-fixed")][rnd] = {
                    "delta_us_median": d0,
                    "A_us_median": a0,
                    "B_us_median": b0,
                    "ratio_median": None,
                }
    allrows = dict(ab)
    allrows.update(derived)
    variants = [v for v in ORDER if any(k[0] == v for k in allrows)]
    variants += sorted({k[0] for k in allrows} - set(variants))
    cols = [
        ("chat-sync", "non-stream sync"),
        ("chat-async", "non-stream async"),
        (f"stream-sync-N{n}", f"stream N={n} sync"),
        (f"stream-async-N{n}", f"stream N={n} async"),
        ("stream-sync-per-chunk", "per chunk sync"),
        ("stream-async-per-chunk", "per chunk async"),
        ("stream-sync-fixed", "stream fixed sync"),
        ("stream-async-fixed", "stream fixed async"),
        ("embed-sync", "embed sync"),
        ("embed-async", "embed async"),
    ]
    print(
        "## In-process A/B (paired blocks, instrumentation switched off/on in the same process)\n", file=out
    )
    print(
        "Δ µs = median over rounds of the per-process median of paired (B − A) block means; "
        "(×ratio) = median B / median A; [min..max] of Δ over rounds.\n",
        file=out,
    )
    print("| variant | " + " | ".join(c[1] for c in cols) + " | spans A=0, B=calls |", file=out)
    print("|---|" + "---:|" * len(cols) + "---|", file=out)
    base_cells = []
    for k, _ in cols:
        a = [r["A_us_median"] for (v, key), rr in allrows.items() if key == k for r in rr.values()]
        nd = 2 if "chunk" in k else 0
        base_cells.append(fmt(med(a), nd) if a else "–")
    print("| (A = uninstrumented, abs µs) | " + " | ".join(base_cells) + " | |", file=out)
    for v in variants:
        cells = []
        for k, _ in cols:
            rr = allrows.get((v, k))
            if not rr:
                cells.append("–")
                continue
            nd = 2 if "chunk" in k else 0
            d = [r["delta_us_median"] for r in rr.values()]
            ratios = [r["ratio_median"] for r in rr.values() if r.get("ratio_median")]
            ratio = f" (×{med(ratios):.2f})" if ratios else ""
            rng = f" [{fmt(min(d), nd, True)}..{fmt(max(d), nd, True)}]" if len(d) > 1 else ""
            cells.append(f"{fmt(med(d), nd, True)}{ratio}{rng}")
        print(f"| {v} | " + " | ".join(cells) + f" | {'yes' if ab_ok.get(v) else 'NO'} |", file=out)
    print(file=out)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--json", help="also write the aggregated numbers here")
    ap.add_argument("--stream-n", type=int, default=64, help="N shown as 'per streaming call'")
    args = ap.parse_args(argv)
    rows = load(args.files)

    # values[metric][(variant, key)][round] = value ; key = scenario label
    values = {m: defaultdict(dict) for m in METRICS}
    stream_pts = {m: defaultdict(lambda: defaultdict(list)) for m in METRICS}
    meta, features, leak, telemetry = {}, {}, {}, defaultdict(dict)
    ab, ab_ok = defaultdict(dict), {}
    for r in rows:
        t, v = r.get("type"), r.get("variant")
        if t == "meta":
            meta.setdefault(v, r)
        elif t == "features":
            features[v] = r
        elif t == "ab":
            key = r["scenario"] + (f"-N{r['n_chunks']}" if r["n_chunks"] is not None else "")
            ab[(v, key)][r["round"]] = r
            ab_ok[v] = ab_ok.get(v, True) and r["spans_ok"]
        elif t == "result" and r["scenario"] == "leak":
            leak[v] = r
        elif t == "result":
            key = r["scenario"] + (f"-N{r['n_chunks']}" if r["n_chunks"] is not None else "")
            for m, field in METRICS.items():
                if field not in r:
                    continue
                values[m][(v, key)][r["round"]] = r[field]
                if r["n_chunks"] is not None:
                    stream_pts[m][(v, r["mode"])][r["round"]].append((r["n_chunks"], r[field]))
            telemetry[v][key] = {
                "spans_per_call": r["spans"] / r["iters"],
                "spans_ok": r["spans_ok"],
                "log_records_per_call": r["log_records"] / r["iters"],
                "metrics": sorted(r["metrics"].keys()),
            }
    # streaming fits per round -> synthetic keys
    for m in METRICS:
        for (v, mode), by_round in stream_pts[m].items():
            for rnd, pts in by_round.items():
                if len({n for n, _ in pts}) >= 2:
                    a, b = fit(pts)
                    values[m][(v, f"stream-{mode}-per-chunk")][rnd] = b
                    values[m][(v, f"stream-{mode}-fixed")][rnd] = a

    derived_features = derive_features(rows)
    variants = [v for v in ORDER if any(k[0] == v for k in values["wall"]) or any(k[0] == v for k in ab)]
    variants += sorted({k[0] for k in values["wall"]} - set(variants))
    keys = sorted(
        {k[1] for k in values["wall"]}
        - {f"stream-{m}-{x}" for m in ("sync", "async") for x in ("per-chunk", "fixed")}
    )

    agg = {}
    for m in METRICS:
        for (v, key), by_round in values[m].items():
            base = values[m].get(("baseline", key), {})
            vm, bm = med(list(by_round.values())), med(list(base.values()))
            paired = [by_round[r] - base[r] for r in by_round if r in base]
            agg.setdefault(m, {}).setdefault(v, {})[key] = {
                "median": vm,
                "rounds": len(by_round),
                "min": min(by_round.values()),
                "max": max(by_round.values()),
                "overhead": (vm - bm) if bm is not None else None,
                "ratio": (vm / bm) if bm else None,
                "paired_median": med(paired),
                "paired_min": min(paired) if paired else None,
                "paired_max": max(paired) if paired else None,
            }

    out = sys.stdout
    n = args.stream_n
    some = next(iter(meta.values()), {})
    print("# openai client instrumentation overhead\n", file=out)
    print(
        f"openai {some.get('versions', {}).get('openai')}, http stack {some.get('http')}, "
        f"span/log processor: {some.get('processor')}, content capture: {some.get('capture')}, "
        f"python {some.get('python')}, {some.get('cpus')} CPUs; "
        f"separate-process rounds: {max((a['rounds'] for a in agg.get('wall', {}).get('baseline', {}).values()), default=0)}; "
        f"in-process A/B rounds: {max((len(x) for x in ab.values()), default=0)}\n",
        file=out,
    )

    def overhead_table(m, title):
        A = agg.get(m, {})
        print(f"## {title}\n", file=out)
        print("Δ = median(variant) − median(baseline) in µs; (×ratio).\n", file=out)
        cols = [
            ("chat-sync", "non-stream sync"),
            ("chat-async", "non-stream async"),
            (f"stream-sync-N{n}", f"stream N={n} sync"),
            (f"stream-async-N{n}", f"stream N={n} async"),
            ("stream-sync-per-chunk", "per chunk sync"),
            ("stream-async-per-chunk", "per chunk async"),
            ("stream-sync-fixed", "stream fixed sync"),
            ("stream-async-fixed", "stream fixed async"),
            ("embed-sync", "embed sync"),
            ("embed-async", "embed async"),
        ]
        cols = [c for c in cols if c[0] in keys or c[0].endswith(("per-chunk", "fixed"))]
        print("| variant | " + " | ".join(c[1] for c in cols) + " |", file=out)
        print("|---|" + "---:|" * len(cols), file=out)
        for v in variants:
            cells = []
            for k, _ in cols:
                a = A.get(v, {}).get(k)
                if a is None:
                    cells.append("–")
                elif v == "baseline":
                    cells.append(f"{fmt(a['median'], 2 if 'chunk' in k else 0)} (abs)")
                else:
                    nd = 2 if "chunk" in k else 0
                    ratio = f" (×{a['ratio']:.2f})" if a["ratio"] and "fixed" not in k else ""
                    cells.append(f"{fmt(a['overhead'], nd, True)}{ratio}")
            print(f"| {v} | " + " | ".join(cells) + " |", file=out)
        print(file=out)

    if agg:
        overhead_table(
            "wall", "Overhead per call — wall clock (perf_counter_ns, mean per process, median of rounds)"
        )
        overhead_table(
            "blockmin",
            "Overhead per call — fastest of 10 blocks per process (wall, least disturbed by other load)",
        )
        overhead_table("cpu", "Overhead per call — process CPU time (noise check; includes exporter threads)")
        overhead_table(
            "wall_median", "Overhead per call — per-call median wall time (robust to preemption spikes)"
        )
        overhead_table(
            "wall_p10", "Overhead per call — per-call 10th-percentile wall time (least disturbed calls)"
        )

    if agg:
        print("## Absolute µs/call (wall, median of rounds [min..max]) and paired Δ [min..max]\n", file=out)
        print("| variant | scenario | µs/call | range | paired Δ | paired range |", file=out)
        print("|---|---|---:|---:|---:|---:|", file=out)
        for v in variants:
            for k in keys + [
                "stream-sync-per-chunk",
                "stream-async-per-chunk",
                "stream-sync-fixed",
                "stream-async-fixed",
            ]:
                a = agg["wall"].get(v, {}).get(k)
                if not a:
                    continue
                nd = 2 if "chunk" in k else 0
                print(
                    f"| {v} | {k} | {fmt(a['median'], nd)} | {fmt(a['min'], nd)}..{fmt(a['max'], nd)}"
                    f" | {fmt(a['paired_median'], nd, True)} | "
                    f"{fmt(a['paired_min'], nd, True)}..{fmt(a['paired_max'], nd, True)} |",
                    file=out,
                )
        print(file=out)

    if ab:
        ab_table(ab, ab_ok, n, out)

    if leak:
        print("## Leak check (sync, alternating non-streaming / 8-chunk streaming calls)\n", file=out)
        print(
            "| variant | calls | peak RSS growth KiB | RSS growth 2nd half KiB | RSS marks KiB | spans ok |",
            file=out,
        )
        print("|---|---:|---:|---:|---|---|", file=out)
        for v in variants + sorted(set(leak) - set(variants)):
            r = leak.get(v)
            if not r:
                continue
            marks = " → ".join(str(x["rss_kib"]) for x in r["rss_marks"])
            print(
                f"| {v} | {r['iters']} | {r['peak_rss_growth_kib']} | "
                f"{r['rss_growth_second_half_kib']} | {r['rss_start_kib']} → {marks} | "
                f"{r['spans']}/{r['spans_expected']} {'✓' if r['spans_ok'] else '✗'} |",
                file=out,
            )
        print(file=out)

    print("## Telemetry actually produced\n", file=out)
    print(
        "| variant | spans/call (all scenarios ok?) | log records/call (chat-sync, stream N=64) | "
        "metrics | TTFT | TPOT | cost |",
        file=out,
    )
    print("|---|---|---|---|---|---|---|", file=out)
    for v in variants:
        tel = telemetry.get(v, {})
        if not tel:
            continue
        ok = all(t["spans_ok"] for t in tel.values())
        spc = sorted({round(t["spans_per_call"], 3) for t in tel.values()})
        lr = [tel.get(k, {}).get("log_records_per_call") for k in ("chat-sync", f"stream-sync-N{n}")]
        f = dict(features.get(v, {}))
        f.update(derived_features.get(v, {}))
        print(
            f"| {v} | {'/'.join(map(str, spc))} ({'yes' if ok else 'NO'}) | "
            f"{' / '.join(fmt(x, 2) for x in lr)} | {', '.join(f.get('metric_names', [])) or '–'} | "
            f"{', '.join(f.get('ttft', [])) or '–'} | {', '.join(f.get('tpot', [])) or '–'} | "
            f"{', '.join(f.get('cost', [])) or '–'} |",
            file=out,
        )
    print(file=out)

    print("## Versions\n", file=out)
    for v in variants:
        mm = meta.get(v, {})
        vers = ", ".join(f"{k} {x}" for k, x in mm.get("versions", {}).items() if x)
        print(
            f"- **{v}**: {vers}" + (f"; config: {json.dumps(mm.get('config'))}" if mm.get("config") else ""),
            file=out,
        )

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"agg": agg, "features": features, "leak": leak, "meta": meta, "telemetry": telemetry},
                f,
                indent=1,
                default=str,
            )


if __name__ == "__main__":
    main()
