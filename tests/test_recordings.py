"""The recordings in ``tests/recordings`` replay through the real, uninstrumented SDKs.

These tests check the test data, not llmmeter: every recording, replayed through ``anthropic``,
``google.genai`` or ``ollama`` exactly as a user's code would call them, gives back the values
``tests/recordings/index.json`` (and its README) lists. The adapter tests assert llmmeter's numbers
against the same true values, so a failure here means the recording or the replay harness is
wrong, not the adapter. Nothing leaves this machine: vcrpy answers the HTTP calls, and Ollama's
bodies come from a server on 127.0.0.1.
"""

from __future__ import annotations

import collections
import time
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx
import ollama
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from google.oauth2.credentials import Credentials

from .recording_support import (
    RecordedBody,
    files,
    interactions,
    request_json,
    serve_bodies,
    shared_ssl_context,
    truth,
    use_recording,
)


def _interaction_ids(provider: str, *, where: Any = lambda entry, item: True) -> list[Any]:
    return [
        pytest.param(entry["file"], position, id=f"{entry['file'].split('/', 1)[1]}#{position}")
        for entry in (truth(file) for file in files(provider))
        for position, item in enumerate(entry.get("interactions", []))
        if where(entry, item)
    ]


# --- Anthropic ------------------------------------------------------------------------------------
def _anthropic_client(*, use_async: bool) -> Any:
    if use_async:
        http_client: Any = anthropic.DefaultAsyncHttpxClient(verify=shared_ssl_context())
        return anthropic.AsyncAnthropic(api_key="sk-ant-test", max_retries=0, http_client=http_client)
    http_client = anthropic.DefaultHttpxClient(verify=shared_ssl_context())
    return anthropic.Anthropic(api_key="sk-ant-test", max_retries=0, http_client=http_client)


def _messages(client: Any, file: str, position: int) -> Any:
    """``client.messages``, or ``client.beta.messages`` for a recording of ``?beta=true``."""
    query = urlsplit(interactions(file)[position]["request"]["uri"]).query
    return client.beta.messages if "beta=true" in query else client.messages


def _token_counts(usage: Any) -> dict[str, Any]:
    """The token numbers of an Anthropic usage (SDK object or recorded JSON), ``None`` left out."""
    data = usage if isinstance(usage, dict) else usage.model_dump()
    counts = {
        key: data.get(key)
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    }
    if data.get("cache_creation"):
        writes = data["cache_creation"]
        counts["cache_creation"] = {key: value for key, value in writes.items() if value is not None}
    return {key: value for key, value in counts.items() if value is not None}


ANTHROPIC_STREAMS = _interaction_ids(
    "anthropic", where=lambda e, i: i["request_stream"] and i["status"] == 200
)
ANTHROPIC_MESSAGES = _interaction_ids(
    "anthropic", where=lambda e, i: not i["request_stream"] and i["status"] == 200
)
ANTHROPIC_ERRORS = _interaction_ids("anthropic", where=lambda e, i: i["status"] >= 400)


def _check_anthropic_events(events: list[Any], expected: dict[str, Any]) -> None:
    counts = collections.Counter(event.type for event in events)
    recorded = collections.Counter(expected["sse_event_counts"])
    del recorded["ping"]  # the SDK swallows keep-alive pings
    assert counts == recorded
    assert len(events) == expected["sdk_events"]
    deltas = collections.Counter(e.delta.type for e in events if e.type == "content_block_delta")
    assert deltas == collections.Counter(expected["content_delta_counts"])
    start = next(event for event in events if event.type == "message_start")
    delta = next(event for event in events if event.type == "message_delta")
    assert start.message.model == expected["response_model"]
    assert delta.delta.stop_reason == expected["stop_reason"]
    assert _token_counts(start.message.usage) == _token_counts(expected["message_start_usage"])
    assert _token_counts(delta.usage) == _token_counts(expected["message_delta_usage"])


