"""PricingRegistry.price(record): what the pipeline relies on for every finished call."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Context, Decimal

import pytest

from llmmeter import CallKind, CallRecord, Cost, CostStatus, Timings, Usage, UsageSource
from llmmeter.pricing import GpuHourPrice, ModelPrice, PricingRegistry, ResolvedPrice


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


# -- call after call: what caching the price of a call must never change ---------------------


def timed(day: str) -> Timings:
    return Timings(start_time_unix_ns=start_ns(day))


def test_each_call_gets_the_rates_of_its_own_service_tier(registry: PricingRegistry) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    expected = [
        (None, "0.75", "bundled:openai/gpt-4o-mini"),  # 0.15 + 0.60
        ("default", "0.75", "bundled:openai/gpt-4o-mini"),  # the standard tier under its API name
        ("priority", "1.25", "bundled:openai/gpt-4o-mini;service_tier=priority"),  # 0.25 + 1.00
        ("batch", "0.375", "bundled:openai/gpt-4o-mini;service_tier=batch"),  # half price
        (None, "0.75", "bundled:openai/gpt-4o-mini"),
    ]
    for tier, amount, ref in expected:
        call = record("gpt-4o-mini", usage, service_tier=tier, timings=timed("2026-03-02T10:00:00"))
        registry.price(call)
        assert call.cost is not None
        assert (call.cost.amount, call.cost.price_ref) == (Decimal(amount), ref)


def test_a_prompt_above_a_size_tier_is_billed_at_that_tier_between_smaller_ones() -> None:
    registry = PricingRegistry()
    registry.register(
        "long-context",
        ModelPrice(
            input_per_mtok="1",
            output_per_mtok="2",
            tiers=[{"above_input_tokens": 1000, "input_per_mtok": "3"}],
        ),
    )
    for input_tokens, amount in [(1000, "0.001"), (1001, "0.003003"), (999, "0.000999")]:
        call = record(
            "long-context", Usage(input_tokens=input_tokens, output_tokens=0), timings=timed("2026-03-02")
        )
        registry.price(call)
        assert call.cost is not None and call.cost.amount == Decimal(amount)


def test_calls_either_side_of_a_price_change_are_billed_at_their_own_day_price() -> None:
    registry = PricingRegistry()
    registry.register(
        "acme", ModelPrice(input_per_mtok="4", output_per_mtok="4", effective_to=dt.date(2026, 6, 1))
    )
    registry.register(
        "acme", ModelPrice(input_per_mtok="2", output_per_mtok="2", effective_from=dt.date(2026, 6, 1))
    )
    for started, amount in [
        ("2026-05-31T23:59:59", "4"),
        ("2026-06-01T00:00:00", "2"),
        ("2026-05-31T08:00:00", "4"),
        ("2026-06-01T23:59:59", "2"),
    ]:
        call = record("acme", Usage(input_tokens=1_000_000, output_tokens=0), timings=timed(started))
        registry.price(call)
        assert call.cost is not None and call.cost.amount == Decimal(amount), started


def test_a_price_registered_after_a_call_applies_to_the_next_call(registry: PricingRegistry) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    before = record("acme-chat", usage, timings=timed("2026-03-02"))
    registry.price(before)
    assert before.cost_status is CostStatus.UNPRICED
    registry.register("acme-chat", ModelPrice(input_per_mtok="2", output_per_mtok="4"))
    after = record("acme-chat", usage, timings=timed("2026-03-02"))
    registry.price(after)
    assert after.cost is not None and after.cost.amount == Decimal("2")


class Catalogue:
    """A plugged price source whose price can change while the application runs."""

    def __init__(self) -> None:
        self.rate = "1.00"

    def lookup(self, model: str, provider: str | None, at: dt.datetime) -> ResolvedPrice | None:
        if model != "corp-model":
            return None
        price = ModelPrice(input_per_mtok=self.rate, output_per_mtok=self.rate)
        return ResolvedPrice(price=price, model=model, provider=None, source="catalogue")


def test_a_plugged_source_price_change_applies_once_the_cache_is_cleared() -> None:
    registry = PricingRegistry()
    catalogue = Catalogue()
    registry.add_source(catalogue)

    def amount() -> Decimal | None:
        call = record(
            "corp-model", Usage(input_tokens=1_000_000, output_tokens=0), timings=timed("2026-03-02")
        )
        registry.price(call)
        return None if call.cost is None else call.cost.amount

    assert amount() == Decimal("1.00")
    catalogue.rate = "3.00"
    assert amount() == Decimal("1.00")  # lookups are cached until the registry is told
    registry.clear_cache()
    assert amount() == Decimal("3.00")


# -- exactness: every Decimal is the one 60-digit decimal arithmetic gives ----------------

EXACT = Context(prec=60)
MILLION = Decimal(1_000_000)


def per_million(rate: str, tokens: int) -> Decimal:
    """The cost formula: rate x tokens / 1,000,000, exact to 60 digits."""
    return EXACT.divide(EXACT.multiply(Decimal(rate), tokens), MILLION)


@pytest.mark.parametrize(
    "rate",
    [
        "0.15",
        "0.075",
        "0.60",
        "1.10",
        "2.5",
        "15.00",
        "10",
        "0",
        "0.000",
        "1E+1",
        "1E+7",
        "0.0000001",
        "123456789.123456789",
    ],
)
@pytest.mark.parametrize("tokens", [1, 7, 16, 40, 1_000_000, 10_000_000, 123_456_789_000, 10**58, 10**61 + 3])
def test_a_component_is_rate_times_tokens_per_million_digit_for_digit(rate: str, tokens: int) -> None:
    registry = PricingRegistry()
    registry.register("m", ModelPrice(input_per_mtok=rate, output_per_mtok="1"))
    call = record("m", Usage(input_tokens=tokens, output_tokens=0), timings=timed("2026-03-02"))
    registry.price(call)
    expected = per_million(rate, tokens)
    assert call.cost is not None
    # as_tuple compares the exponent too: 0.30 stays 0.30, never 0.3 or 0.300
    assert call.cost.components["input"].as_tuple() == expected.as_tuple()
    assert call.cost.amount.as_tuple() == EXACT.add(Decimal(0), expected).as_tuple()


@pytest.mark.parametrize(
    ("input_rate", "cached_rate", "output_rate", "reasoning_rate"),
    [
        ("0.15", "0.075", "0.60", "0.60"),
        ("2.50", "0.25", "15.00", "15.00"),
        ("1E+1", "0.5", "3", "2E+1"),
        ("3", "0", "0.000", "0"),
    ],
)
def test_the_amount_is_the_exact_sum_of_its_components(
    input_rate: str, cached_rate: str, output_rate: str, reasoning_rate: str
) -> None:
    registry = PricingRegistry()
    registry.register(
        "m",
        ModelPrice(
            input_per_mtok=input_rate,
            cached_input_per_mtok=cached_rate,
            output_per_mtok=output_rate,
            reasoning_per_mtok=reasoning_rate,
        ),
    )
    usage = Usage(input_tokens=52, output_tokens=48, cache_read_input_tokens=16, reasoning_output_tokens=16)
    call = record("m", usage, timings=timed("2026-03-02"))
    registry.price(call)
    expected = {
        "input": per_million(input_rate, 36),
        "cached_input": per_million(cached_rate, 16),
        "output": per_million(output_rate, 32),
        "reasoning": per_million(reasoning_rate, 16),
    }
    amount = Decimal(0)
    for part in expected.values():
        amount = EXACT.add(amount, part)
    assert call.cost is not None
    assert [(name, part.as_tuple()) for name, part in call.cost.components.items()] == [
        (name, part.as_tuple()) for name, part in expected.items()
    ]
    assert call.cost.amount.as_tuple() == amount.as_tuple()
