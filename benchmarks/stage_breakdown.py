"""Where llmmeter's per-call cost goes: instructions per chat call with stages switched off.

One process under callgrind (segments split by ``os.getsid`` markers, see ``_bench.py``): the
plain client (A), then llmmeter with everything on, without pricing, with a NoOp MeterProvider,
with a NoOp TracerProvider, and with all three off ("bare": llmmeter's own bookkeeping).

When the OpenTelemetry contrib OpenAI instrumentation (``opentelemetry-instrumentation-openai-v2``,
"otel-v2", see ``peers/``) is importable, the same process also measures it with the SDK providers
and with NoOp providers, so the two can be compared stage by stage: what the OTel SDK costs for
what each one exports, and what each one's own code costs.

    python benchmarks/stage_breakdown.py [chat-sync|chat-async|embed-sync]
    <peers venv>/bin/python benchmarks/stage_breakdown.py   # with otel-v2 (peers/requirements-peers.txt)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import _bench
from openai_overhead import Clients
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider

import llmmeter

K = 100
CONFIGS: dict[str, dict[str, object]] = {
    "everything on": {},
    "pricing off": {"pricing": None},
    "metrics off": {"meter_provider": NoOpMeterProvider()},
    "spans off": {"tracer_provider": NoOpTracerProvider()},
    "bare": {"pricing": None, "meter_provider": NoOpMeterProvider(), "tracer_provider": NoOpTracerProvider()},
}
PEER_CONFIGS = ("otel-v2", "otel-v2 bare")


def _otel_v2_instrumentor() -> object | None:
    try:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    except ImportError:
        return None
    return OpenAIInstrumentor()


def measure_otel_v2(
    telemetry: _bench.Telemetry, segments: _bench.Segments, run_plain: Callable[[int], None]
) -> None:
    """otel-v2 patches the openai classes, so it measures the plain clients; "bare" gives it NoOp
    providers (and no logger provider, as in the peers harness's default of content capture off)."""
    instrumentor: Any = _otel_v2_instrumentor()
    if instrumentor is None:
        return
    providers = {
        "otel-v2": (telemetry.tracer_provider, telemetry.meter_provider),
        "otel-v2 bare": (NoOpTracerProvider(), NoOpMeterProvider()),
    }
    for name in PEER_CONFIGS:
        tracer_provider, meter_provider = providers[name]
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        measure_blocks(name, run_plain, telemetry, segments)
        instrumentor.uninstrument()


def measure_blocks(
    name: str, run: Callable[[int], None], telemetry: _bench.Telemetry, segments: _bench.Segments
) -> None:
    """Warm up, then count blocks of K and 2K calls (their difference cancels fixed costs)."""
    run(3)
    telemetry.drain()
    for m in (K, 2 * K):
        with segments.measure(f"{name}@{m}"):
            run(m)
            telemetry.flush()


def child(scenario: str) -> None:
    telemetry = _bench.make_telemetry()
    clients = Clients()
    segments = _bench.Segments(enabled=True)
    run_a, run_b = clients.runner(clients.a, scenario), clients.runner(clients.b, scenario)
    base = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
        "store": None,
    }
    run_b(3)
    measure_blocks("A", run_a, telemetry, segments)
    for name, overrides in CONFIGS.items():
        llmmeter.configure(**{**base, **overrides})  # type: ignore[arg-type]
        measure_blocks(name, run_b, telemetry, segments)
    measure_otel_v2(telemetry, segments, run_a)
    clients.close()
    telemetry.shutdown()


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
        return 0
    scenario = sys.argv[1] if len(sys.argv) > 1 else "chat-sync"
    if not _bench.valgrind_available():
        print("valgrind not found: apt-get update && apt-get install -y valgrind")
        return 1
    counts = _bench.callgrind_segments(
        _bench.self_command(_bench.BENCH_DIR / "stage_breakdown.py", "--child", scenario)
    )
    plain = _bench.per_call(counts, "A", K)
    print(f"## {scenario}: instructions llmmeter adds per call, by configuration (callgrind)\n")
    print(f"{_bench.machine_line()}; uninstrumented: {plain:,.0f} instructions per call\n")
    measured = [name for name in (*CONFIGS, *PEER_CONFIGS) if f"{name}@{K}" in counts]
    rows = [[name, f"{_bench.per_call(counts, name, K) - plain:+,.0f}"] for name in measured]
    print(_bench.table(["configuration", "Δ instr/call"], rows))
    if "otel-v2" not in measured:
        print("\n(otel-v2 not installed: run with the peers venv, peers/requirements-peers.txt, to compare)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
