"""Any response or chunk shape a server may send: adapters report exact usage or none, never raise,
and the caller's stream is handed back unchanged (issue 12 §5).

Shapes are arbitrary JSON, biased toward the keys the adapters read (``usage``, ``choices``,
``delta``, ``message``, ``usage_metadata``, ``prompt_eval_count``...), so that hypothesis reaches
the code paths that read them with values of every type.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk

from llmmeter.providers.anthropic import AnthropicStreamReader, read_anthropic_response
from llmmeter.providers.gemini import GeminiStreamReader, read_gemini_response
from llmmeter.providers.ollama import OllamaStreamReader, read_ollama_response
from llmmeter.providers.openai_media import TranscriptionStreamReader, plan_media
from llmmeter.providers.openai_request import read_openai_response
from llmmeter.providers.types import Observed
from llmmeter.record import Usage

KEYS = [
    "usage", "choices", "delta", "message", "content", "text", "type", "model", "id",
    "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "prompt_tokens_details",
    "cached_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation",
    "usage_metadata", "candidates", "parts", "prompt_token_count", "candidates_token_count",
    "prompt_eval_count", "eval_count", "done", "response", "total_duration", "finish_reason",
    "stop_reason", "data", "duration", "seconds", "x_groq", "metrics", "service_tier",
]  # fmt: skip
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=25,
)
OBJECTS = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8)
CONTENT_CHUNKS = st.builds(
    lambda text, extra: {
        "id": "c",
        "model": "m",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        **extra,
    },
    st.text(min_size=1, max_size=4),
    st.dictionaries(st.sampled_from(["usage", "service_tier"]), JSON, max_size=1),
)
"""Well-formed content chunks, so that a stream of arbitrary chunks has output (and is skimmed)."""
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

READERS = {
    "openai": read_openai_response,
    "anthropic": read_anthropic_response,
    "gemini": read_gemini_response,
    "ollama": read_ollama_response,
    "image": plan_media("generate_image", {}, None, False).read_response,
    "transcription": plan_media("transcription", {}, None, False).read_response,
}
STREAM_READERS = {
    "anthropic": AnthropicStreamReader,
    "gemini": GeminiStreamReader,
    "ollama": OllamaStreamReader,
    "transcription": TranscriptionStreamReader,
}


def _honest(usage: Usage | None) -> None:
    """Usage is missing, or made of real integers: never a float, a bool or a string."""
    if usage is None:
        return
    for name, value in usage.counts().items():
        assert type(value) is int, (name, value)


@pytest.mark.parametrize("name", sorted(READERS))
@FUZZ
@given(response=OBJECTS | JSON)
def test_a_whole_response_of_any_shape_gives_usage_or_none_and_never_raises(name: str, response: Any) -> None:
    observed = READERS[name](response)
    assert isinstance(observed, Observed)
    _honest(observed.usage)


@FUZZ
@given(prompt=st.integers(0, 2**70), completion=st.integers(0, 2**70), noise=OBJECTS)
def test_reported_openai_counts_are_copied_exactly(
    prompt: int, completion: int, noise: dict[str, Any]
) -> None:
    response = {**noise, "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    usage = read_openai_response(response).usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (prompt, completion)


@pytest.mark.parametrize("name", sorted(STREAM_READERS))
@FUZZ
@given(chunks=st.lists(OBJECTS | JSON, max_size=6))
def test_a_stream_of_any_chunks_is_read_without_raising(name: str, chunks: list[Any]) -> None:
    reader = STREAM_READERS[name]()
    for chunk in chunks:
        assert isinstance(reader.feed(chunk), bool)
    observed = reader.result()
    assert isinstance(observed, Observed)
    _honest(observed.usage)


@settings(
    max_examples=100,
    deadline=None,
    # monkeypatch only sets the same variable for every example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(payloads=st.lists(OBJECTS | CONTENT_CHUNKS, min_size=1, max_size=8))
@pytest.mark.parametrize("skim", [False, True])
def test_openai_chunks_of_any_shape_reach_the_caller_unchanged_through_a_measured_stream(
    skim: bool, payloads: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the openai SDK builds from any SSE payload (``construct``: no validation) goes through
    the measured stream as is, read whole or skimmed after its first output (the ring of its last
    chunks read at its end); a reader failing on an odd shape is llmmeter's problem, logged."""
    from openai._models import construct_type

    import llmmeter
    from llmmeter.instrument.streams import MeteredStream
    from llmmeter.measure import Measurement
    from llmmeter.providers.openai_stream import ChatStreamReader
    from llmmeter.record import CallRecord

    monkeypatch.setenv("LLMMETER_STRICT", "0")
    chunks = [construct_type(type_=ChatCompletionChunk, value=payload) for payload in payloads]
    settings_ = llmmeter.configure(store=None, pricing=None)
    record = CallRecord(operation="chat", provider="openai", streaming=True)
    measurement = Measurement(settings_, record, ChatStreamReader())
    measurement.skim = skim
    seen = list(MeteredStream(iter(chunks), measurement))
    assert seen == chunks and all(a is b for a, b in zip(seen, chunks, strict=True))
    assert measurement.finished
    _honest(record.usage)
