"""OpenAI-style usage normalization, checked against real recorded traffic.

Every OpenAI-shaped interaction of ``../shared/cassettes`` that reports usage is normalized from
the ``usage`` object (as the openai package's pydantic type and as a plain dict) and from the
recorded response body itself, and compared with the truth values of ``index.json``.
"""

from __future__ import annotations

import functools
import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai._models import construct_type  # how the client itself builds its response objects
from openai.types import Completion, CompletionUsage, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.create_embedding_response import Usage as EmbeddingUsage
from openai.types.responses import Response, ResponseStreamEvent, ResponseUsage

from llmmeter.providers import extract_response_info, extract_usage
from llmmeter.providers.openai import (
    provider_cost_from_openai_usage,
    provider_from_host,
    usage_from_openai,
)
from llmmeter.record import Cost, Usage, UsageSource

CASSETTES = Path(__file__).resolve().parents[2] / "shared" / "cassettes"
INDEX: list[dict[str, Any]] = json.loads((CASSETTES / "index.json").read_text())


# --- the truth, read from index.json --------------------------------------------------------


def _interactions() -> list[tuple[str, int, dict[str, Any]]]:
    return [
        (entry["file"], number, interaction)
        for entry in INDEX
        for number, interaction in enumerate(entry["interactions"])
        if "/messages" not in interaction["path"]  # Anthropic: see test_providers_other.py
    ]


def _truth_usage(interaction: dict[str, Any]) -> dict[str, Any] | None:
    stream = interaction.get("stream")
    return stream.get("usage") if stream is not None else interaction.get("usage")


def _api(interaction: dict[str, Any]) -> str:
    path = interaction["path"]
    for api in ("responses", "embeddings", "chat/completions", "completions"):
        if f"/{api}" in path:
            return api
    raise AssertionError(f"unknown endpoint {path}")


WITH_USAGE = [
    pytest.param(file, number, interaction, id=f"{file}#{number}")
    for file, number, interaction in _interactions()
    if _truth_usage(interaction) is not None
]
ALL_OPENAI = [
    pytest.param(file, number, interaction, id=f"{file}#{number}")
    for file, number, interaction in _interactions()
]
NON_STREAMED_SUCCESSES = [
    pytest.param(file, number, interaction, id=f"{file}#{number}")
    for file, number, interaction in _interactions()
    if "stream" not in interaction and interaction["status"] < 400
]


def expected_counts(raw: dict[str, Any]) -> dict[str, int]:
    """What the documented field mapping (formats.md E) says the normalized counts must be."""
    if "prompt_tokens" in raw:  # Chat, legacy Completions, embeddings, OpenAI-compatible servers
        prompt = raw.get("prompt_tokens_details") or {}
        completion = raw.get("completion_tokens_details") or {}
        expected = {
            "input_tokens": raw["prompt_tokens"],
            "output_tokens": raw.get("completion_tokens"),
            "cache_read_input_tokens": prompt.get("cached_tokens", raw.get("prompt_cache_hit_tokens")),
            "cache_write_input_tokens": prompt.get("cache_write_tokens"),
            "text_input_tokens": prompt.get("text_tokens"),
            "image_input_tokens": prompt.get("image_tokens"),
            "audio_input_tokens": prompt.get("audio_tokens"),
            "reasoning_output_tokens": completion.get("reasoning_tokens"),
            "text_output_tokens": completion.get("text_tokens"),
            "audio_output_tokens": completion.get("audio_tokens"),
            "accepted_prediction_tokens": completion.get("accepted_prediction_tokens"),
            "rejected_prediction_tokens": completion.get("rejected_prediction_tokens"),
        }
    else:  # Responses API
        inputs = raw.get("input_tokens_details") or {}
        outputs = raw.get("output_tokens_details") or {}
        expected = {
            "input_tokens": raw["input_tokens"],
            "output_tokens": raw["output_tokens"],
            "cache_read_input_tokens": inputs.get("cached_tokens"),
            "cache_write_input_tokens": inputs.get("cache_write_tokens"),
            "reasoning_output_tokens": outputs.get("reasoning_tokens"),
        }
    return {name: value for name, value in expected.items() if value is not None}


