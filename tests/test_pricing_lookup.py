"""How a model name finds its price: names, aliases, patterns, layers, dates, sources."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from llmmeter.pricing import (
    DictSource,
    GpuHourPrice,
    GpuHourSource,
    ModelPrice,
    PricingRegistry,
    ResolvedPrice,
)


def price(input_rate: str, output_rate: str = "1.00", **extra: object) -> ModelPrice:
    return ModelPrice(input_per_mtok=input_rate, output_per_mtok=output_rate, **extra)  # type: ignore[arg-type]


def on(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)


@pytest.fixture
def registry() -> PricingRegistry:
    return PricingRegistry.default()


def test_rates_are_exact_decimals_from_strings_and_floats() -> None:
    assert ModelPrice(input_per_mtok="0.60", output_per_mtok=0.15).input_per_mtok == Decimal("0.60")
    assert ModelPrice(input_per_mtok="0.60", output_per_mtok=0.15).output_per_mtok == Decimal("0.15")


def test_missing_rates_fall_back_as_providers_bill_them() -> None:
    rates = price("2.00", "8.00", cached_input_per_mtok="0.50").rates()
    assert rates["reasoning_per_mtok"] == Decimal("8.00")
    assert rates["cache_write_per_mtok"] == Decimal("2.00")
    assert rates["audio_input_per_mtok"] == Decimal("2.00")
    assert rates["cached_audio_input_per_mtok"] == Decimal("0.50")


@pytest.mark.parametrize(
    ("model", "provider", "expected_ref", "via"),
    [
        ("gpt-4o-mini", "openai", "bundled:openai/gpt-4o-mini", "exact"),
        ("gpt-4o-2024-08-06", "openai", "bundled:openai/gpt-4o-2024-08-06", "exact"),
        # a snapshot without its own entry is priced as its family
        ("gpt-4o-mini-2099-01-01", "openai", "bundled:openai/gpt-4o-mini", "snapshot"),
        ("gpt-3.5-turbo-0301", "openai", "bundled:openai/gpt-3.5-turbo", "snapshot"),
        ("claude-3-5-haiku-latest", "anthropic", "bundled:anthropic/claude-3-5-haiku", "latest"),
        ("openai/gpt-4o", None, "bundled:openai/gpt-4o", "provider-prefix"),
        ("anthropic/claude-haiku-4-5", "openrouter", "bundled:anthropic/claude-haiku-4-5", "provider-prefix"),
        (
            "ft:gpt-4o-mini-2024-07-18:acme::abc",
            "openai",
            "bundled:openai/ft:gpt-4o-mini-2024-07-18",
            "fine-tune",
        ),
        (
            "ft:gpt-3.5-turbo-0901:acme::abc",  # a snapshot without a fine-tune entry of its own
            "openai",
            "bundled:openai/ft:gpt-3.5-turbo",
            "fine-tune+snapshot",
        ),
        ("davinci-002:ft-acme-2023-08-01", "openai", "bundled:openai/ft:davinci-002", "fine-tune"),
        (
            "gemini-2.5-pro-preview-06-05",
            "gcp.gemini",
            "bundled:google/gemini-2.5-pro-preview-[0-9][0-9]-[0-9][0-9]",
            "pattern",
        ),
        ("models/gemini-2.5-flash", "gcp.gemini", "bundled:google/gemini-2.5-flash", "exact"),
        ("gpt-35-turbo", "azure.ai.openai", "bundled:openai/gpt-3.5-turbo", "azure-name"),
        ("gpt-4o-audio-preview", "openai", "bundled:openai/gpt-4o-audio-preview-2025-06-03", "alias"),
    ],
)
def test_lookup_rules(
    registry: PricingRegistry, model: str, provider: str | None, expected_ref: str, via: str
) -> None:
    resolved = registry.lookup(model, provider=provider)
    assert resolved is not None
    assert resolved.ref == expected_ref
    assert resolved.matched_via == via
    assert resolved.requested_model == model


def test_fine_tune_of_an_unpriced_base_is_unpriced_not_priced_as_the_base(registry: PricingRegistry) -> None:
    assert registry.lookup("ft:gpt-4-0613:acme::abc", provider="openai") is None


def test_hosted_prices_never_apply_to_a_self_hosted_copy(registry: PricingRegistry) -> None:
    assert registry.lookup("meta-llama/Llama-3.3-70B-Instruct-Turbo", provider="vllm") is None
    assert registry.lookup("meta-llama/Llama-3.3-70B-Instruct-Turbo", provider="together") is not None


def test_a_name_prefix_does_not_override_a_different_known_provider(registry: PricingRegistry) -> None:
    resolved = registry.lookup("openai/gpt-oss-20b", provider="groq")
    assert resolved is not None and resolved.ref == "bundled:groq/openai/gpt-oss-20b"
    assert registry.lookup("openai/gpt-4o", provider="groq") is None


def test_unknown_models_have_no_price(registry: PricingRegistry) -> None:
    assert registry.lookup("this-model-does-not-exist") is None
    assert registry.lookup("facebook/opt-125m", provider="vllm") is None


def test_alias_prices_an_azure_deployment_as_its_model(registry: PricingRegistry) -> None:
    registry.alias("openllmetry-testing", "gpt-4.1-mini-2025-04-14")
    resolved = registry.lookup("openllmetry-testing", provider="azure.ai.openai")
    assert resolved is not None
    assert resolved.ref == "bundled:openai/gpt-4.1-mini-2025-04-14"
    assert resolved.matched_via == "alias"


def test_alias_cycles_are_refused(registry: PricingRegistry) -> None:
    registry.alias("a", "b")
    with pytest.raises(ValueError, match="cycle"):
        registry.alias("b", "a")
    with pytest.raises(ValueError):
        registry.alias("c", "c")


def test_user_registration_beats_file_beats_bundled(registry: PricingRegistry, tmp_path: Path) -> None:
    negotiated = tmp_path / "negotiated.yaml"
    negotiated.write_text(
        "models:\n  - model: gpt-4o\n    provider: openai\n"
        "    input_per_mtok: '2.00'\n    output_per_mtok: '8.00'\n"
    )
    bundled = registry.lookup("gpt-4o", provider="openai")
    assert bundled is not None and bundled.source == "bundled"
    registry.load(negotiated)
    from_file = registry.lookup("gpt-4o", provider="openai")
    assert from_file is not None
    assert from_file.source == f"file:{negotiated.resolve()}"
    assert from_file.price.input_per_mtok == Decimal("2.00")
    registry.register("gpt-4o", price("1.00"))
    from_user = registry.lookup("gpt-4o", provider="openai")
    assert from_user is not None and from_user.source == "user"
    assert from_user.price.input_per_mtok == Decimal("1.00")


def test_a_family_rate_in_a_higher_layer_covers_its_bundled_snapshots(registry: PricingRegistry) -> None:
    registry.register("gpt-4o", price("1.00"), provider="openai")
    resolved = registry.lookup("gpt-4o-2024-08-06", provider="openai")
    assert resolved is not None and resolved.source == "user" and resolved.matched_via == "snapshot"


def test_the_latest_loaded_file_wins(registry: PricingRegistry, tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.json"
    first.write_text("models: [{model: acme, input_per_mtok: '1', output_per_mtok: '1'}]")
    second.write_text('{"models": [{"model": "acme", "input_per_mtok": "2", "output_per_mtok": "2"}]}')
    registry.load(first)
    registry.load(second)
    resolved = registry.lookup("acme")
    assert resolved is not None and resolved.price.input_per_mtok == Decimal("2")


def test_registering_again_replaces_the_earlier_registration() -> None:
    registry = PricingRegistry()
    registry.register("acme", price("1.00"))
    registry.register("acme", price("3.00"))
    resolved = registry.lookup("acme")
    assert resolved is not None and resolved.price.input_per_mtok == Decimal("3.00")


def test_glob_and_regex_patterns_price_a_family_most_specific_first() -> None:
    registry = PricingRegistry()
    registry.register("acme-*", price("1.00"))
    registry.register("acme-large-*", price("5.00"))
    registry.register(r"re:corp-v\d+", price("7.00"))
    large = registry.lookup("acme-large-2")
    small = registry.lookup("acme-small")
    corp = registry.lookup("corp-v12")
    assert large is not None and large.price.input_per_mtok == Decimal("5.00")
    assert small is not None and small.price.input_per_mtok == Decimal("1.00")
    assert corp is not None and corp.price.input_per_mtok == Decimal("7.00") and corp.matched_via == "pattern"
    assert registry.lookup("corp-vx") is None


def test_exact_names_beat_patterns_in_the_same_layer() -> None:
    registry = PricingRegistry()
    registry.register("acme-*", price("1.00"))
    registry.register("acme-pro", price("9.00"))
    resolved = registry.lookup("acme-pro")
    assert resolved is not None and resolved.price.input_per_mtok == Decimal("9.00")


def test_effective_dates_pick_the_price_of_the_call_day() -> None:
    registry = PricingRegistry()
    registry.register("acme", price("4.00", effective_to=dt.date(2025, 6, 1)))
    registry.register("acme", price("2.00", effective_from=dt.date(2025, 6, 1)))
    old = registry.lookup("acme", at=on("2025-05-31T23:59:59"))
    new = registry.lookup("acme", at=on("2025-06-01T00:00:00"))
    assert old is not None and old.price.input_per_mtok == Decimal("4.00")
    assert new is not None and new.price.input_per_mtok == Decimal("2.00")
    assert new.ref == "user:acme@2025-06-01"


def test_no_price_before_a_model_was_priced() -> None:
    registry = PricingRegistry()
    registry.register("acme", price("2.00", effective_from=dt.date(2025, 6, 1)))
    assert registry.lookup("acme", at=on("2025-01-01")) is None


def test_provider_scoped_registration_only_prices_that_provider() -> None:
    registry = PricingRegistry()
    registry.register("llama-3.1-8b", price("0.10"), provider="groq")
    assert registry.lookup("llama-3.1-8b", provider="groq") is not None
    assert registry.lookup("llama-3.1-8b", provider="together") is None
    assert registry.lookup("llama-3.1-8b") is not None  # no provider given: any provider's price


class CompanyCatalogue:
    """A plugged PriceSource: records the names it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def lookup(self, model: str, provider: str | None, at: dt.datetime) -> ResolvedPrice | None:
        self.asked.append(model)
        if model == "gpt-4o":
            return ResolvedPrice(
                price=price("2.25", "9.00"), model=model, provider=provider, source="catalogue"
            )
        return None


