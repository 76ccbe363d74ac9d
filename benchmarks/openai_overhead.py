#!/usr/bin/env python3
"""CPU overhead llmmeter adds to the ``openai`` client, per call and per streamed chunk.

The client talks to an in-memory transport (``httpx2.MockTransport``; the request/response data of
``benchmarks/peers/overhead.py``, imported from there so both benchmarks measure the same thing):
a chat completion with usage incl. cached and reasoning tokens, an SSE stream of N content chunks
+ finish chunk + usage chunk + ``[DONE]``, and an embeddings response. No network.

A = a plain ``openai.OpenAI`` / ``AsyncOpenAI``; B = a second client on the same transport passed
through ``llmmeter.instrument(...)``. llmmeter: spans (TracerProvider + BatchSpanProcessor into a
counting exporter) and metrics (MeterProvider + InMemoryMetricReader) on, store off, bundled
pricing on. Blocks of calls alternate A B B A ... in one process (medians of the paired B - A).

Reported:
  (a) µs added per call (process CPU and wall), per scenario, and per chunk: the slope b of
      t(N) = a + b·N fitted over N = 1, 64, 512;
  (b) with ``--callgrind``: instructions added per call and per chunk (valgrind, one process,
      blocks of K and 2K calls, (I(2K) - I(K)) / K).

    python benchmarks/openai_overhead.py                   # A/B timing
    python benchmarks/openai_overhead.py --callgrind       # + instruction counts
    python benchmarks/openai_overhead.py --quick           # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import _bench  # noqa: E402
import overhead as peers  # noqa: E402  (benchmarks/peers/overhead.py: the shared scenario data)

TARGET_CALL_US = 50.0
TARGET_CHUNK_US = 1.0
TARGET_RATIO = 1.03
CHUNKS = (1, 64, 512)
# calls per callgrind segment K (blocks of K and 2K), per scenario; only these N are counted
CALLGRIND_K = {"chat": 4, "embed": 4, 1: 4, 64: 2}


def block_calls(scenario: str, n: int | None) -> int:
    """Calls per timed block, as in the peers harness (an N=512 stream takes ~0.1 s)."""
    if n is None:
        return 100 if scenario.startswith("chat") else 50
    return {1: 100, 64: 25}.get(n, max(1, 2048 // n))


class Clients:
    """Plain (A) and instrumented (B) sync/async clients over one in-memory server."""

    def __init__(self) -> None:
        import openai

        import llmmeter

        _, hx = peers.http_module("auto")
        self.server = peers.MockServer(hx)
        common: dict[str, Any] = dict(api_key="sk-bench", base_url="https://api.openai.com/v1", max_retries=0)

        async def ahandle(request: Any) -> Any:
            return self.server.handle(request)

        def pair() -> tuple[Any, Any]:
            sync = openai.OpenAI(
                http_client=hx.Client(transport=hx.MockTransport(self.server.handle)), **common
            )
            async_ = openai.AsyncOpenAI(
                http_client=hx.AsyncClient(transport=hx.MockTransport(ahandle)), **common
            )
            return sync, async_

        self._raw = pair()
        self._measured = tuple(llmmeter.instrument(c) for c in pair())
        self.a = peers.make_calls(*self._raw)
        self.b = peers.make_calls(*self._measured)
        self.loop = asyncio.new_event_loop()

    def runner(self, calls: dict[str, Callable[[], Any]], scenario: str) -> Callable[[int], None]:
        fn = calls[scenario]
        if scenario.endswith("-async"):

            async def many(m: int) -> None:
                for _ in range(m):
                    await fn()

            def run_async(m: int) -> None:
                self.loop.run_until_complete(many(m))

            return run_async

        def run(m: int) -> None:
            for _ in range(m):
                fn()

        return run

    def close(self) -> None:
        for client in (self._raw[0], self._measured[0]):
            client.close()
        for client in (self._raw[1], self._measured[1]):
            self.loop.run_until_complete(client.close())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def plan(chunks: tuple[int, ...]) -> list[tuple[str, int | None]]:
    """(scenario, N) in the order they run."""
    out: list[tuple[str, int | None]] = [("chat-sync", None), ("chat-async", None)]
    out += [(f"stream-{mode}", n) for mode in ("sync", "async") for n in chunks]
    out += [("embed-sync", None), ("embed-async", None)]
    return out


def _key(scenario: str, n: int | None) -> str:
    return f"{scenario}/{n}" if n is not None else scenario


def run_timing(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    telemetry = _bench.make_telemetry()
    pricing = _bench.configure_llmmeter(telemetry)
    clients = Clients()
    results: dict[str, dict[str, float]] = {}
    for scenario, n in plan(args.chunks):
        if n is not None:
            clients.server.stream_events = peers.build_sse_events(n)
        m = max(1, int(block_calls(scenario, n) * args.scale))
        res = _bench.ab_blocks(
            clients.runner(clients.a, scenario),
            clients.runner(clients.b, scenario),
            calls_per_block=m,
            pairs=args.pairs,
            telemetry=telemetry,
        )
        if res.spans_a != 0 or res.spans_b != args.pairs * m:
            raise SystemExit(
                f"{scenario} N={n}: spans A={res.spans_a} B={res.spans_b}, expected 0 / {args.pairs * m}"
            )
        results[_key(scenario, n)] = res.summary()
        print(f"[ab] {_key(scenario, n)}: {results[_key(scenario, n)]}", file=sys.stderr, flush=True)
    clients.close()
    telemetry.shutdown()
    print_timing(results, args, pricing)
    return results


def print_timing(results: dict[str, dict[str, float]], args: argparse.Namespace, pricing: str) -> None:
    rows = []
    for key, s in results.items():
        rows.append(
            [
                key,
                _bench.fmt(s["cpu_a"], 0),
                _bench.fmt(s["cpu_delta"], 1, True),
                _bench.fmt(s["wall_delta"], 1, True),
                f"×{s['cpu_b'] / s['cpu_a']:.3f}",
                f"×{s['wall_b'] / s['wall_a']:.3f}",
            ]
        )
    print("## openai client: µs llmmeter adds per call (in-process A/B)\n")
    print(
        f"{_bench.machine_line()}; spans + metrics on, store off, {pricing}; {args.pairs} A/B block "
        f"pairs per scenario (block size × {args.scale}); medians of paired (B - A)\n"
    )
    print(
        _bench.table(
            ["scenario", "A cpu µs/call", "Δ cpu µs/call", "Δ wall µs/call", "B/A cpu", "B/A wall"], rows
        )
    )
    print()
    fit_rows = []
    for mode in ("sync", "async"):
        pts = [(n, results[f"stream-{mode}/{n}"]) for n in args.chunks if f"stream-{mode}/{n}" in results]
        if len(pts) < 2:
            continue
        row = [f"stream {mode}"]
        for field in ("cpu_a", "cpu_delta", "wall_delta"):
            a, b = _bench.fit_line([(n, s[field]) for n, s in pts])
            row += [_bench.fmt(b, 2, field != "cpu_a"), _bench.fmt(a, 0, field != "cpu_a")]
        fit_rows.append(row)
    print(
        "## openai client: per streamed chunk (fit t(N) = a + b·N over N = "
        f"{', '.join(map(str, args.chunks))})\n"
    )
    print(
        _bench.table(
            [
                "mode",
                "A cpu µs/chunk",
                "A cpu µs fixed",
                "Δ cpu µs/chunk",
                "Δ cpu µs fixed",
                "Δ wall µs/chunk",
                "Δ wall µs fixed",
            ],
            fit_rows,
        )
    )
    print(
        f"\nTargets (reported, not asserted): ≤ {TARGET_CALL_US:.0f} µs added per non-streaming call, "
        f"≤ {TARGET_CHUNK_US:.0f} µs per chunk, end to end ≤ ×{TARGET_RATIO:.2f}.\n"
    )


def run_callgrind_child(args: argparse.Namespace) -> None:
    telemetry = _bench.make_telemetry()
    _bench.configure_llmmeter(telemetry)
    clients = Clients()
    segments = _bench.Segments(enabled=True)
    for scenario, n in plan(tuple(c for c in args.chunks if c in CALLGRIND_K)):
        if n is not None:
            clients.server.stream_events = peers.build_sse_events(n)
        k = CALLGRIND_K[n if n is not None else scenario.split("-")[0]]
        run_a, run_b = clients.runner(clients.a, scenario), clients.runner(clients.b, scenario)
        _bench.count_ab(segments, _key(scenario, n), run_a, run_b, k, telemetry, warmup=2)
    clients.close()
    telemetry.shutdown()


def run_callgrind(args: argparse.Namespace) -> None:
    if not _bench.valgrind_available():
        print("valgrind not found: apt-get update && apt-get install -y valgrind\n")
        return
    chunks = [c for c in args.chunks if c in CALLGRIND_K]
    counts = _bench.callgrind_segments(
        _bench.self_command(Path(__file__), "--callgrind-child", "--chunks", ",".join(map(str, chunks)))
    )
    per: dict[str, tuple[float, float]] = {}
    for scenario, n in plan(tuple(chunks)):
        key = _key(scenario, n)
        k = CALLGRIND_K[n if n is not None else scenario.split("-")[0]]
        per[key] = (_bench.per_call(counts, f"{key}/A", k), _bench.per_call(counts, f"{key}/B", k))
    rows = [[key, f"{a:,.0f}", f"{b - a:+,.0f}", f"×{b / a:.3f}"] for key, (a, b) in per.items()]
    lo, hi = min(chunks), max(chunks)
    for mode in ("sync", "async"):
        (a1, b1), (a2, b2) = per[f"stream-{mode}/{lo}"], per[f"stream-{mode}/{hi}"]
        da, db = (a2 - a1) / (hi - lo), (b2 - b1) / (hi - lo)
        rows.append([f"stream-{mode} per chunk", f"{da:,.0f}", f"{db - da:+,.0f}", f"×{db / da:.3f}"])
    print("## openai client: instructions llmmeter adds per call / per chunk (callgrind)\n")
    print(
        f"{_bench.machine_line()}; (I(2K) - I(K)) / K, K = {CALLGRIND_K}; per chunk = slope "
        f"between N = {lo} and N = {hi}; exporter-thread instructions included\n"
    )
    print(_bench.table(["scenario", "A instr/call", "Δ instr/call", "B/A"], rows))
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10, help="A/B block pairs per scenario")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply calls per block")
    ap.add_argument("--chunks", default="1,64,512", help="stream sizes N")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions with valgrind")
    ap.add_argument("--no-timing", action="store_true", help="skip the A/B timing")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny blocks, N = 1, 8; no valgrind")
    ap.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.chunks = tuple(int(x) for x in args.chunks.split(",") if x)
    if args.callgrind_child:
        run_callgrind_child(args)
        return 0
    if args.quick:
        args.pairs, args.scale, args.chunks, args.callgrind = 2, 0.05, (1, 8), False
    if not args.no_timing:
        run_timing(args)
    if args.callgrind:
        run_callgrind(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
