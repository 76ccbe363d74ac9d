"""The bundled table against the reference copies: every model they list for the providers
llmmeter prices is priced, every bundled rate agrees with them or its difference is justified in
docs/pricing.md, the generated files are what the references give, and no pattern of the table
captures another model or another kind of model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmmeter.pricing import BundledSource, PricingRegistry, is_inferred_price
from llmmeter.pricing.models import kind_of
from llmmeter.pricing.regen import (
    Outcome,
    ReferencePrice,
    acceptances,
    compare_with_references,
    data_dir,
    generated_documents,
    main,
    reference_prices,
    stale_files,
)
from llmmeter.pricing.sources import GENERATED_PREFIX, compile_pattern, is_pattern

from .conftest import SHARED

REFERENCE = SHARED / "pricing-reference"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "pricing.md"

needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="reference price copies not available")


@pytest.fixture(scope="module")
def registry() -> PricingRegistry:
    return PricingRegistry.default()


@pytest.fixture(scope="module")
def outcome() -> Outcome:
    return compare_with_references(REFERENCE)


@pytest.fixture(scope="module")
def references() -> list[ReferencePrice]:
    return reference_prices(REFERENCE)[0]


# -- what the user found unpriced ----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "price_ref"),
    [
        ("claude-opus-4-7", "anthropic", "bundled:anthropic/claude-opus-4-7"),
        ("claude-sonnet-4-7", "anthropic", "bundled:anthropic/claude-sonnet-4-7"),
        ("gpt-5.5", "openai", "bundled:openai/gpt-5.5"),
        ("gpt-5.4-nano", "openai", "bundled:openai/gpt-5.4-nano"),
        ("gpt-5.4-pro", "openai", "bundled:openai/gpt-5.4-pro"),
        ("gpt-5.3-codex", "openai", "bundled:openai/gpt-5.3-codex"),
        ("gpt-5.1-codex-max", "openai", "bundled:openai/gpt-5.1-codex-max"),
        ("gemini-3-flash", "gcp.gemini", "bundled:google/gemini-3-flash"),
        ("gemini-3.1-flash-lite", "gcp.gemini", "bundled:google/gemini-3.1-flash-lite"),
        ("gemini-3.5-flash", "gcp.gemini", "bundled:google/gemini-3.5-flash"),
        ("grok-4.3", "x_ai", "bundled:xai/grok-4.3"),
        (
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "aws.bedrock",
            "bundled:anthropic/claude-3-5-sonnet-20241022;via=bedrock-id",
        ),
        (
            "us.meta.llama3-2-90b-instruct-v1:0",
            "aws.bedrock",
            "bundled:bedrock/meta.llama3-2-90b-instruct-v1:0;via=bedrock-region",
        ),
        ("claude-opus-4-7@default", "gcp.vertex_ai", "bundled:anthropic/claude-opus-4-7;via=vertex-version"),
        (
            "anthropic/claude-sonnet-4.5",
            "openrouter",
            "bundled:anthropic/claude-sonnet-4-5;via=provider-prefix+router-name;inferred-provider=anthropic",
        ),
        (
            "gemini-2.0-flash-exp",
            "gcp.gemini",
            "bundled:google/gemini-2.0-flash;via=snapshot;inferred-snapshot=gemini-2.0-flash",
        ),
        ("gpt-4o-2099-01-01", "openai", "bundled:openai/gpt-4o;via=snapshot;inferred-snapshot=gpt-4o"),
    ],
)
def test_current_models_and_cloud_ids_are_priced_and_the_price_ref_says_how(
    registry: PricingRegistry, model: str, provider: str, price_ref: str
) -> None:
    resolved = registry.lookup(model, provider=provider)
    assert resolved is not None
    assert resolved.price_ref == price_ref


def test_an_experimental_or_unknown_snapshot_priced_as_its_family_is_marked_inferred(
    registry: PricingRegistry,
) -> None:
    for model, provider in (("gemini-2.0-flash-exp", "gcp.gemini"), ("gpt-4o-2099-01-01", "openai")):
        resolved = registry.lookup(model, provider=provider)
        assert resolved is not None and resolved.snapshot_inferred
        assert is_inferred_price(resolved.price_ref)
    known = registry.lookup("gpt-4o-2024-08-06", provider="openai")
    assert known is not None and not is_inferred_price(known.price_ref)


# -- the references ---------------------------------------------------------------------------------


@needs_reference
def test_every_model_the_references_list_for_the_bundled_providers_is_priced(
    registry: PricingRegistry, references: list[ReferencePrice], outcome: Outcome
) -> None:
    assert len(references) > 1500
    untrusted = {item.label for item in outcome.skipped if item.reason.startswith("not trusted: ")}
    unpriced = [
        price.label
        for price in references
        if registry.lookup(price.model, provider=price.call_provider) is None
    ]
    assert unpriced == sorted(untrusted) == ["openlit:nvidia/Llama-3.1-Nemotron-70B-Instruct-HF"]


@needs_reference
def test_every_bundled_rate_agrees_with_the_references_or_its_difference_is_justified(
    outcome: Outcome,
) -> None:
    assert [str(difference) for difference in outcome.disagreements] == []
    assert outcome.unused_acceptances == []
    assert len(outcome.agreed) > 500


@needs_reference
def test_every_justified_difference_and_unlisted_entry_is_named_in_the_docs(outcome: Outcome) -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for acceptance in acceptances():
        assert f"`{acceptance.key}`" in docs, acceptance.key
        assert acceptance.why
    for entry in BundledSource(include_generated=False).entries:
        if (entry.model, entry.provider) not in outcome.checked_entries:
            assert f"`{entry.model}`" in docs, entry.model


@needs_reference
def test_the_generated_files_are_what_the_references_give(outcome: Outcome) -> None:
    assert stale_files(generated_documents(outcome), data_dir()) == []


@needs_reference
def test_the_generator_fails_loudly_on_a_disagreement_it_cannot_justify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    litellm = json.loads((REFERENCE / "litellm_model_prices.json").read_text(encoding="utf-8"))
    litellm["gpt-4o-mini"]["input_cost_per_token"] = 3e-07  # twice OpenAI's 0.15 per million
    (tmp_path / "litellm_model_prices.json").write_text(json.dumps(litellm), encoding="utf-8")
    (tmp_path / "openlit_pricing.json").write_text(
        (REFERENCE / "openlit_pricing.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    assert main(["--reference", str(tmp_path), "--check"]) == 1
    error = capsys.readouterr().err
    assert "DISAGREEMENT litellm:gpt-4o-mini -> bundled:openai/gpt-4o-mini: input_per_mtok" in error
    assert "nothing written" in error


def test_a_missing_reference_directory_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--reference", str(tmp_path / "nowhere"), "--check"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_generated_entries_carry_their_source_date_and_reference_key() -> None:
    generated = [
        entry
        for entry in BundledSource().entries
        if entry.origin is not None and entry.origin.startswith(f"bundled/{GENERATED_PREFIX}")
    ]
    assert len(generated) > 1000
    for entry in generated:
        price = entry.price
        assert price.source_url and price.checked_on, entry.model
        assert price.notes is not None and price.notes.startswith("Generated from "), entry.model
        assert kind_of(entry.model, price) == getattr(price, "kind", None), entry.model


# -- patterns over the whole table ---------------------------------------------------------------------


# tests/test_pricing_gateways.py checks that no pattern captures a model with an entry of its own
# (over the whole table: BundledSource() holds the generated entries too).


@needs_reference
def test_no_pattern_captures_a_listed_model_of_another_kind(references: list[ReferencePrice]) -> None:
    # gemini-2.5-pro-preview-* once priced gemini-2.5-pro-preview-tts (speech) at text rates.
    patterns = [entry for entry in BundledSource().entries if is_pattern(entry.model)]
    assert patterns
    for pattern in patterns:
        regex, kind = compile_pattern(pattern.model), kind_of(pattern.model, pattern.price)
        other_kinds = [
            price.label
            for price in references
            if regex.fullmatch(price.model) and price.fields.get("kind") != kind
        ]
        assert other_kinds == [], pattern.model


def test_every_entry_has_a_kind_and_speech_is_never_priced_as_text(registry: PricingRegistry) -> None:
    tts = registry.lookup("gemini-2.5-pro-preview-tts", provider="gcp.gemini")
    assert tts is not None and tts.model == "gemini-2.5-pro-preview-tts"
    kinds = {kind_of(entry.model, entry.price) for entry in BundledSource().entries}
    assert kinds >= {"chat", "embedding", "image", "speech", "transcription", "moderation", "realtime"}


# -- converting a reference's fields -----------------------------------------------------------------


def test_a_litellm_entry_keeps_its_tiers_service_tiers_cache_writes_and_fees(tmp_path: Path) -> None:
    litellm = {
        "xai/grok-9": {
            "litellm_provider": "xai",
            "mode": "chat",
            "source": "https://docs.x.ai/pricing",
            "input_cost_per_token": 1.25e-06,
            "output_cost_per_token": 2.5e-06,
            "cache_read_input_token_cost": 2e-07,
            "cache_creation_input_token_cost": 1.5625e-06,
            "cache_creation_input_token_cost_above_1hr": 2.5e-06,
            "input_cost_per_token_above_200k_tokens": 2.5e-06,
            "output_cost_per_token_above_200k_tokens": 5e-06,
            "input_cost_per_token_batches": 6.25e-07,
            "output_cost_per_token_batches": 1.25e-06,
            "search_context_cost_per_query": {"search_context_size_low": 0.01},
        },
        "groq/whisper-9": {
            "litellm_provider": "groq",
            "mode": "audio_transcription",
            "source": "https://groq.com/pricing",
            "input_cost_per_second": 3.083e-05,  # 0.111 per hour, rounded by the reference
        },
        "azure/eu/gpt-4o": {"litellm_provider": "azure", "mode": "chat", "input_cost_per_token": 1e-06},
        "ft:gpt-9": {"litellm_provider": "openai", "mode": "chat", "source": "OpenAI needs to add pricing"},
    }
    (tmp_path / "litellm_model_prices.json").write_text(json.dumps(litellm), encoding="utf-8")
    (tmp_path / "openlit_pricing.json").write_text(
        json.dumps(
            {"audio": {"tts-9": 0.015}, "chat": {"command-r": {"promptPrice": 1, "completionPrice": 2}}}
        ),
        encoding="utf-8",
    )
    prices, skipped = reference_prices(tmp_path)
    by_key = {price.key: price for price in prices}
    assert dict(by_key["xai/grok-9"].fields) == {
        "kind": "chat",
        "input_per_mtok": "1.25",
        "output_per_mtok": "2.5",
        "cached_input_per_mtok": "0.2",
        "cache_write_per_mtok": "1.5625",
        "cache_write_1h_per_mtok": "2.5",
        "tiers": [{"above_input_tokens": 200_000, "input_per_mtok": "2.5", "output_per_mtok": "5"}],
        "service_tiers": {"batch": {"factor": "0.5"}},
    }
    assert (by_key["xai/grok-9"].model, by_key["xai/grok-9"].call_provider) == ("grok-9", "x_ai")
    # 3.083e-05 per second x 60 = 0.0018498, to 4 significant digits 0.00185 per minute
    assert dict(by_key["groq/whisper-9"].fields) == {"kind": "transcription", "per_audio_minute": "0.00185"}
    # OpenLIT's audio prices are per 1,000 characters: 0.015 x 1000 = 15 per million
    assert dict(by_key["tts-9"].fields) == {"kind": "speech", "per_million_characters": "15"}
    reasons = {item.label: item.reason for item in skipped}
    assert reasons["litellm:azure/eu/gpt-4o"].startswith("an Azure deployment type or region")
    assert reasons["litellm:ft:gpt-9"].startswith("a placeholder, not a published price")
    assert reasons["openlit:command-r"].startswith("a provider llmmeter does not bundle")