# --- the recorded bodies ---------------------------------------------------------------------


@functools.cache
def _cassette(file: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loaded: dict[str, Any] = yaml.load((CASSETTES / file).read_text(), Loader=loader)
    return loaded


def _recorded_body(file: str, number: int) -> str:
    response = _cassette(file)["interactions"][number]["response"]
    if "parsed_body" in response:  # pydantic-ai's serializer
        return json.dumps(response["parsed_body"])
    body = response["body"]["string"]
    if isinstance(body, bytes):
        return gzip.decompress(body).decode() if body[:2] == b"\x1f\x8b" else body.decode()
    return str(body)


def _sse_payloads(body: str) -> list[dict[str, Any]]:
    payloads = []
    for line in body.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            payloads.append(json.loads(line[5:]))
    return payloads


_RESPONSE_TYPE = {
    "chat/completions": ChatCompletion,
    "completions": Completion,
    "embeddings": CreateEmbeddingResponse,
    "responses": Response,
}
_STREAM_EVENT_TYPE = {
    "chat/completions": ChatCompletionChunk,
    "completions": Completion,
    "responses": ResponseStreamEvent,
}
_USAGE_TYPE = {
    "chat/completions": CompletionUsage,
    "completions": CompletionUsage,
    "embeddings": EmbeddingUsage,
    "responses": ResponseUsage,
}


def _as_sdk_object(api: str, payload: dict[str, Any], *, streamed: bool) -> Any:
    types = _STREAM_EVENT_TYPE if streamed else _RESPONSE_TYPE
    return construct_type(type_=types[api], value=payload)


def _last_usage(objects: list[Any]) -> Usage | None:
    """What a stream consumer ends with: the last usage any chunk carried."""
    found = None
    for obj in objects:
        usage = extract_usage(obj)
        if usage is not None:
            found = usage
    return found


# --- usage objects vs. the index -------------------------------------------------------------


@pytest.mark.parametrize(("file", "number", "interaction"), WITH_USAGE)
def test_sdk_usage_object_normalizes_to_the_recorded_truth(
    file: str, number: int, interaction: dict[str, Any]
) -> None:
    raw = _truth_usage(interaction)
    assert raw is not None
    sdk_usage = construct_type(type_=_USAGE_TYPE[_api(interaction)], value=raw)

    usage = usage_from_openai(sdk_usage)

    assert usage.counts() == expected_counts(raw)
    assert usage.total_tokens == raw["total_tokens"]
    assert usage.source is UsageSource.PROVIDER


@pytest.mark.parametrize(("file", "number", "interaction"), WITH_USAGE)
def test_dict_usage_normalizes_exactly_like_the_sdk_object(
    file: str, number: int, interaction: dict[str, Any]
) -> None:
    raw = _truth_usage(interaction)
    assert raw is not None
    sdk_usage = construct_type(type_=_USAGE_TYPE[_api(interaction)], value=raw)

    assert usage_from_openai(raw) == usage_from_openai(sdk_usage)


@pytest.mark.parametrize(("file", "number", "interaction"), WITH_USAGE)
def test_parts_are_subsets_of_their_totals(file: str, number: int, interaction: dict[str, Any]) -> None:
    usage = usage_from_openai(_truth_usage(interaction))

    assert usage.input_tokens is not None
    for part in ("cache_read_input_tokens", "cache_write_input_tokens"):
        assert (getattr(usage, part) or 0) <= usage.input_tokens
    assert (
        sum((usage.text_input_tokens or 0, usage.image_input_tokens or 0, usage.audio_input_tokens or 0))
        <= usage.input_tokens
    )
    if usage.output_tokens is not None:
        assert (usage.reasoning_output_tokens or 0) <= usage.output_tokens
        assert (usage.text_output_tokens or 0) + (usage.audio_output_tokens or 0) <= usage.output_tokens


# --- whole recorded responses and streams ----------------------------------------------------


@pytest.mark.parametrize(("file", "number", "interaction"), ALL_OPENAI)
def test_usage_extracted_from_the_recorded_response_matches_the_truth(
    file: str, number: int, interaction: dict[str, Any]
) -> None:
    body = _recorded_body(file, number)
    raw = _truth_usage(interaction)
    api = _api(interaction)

    if interaction["status"] >= 400:
        assert extract_usage(json.loads(body)) is None
        return
    if "stream" in interaction:
        payloads = _sse_payloads(body)
        from_dicts = _last_usage(payloads)
        from_sdk = _last_usage([_as_sdk_object(api, p, streamed=True) for p in payloads])
    else:
        payload = json.loads(body)
        from_dicts = extract_usage(payload)
        from_sdk = extract_usage(_as_sdk_object(api, payload, streamed=False))

    if raw is None:
        assert from_dicts is None
        assert from_sdk is None
    else:
        assert from_sdk is not None
        assert from_sdk.counts() == expected_counts(raw)
        assert from_dicts == from_sdk


@pytest.mark.parametrize(("file", "number", "interaction"), NON_STREAMED_SUCCESSES)
def test_response_info_of_a_recorded_response(file: str, number: int, interaction: dict[str, Any]) -> None:
    payload = json.loads(_recorded_body(file, number))
    sdk_response = _as_sdk_object(_api(interaction), payload, streamed=False)

    info = extract_response_info(sdk_response)

    assert info == extract_response_info(payload)
    assert info.response_model == interaction["response_model"]
    assert info.response_id == payload.get("id")
    if "finish_reasons" in interaction:
        assert info.finish_reasons == tuple(interaction["finish_reasons"])
    if interaction.get("response_status"):
        assert info.finish_reasons == (interaction["response_status"],)


# --- the quirks, spelled out with the recorded numbers ---------------------------------------


def _truth(file: str, number: int = 0) -> dict[str, Any]:
    interaction = next(i for f, n, i in _interactions() if f == file and n == number)
    usage = _truth_usage(interaction)
    assert usage is not None
    return usage


def test_cached_prompt_tokens_are_reported_inside_the_input() -> None:
    usage = usage_from_openai(_truth("openllmetry/test_openai_prompt_caching.yaml", 1))
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (1149, 1024)


def test_responses_api_cached_input_tokens() -> None:
    raw = _truth("mirascope/test_caching_multi_turn_conversation__openai_gpt_4o_responses.yaml", 1)
    usage = usage_from_openai(construct_type(type_=ResponseUsage, value=raw))
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (3763, 3584, 44)
    assert usage.cache_write_input_tokens is None  # not in this recording: not reported, not 0


def test_reasoning_tokens_are_reported_inside_the_output() -> None:
    usage = usage_from_openai(_truth("openllmetry/test_chat__test_chat_reasoning.yaml", 0))
    assert (usage.output_tokens, usage.reasoning_output_tokens) == (228, 192)


def test_audio_and_text_input_tokens_are_split_by_modality() -> None:
    usage = usage_from_openai(_truth("pydantic-ai/test_audio_as_binary_content_input.yaml"))
    assert (usage.input_tokens, usage.audio_input_tokens, usage.text_input_tokens) == (64, 44, 20)
    assert (usage.image_input_tokens, usage.text_output_tokens) == (0, 9)


def test_deepseek_reasoner_stream_usage() -> None:
    usage = usage_from_openai(_truth("pydantic-ai/test_deepseek_model_thinking_stream.yaml"))
    assert usage.counts() == {
        "input_tokens": 6,
        "output_tokens": 212,
        "cache_read_input_tokens": 0,
        "reasoning_output_tokens": 198,
    }


def test_deepseek_prompt_cache_hit_tokens_count_as_cached_when_cached_tokens_is_absent() -> None:
    usage = usage_from_openai({"prompt_tokens": 40, "completion_tokens": 2, "prompt_cache_hit_tokens": 32})
    assert usage.cache_read_input_tokens == 32


def test_groq_stream_usage_comes_from_x_groq() -> None:
    last_chunk = construct_type(
        type_=ChatCompletionChunk,
        value={
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "llama3-8b-8192",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "x_groq": {"id": "req_1", "usage": _truth("openllmetry/test_chat_streaming_legacy.yaml")},
        },
    )

    usage = extract_usage(last_chunk)
    info = extract_response_info(last_chunk)

    assert usage is not None
    assert usage.counts() == {"input_tokens": 18, "output_tokens": 73}
    assert info.server_timings is not None
    assert info.server_timings.queue_s == pytest.approx(0.28245049)
    assert info.server_timings.prefill_s == pytest.approx(0.002698174)
    assert info.server_timings.decode_s == pytest.approx(0.060833333)


def test_embeddings_have_no_output_tokens_unless_the_server_reports_them() -> None:
    openai_usage = usage_from_openai(
        _truth("opentelemetry-python-contrib/test_embeddings_with_batch_input.yaml")
    )
    vllm_usage = usage_from_openai(_truth("openllmetry/test_embeddings_context_propagation.yaml"))

    assert (openai_usage.input_tokens, openai_usage.output_tokens) == (24, None)
    assert (vllm_usage.input_tokens, vllm_usage.output_tokens) == (11, 0)


def test_vllm_usage_without_prompt_details_reports_no_cached_tokens() -> None:
    usage = usage_from_openai(_truth("openllmetry/test_chat_context_propagation.yaml"))
    assert usage.counts() == {"input_tokens": 43, "output_tokens": 36}
    assert usage.cache_read_input_tokens is None


def test_vllm_cached_tokens_are_read_when_the_server_reports_them() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 12,
            "completion_tokens": 2,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 8},
        }
    )
    assert usage.cache_read_input_tokens == 8


