#!/usr/bin/env python3
"""CPU llmmeter adds per chunk to a measured generator: the proxies SDK streams that are plain
generators get, and ``@llmmeter.metered`` generator functions.

The chunks are the SDK's own ``ChatCompletionChunk`` objects, parsed once up front (the same
stream as ``chunk_overhead.py``). Each variant iterates them with a ``for`` / ``async for`` loop,
A = a plain generator over them, B = the same generator measured:

* ``MeteredGenerator``       ``MeteredGenerator(gen, measurement)`` with the chat stream reader
  (what a provider adapter wraps a generator stream in);
* ``AsyncMeteredGenerator``  the same for an async generator;
* ``@metered generator``     ``@metered(model=..., provider="openai")`` on the generator
  function (its own item reader; the span is made current around each resumption);
* ``@metered async generator`` the same on an async generator function.

Spans and metrics on, bundled pricing, store off. µs per chunk = the slope between streams of
N = 64 and N = 512 chunks (per-stream costs cancel), median over interleaved A/B pairs;
``--callgrind`` adds instructions per chunk (valgrind).

    python benchmarks/generator_overhead.py [--pairs 15] [--callgrind]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _bench  # noqa: E402
from chunk_overhead import parsed_chunks  # noqa: E402

SIZES = (64, 512)
STREAMS_PER_BLOCK = {64: 40, 512: 5}
VARIANTS = ("MeteredGenerator", "AsyncMeteredGenerator", "@metered generator", "@metered async generator")
MODEL = "gpt-4o-mini"


def _items(chunks: list[Any]) -> Iterator[Any]:
    yield from chunks


async def _aitems(chunks: list[Any]) -> AsyncIterator[Any]:
    for chunk in chunks:
        yield chunk


def _measurement() -> Any:
    import llmmeter
    from llmmeter.measure import Measurement
    from llmmeter.providers.openai_stream import ChatStreamReader
    from llmmeter.record import CallRecord

    record = CallRecord(operation="chat", provider="openai", request_model=MODEL, streaming=True)
    return Measurement(llmmeter.get_settings(), record, ChatStreamReader())


def _sync_runner(make: Callable[[list[Any]], Any], chunks: list[Any]) -> Callable[[int], None]:
    def run(m: int) -> None:
        for _ in range(m):
            for _chunk in make(chunks):
                pass

    return run


def _async_runner(make: Callable[[list[Any]], Any], chunks: list[Any]) -> Callable[[int], None]:
    loop = asyncio.new_event_loop()

    async def streams(m: int) -> None:
        for _ in range(m):
            async for _chunk in make(chunks):
                pass

    def run(m: int) -> None:
        loop.run_until_complete(streams(m))

    return run


def runners(variant: str, n: int) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """(A, B) for ``variant``: iterate ``m`` streams of ``n`` chunks, plain or measured."""
    import llmmeter

    chunks = parsed_chunks(n)
    metered = llmmeter.metered(model=MODEL, provider="openai")
    if variant == "@metered generator":
        return _sync_runner(_items, chunks), _sync_runner(metered(_items), chunks)
    if variant == "@metered async generator":
        return _async_runner(_aitems, chunks), _async_runner(metered(_aitems), chunks)
    from llmmeter.instrument.generators import AsyncMeteredGenerator, MeteredGenerator

    if variant == "MeteredGenerator":
        return _sync_runner(_items, chunks), _sync_runner(
            lambda c: MeteredGenerator(_items(c), _measurement()), chunks
        )
    return _async_runner(_aitems, chunks), _async_runner(
        lambda c: AsyncMeteredGenerator(_aitems(c), _measurement()), chunks
    )


def per_chunk_us(args: argparse.Namespace, telemetry: _bench.Telemetry) -> dict[str, dict[str, float]]:
    """Per variant: median over interleaved pairs of the per-chunk slope, A, B and B - A (CPU)."""
    results: dict[str, dict[str, float]] = {}
    for variant in args.variants:
        blocks = {n: runners(variant, n) for n in SIZES}
        slopes = _bench.per_chunk_slopes(blocks, STREAMS_PER_BLOCK, args.pairs, args.scale, telemetry)
        results[variant] = {"a": slopes["cpu_a"], "b": slopes["cpu_b"], "delta": slopes["cpu_delta"]}
    return results


CALLGRIND_K = 2


def callgrind_child(variants: list[str]) -> None:
    telemetry = _bench.make_telemetry()
    _bench.configure_llmmeter(telemetry)
    segments = _bench.Segments(enabled=True)
    for variant in variants:
        for n in SIZES:
            run_a, run_b = runners(variant, n)
            _bench.count_ab(segments, f"{variant}/N={n}", run_a, run_b, CALLGRIND_K, telemetry, warmup=2)


def instructions_per_chunk(counts: dict[str, int], variant: str, side: str) -> float:
    small, large = SIZES
    at = {n: _bench.per_call(counts, f"{variant}/N={n}/{side}", CALLGRIND_K) for n in SIZES}
    return (at[large] - at[small]) / (large - small)


def main() -> int:
    ap = _bench.per_chunk_parser(__doc__)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS, help="run only these")
    args = _bench.per_chunk_args(ap)
    if args.callgrind_child:
        callgrind_child(args.variants)
        return 0
    telemetry = _bench.make_telemetry()
    pricing = _bench.configure_llmmeter(telemetry)
    result = per_chunk_us(args, telemetry)
    telemetry.shutdown()
    print("## Measured generators: µs per chunk (CPU, slope N = 64 -> 512)\n")
    print(f"{_bench.machine_line()}; spans + metrics on, {pricing}; {args.pairs} interleaved A/B pairs\n")
    rows = [
        [
            variant,
            _bench.fmt(result[variant]["a"], 3),
            _bench.fmt(result[variant]["b"], 3),
            _bench.fmt(result[variant]["delta"], 3, signed=True),
        ]
        for variant in args.variants
    ]
    print(_bench.table(["variant", "A µs/chunk", "B µs/chunk", "Δ µs/chunk (median of pairs)"], rows))
    if args.callgrind:
        command = _bench.self_command(Path(__file__), "--callgrind-child", "--variants", *args.variants)
        counts = _bench.callgrind_segments(command)
        print("\n## Measured generators: instructions per chunk (callgrind)\n")
        rows = []
        for variant in args.variants:
            a = instructions_per_chunk(counts, variant, "A")
            b = instructions_per_chunk(counts, variant, "B")
            rows.append([variant, f"{a:,.0f}", f"{b:,.0f}", f"{b - a:+,.0f}"])
        print(_bench.table(["variant", "A instr/chunk", "B instr/chunk", "Δ instr/chunk"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
