#!/usr/bin/env python3
"""CPU the Ollama and Gemini adapters add per streamed chunk, isolated from the SDKs' own parsing.

``ollama`` and ``google-genai`` hand a stream back as a plain generator, which llmmeter returns
behind ``MeteredGenerator``; their adapters' stream readers (``OllamaStreamReader``,
``GeminiStreamReader``) read every chunk. Here the chunks are real recorded ones, parsed once, up
front, into the SDKs' own objects (``ollama.ChatResponse`` / ``GenerateResponse``,
``genai.types.GenerateContentResponse``), and each side iterates them as a caller iterates the
SDK's stream:

* A: a generator over the parsed chunks (what the SDK returns);
* B: the same generator behind ``MeteredGenerator`` with a real ``Measurement`` and the
  adapter's stream reader (spans and metrics on, bundled pricing, store off), set up as the
  instrumented client sets it up: an Ollama stream, whose ``done`` chunk always carries the
  counts, is skimmed (read until its first output, then only timed; its last chunks read at the
  end); a Gemini stream, with running usage on every chunk, is read lightly after its first
  output (one object per chunk instead of four). ``--read-whole`` reads every chunk of both.

The content chunks of each recording are repeated to N = 64 and N = 512 chunks, the final chunk
(usage) last; µs per chunk = the slope between the two (per-stream costs cancel), median over
interleaved A/B pairs; ``--callgrind`` adds instructions per chunk (valgrind).

    python benchmarks/provider_chunk_overhead.py [--pairs 15] [--callgrind] [--read-whole]
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

TESTS = HERE.parent / "tests"
SIZES = (64, 512)
STREAMS_PER_BLOCK = {64: 40, 512: 5}


# --- recorded chunks, parsed as the SDKs parse them ----------------------------------------------
def _ollama_lines(file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def ollama_generate_chunks(n: int) -> list[Any]:
    """A real ``/api/generate`` stream (granite3.3:2b, 63 token lines + the done line)."""
    from ollama import GenerateResponse

    lines = _ollama_lines(TESTS / "recordings/ollama/ollama-bash-lib__ollama_generate_stream_json.ndjson")
    return _repeat([GenerateResponse(**line) for line in lines], n)


def ollama_chat_chunks(n: int) -> list[Any]:
    """Ollama's documented ``/api/chat`` stream: a content chunk, repeated, then the done chunk."""
    from ollama import ChatResponse

    lines = _ollama_lines(TESTS / "data/ollama/chat_stream.ndjson")
    return _repeat([ChatResponse(**line) for line in lines], n)


def gemini_chunks(n: int) -> list[Any]:
    """A real ``streamGenerateContent`` (gemini-2.5-pro: 4 thought chunks, 19 text chunks)."""
    from google.genai.types import GenerateContentResponse

    text = (TESTS / "data/google_genai/stream_thinking.sse").read_text()
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    return _repeat([GenerateContentResponse.model_validate(event) for event in events], n)


def _repeat(chunks: list[Any], n: int) -> list[Any]:
    """``n`` content chunks cycled from the recording, then its final chunk."""
    content, final = chunks[:-1], chunks[-1]
    return [content[i % len(content)] for i in range(n)] + [final]


SKIMMED_PROVIDERS = {"ollama", "gcp.gemini"}  # their adapters plan streams with ``usage_expected``
STREAMS: dict[str, tuple[Callable[[int], list[Any]], str, str, str]] = {
    # name: (chunks, operation, provider, reader "module:Class")
    "ollama generate": (ollama_generate_chunks, "text_completion", "ollama", "ollama:OllamaStreamReader"),
    "ollama chat": (ollama_chat_chunks, "chat", "ollama", "ollama:OllamaStreamReader"),
    "gemini generate_content_stream": (
        gemini_chunks,
        "generate_content",
        "gcp.gemini",
        "gemini:GeminiStreamReader",
    ),
}


def _sdk_stream(chunks: list[Any]) -> Iterator[Any]:
    yield from chunks


