"""Every recorded usage in the shared cassettes is priced, without error, when its model is known."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from llmmeter import CallRecord, CostStatus, Usage
from llmmeter.pricing import PricingRegistry

from .conftest import CASSETTES

INDEX = CASSETTES / "index.json"

pytestmark = pytest.mark.skipif(not INDEX.exists(), reason="shared cassettes not available")

PROVIDERS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.deepseek.com": "deepseek",
    "api.groq.com": "groq",
    "openrouter.ai": "openrouter",
    "traceloop-stg.openai.azure.com": "azure.ai.openai",
    "localhost:8000": "vllm",
}

SELF_HOSTED_WITHOUT_A_PRICE = {"intfloat/e5-mistral-7b-instruct", "meta-llama/Llama-3.2-1B-Instruct"}


def normalize(usage: dict[str, Any], host: str) -> Usage:
    """The index's raw usage -> llmmeter's Usage (parts inside totals)."""
    if host == "api.anthropic.com":  # cache tokens are outside Anthropic's input_tokens
        writes = usage.get("cache_creation_input_tokens")
        reads = usage.get("cache_read_input_tokens")
        return Usage(
            input_tokens=usage["input_tokens"] + (writes or 0) + (reads or 0),
            output_tokens=usage["output_tokens"],
            cache_read_input_tokens=reads,
            cache_write_input_tokens=writes,
            cache_write_1h_input_tokens=(usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens"),
        )
    if "input_tokens" in usage:  # Responses API
        return Usage(
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            cache_read_input_tokens=(usage.get("input_tokens_details") or {}).get("cached_tokens"),
            reasoning_output_tokens=(usage.get("output_tokens_details") or {}).get("reasoning_tokens"),
        )
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        cache_read_input_tokens=prompt.get("cached_tokens"),
        audio_input_tokens=prompt.get("audio_tokens"),
        image_input_tokens=prompt.get("image_tokens"),
        text_input_tokens=prompt.get("text_tokens"),
        reasoning_output_tokens=completion.get("reasoning_tokens"),
        audio_output_tokens=completion.get("audio_tokens"),
        text_output_tokens=completion.get("text_tokens"),
        accepted_prediction_tokens=completion.get("accepted_prediction_tokens"),
        rejected_prediction_tokens=completion.get("rejected_prediction_tokens"),
    )


def interactions_with_usage() -> list[tuple[str, dict[str, Any]]]:
    if not INDEX.exists():
        return []
    cases = []
    for cassette in json.loads(INDEX.read_text()):
        for number, interaction in enumerate(cassette["interactions"]):
            if isinstance(interaction.get("usage"), dict):
                cases.append((f"{cassette['file']}#{number}", interaction))
    return cases


CASES = interactions_with_usage()


@pytest.fixture(scope="module")
def registry() -> PricingRegistry:
    reg = PricingRegistry.default()
    # The Azure cassettes call a deployment named after the test suite; the user maps it.
    reg.alias("openllmetry-testing", "gpt-4.1-mini-2025-04-14")
    return reg


def test_the_index_has_usage_to_price() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(("case", "interaction"), CASES, ids=[case for case, _ in CASES])
def test_cassette_usage_is_priced_without_error(
    registry: PricingRegistry, case: str, interaction: dict[str, Any]
) -> None:
    call = CallRecord(
        operation="chat",
        provider=PROVIDERS[interaction["host"]],
        request_model=interaction.get("request_model"),
        response_model=interaction.get("response_model"),
        usage=normalize(interaction["usage"], interaction["host"]),
        service_tier=interaction["usage"].get("service_tier"),
    )
    registry.price(call)
    model = call.response_model or call.request_model
    if model in SELF_HOSTED_WITHOUT_A_PRICE:
        assert call.cost is None and call.cost_status is CostStatus.UNPRICED
        return
    assert call.cost_status is CostStatus.PRICED, case
    assert call.cost is not None
    assert sum(call.cost.components.values(), Decimal(0)) == call.cost.amount
    assert (call.cost.amount > 0) == bool(call.usage and call.usage.total_tokens)


# Worked examples from /work/shared/pricing-reference/README.md, recomputed independently.
README_EXAMPLES = [
    (
        "gpt-4o-mini-2024-07-18",
        Usage(input_tokens=1149, output_tokens=353, cache_read_input_tokens=1024),
        "0.00030735",
    ),
    (
        "gpt-5-nano-2025-08-07",
        Usage(input_tokens=11, output_tokens=228, reasoning_output_tokens=0),
        "0.00009175",
    ),
    ("gpt-4-0613", Usage(input_tokens=12, output_tokens=5), "0.00066"),
    (
        "gpt-4o-2024-08-06",
        Usage(input_tokens=3763, output_tokens=44, cache_read_input_tokens=3584),
        "0.0053675",
    ),
    (
        "gpt-4o-audio-preview-2025-06-03",
        Usage(input_tokens=21, output_tokens=1, audio_input_tokens=2),
        "0.0001375",
    ),
    ("text-embedding-3-small", Usage(input_tokens=6, output_tokens=0), "0.00000012"),
    ("claude-sonnet-4-6", Usage(input_tokens=14, output_tokens=11), "0.000207"),
]


@pytest.mark.parametrize(
    ("model", "usage", "expected"), README_EXAMPLES, ids=[m for m, _, _ in README_EXAMPLES]
)
def test_reference_readme_worked_examples_agree(
    registry: PricingRegistry, model: str, usage: Usage, expected: str
) -> None:
    cost = registry.cost(usage, model=model)
    assert cost is not None and cost.amount == Decimal(expected)
