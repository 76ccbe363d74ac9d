"""The OpenTelemetry Python SDK's own cost per metric point and per span: the floor under any
instrumentation that follows the GenAI conventions with spans and metrics on.

Best of 5 blocks of N operations, CPU time per operation (µs). Compare with llmmeter's per-call
budget: semconv requires ``gen_ai.client.operation.duration`` and recommends
``gen_ai.client.token.usage`` (one point per token type), i.e. at least 3 histogram points and
one span per call before llmmeter adds TTFT, TPOT and cost.

    python benchmarks/sdk_floor.py [--n 20000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="smoke run (n = 200)")
    args = parser.parse_args()
    n = 200 if args.quick else args.n

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("floor")
    histogram = meter.create_histogram("h", unit="s", explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop()))
    tracer = tracer_provider.get_tracer("floor")
    context = trace.set_span_in_context(tracer.start_span("parent"))

    def span_with_30_attributes() -> None:
        span = tracer.start_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT)
        span.set_attributes(SPAN_ATTRIBUTES_30)
        span.end()

    rows = [
        ("histogram point, no attributes", best_us(lambda: histogram.record(0.5), n)),
        ("histogram point, 7 attributes", best_us(lambda: histogram.record(0.5, ATTRIBUTES_7), n)),
        (
            "histogram point, 7 attributes, in a sampled span's context (exemplar)",
            best_us(lambda: histogram.record(0.5, ATTRIBUTES_7, context=context), n),
        ),
        ("span start + 30 attributes + end (batch processor)", best_us(span_with_30_attributes, n)),
    ]
    print("## OpenTelemetry SDK cost per operation (CPU µs, best of 5)\n")
    print("| operation | µs |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")
    tracer_provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
