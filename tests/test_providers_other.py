"""Anthropic and Gemini usage normalization: parts inside totals, TTL split, thoughts in output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmmeter.providers import extract_response_info, extract_usage
from llmmeter.providers.anthropic import usage_from_anthropic, usage_from_anthropic_stream
from llmmeter.providers.gemini import response_info_from_gemini, usage_from_gemini

CASSETTES = Path(__file__).resolve().parents[2] / "shared" / "cassettes"
INDEX: list[dict[str, Any]] = json.loads((CASSETTES / "index.json").read_text())

ANTHROPIC_INTERACTIONS = [
    (entry["file"], number, interaction)
    for entry in INDEX
    for number, interaction in enumerate(entry["interactions"])
    if "/messages" in interaction["path"]
]
ANTHROPIC = [pytest.param(*case, id=f"{case[0]}#{case[1]}") for case in ANTHROPIC_INTERACTIONS]
ANTHROPIC_STREAMS = [
    pytest.param(*case, id=f"{case[0]}#{case[1]}") for case in ANTHROPIC_INTERACTIONS if "stream" in case[2]
]


def _sse_events(file: str, number: int) -> list[dict[str, Any]]:
    response = yaml.safe_load((CASSETTES / file).read_text())["interactions"][number]["response"]
    body = response["body"]["string"]
    if isinstance(body, bytes):
        body = gzip.decompress(body).decode() if body[:2] == b"\x1f\x8b" else body.decode()
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


def _expected_anthropic(start: dict[str, Any], delta: dict[str, Any] | None = None) -> dict[str, int]:
    """Anthropic's input excludes the cache; llmmeter's includes reads and writes."""
    final = {**start, **(delta or {})}
    return {
        "input_tokens": final["input_tokens"]
        + final["cache_read_input_tokens"]
        + final["cache_creation_input_tokens"],
        "output_tokens": final["output_tokens"],
        "cache_read_input_tokens": final["cache_read_input_tokens"],
        "cache_write_input_tokens": final["cache_creation_input_tokens"],
        **(
            {"cache_write_1h_input_tokens": final["cache_creation"]["ephemeral_1h_input_tokens"]}
            if "cache_creation" in final
            else {}
        ),
    }


# --- Anthropic, on the recordings -------------------------------------------------------------


@pytest.mark.parametrize(("file", "number", "interaction"), ANTHROPIC)
def test_anthropic_recorded_usage_normalizes_with_cache_inside_input(
    file: str, number: int, interaction: dict[str, Any]
) -> None:
    if "stream" in interaction:
        start = interaction["stream"]["message_start_usage"]
        delta = interaction["stream"]["message_delta_usage"]
        usage = usage_from_anthropic_stream(start, delta)
        assert usage.counts() == _expected_anthropic(start, delta)
    else:
        raw = interaction["usage"]
        assert usage_from_anthropic(raw).counts() == _expected_anthropic(raw)


@pytest.mark.parametrize(("file", "number", "interaction"), ANTHROPIC_STREAMS)
def test_anthropic_recorded_stream_events_yield_the_final_usage(
    file: str, number: int, interaction: dict[str, Any]
) -> None:
    events = _sse_events(file, number)
    start = next(e for e in events if e["type"] == "message_start")
    delta = [e for e in events if e["type"] == "message_delta"][-1]

    from_start = extract_usage(start)
    from_delta = extract_usage(delta)

    assert from_start is not None
    assert from_delta is not None
    assert from_delta.output_tokens == interaction["stream"]["message_delta_usage"]["output_tokens"]
    final = usage_from_anthropic_stream(start["message"]["usage"], delta["usage"])
    assert final.input_tokens == from_start.input_tokens
    assert final.output_tokens == from_delta.output_tokens
    assert extract_response_info(delta).finish_reasons == (delta["delta"]["stop_reason"],)


def test_anthropic_cache_write_then_read_stream() -> None:
    file = "openllmetry/test_anthropic_prompt_caching_stream_legacy.yaml"
    writes = _sse_events(file, 0)
    reads = _sse_events(file, 1)

    def final(events: list[dict[str, Any]]) -> dict[str, int]:
        start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
        delta = [e for e in events if e["type"] == "message_delta"][-1]["usage"]
        return usage_from_anthropic_stream(start, delta).counts()

    assert final(writes) == {
        "input_tokens": 1169,
        "output_tokens": 201,
        "cache_read_input_tokens": 0,
        "cache_write_input_tokens": 1165,
    }
    assert final(reads) == {
        "input_tokens": 1169,
        "output_tokens": 221,
        "cache_read_input_tokens": 1165,
        "cache_write_input_tokens": 0,
    }


def test_anthropic_message_delta_alone_reports_no_input() -> None:
    usage = extract_usage(
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 201}}
    )
    assert usage is not None
    assert usage.counts() == {"output_tokens": 201}
    assert usage.input_tokens is None


def test_anthropic_stream_cut_before_message_delta_keeps_the_start_counts() -> None:
    usage = usage_from_anthropic_stream({"input_tokens": 21, "output_tokens": 7}, None)
    assert (usage.input_tokens, usage.output_tokens) == (21, 7)


def test_anthropic_response_info() -> None:
    message = {
        "id": "msg_01",
        "type": "message",
        "model": "claude-sonnet-4-6",
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 14, "output_tokens": 11, "service_tier": "standard"},
    }
    info = extract_response_info(message)
    assert (info.response_id, info.response_model, info.finish_reasons, info.service_tier) == (
        "msg_01",
        "claude-sonnet-4-6",
        ("end_turn",),
        "standard",
    )


# --- Anthropic, the documented shape (formats.md D.1) -----------------------------------------


def test_anthropic_cache_writes_split_by_ttl_and_thinking_inside_output() -> None:
    raw = {
        "input_tokens": 12,
        "output_tokens": 340,
        "cache_creation_input_tokens": 2048,
        "cache_read_input_tokens": 10240,
        "cache_creation": {"ephemeral_5m_input_tokens": 1536, "ephemeral_1h_input_tokens": 512},
        "output_tokens_details": {"thinking_tokens": 200},
    }

    usage = usage_from_anthropic(raw)

    assert usage.counts() == {
        "input_tokens": 12 + 10240 + 2048,
        "output_tokens": 340,
        "cache_read_input_tokens": 10240,
        "cache_write_input_tokens": 2048,
        "cache_write_1h_input_tokens": 512,
        "reasoning_output_tokens": 200,
    }
    assert usage.total_tokens == 12 + 10240 + 2048 + 340


def test_anthropic_cache_writes_from_the_ttl_split_when_the_total_is_absent() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 4,
            "output_tokens": 1,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 50},
        }
    )
    assert (usage.cache_write_input_tokens, usage.cache_write_1h_input_tokens, usage.input_tokens) == (
        150,
        50,
        154,
    )


def test_anthropic_usage_without_cache_fields_leaves_them_unreported() -> None:
    usage = usage_from_anthropic({"input_tokens": 10, "output_tokens": 3})
    assert usage.counts() == {"input_tokens": 10, "output_tokens": 3}


# --- Gemini (formats.md D.2) ------------------------------------------------------------------

GEMINI_USAGE = {
    "prompt_token_count": 1290,
    "cached_content_token_count": 1024,
    "candidates_token_count": 120,
    "thoughts_token_count": 300,
    "tool_use_prompt_token_count": 0,
    "total_token_count": 1710,
    "prompt_tokens_details": [
        {"modality": "TEXT", "token_count": 32},
        {"modality": "IMAGE", "token_count": 1258},
    ],
    "cache_tokens_details": [{"modality": "TEXT", "token_count": 1024}],
    "candidates_tokens_details": [{"modality": "TEXT", "token_count": 120}],
    "tool_use_prompt_tokens_details": [],
    "traffic_type": "ON_DEMAND",
}
GEMINI_EXPECTED = {
    "input_tokens": 1290,
    "output_tokens": 120 + 300,
    "cache_read_input_tokens": 1024,
    "reasoning_output_tokens": 300,
    "text_input_tokens": 32,
    "image_input_tokens": 1258,
    "text_output_tokens": 120 + 300,
}


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _camel_case(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(key): _camel_case(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel_case(item) for item in value]
    return value


def test_gemini_thoughts_are_added_into_the_output() -> None:
    usage = usage_from_gemini(GEMINI_USAGE)

    assert usage.counts() == GEMINI_EXPECTED
    assert usage.total_tokens == GEMINI_USAGE["total_token_count"]


def test_gemini_rest_json_in_camel_case_normalizes_the_same() -> None:
    assert usage_from_gemini(_camel_case(GEMINI_USAGE)).counts() == GEMINI_EXPECTED


def test_gemini_tool_use_prompt_counts_as_input() -> None:
    usage = usage_from_gemini(
        {
            "prompt_token_count": 100,
            "tool_use_prompt_token_count": 40,
            "candidates_token_count": 10,
            "total_token_count": 150,
            "prompt_tokens_details": [{"modality": "TEXT", "token_count": 100}],
            "tool_use_prompt_tokens_details": [{"modality": "TEXT", "token_count": 40}],
        }
    )
    assert (usage.input_tokens, usage.text_input_tokens, usage.output_tokens) == (140, 140, 10)
    assert usage.total_tokens == 150


def test_gemini_without_thinking_reports_no_reasoning() -> None:
    usage = usage_from_gemini({"prompt_token_count": 5, "candidates_token_count": 7, "total_token_count": 12})
    assert usage.counts() == {"input_tokens": 5, "output_tokens": 7}


def test_gemini_audio_modalities_and_cached_audio() -> None:
    usage = usage_from_gemini(
        {
            "prompt_token_count": 500,
            "cached_content_token_count": 300,
            "candidates_token_count": 80,
            "prompt_tokens_details": [
                {"modality": "AUDIO", "token_count": 400},
                {"modality": "TEXT", "token_count": 100},
            ],
            "cache_tokens_details": [{"modality": "AUDIO", "token_count": 300}],
            "candidates_tokens_details": [{"modality": "AUDIO", "token_count": 80}],
        }
    )
    assert (usage.audio_input_tokens, usage.audio_cache_read_input_tokens, usage.audio_output_tokens) == (
        400,
        300,
        80,
    )
    assert usage.text_output_tokens is None


def test_gemini_response_is_recognised_and_described() -> None:
    response = {
        "response_id": "resp-1",
        "model_version": "gemini-2.5-flash",
        "candidates": [{"finish_reason": "STOP"}],
        "usage_metadata": GEMINI_USAGE,
    }

    usage = extract_usage(response)
    info = extract_response_info(response)

    assert usage is not None
    assert usage.counts() == GEMINI_EXPECTED
    assert info == response_info_from_gemini(_camel_case(response))
    assert (info.response_id, info.response_model, info.finish_reasons, info.service_tier) == (
        "resp-1",
        "gemini-2.5-flash",
        ("STOP",),
        "ON_DEMAND",
    )


def test_gemini_response_without_usage_metadata_has_none() -> None:
    assert extract_usage({"candidates": [{"finish_reason": "STOP"}]}) is None