def test_absent_details_stay_none_but_reported_zeros_stay_zero() -> None:
    without_details = usage_from_openai(_truth("openllmetry/test_chat__test_chat.yaml", 0))
    with_zero_details = usage_from_openai(_truth("openllmetry/test_chat__test_chat.yaml", 1))

    assert without_details.counts() == {"input_tokens": 15, "output_tokens": 19}
    assert without_details.cache_read_input_tokens is None
    assert without_details.reasoning_output_tokens is None
    assert with_zero_details.cache_read_input_tokens == 0
    assert with_zero_details.reasoning_output_tokens == 0
    assert with_zero_details.rejected_prediction_tokens == 0


def test_full_modern_chat_usage_maps_every_detail() -> None:
    raw = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {
            "cached_tokens": 1920,
            "cache_write_tokens": 64,
            "audio_tokens": 6,
            "image_tokens": 1000,
            "text_tokens": 1000,
        },
        "completion_tokens_details": {
            "reasoning_tokens": 128,
            "audio_tokens": 10,
            "text_tokens": 290,
            "accepted_prediction_tokens": 5,
            "rejected_prediction_tokens": 7,
        },
    }

    usage = usage_from_openai(construct_type(type_=CompletionUsage, value=raw))

    assert usage.counts() == {
        "input_tokens": 2006,
        "output_tokens": 300,
        "cache_read_input_tokens": 1920,
        "cache_write_input_tokens": 64,
        "audio_input_tokens": 6,
        "image_input_tokens": 1000,
        "text_input_tokens": 1000,
        "reasoning_output_tokens": 128,
        "audio_output_tokens": 10,
        "text_output_tokens": 290,
        "accepted_prediction_tokens": 5,
        "rejected_prediction_tokens": 7,
    }


