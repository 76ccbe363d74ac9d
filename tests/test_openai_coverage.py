"""Every ``openai`` entry point is measured, sync and async, and returns what it returns today."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import openai
import pytest

import llmmeter
from llmmeter import Outcome, UsageSource
from llmmeter.testing import LocalOpenAIServer, Pacing

from .conftest import Telemetry

MESSAGES = [{"role": "user", "content": "Write a haiku about meters"}]
TOKENS = 5


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=2, itl_ms=0, tokens=TOKENS)) as srv:
        yield srv


def _drain(result: Any) -> Any:
    """Consume whatever the call returned, as user code would."""
    if isinstance(result, openai.Stream):
        return list(result)
    return result


async def _adrain(result: Any) -> Any:
    if isinstance(result, openai.AsyncStream):
        return [item async for item in result]
    return result


SYNC_CALLS: dict[str, tuple[str, Callable[[openai.OpenAI], Any]]] = {
    "chat.create": ("chat", lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)),
    "chat.create(stream)": (
        "chat",
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ),
    ),
    "chat.parse": ("chat", lambda c: c.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES)),
    "chat.stream()": (
        "chat",
        lambda c: _helper_stream(
            c.chat.completions.stream(
                model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
            )
        ),
    ),
    "completions.create": (
        "text_completion",
        lambda c: c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi"),
    ),
    "completions.create(stream)": (
        "text_completion",
        lambda c: c.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            stream=True,
            stream_options={"include_usage": True},
        ),
    ),
    "embeddings.create": (
        "embeddings",
        lambda c: c.embeddings.create(model="text-embedding-3-small", input=["one two three"]),
    ),
    "responses.create": ("chat", lambda c: c.responses.create(model="gpt-4o-mini", input="Say hi")),
    "responses.create(stream)": (
        "chat",
        lambda c: c.responses.create(model="gpt-4o-mini", input="Say hi", stream=True),
    ),
    "responses.parse": ("chat", lambda c: c.responses.parse(model="gpt-4o-mini", input="Say hi")),
    "responses.stream()": (
        "chat",
        lambda c: _helper_stream(c.responses.stream(model="gpt-4o-mini", input="Say hi")),
    ),
}


def _helper_stream(manager: Any) -> Any:
    with manager as stream:
        for _ in stream:
            pass
        return stream


@pytest.mark.parametrize("name", list(SYNC_CALLS))
def test_sync_entry_point_is_measured_once(
    name: str, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    operation, call = SYNC_CALLS[name]
    plain = openai.OpenAI(base_url=server.base_url, api_key="test")
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    expected = _drain(call(plain))
    assert not telemetry.records, "the plain client is not measured"
    got = _drain(call(client))
    assert type(got) is type(expected)
    (record,) = telemetry.records
    _assert_measured(record, operation, streaming="stream" in name)


ASYNC_CALLS: dict[str, tuple[str, Callable[[openai.AsyncOpenAI], Awaitable[Any]]]] = {
    "chat.create": ("chat", lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)),
    "chat.create(stream)": (
        "chat",
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ),
    ),
    "chat.parse": ("chat", lambda c: c.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES)),
    "completions.create(stream)": (
        "text_completion",
        lambda c: c.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            stream=True,
            stream_options={"include_usage": True},
        ),
    ),
    "embeddings.create": (
        "embeddings",
        lambda c: c.embeddings.create(model="text-embedding-3-small", input=["one two three"]),
    ),
    "responses.create": ("chat", lambda c: c.responses.create(model="gpt-4o-mini", input="Say hi")),
    "responses.create(stream)": (
        "chat",
        lambda c: c.responses.create(model="gpt-4o-mini", input="Say hi", stream=True),
    ),
    "responses.parse": ("chat", lambda c: c.responses.parse(model="gpt-4o-mini", input="Say hi")),
}


@pytest.mark.parametrize("name", list(ASYNC_CALLS))
async def test_async_entry_point_is_measured_once(
    name: str, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    operation, call = ASYNC_CALLS[name]
    client = llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, api_key="test"))
    await _adrain(await call(client))
    (record,) = telemetry.records
    _assert_measured(record, operation, streaming="stream" in name)


async def test_async_stream_helpers_are_measured(server: LocalOpenAIServer, telemetry: Telemetry) -> None:
    client = llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, api_key="test"))
    async with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as chat_stream:
        await chat_stream.get_final_completion()
    async with client.responses.stream(model="gpt-4o-mini", input="Say hi") as responses_stream:
        await responses_stream.get_final_response()
    assert [(r.operation, r.streaming, r.outcome) for r in telemetry.records] == [
        ("chat", True, Outcome.OK),
        ("chat", True, Outcome.OK),
    ]


async def test_async_raw_and_streaming_responses_are_measured(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, api_key="test"))
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().usage.completion_tokens == TOKENS
    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        stream = await response.parse()
        assert isinstance(stream, openai.AsyncStream)
        async for _ in stream:
            pass
    assert len(telemetry.records) == 2
    for record in telemetry.records:
        assert record.usage is not None and record.usage.output_tokens == TOKENS


def test_with_options_copies_stay_instrumented(server: LocalOpenAIServer, telemetry: Telemetry) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    client.with_options(timeout=30).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(telemetry.records) == 1


def test_instrument_openai_measures_every_client_and_uninstrument_stops(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    llmmeter.instrument_openai()
    try:
        openai.OpenAI(base_url=server.base_url, api_key="test").chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
        llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test")).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    finally:
        llmmeter.uninstrument_openai()
    openai.OpenAI(base_url=server.base_url, api_key="test").chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert len(telemetry.records) == 2, "one record per call, even when both hooks are installed"


def test_non_llm_endpoints_pass_through_unmeasured(server: LocalOpenAIServer, telemetry: Telemetry) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    models = client.models.list()
    assert [m.id for m in models]
    assert telemetry.records == []


def test_uninstrumented_client_is_plain_again(server: LocalOpenAIServer, telemetry: Telemetry) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    llmmeter.uninstrument(client)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert telemetry.records == []


def _assert_measured(record: llmmeter.CallRecord, operation: str, *, streaming: bool) -> None:
    assert record.operation == operation
    assert record.outcome is Outcome.OK
    assert record.streaming is streaming
    assert record.server_address == "127.0.0.1"
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
    if operation == "embeddings":
        assert record.usage.input_tokens == 3
        assert record.usage.output_tokens is None
    else:
        assert record.usage.output_tokens == TOKENS
    if streaming:
        assert record.timings.ttft_s is not None
    else:
        assert record.timings.ttft_s is None and record.timings.ttfc_s is None


def test_prompts_and_completions_are_not_recorded_by_default(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (record,) = telemetry.records
    assert record.content is None
    (span,) = telemetry.finished_spans()
    assert not [key for key in span.attributes or {} if "messages" in key]


@pytest.mark.parametrize("stream", [False, True])
def test_content_capture_is_opt_in_and_records_both_directions(
    stream: bool, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    telemetry.reconfigure(capture_content=True)
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    _drain(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=stream))
    (record,) = telemetry.records
    assert record.content is not None
    assert record.content["gen_ai.input.messages"] == MESSAGES
    (message,) = record.content["gen_ai.output.messages"]
    assert message["role"] == "assistant" and len(message["parts"][0]["content"].split()) == TOKENS
    (span,) = telemetry.finished_spans()
    assert "Write a haiku" in str((span.attributes or {})["gen_ai.input.messages"])


def test_embeddings_span_says_which_dimensions_and_encoding_were_requested(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    result = client.embeddings.create(
        model="text-embedding-3-small", input="one two", dimensions=4, encoding_format="float"
    )
    assert len(result.data[0].embedding) == 4
    client.embeddings.create(model="text-embedding-3-small", input="one two")
    first, second = telemetry.finished_spans()
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["gen_ai.embeddings.dimension.count"] == 4
    assert first.attributes["gen_ai.request.encoding_formats"] == ("float",)
    # Nothing asked for: no dimension count, and the encoding the openai SDK itself put on the wire.
    assert "gen_ai.embeddings.dimension.count" not in second.attributes
    assert second.attributes["gen_ai.request.encoding_formats"] == ("base64",)
