"""genai-prices as a fallback price source: asked only for what the curated table, the user's prices
and plugged sources do not price, converted exactly, offline, and never raising."""

from __future__ import annotations

import datetime as dt
import socket
from decimal import Decimal
from typing import Any

import pytest

from llmmeter import CallRecord, CostStatus, Timings, Usage
from llmmeter.pricing import DictSource, ModelPrice, PricingRegistry

pytest.importorskip("genai_prices")

from llmmeter.pricing.genai_prices import GenaiPricesSource, to_model_price

AT = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def source() -> GenaiPricesSource:
    return GenaiPricesSource()


@pytest.fixture
def registry(source: GenaiPricesSource) -> PricingRegistry:
    registry = PricingRegistry.default()
    registry.add_source(source, fallback=True)
    return registry


def test_a_model_only_genai_prices_knows_is_priced_from_it_and_says_so(registry: PricingRegistry) -> None:
    assert PricingRegistry.default().lookup("grok-3-fast", provider="x_ai", at=AT) is None
    resolved = registry.lookup("grok-3-fast", provider="x_ai", at=AT)
    assert resolved is not None
    assert resolved.source == "genai-prices"
    assert resolved.price_ref.startswith("genai-prices:xai/")


def test_the_curated_table_and_the_users_prices_come_before_genai_prices(registry: PricingRegistry) -> None:
    bundled = registry.lookup("gpt-4o-mini", provider="openai", at=AT)
    assert bundled is not None and bundled.source == "bundled"
    registry.add_source(DictSource({"grok-3-fast": ModelPrice(input_per_mtok="1", output_per_mtok="2")}))
    plugged = registry.lookup("grok-3-fast", provider="x_ai", at=AT)
    assert plugged is not None and plugged.source == "dict"
    registry.register("grok-3-fast", ModelPrice(input_per_mtok="9", output_per_mtok="9"))
    user = registry.lookup("grok-3-fast", provider="x_ai", at=AT)
    assert user is not None and user.source == "user"


def test_an_unknown_snapshot_of_a_bundled_family_stays_the_bundled_inferred_price(
    registry: PricingRegistry,
) -> None:
    resolved = registry.lookup("gpt-4o-2099-01-01", provider="openai", at=AT)
    assert resolved is not None
    assert resolved.price_ref == "bundled:openai/gpt-4o;via=snapshot;inferred-snapshot=gpt-4o"


def test_a_server_you_run_and_an_unknown_name_get_no_genai_price(registry: PricingRegistry) -> None:
    assert registry.lookup("grok-3-fast", provider="vllm", at=AT) is None
    assert registry.lookup("no-such-model-anywhere", provider="openai", at=AT) is None


def test_a_call_priced_from_genai_prices_costs_its_rates_exactly(
    registry: PricingRegistry, source: GenaiPricesSource
) -> None:
    resolved = source.lookup("grok-3-fast", "xai", AT)
    assert resolved is not None
    price = resolved.price
    assert isinstance(price, ModelPrice)
    record = CallRecord(
        operation="chat",
        provider="x_ai",
        request_model="grok-3-fast",
        response_model="grok-3-fast",
        usage=Usage(input_tokens=1000, output_tokens=500),
        timings=Timings(start_time_unix_ns=int(AT.timestamp() * 1e9)),
    )
    registry.price(record)
    assert record.cost_status is CostStatus.PRICED and record.cost is not None
    expected = (1000 * price.input_per_mtok + 500 * price.output_per_mtok) / Decimal(1_000_000)
    assert record.cost.amount == expected


def test_prompt_size_tiers_and_fees_convert_exactly() -> None:
    from genai_prices.types import ModelPrice as GenaiPrice
    from genai_prices.types import Tier, TieredPrices

    tiered = TieredPrices(base=Decimal("1.25"), tiers=[Tier(start=200_000, price=Decimal("2.5"))])
    price = to_model_price(
        GenaiPrice(input_mtok=tiered, output_mtok=Decimal("10"), requests_kcount=Decimal("5"))
    )
    assert price is not None
    assert price.input_per_mtok == Decimal("1.25") and price.output_per_mtok == Decimal("10")
    assert [(tier.above_input_tokens, tier.input_per_mtok) for tier in price.tiers] == [
        (200_000, Decimal("2.5"))
    ]
    assert price.per_request == Decimal("0.005")  # 5 USD per thousand requests
    hourly = to_model_price(GenaiPrice(audio_hours=Decimal("0.36")))
    assert hourly is not None and hourly.per_audio_minute == Decimal("0.006")


def test_a_unit_llmmeter_cannot_bill_leaves_the_model_unpriced_not_underpriced() -> None:
    from genai_prices.types import ModelPrice as GenaiPrice

    assert to_model_price(GenaiPrice(input_mtok=Decimal("1"), input_document_kpages=Decimal("1"))) is None


def test_lookups_never_touch_the_network(monkeypatch: pytest.MonkeyPatch, source: GenaiPricesSource) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("genai-prices tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    registry = PricingRegistry.default()
    registry.add_source(GenaiPricesSource(), fallback=True)
    for model in ("grok-3-fast", "claude-2", "no-such-model"):
        registry.lookup(model, provider="x_ai", at=AT)
        registry.lookup(model, provider="openai_compatible", at=AT)


def test_a_source_that_fails_inside_prices_nothing_and_never_raises() -> None:
    class Broken:
        def find_provider_model(self, *args: Any) -> Any:
            raise RuntimeError("corrupt data")

    broken = GenaiPricesSource()
    broken._snapshot = Broken()
    assert broken.lookup("gpt-4o", "openai", AT) is None


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without_genai_prices(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("genai_prices"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_genai_prices)
    with pytest.raises(ImportError, match=r'pip install "llmmeter\[genai-prices\]"'):
        GenaiPricesSource()