def test_responses_usage_with_cache_writes() -> None:
    raw = {
        "input_tokens": 3438,
        "input_tokens_details": {"cached_tokens": 3423, "cache_write_tokens": 12},
        "output_tokens": 474,
        "output_tokens_details": {"reasoning_tokens": 300},
        "total_tokens": 3912,
    }
    usage = usage_from_openai(construct_type(type_=ResponseUsage, value=raw))
    assert (usage.cache_read_input_tokens, usage.cache_write_input_tokens) == (3423, 12)
    assert usage.reasoning_output_tokens == 300


def test_a_response_without_usage_has_none() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"delta": {"content": "Hi"}}],
        "usage": None,
    }
    assert extract_usage(chunk) is None
    assert extract_usage(construct_type(type_=ChatCompletionChunk, value=chunk)) is None
    assert extract_usage(object()) is None
    assert extract_usage(None) is None


def test_responses_stream_delta_events_carry_no_usage_and_completed_does() -> None:
    body = _recorded_body(
        "opentelemetry-python-contrib/test_responses_create_streaming[content_mode0].yaml", 0
    )
    events: list[Any] = [construct_type(type_=ResponseStreamEvent, value=p) for p in _sse_payloads(body)]

    usages = [(event.type, extract_usage(event)) for event in events]

    assert [kind for kind, usage in usages if usage is not None] == ["response.completed"]
    completed = extract_usage(events[-1])
    assert completed is not None
    assert completed.counts() == {
        "input_tokens": 22,
        "output_tokens": 6,
        "cache_read_input_tokens": 0,
        "reasoning_output_tokens": 0,
    }