def test_plugged_source_sits_above_bundled_and_below_user_registrations(registry: PricingRegistry) -> None:
    catalogue = CompanyCatalogue()
    registry.add_source(catalogue)
    resolved = registry.lookup("gpt-4o-2024-11-20", provider="openai")
    assert resolved is not None and resolved.source == "catalogue"
    assert catalogue.asked == ["gpt-4o-2024-11-20", "gpt-4o"]  # asked with each candidate name
    registry.register("gpt-4o", price("1.00"))
    user = registry.lookup("gpt-4o", provider="openai")
    assert user is not None and user.source == "user"


def test_dict_source_accepts_prices_or_a_price_document() -> None:
    registry = PricingRegistry()
    registry.add_source(DictSource({"acme": price("1.00")}))
    registry.add_source(
        DictSource(
            {"models": [{"model": "corp", "input_per_mtok": "2", "output_per_mtok": "3"}]}, label="corp"
        )
    )
    acme, corp = registry.lookup("acme"), registry.lookup("corp")
    assert acme is not None and acme.source == "dict"
    assert corp is not None and corp.ref == "corp:corp"


def test_gpu_hour_source_prices_self_hosted_models_by_pattern() -> None:
    registry = PricingRegistry.default()
    h100 = GpuHourPrice(usd_per_gpu_hour="2.49", gpu_count=8)
    registry.add_source(GpuHourSource({"meta-llama/*": h100}, provider="vllm"))
    resolved = registry.lookup("meta-llama/Llama-3.2-1B-Instruct", provider="vllm")
    assert resolved is not None and resolved.price == h100
    assert registry.lookup("meta-llama/Llama-3.2-1B-Instruct", provider="groq") is None


def test_lookups_are_cached_until_the_registry_changes() -> None:
    registry = PricingRegistry()
    assert registry.lookup("acme") is None
    registry.register("acme", price("1.00"))
    assert registry.lookup("acme") is not None


def test_default_registries_are_independent() -> None:
    first, second = PricingRegistry.default(), PricingRegistry.default()
    first.register("acme", price("1.00"))
    assert second.lookup("acme") is None


def test_service_tier_rates_cannot_be_combined_with_prompt_tiers() -> None:
    with pytest.raises(ValueError, match="factor"):
        price(
            "1.00",
            tiers=[{"above_input_tokens": 1000, "input_per_mtok": "2.00"}],
            service_tiers={"priority": {"input_per_mtok": "3.00"}},
        )
