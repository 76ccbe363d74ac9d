"""The OpenTelemetry Python SDK's own cost per metric point and per span: the floor under any
instrumentation that follows the GenAI conventions with spans and metrics on.

Best of 5 blocks of N operations, CPU time per operation (µs). Compare with llmmeter's per-call
budget: semconv requires ``gen_ai.client.operation.duration`` and recommends
``gen_ai.client.token.usage`` (one point per token type), i.e. at least 3 histogram points and
one span per call before llmmeter adds TTFT, TPOT and cost.

    python benchmarks/sdk_floor.py [--n 20000]
    python benchmarks/sdk_floor.py --callgrind     # + instructions per operation (noise-free)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _bench
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from llmmeter import semconv as sc

ATTRIBUTES_7 = {
    sc.OPERATION_NAME: "chat",
    sc.PROVIDER_NAME: "openai",
    sc.REQUEST_MODEL: "gpt-4o-mini",
    sc.RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
    sc.SERVER_ADDRESS: "api.openai.com",
    sc.SERVER_PORT: 443,
    sc.TOKEN_TYPE: "input",
}
SPAN_ATTRIBUTES_30 = {f"gen_ai.attribute_{i}": i for i in range(30)}


class _Drop(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def best_us(operation: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            operation()
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def operations() -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    """The SDK operations measured, by row name, and a flush that exports ended spans."""
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("floor")
    histogram = meter.create_histogram("h", unit="s", explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop()))
    tracer = tracer_provider.get_tracer("floor")
    context = trace.set_span_in_context(tracer.start_span("parent"))
    start_attributes = dict(list(ATTRIBUTES_7.items())[:6])
    CLIENT = trace.SpanKind.CLIENT

    def span(n_end_attributes: int) -> Callable[[], None]:
        end_attributes = dict(list(SPAN_ATTRIBUTES_30.items())[:n_end_attributes])

        def run() -> None:
            started = tracer.start_span("chat gpt-4o-mini", kind=CLIENT, attributes=start_attributes)
            if end_attributes:
                started.set_attributes(end_attributes)
            started.end()

        return run

    rows: dict[str, Callable[[], object]] = {
        "histogram point, no attributes": lambda: histogram.record(0.5),
        "histogram point, 7 attributes": lambda: histogram.record(0.5, ATTRIBUTES_7),
        "histogram point, 7 attributes, in a sampled span's context (exemplar)": lambda: histogram.record(
            0.5, ATTRIBUTES_7, context=context
        ),
        "span start (6 attributes) + end (batch processor)": span(0),
        "span start (6 attributes) + 20 attributes + end": span(20),
        "span start + 30 attributes + end (batch processor)": span(30),
    }
    return rows, lambda: tracer_provider.force_flush()


def callgrind_child() -> None:
    rows, flush = operations()
    segments = _bench.Segments(enabled=True)
    for i, operation in enumerate(rows.values()):
        for _ in range(50):
            operation()
        flush()
        for m in (CALLGRIND_K, 2 * CALLGRIND_K):
            with segments.measure(f"{i}@{m}"):
                for _ in range(m):
                    operation()
                flush()


CALLGRIND_K = 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="smoke run (n = 200)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions (valgrind)")
    parser.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind_child:
        callgrind_child()
        return 0
    n = 200 if args.quick else args.n

    rows, _ = operations()
    print("## OpenTelemetry SDK cost per operation (CPU µs, best of 5)\n")
    print("| operation | µs |\n|---|---:|")
    for name, operation in rows.items():
        print(f"| {name} | {best_us(operation, n):.1f} |")
    if args.callgrind:
        if not _bench.valgrind_available():
            print("valgrind not found: apt-get install -y valgrind", file=sys.stderr)
            return 2
        counts = _bench.callgrind_segments(_bench.self_command(Path(__file__), "--callgrind-child"))
        print("\n## OpenTelemetry SDK instructions per operation (callgrind, span export included)\n")
        print("| operation | instructions |\n|---|---:|")
        for i, name in enumerate(rows):
            print(f"| {name} | {_bench.per_call(counts, str(i), CALLGRIND_K):,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