def runners(
    name: str, n: int, read_whole: bool = False
) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """(A, B): iterate ``m`` streams of ``n`` chunks, plain or measured."""
    import importlib

    import llmmeter
    from llmmeter.instrument.generators import MeteredGenerator
    from llmmeter.measure import Measurement
    from llmmeter.record import CallRecord

    make_chunks, operation, provider, reader_path = STREAMS[name]
    module, cls = reader_path.split(":")
    reader_class = getattr(importlib.import_module(f"llmmeter.providers.{module}"), cls)
    chunks = make_chunks(n)
    settings = llmmeter.get_settings()
    skim = provider in SKIMMED_PROVIDERS and not read_whole

    def run_a(m: int) -> None:
        for _ in range(m):
            for _chunk in _sdk_stream(chunks):
                pass

    def run_b(m: int) -> None:
        for _ in range(m):
            record = CallRecord(operation=operation, provider=provider, request_model="m", streaming=True)
            measurement = Measurement(settings, record, reader_class())
            measurement.skim = skim
            for _chunk in MeteredGenerator(_sdk_stream(chunks), measurement):
                pass

    return run_a, run_b


def per_chunk_us(name: str, args: argparse.Namespace, telemetry: _bench.Telemetry) -> dict[str, float]:
    """Median over interleaved pairs of the per-chunk slope, A and B, CPU and wall."""
    blocks = {n: runners(name, n, args.read_whole) for n in SIZES}
    return _bench.per_chunk_slopes(blocks, STREAMS_PER_BLOCK, args.pairs, args.scale, telemetry)


CALLGRIND_K = 2


def callgrind_child(read_whole: bool) -> None:
    telemetry = _bench.make_telemetry()
    _bench.configure_llmmeter(telemetry)
    segments = _bench.Segments(enabled=True)
    for name in STREAMS:
        for n in SIZES:
            run_a, run_b = runners(name, n, read_whole)
            _bench.count_ab(segments, f"{name}/N={n}", run_a, run_b, CALLGRIND_K, telemetry, warmup=2)


def instructions_per_chunk(counts: dict[str, int], name: str) -> tuple[float, float]:
    """(A, B) instructions per chunk of one stream kind: the slope between the two sizes."""
    small, large = SIZES
    per_stream = {
        (side, n): _bench.per_call(counts, f"{name}/N={n}/{side}", CALLGRIND_K)
        for side in "AB"
        for n in SIZES
    }
    a = (per_stream["A", large] - per_stream["A", small]) / (large - small)
    b = (per_stream["B", large] - per_stream["B", small]) / (large - small)
    return a, b


def main() -> int:
    ap = _bench.per_chunk_parser(__doc__)
    ap.add_argument("--read-whole", action="store_true", help="B reads every chunk (no skimming)")
    args = _bench.per_chunk_args(ap)
    if args.callgrind_child:
        callgrind_child(args.read_whole)
        return 0
    telemetry = _bench.make_telemetry()
    pricing = _bench.configure_llmmeter(telemetry)
    results = {name: per_chunk_us(name, args, telemetry) for name in STREAMS}
    telemetry.shutdown()
    print("## Per streamed chunk of the Ollama and Gemini adapters (µs, slope N = 64 -> 512)\n")
    print(f"{_bench.machine_line()}; spans + metrics on, {pricing}; {args.pairs} interleaved A/B pairs\n")
    rows = [
        [
            name,
            _bench.fmt(result["cpu_a"], 3),
            _bench.fmt(result["cpu_b"], 3),
            _bench.fmt(result["cpu_delta"], 3, signed=True),
            _bench.fmt(result["wall_delta"], 3, signed=True),
        ]
        for name, result in results.items()
    ]
    print(
        _bench.table(
            ["stream", "A cpu µs/chunk", "B cpu µs/chunk", "Δ cpu µs/chunk", "Δ wall µs/chunk"], rows
        )
    )
    if args.callgrind:
        counts = _bench.callgrind_segments(
            _bench.self_command(
                Path(__file__), "--callgrind-child", *(["--read-whole"] if args.read_whole else [])
            )
        )
        print("\n## Instructions per chunk (callgrind)\n")
        rows = []
        for name in STREAMS:
            a, b = instructions_per_chunk(counts, name)
            rows.append([name, f"{a:,.0f}", f"{b:,.0f}", f"{b - a:+,.0f}"])
        print(_bench.table(["stream", "A instr/chunk", "B instr/chunk", "Δ instr/chunk"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
