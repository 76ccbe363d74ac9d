"""What pricing a record costs: instructions per ``PricingRegistry.price(record)`` on a prepared
plan (every call after the first of a (model, provider, UTC day)), and microseconds per plan miss.

Cases: a snapshot on OpenAI's own endpoint, ``gpt-4o-mini`` behind a gateway (priced as its maker,
``inferred-provider``), an OpenRouter name, a Bedrock id, an unknown dated snapshot
(``inferred-snapshot``), an unpriced name, an entry generated from the reference tables, another
maker's Bedrock geographic profile, and a model only ``genai-prices`` prices (the registry with
``GenaiPricesSource`` as its fallback; skipped when genai-prices is not installed). Instructions
come from callgrind (segments ``K`` and ``2K`` calls, constant costs cancel); the miss times from
the process clock (best of 30).

    python benchmarks/pricing_lookup.py            # callgrind counts when valgrind is installed
    python benchmarks/pricing_lookup.py --no-callgrind
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time

import _bench

from llmmeter import CallRecord, Timings, Usage
from llmmeter.pricing import PricingRegistry

K = 2000
CASES: dict[str, tuple[str, str]] = {
    "openai snapshot": ("gpt-4o-mini-2024-07-18", "openai"),
    "gateway (inferred provider)": ("gpt-4o-mini", "openai_compatible"),
    "openrouter name": ("openai/gpt-4o-mini", "openrouter"),
    "bedrock id": ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "aws.bedrock"),
    "unknown snapshot": ("gpt-4o-2099-01-01", "openai"),
    "unpriced": ("no-such-model", "openai_compatible"),
    "generated entry": ("gpt-5.5", "openai"),
    "bedrock profile, other maker": ("us.meta.llama3-2-90b-instruct-v1:0", "aws.bedrock"),
    "genai-prices fallback": ("grok-3-fast", "x_ai"),
}
FALLBACK_CASES = frozenset({"genai-prices fallback"})


def registry_for(label: str) -> PricingRegistry:
    """The bundled registry; for a fallback case, with genai-prices plugged in below it."""
    registry = PricingRegistry.default()
    if label in FALLBACK_CASES:
        from llmmeter.pricing.genai_prices import GenaiPricesSource

        registry.add_source(GenaiPricesSource(), fallback=True)
    return registry


def available(label: str) -> bool:
    if label not in FALLBACK_CASES:
        return True
    try:
        import genai_prices  # noqa: F401
    except ImportError:
        return False
    return True


START_NS = int(dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC).timestamp() * 1_000_000_000)


def records(model: str, provider: str, n: int) -> list[CallRecord]:
    return [
        CallRecord(
            operation="chat",
            provider=provider,
            request_model=model,
            response_model=model,
            usage=Usage(input_tokens=12, output_tokens=5),
            timings=Timings(start_time_unix_ns=START_NS),
        )
        for _ in range(n)
    ]


def child() -> None:
    segments = _bench.Segments(enabled=True)
    for label, (model, provider) in CASES.items():
        if not available(label):
            continue
        registry = registry_for(label)
        registry.price(records(model, provider, 1)[0])  # the plan is prepared once
        for m in (K, 2 * K):
            batch = records(model, provider, m)
            with segments.measure(f"{label}@{m}"):
                for record in batch:
                    registry.price(record)


def miss_microseconds(label: str, model: str, provider: str) -> float:
    registry = registry_for(label)
    at = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    best = float("inf")
    for _ in range(30):
        registry.clear_cache()
        start = time.process_time()
        for _ in range(20):
            registry.clear_cache()
            registry.lookup(model, provider=provider, at=at)
        best = min(best, (time.process_time() - start) / 20)
    return best * 1e6


def main() -> None:
    logging.getLogger("llmmeter.pricing").setLevel(logging.ERROR)  # the unpriced case warns once
    if "--child" in sys.argv:
        child()
        return
    counts: dict[str, int] = {}
    if "--no-callgrind" not in sys.argv and _bench.valgrind_available():
        counts = _bench.callgrind_segments(
            _bench.self_command(_bench.BENCH_DIR / "pricing_lookup.py", "--child")
        )
    rows = []
    for label, (model, provider) in CASES.items():
        if not available(label):
            continue
        per_call = _bench.per_call(counts, label, K) if counts else None
        probe = records(model, provider, 1)[0]
        registry_for(label).price(probe)
        ref = probe.cost.price_ref if probe.cost is not None else str(probe.cost_status)
        rows.append(
            [
                label,
                f"`{model}` on `{provider}`",
                _bench.fmt(per_call, 0),
                _bench.fmt(miss_microseconds(label, model, provider)),
                ref,
            ]
        )
    print(_bench.machine_line())
    print(_bench.table(["case", "call", "instructions per price()", "µs per plan miss", "price ref"], rows))


if __name__ == "__main__":
    main()
