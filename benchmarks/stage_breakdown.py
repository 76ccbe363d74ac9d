"""Where llmmeter's per-call cost goes: instructions per chat call with stages switched off.

One process under callgrind (segments split by ``os.getsid`` markers, see ``_bench.py``): the
plain client (A), then llmmeter with everything on, without pricing, with a NoOp MeterProvider,
with a NoOp TracerProvider, and with all three off ("bare": llmmeter's own bookkeeping).

    python benchmarks/stage_breakdown.py [chat-sync|chat-async|embed-sync]
"""

from __future__ import annotations

import sys

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
    for runner in (run_a, run_b):
        runner(3)
    for m in (K, 2 * K):
        with segments.measure(f"A@{m}"):
            run_a(m)
            telemetry.flush()
    for name, overrides in CONFIGS.items():
        llmmeter.configure(**{**base, **overrides})  # type: ignore[arg-type]
        run_b(3)
        telemetry.drain()
        for m in (K, 2 * K):
            with segments.measure(f"{name}@{m}"):
                run_b(m)
                telemetry.flush()
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
    rows = [[name, f"{_bench.per_call(counts, name, K) - plain:+,.0f}"] for name in CONFIGS]
    print(_bench.table(["configuration", "Δ instr/call"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