# --- provider-reported cost (OpenRouter) -----------------------------------------------------


def test_openrouter_cost_is_the_exact_decimal_of_the_reported_number() -> None:
    raw = _truth("mirascope/test_openrouter_stream__openrouter_openai_gpt_4o.yaml")

    cost = provider_cost_from_openai_usage(construct_type(type_=CompletionUsage, value=raw))

    assert cost == Cost(
        amount=Decimal("0.00005"),
        components={"input": Decimal("0.00003"), "output": Decimal("0.00002")},
        source="provider",
        price_ref="usage.cost",
    )
    assert provider_cost_from_openai_usage(raw) == cost


def test_openrouter_cost_reaches_the_response_info_of_the_last_chunk() -> None:
    body = _recorded_body("mirascope/test_openrouter_stream__openrouter_openai_gpt_4o.yaml", 0)
    last_chunk = construct_type(type_=ChatCompletionChunk, value=_sse_payloads(body)[-1])

    info = extract_response_info(last_chunk)

    assert info.provider_cost is not None
    assert info.provider_cost.amount == Decimal("0.00005")
    assert info.response_model == "openai/gpt-4o"


def test_a_free_model_reports_a_real_zero_cost() -> None:
    cost = provider_cost_from_openai_usage({"prompt_tokens": 3, "completion_tokens": 1, "cost": 0})
    assert cost is not None
    assert cost.amount == 0
    assert cost.components == {"total": Decimal(0)}


def test_cost_that_breaks_down_differently_is_kept_whole() -> None:
    byok = {
        "cost": 0.001,
        "cost_details": {"upstream_inference_prompt_cost": 0.5, "upstream_inference_completions_cost": 1},
    }
    cost = provider_cost_from_openai_usage(byok)
    assert cost is not None
    assert cost.components == {"total": Decimal("0.001")}


@pytest.mark.parametrize(
    "usage", [{"prompt_tokens": 1}, {"cost": None}, {"cost": True}, {"cost": "n/a"}, None]
)
def test_no_reported_cost_means_none(usage: Any) -> None:
    assert provider_cost_from_openai_usage(usage) is None


# --- provider name from the host -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", "openai"),
        ("API.OpenAI.com:443", "openai"),
        ("https://api.openai.com/v1", "openai"),
        ("my-resource.openai.azure.com", "azure.ai.openai"),
        ("my-resource.cognitiveservices.azure.com", "azure.ai.openai"),
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.x.ai", "x_ai"),
        ("openrouter.ai", "openrouter"),
        ("api.together.xyz", "together_ai"),
        ("api.fireworks.ai", "fireworks_ai"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("api.anthropic.com", "anthropic"),
    ],
)
def test_known_hosts_map_to_their_provider_name(host: str, provider: str) -> None:
    assert provider_from_host(host) == provider


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "llm-gateway.internal", "", None]
)
def test_unknown_hosts_are_not_guessed_to_be_openai(host: str | None) -> None:
    assert provider_from_host(host) is None


def test_lookalike_hosts_are_not_trusted() -> None:
    assert provider_from_host("api.openai.com.evil.example") is None
    assert provider_from_host("notopenai.azure.com") is None
