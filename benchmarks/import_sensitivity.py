#!/usr/bin/env python3
"""How much the per-chunk cost of identical code depends on what else the process imported.

Times the openai chat stream reader's ``feed`` alone, and ``Measurement.observe`` with and without
the reader, over 512 parsed chat chunks (the data of ``chunk_overhead.py``), best of 5 rounds of
40 streams. ``--import-sdks`` first imports ``google.genai``, ``anthropic`` and ``ollama``, which
llmmeter itself never imports unless asked to measure them: the same loop then runs slower,
because CPython's per-type attribute caches collide differently when more types exist.

    python benchmarks/import_sensitivity.py
    python benchmarks/import_sensitivity.py --import-sdks
    python benchmarks/import_sensitivity.py --quick        # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))


def best_us_per_chunk(run: Callable[[], None], chunks: int, rounds: int = 5, streams: int = 40) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(streams):
            run()
        best = min(best, (time.perf_counter() - started) / streams / chunks * 1e6)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--import-sdks", action="store_true", help="import google.genai, anthropic, ollama first")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 streams")
    args = ap.parse_args()
    rounds, streams = (1, 2) if args.quick else (5, 40)
    if args.import_sdks:
        import anthropic  # noqa: F401
        import google.genai  # noqa: F401
        import ollama  # noqa: F401

    import _bench
    import chunk_overhead

    import llmmeter
    from llmmeter.instrument.streams import MeteredStream
    from llmmeter.measure import Measurement
    from llmmeter.providers.openai_stream import ChatStreamReader
    from llmmeter.record import CallRecord

    telemetry = _bench.make_telemetry()
    _bench.configure_llmmeter(telemetry)
    settings = llmmeter.get_settings()
    chunks = chunk_overhead.parsed_chunks(512)

    def feed() -> None:
        read = ChatStreamReader().feed
        for chunk in chunks:
            read(chunk)

    def observe(with_reader: bool) -> Callable[[], None]:
        def run() -> None:
            record = CallRecord(
                operation="chat", provider="openai", request_model="gpt-4o-mini", streaming=True
            )
            measurement = Measurement(settings, record, ChatStreamReader() if with_reader else None)
            for _chunk in MeteredStream(chunk_overhead.SdkLikeStream(chunks), measurement):
                pass

        return run

    rows = [("feed", feed), ("observe + reader", observe(True)), ("observe", observe(False))]
    print(f"SDKs imported first: {args.import_sdks}")
    print("| loop | µs/chunk |\n|---|---:|")
    for name, run in rows:
        print(f"| {name} | {best_us_per_chunk(run, len(chunks), rounds, streams):.3f} |")
    telemetry.flush()
    telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
