"""PricingRegistry.price(record): what the pipeline relies on for every finished call."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest

from llmmeter import CallKind, CallRecord, Cost, CostStatus, Timings, Usage, UsageSource
from llmmeter.pricing import GpuHourPrice, ModelPrice, PricingRegistry


def record(
    model: str | None,
    usage: Usage | None,
    *,
    provider: str = "openai",
    request_model: str | None = None,
    **fields: object,
) -> CallRecord:
    return CallRecord(
        operation="chat",
        provider=provider,
        request_model=request_model or model,
        response_model=model,
        usage=usage,
        **fields,  # type: ignore[arg-type]
    )


def start_ns(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1_000_000_000)


@pytest.fixture
def registry() -> PricingRegistry:
    return PricingRegistry.default()


def test_a_known_model_is_priced(registry: PricingRegistry) -> None:
    call = record(
        "gpt-4o-mini-2024-07-18", Usage(input_tokens=12, output_tokens=5), request_model="gpt-4o-mini"
    )
    registry.price(call)
    assert call.cost_status is CostStatus.PRICED
    assert call.cost is not None
    assert call.cost.amount == Decimal("0.0000048")  # 12 x 0.15 + 5 x 0.60 = 1.8 + 3 = 4.8 per million
    assert call.cost.price_ref == "bundled:openai/gpt-4o-mini-2024-07-18"


def test_the_response_model_is_priced_before_the_request_model(registry: PricingRegistry) -> None:
    # gpt-4o resolves to gpt-4o-2024-05-13 in this made-up response: its own, higher price applies.
    call = record("gpt-4o-2024-05-13", Usage(input_tokens=1000, output_tokens=0), request_model="gpt-4o")
    registry.price(call)
    assert call.cost is not None and call.cost.amount == Decimal("0.005")  # 1000 x 5.00


def test_the_request_model_is_used_when_the_response_model_has_no_price(registry: PricingRegistry) -> None:
    registry.alias("prod-chat", "gpt-4.1-mini-2025-04-14")
    call = record(
        "some-internal-name",
        Usage(input_tokens=1000, output_tokens=1000),
        request_model="prod-chat",
        provider="azure.ai.openai",
    )
    registry.price(call)
    assert call.cost_status is CostStatus.PRICED
    assert call.cost is not None and call.cost.amount == Decimal("0.002")  # 1000 x 0.40 + 1000 x 1.60


def test_the_call_day_selects_a_historic_price(registry: PricingRegistry) -> None:
    call = record(
        "o3",
        Usage(input_tokens=1000, output_tokens=0),
        timings=Timings(start_time_unix_ns=start_ns("2025-05-01")),
    )
    registry.price(call)
    assert call.cost is not None and call.cost.amount == Decimal("0.01")  # 1000 x 10 (before the cut)


def test_the_response_service_tier_is_applied(registry: PricingRegistry) -> None:
    call = record("gpt-5-2025-08-07", Usage(input_tokens=1000, output_tokens=1000), service_tier="flex")
    registry.price(call)
    assert call.cost is not None and call.cost.amount == Decimal("0.005625")  # 1000 x 0.625 + 1000 x 5


def test_a_cost_the_provider_reported_is_kept(registry: PricingRegistry) -> None:
    reported = Cost(amount=Decimal("0.00042"), source="provider")
    call = record(
        "openai/gpt-4o", Usage(input_tokens=10, output_tokens=10), provider="openrouter", cost=reported
    )
    registry.price(call)
    assert call.cost is reported
    assert call.cost_status is CostStatus.PRICED


def test_an_unknown_model_is_unpriced_never_zero_and_warned_once(
    registry: PricingRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmmeter.pricing")
    calls = [record("acme-secret-model", Usage(input_tokens=10, output_tokens=10)) for _ in range(3)]
    for call in calls:
        registry.price(call)
    assert all(call.cost is None and call.cost_status is CostStatus.UNPRICED for call in calls)
    warnings = [r for r in caplog.records if "acme-secret-model" in r.getMessage()]
    assert len(warnings) == 1
    assert registry.unpriced_models == frozenset({"acme-secret-model"})


def test_cost_returns_none_for_an_unknown_model(registry: PricingRegistry) -> None:
    assert registry.cost(Usage(input_tokens=1, output_tokens=1), model="nope") is None


def test_missing_usage_is_no_usage_not_zero(registry: PricingRegistry) -> None:
    for usage in (None, Usage(source=UsageSource.MISSING)):
        call = record("gpt-4o-mini", usage)
        registry.price(call)
        assert call.cost is None and call.cost_status is CostStatus.NO_USAGE


def test_estimated_usage_is_still_priced(registry: PricingRegistry) -> None:
    estimate = Usage(
        input_tokens=1000,
        output_tokens=0,
        source=UsageSource.ESTIMATED,
        estimate_method="tiktoken:o200k_base",
    )
    call = record("gpt-4o-mini", estimate)
    registry.price(call)
    assert call.cost_status is CostStatus.PRICED
    assert call.cost is not None and call.cost.amount == Decimal("0.00015")
    assert call.usage is estimate and call.usage.source is UsageSource.ESTIMATED


def test_inconsistent_usage_is_an_error_status_not_an_exception(
    registry: PricingRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    call = record("gpt-4o-mini", Usage(input_tokens=10, output_tokens=5, cache_read_input_tokens=50))
    registry.price(call)
    assert call.cost is None and call.cost_status is CostStatus.ERROR
    assert any("could not price" in r.getMessage() for r in caplog.records)


class ExplodingSource:
    def lookup(self, model: str, provider: str | None, at: dt.datetime) -> None:
        raise RuntimeError("catalogue down")


def test_a_failing_price_source_never_reaches_the_application() -> None:
    registry = PricingRegistry.default()
    registry.add_source(ExplodingSource())
    call = record("gpt-4o-mini", Usage(input_tokens=10, output_tokens=5))
    registry.price(call)
    assert call.cost is None and call.cost_status is CostStatus.ERROR


def test_steps_are_left_to_the_rollup(registry: PricingRegistry) -> None:
    step = CallRecord(operation="agent", provider="llmmeter", kind=CallKind.STEP)
    registry.price(step)
    assert step.cost is None and step.cost_status is CostStatus.NO_USAGE


def test_a_vllm_call_is_priced_from_measured_gpu_time() -> None:
    registry = PricingRegistry.default()
    registry.register(
        "meta-llama/Llama-3.2-1B-Instruct",
        GpuHourPrice(usd_per_gpu_hour="2.00", gpu_count=1),
        provider="vllm",
    )
    call = record(
        "meta-llama/Llama-3.2-1B-Instruct",
        None,  # measured busy time needs no token counts
        provider="vllm",
        timings=Timings(start_time_unix_ns=start_ns("2026-01-01"), duration_s=0.9),
    )
    registry.price(call)
    assert call.cost_status is CostStatus.PRICED
    assert call.cost is not None
    assert call.cost.amount == Decimal("0.0005")  # 2.00 x 0.9 / 3600 = 1.8 / 3600
    assert call.cost.components == {"gpu_time": Decimal("0.0005")}


def test_a_gpu_price_without_throughput_or_duration_has_nothing_to_price() -> None:
    registry = PricingRegistry()
    registry.register("m", GpuHourPrice(usd_per_gpu_hour="2.00"))
    call = record("m", Usage(input_tokens=10, output_tokens=10), provider="vllm")
    registry.price(call)
    assert call.cost is None and call.cost_status is CostStatus.NO_USAGE


def test_a_price_in_another_currency_keeps_its_currency() -> None:
    registry = PricingRegistry()
    registry.register("eu-model", ModelPrice(input_per_mtok="1.00", output_per_mtok="1.00", currency="EUR"))
    cost = registry.cost(Usage(input_tokens=1000, output_tokens=0), model="eu-model")
    assert cost is not None and cost.currency == "EUR" and cost.amount == Decimal("0.001")