@pytest.mark.parametrize(("file", "position"), ANTHROPIC_STREAMS)
def test_a_recorded_anthropic_stream_yields_every_event_with_its_recorded_usage(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    with use_recording(file, position):
        messages = _messages(_anthropic_client(use_async=False), file, position)
        events = list(messages.create(**request_json(file, position)))
    _check_anthropic_events(events, expected)


@pytest.mark.parametrize(("file", "position"), ANTHROPIC_STREAMS)
async def test_a_recorded_anthropic_stream_replays_the_same_through_the_async_client(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    with use_recording(file, position):
        client = _anthropic_client(use_async=True)
        stream = await _messages(client, file, position).create(**request_json(file, position))
        events = [event async for event in stream]
    _check_anthropic_events(events, expected)


@pytest.mark.parametrize(("file", "position"), ANTHROPIC_STREAMS)
def test_the_stream_helper_merges_a_recorded_stream_into_the_final_usage_listed(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    body = {key: value for key, value in request_json(file, position).items() if key != "stream"}
    messages = _messages(_anthropic_client(use_async=False), file, position)
    with use_recording(file, position), messages.stream(**body) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == expected["stop_reason"]
    assert [block.type for block in message.content] == expected["content_block_types"]
    assert _token_counts(message.usage) == _token_counts(expected["final_usage"])


@pytest.mark.parametrize(("file", "position"), ANTHROPIC_STREAMS)
async def test_the_async_stream_helper_gives_the_same_final_usage(file: str, position: int) -> None:
    expected = truth(file)["interactions"][position]
    body = {key: value for key, value in request_json(file, position).items() if key != "stream"}
    with use_recording(file, position):
        async with _messages(_anthropic_client(use_async=True), file, position).stream(**body) as stream:
            message = await stream.get_final_message()
    assert _token_counts(message.usage) == _token_counts(expected["final_usage"])


@pytest.mark.parametrize(("file", "position"), ANTHROPIC_MESSAGES)
def test_a_recorded_anthropic_message_returns_its_recorded_usage(file: str, position: int) -> None:
    expected = truth(file)["interactions"][position]
    messages = _messages(_anthropic_client(use_async=False), file, position)
    with use_recording(file, position):
        message = messages.create(**request_json(file, position))
    assert message.model == expected["response_model"]
    assert message.stop_reason == expected["stop_reason"]
    assert [block.type for block in message.content] == expected["content_block_types"]
    assert _token_counts(message.usage) == _token_counts(expected["usage"])


@pytest.mark.parametrize(("file", "position"), ANTHROPIC_MESSAGES)
async def test_a_recorded_anthropic_message_returns_the_same_through_the_async_client(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    messages = _messages(_anthropic_client(use_async=True), file, position)
    with use_recording(file, position):
        message = await messages.create(**request_json(file, position))
    assert _token_counts(message.usage) == _token_counts(expected["usage"])


@pytest.mark.parametrize(("file", "position"), ANTHROPIC_ERRORS)
def test_a_recorded_anthropic_error_raises_the_sdk_error_of_its_status(file: str, position: int) -> None:
    expected = truth(file)["interactions"][position]
    with use_recording(file, position), pytest.raises(anthropic.APIStatusError) as raised:
        _messages(_anthropic_client(use_async=False), file, position).create(**request_json(file, position))
    assert raised.value.status_code == expected["status"]
    assert raised.value.body["error"]["type"] == expected["error"]["type"]  # type: ignore[index]


@pytest.mark.parametrize(("file", "position"), ANTHROPIC_ERRORS)
async def test_a_recorded_anthropic_error_raises_the_same_through_the_async_client(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    with use_recording(file, position), pytest.raises(anthropic.APIStatusError) as raised:
        messages = _messages(_anthropic_client(use_async=True), file, position)
        await messages.create(**request_json(file, position))
    assert raised.value.status_code == expected["status"]


# --- Google Gen AI --------------------------------------------------------------------------------
def _genai_client(file: str, position: int) -> genai.Client:
    """A ``genai.Client`` that sends its requests to the recorded endpoint and API version."""
    expected = truth(file)["interactions"][position]
    verify = {"verify": shared_ssl_context()}
    options = genai_types.HttpOptions(
        api_version=expected["api_version"], client_args=verify, async_client_args=verify
    )
    if not expected["vertexai"]:
        return genai.Client(api_key="test-gemini-key", http_options=options)
    parts = expected["path"].split("/")
    project, location = parts[parts.index("projects") + 1], parts[parts.index("locations") + 1]
    return genai.Client(
        vertexai=True,
        project=project,
        location=location,
        credentials=Credentials(token="test-token"),  # type: ignore[no-untyped-call]  # never refreshed
        http_options=options,
    )


def _usage_json(usage: Any) -> dict[str, Any]:
    return dict(usage.model_dump(by_alias=True, exclude_none=True, mode="json")) if usage else {}


def _token_fields(usage: dict[str, Any]) -> dict[str, Any]:
    """The token counts of a ``usageMetadata`` (counts and per-modality details)."""
    return {key: value for key, value in usage.items() if key.endswith(("TokenCount", "TokensDetails"))}


GENAI_CONTENT = _interaction_ids(
    "google_genai", where=lambda e, i: not i["request_stream"] and i["status"] == 200
)
GENAI_STREAMS = _interaction_ids("google_genai", where=lambda e, i: i["request_stream"])
GENAI_EMBED_ERRORS = _interaction_ids(
    "google_genai", where=lambda e, i: i["method_name"] == "batchEmbedContents" and i["status"] >= 400
)


@pytest.mark.parametrize(("file", "position"), GENAI_CONTENT)
def test_a_recorded_generate_content_returns_its_usage_metadata(file: str, position: int) -> None:
    expected = truth(file)["interactions"][position]
    client = _genai_client(file, position)  # held: a dropped genai.Client closes its HTTP client
    with use_recording(file, position):
        response = client.models.generate_content(model=expected["model"], contents="replayed")
    assert _token_fields(_usage_json(response.usage_metadata)) == _token_fields(expected["usage_metadata"])
    assert response.model_version == expected["response_model_version"]
    assert response.candidates and response.candidates[0].finish_reason == expected["finish_reason"]


@pytest.mark.parametrize(("file", "position"), GENAI_CONTENT)
async def test_a_recorded_generate_content_returns_the_same_through_client_aio(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    with use_recording(file, position):
        client = _genai_client(file, position)
        response = await client.aio.models.generate_content(model=expected["model"], contents="replayed")
    assert _token_fields(_usage_json(response.usage_metadata)) == _token_fields(expected["usage_metadata"])


@pytest.mark.parametrize(("file", "position"), GENAI_STREAMS)
def test_a_recorded_gemini_stream_yields_every_chunk_with_its_usage_metadata(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    with use_recording(file, position):
        client = _genai_client(file, position)
        chunks = list(client.models.generate_content_stream(model=expected["model"], contents="replayed"))
    assert len(chunks) == expected["chunks"]
    assert [_token_fields(_usage_json(chunk.usage_metadata)) for chunk in chunks] == [
        _token_fields(usage or {}) for usage in expected["chunk_usage_metadata"]
    ]
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == expected["finish_reason"]


@pytest.mark.parametrize(("file", "position"), GENAI_STREAMS)
async def test_a_recorded_gemini_stream_replays_the_same_through_client_aio(file: str, position: int) -> None:
    expected = truth(file)["interactions"][position]
    with use_recording(file, position):
        client = _genai_client(file, position)
        stream = await client.aio.models.generate_content_stream(model=expected["model"], contents="replayed")
        chunks = [chunk async for chunk in stream]
    assert len(chunks) == expected["chunks"]
    assert _token_fields(_usage_json(chunks[-1].usage_metadata)) == _token_fields(expected["usage_metadata"])


@pytest.mark.parametrize(("file", "position"), GENAI_EMBED_ERRORS)
def test_a_recorded_gemini_embed_error_raises_the_client_error_of_its_status(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    client = _genai_client(file, position)
    with use_recording(file, position), pytest.raises(genai_errors.APIError) as raised:
        client.models.embed_content(model=expected["model"], contents="replayed")
    assert raised.value.code == expected["status"]
    assert raised.value.status == expected["error"]["status"]


@pytest.mark.parametrize(("file", "position"), GENAI_EMBED_ERRORS)
async def test_a_recorded_gemini_embed_error_raises_the_same_through_client_aio(
    file: str, position: int
) -> None:
    expected = truth(file)["interactions"][position]
    client = _genai_client(file, position)
    with use_recording(file, position), pytest.raises(genai_errors.APIError) as raised:
        await client.aio.models.embed_content(model=expected["model"], contents="replayed")
    assert raised.value.code == expected["status"]


# --- Ollama ---------------------------------------------------------------------------------------
OLLAMA_BODIES = [
    pytest.param(entry["file"], id=entry["file"].split("/", 1)[1])
    for entry in (truth(file) for file in files("ollama"))
    if not entry["interactions"][0]["error"]
]
OLLAMA_FAILING_STREAMS = [
    pytest.param(entry["file"], id=entry["file"].split("/", 1)[1])
    for entry in (truth(file) for file in files("ollama"))
    if entry["interactions"][0]["error"]
]

_COUNTERS = (
    "prompt_eval_count",
    "eval_count",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
)


def _served(file: str) -> RecordedBody:
    route = truth(file)["route"]
    return RecordedBody(route["method"], route["path"], file)


def _call_ollama(client: Any, file: str) -> Any:
    """The ``ollama`` client method that sends the recorded route, called as a user would."""
    expected = truth(file)["interactions"][0]
    model, stream = expected["model"], expected["stream"]
    if expected["path"] == "/api/generate":
        return client.generate(model=model, prompt="replayed", stream=stream)
    if expected["path"] == "/api/chat":
        return client.chat(model=model, messages=[{"role": "user", "content": "replayed"}], stream=stream)
    return client.embed(model=model, input="replayed")


def _check_ollama(parts: list[Any], file: str) -> None:
    expected = truth(file)["interactions"][0]
    final = parts[-1]
    assert len(parts) == expected["lines"]
    assert {name: getattr(final, name) for name in _COUNTERS} == {name: expected[name] for name in _COUNTERS}
    assert final.model == expected["model"]
    if "embeddings" in expected:
        assert [len(vector) for vector in final.embeddings] == expected["dimensions"]
        return
    assert final.done_reason == expected["done_reason"]
    generated = expected["path"] == "/api/generate"
    pieces = [part.response if generated else part.message.content for part in parts]
    assert "".join(piece or "" for piece in pieces) == expected["content"]
    thoughts = [part.thinking if generated else part.message.thinking for part in parts]
    assert "".join(thought or "" for thought in thoughts) == expected.get("thinking", "")


@pytest.mark.parametrize("file", OLLAMA_BODIES)
def test_a_recorded_ollama_body_reaches_the_ollama_client_with_its_counters_and_durations(file: str) -> None:
    with serve_bodies(_served(file)) as server:
        result = _call_ollama(ollama.Client(host=server.url), file)
        parts = list(result) if truth(file)["route"]["stream"] else [result]
    _check_ollama(parts, file)
    assert [(method, path) for method, path, _ in server.requests] == [
        (truth(file)["route"]["method"], truth(file)["route"]["path"])
    ]


@pytest.mark.parametrize("file", OLLAMA_BODIES)
async def test_a_recorded_ollama_body_reaches_the_async_client_the_same(file: str) -> None:
    with serve_bodies(_served(file)) as server:
        result = await _call_ollama(ollama.AsyncClient(host=server.url), file)
        parts = [part async for part in result] if truth(file)["route"]["stream"] else [result]
    _check_ollama(parts, file)


@pytest.mark.parametrize("file", OLLAMA_FAILING_STREAMS)
def test_a_stream_failing_mid_way_yields_its_parts_then_raises_the_response_error(file: str) -> None:
    expected = truth(file)["interactions"][0]
    parts: list[Any] = []
    with serve_bodies(_served(file)) as server, pytest.raises(ollama.ResponseError) as raised:
        parts.extend(_call_ollama(ollama.Client(host=server.url), file))
    assert len(parts) == expected["lines"] - 1
    assert "".join(part.response for part in parts) == expected["content"]
    assert raised.value.error == expected["error"]


@pytest.mark.parametrize("file", OLLAMA_FAILING_STREAMS)
async def test_a_stream_failing_mid_way_raises_the_same_through_the_async_client(file: str) -> None:
    expected = truth(file)["interactions"][0]
    parts: list[Any] = []
    with serve_bodies(_served(file)) as server, pytest.raises(ollama.ResponseError) as raised:
        async for part in await _call_ollama(ollama.AsyncClient(host=server.url), file):
            parts.append(part)
    assert len(parts) == expected["lines"] - 1
    assert raised.value.error == expected["error"]


def test_a_served_stream_reaches_the_client_line_by_line_as_ollama_streams_it() -> None:
    file = "ollama/ollama-bash-lib__ollama_generate_stream_json.ndjson"
    with (
        serve_bodies(_served(file)) as server,
        httpx.stream("POST", f"{server.url}/api/generate", json={"model": "m", "prompt": "p"}) as response,
    ):
        content_type = response.headers["content-type"]
        transfer = response.headers.get("transfer-encoding")
        lines = [line for line in response.iter_lines() if line]
    assert content_type == "application/x-ndjson"
    assert transfer == "chunked"
    assert len(lines) == truth(file)["interactions"][0]["lines"]


# --- streams served over a socket -----------------------------------------------------------------
GAP = 0.02


def test_a_recorded_anthropic_stream_served_event_by_event_arrives_with_the_gaps_set() -> None:
    file = "anthropic/openllmetry__test_anthropic_tools_streaming_legacy.yaml"
    expected = truth(file)["interactions"][0]
    with serve_bodies(RecordedBody.from_cassette(file, gap_seconds=GAP)) as server:
        client = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0, base_url=server.url)
        sent = time.perf_counter()
        arrivals = [
            (event.type, time.perf_counter()) for event in client.messages.create(**request_json(file))
        ]
    assert [kind for kind, _ in arrivals].count("content_block_delta") == expected["sse_event_counts"][
        "content_block_delta"
    ]
    # The server writes message_start, content_block_start and ping first, a gap before each next
    # event: the first delta cannot arrive before three gaps (a bound that client lag cannot break).
    first_delta = next(at for kind, at in arrivals if kind == "content_block_delta")
    assert first_delta - sent >= 3 * GAP


async def test_a_recorded_gemini_stream_served_chunk_by_chunk_reaches_client_aio() -> None:
    file = "google_genai/pydantic-ai__test_google_model_web_fetch_tool_stream.yaml"
    expected = truth(file)["interactions"][0]
    with serve_bodies(RecordedBody.from_cassette(file, gap_seconds=GAP)) as server:
        options = genai_types.HttpOptions(base_url=server.url, api_version=expected["api_version"])
        client = genai.Client(api_key="test-gemini-key", http_options=options)
        stream = await client.aio.models.generate_content_stream(model=expected["model"], contents="replayed")
        chunks = [chunk async for chunk in stream]
    assert len(chunks) == expected["chunks"]
    assert _token_fields(_usage_json(chunks[-1].usage_metadata)) == _token_fields(expected["usage_metadata"])
