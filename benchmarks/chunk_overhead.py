#!/usr/bin/env python3
"""CPU llmmeter adds per streamed chunk, isolated from the ``openai`` client's own parsing.

Through the real client a chunk costs ≈ 180-250 µs of SSE parsing and model construction, so a
per-chunk cost near 1 µs cannot be read off end-to-end timings (``openai_overhead.py``'s slope is
noise at that scale). Here the chunks are parsed once, up front, into the SDK's own
``ChatCompletionChunk`` objects (the benchmark harness's SSE stream: one role chunk, N content
chunks, a finish chunk and a usage chunk), and each side iterates them the way a caller iterates
``openai.Stream``:

* A: a stand-in for ``openai.Stream`` whose ``__iter__`` is a generator over the parsed chunks,
  as the SDK's is;
* B: the same stand-in behind llmmeter's ``MeteredStream`` with a real ``Measurement`` (spans
  and metrics on, bundled pricing, store off), finished with its usage at the end, set up as the
  instrumented client sets up a stream whose caller did not ask for usage: the usage chunk
  hidden, and the stream skimmed (read until its first output, then only timed; its last chunks
  read at the end). ``--read-whole`` reads every chunk instead, as llmmeter does when no usage
  will end the stream (or content capture is on).

µs per chunk = the slope between streams of N = 64 and N = 512 chunks (per-stream costs cancel),
median over interleaved A/B pairs; ``--callgrind`` adds instructions per chunk (valgrind).

    python benchmarks/chunk_overhead.py [--pairs 15] [--callgrind] [--read-whole]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

import _bench  # noqa: E402
import overhead as peers  # noqa: E402  (the harness's SSE stream)

SIZES = (64, 512)
STREAMS_PER_BLOCK = {64: 40, 512: 5}


class SdkLikeStream:
    """What the caller iterates: ``__iter__`` is a generator, as ``openai.Stream``'s is."""

    def __init__(self, chunks: list[Any]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[Any]:
        yield from self._chunks

    def close(self) -> None:
        """Nothing to release (the SDK's closes its HTTP response)."""


def parsed_chunks(n: int) -> list[Any]:
    """The harness's SSE stream of ``n`` content chunks, parsed as the SDK parses it."""
    from openai._models import construct_type
    from openai.types.chat import ChatCompletionChunk

    chunks = []
    for event in peers.build_sse_events(n):
        data = event.decode().strip().removeprefix("data: ")
        if data.startswith("{"):
            chunks.append(construct_type(type_=ChatCompletionChunk, value=json.loads(data)))
    return chunks


def runners(n: int, read_whole: bool = False) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """(A, B): iterate ``m`` streams of ``n`` chunks, plain or measured."""
    import llmmeter
    from llmmeter.instrument.streams import MeteredStream
    from llmmeter.measure import Measurement
    from llmmeter.providers.openai_stream import ChatStreamReader, is_usage_only_chunk
    from llmmeter.record import CallRecord

    chunks = parsed_chunks(n)
    settings = llmmeter.get_settings()

    def run_a(m: int) -> None:
        for _ in range(m):
            for _chunk in SdkLikeStream(chunks):
                pass

    def run_b(m: int) -> None:
        for _ in range(m):
            record = CallRecord(
                operation="chat",
                provider="openai",
                request_model=peers.MODEL,
                server_address="api.openai.com",
                server_port=443,
                streaming=True,
            )
            measurement = Measurement(settings, record, ChatStreamReader())
            measurement.skim = not read_whole
            for _chunk in MeteredStream(SdkLikeStream(chunks), measurement, hidden=is_usage_only_chunk):
                pass

    return run_a, run_b


def per_chunk_us(args: argparse.Namespace, telemetry: _bench.Telemetry) -> dict[str, float]:
    """Median over interleaved pairs of the per-chunk slope, A and B, CPU and wall."""
    blocks = {n: runners(n, args.read_whole) for n in SIZES}
    return _bench.per_chunk_slopes(blocks, STREAMS_PER_BLOCK, args.pairs, args.scale, telemetry)


CALLGRIND_K = 2


def callgrind_child(read_whole: bool) -> None:
    telemetry = _bench.make_telemetry()
    _bench.configure_llmmeter(telemetry)
    segments = _bench.Segments(enabled=True)
    for n in SIZES:
        run_a, run_b = runners(n, read_whole)
        _bench.count_ab(segments, f"N={n}", run_a, run_b, CALLGRIND_K, telemetry, warmup=2)


def main() -> int:
    ap = _bench.per_chunk_parser(__doc__)
    ap.add_argument("--read-whole", action="store_true", help="B reads every chunk (no skimming)")
    args = _bench.per_chunk_args(ap)
    if args.callgrind_child:
        callgrind_child(args.read_whole)
        return 0
    telemetry = _bench.make_telemetry()
    pricing = _bench.configure_llmmeter(telemetry)
    result = per_chunk_us(args, telemetry)
    telemetry.shutdown()
    print("## Per streamed chunk, isolated from the client's parsing (µs, slope N = 64 -> 512)\n")
    reading = "every chunk read" if args.read_whole else "skimmed after the first output"
    print(
        f"{_bench.machine_line()}; spans + metrics on, {pricing}; {reading}; "
        f"{args.pairs} interleaved A/B pairs\n"
    )
    print(
        _bench.table(
            ["clock", "A µs/chunk", "B µs/chunk", "Δ µs/chunk (median of pairs)"],
            [
                [
                    clock,
                    _bench.fmt(result[f"{clock}_a"], 3),
                    _bench.fmt(result[f"{clock}_b"], 3),
                    _bench.fmt(result[f"{clock}_delta"], 3, signed=True),
                ]
                for clock in ("cpu", "wall")
            ],
        )
    )
    if args.callgrind:
        counts = _bench.callgrind_segments(
            _bench.self_command(
                Path(__file__), "--callgrind-child", *(["--read-whole"] if args.read_whole else [])
            )
        )
        per_stream = {
            (side, n): _bench.per_call(counts, f"N={n}/{side}", CALLGRIND_K) for side in "AB" for n in SIZES
        }
        small, large = SIZES
        a = (per_stream["A", large] - per_stream["A", small]) / (large - small)
        b = (per_stream["B", large] - per_stream["B", small]) / (large - small)
        print("\n## Instructions per chunk (callgrind)\n")
        print(
            _bench.table(
                ["A instr/chunk", "B instr/chunk", "Δ instr/chunk"],
                [[f"{a:,.0f}", f"{b:,.0f}", f"{b - a:+,.0f}"]],
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
