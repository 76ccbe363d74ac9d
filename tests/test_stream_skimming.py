"""Streams that end with their usage are skimmed: read until the first output, then only timed.

Reading a chunk of the ``openai`` SDK (three pydantic objects) is most of what llmmeter costs per
chunk. When the stream will end with the provider's usage (``include_usage`` is in effect, asked
by llmmeter or by the caller), every chunk after the first output is timed and counted but not
read, and the last four are read when the stream ends. These tests pin what a user relies on:
the record equals what reading every chunk gives, the caller's chunks are untouched, a stream
left early is estimated from its chunks (and says so), and a server that drops the usage it was
asked for has its next streams read whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

import llmmeter
import llmmeter.measure
from llmmeter import Outcome, UsageSource
from llmmeter.instrument.streams import AsyncMeteredStream, MeteredStream
from llmmeter.measure import Measurement, servers_without_stream_usage
from llmmeter.providers.estimate import STREAM_CHUNKS_METHOD
from llmmeter.providers.openai_request import OPENAI
from llmmeter.providers.openai_stream import ChatStreamReader, is_usage_only_chunk
from llmmeter.record import CallRecord
from llmmeter.testing import LocalOpenAIServer, Pacing

from .conftest import Telemetry
from .recording_support import RecordedBody, serve_bodies, truth

MESSAGES = [{"role": "user", "content": "Tell me a story about a meter"}]
TOKENS = 6


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=2, itl_ms=1, tokens=TOKENS)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _forget_servers_without_usage() -> Iterator[None]:
    servers_without_stream_usage.clear()
    yield
    servers_without_stream_usage.clear()


def _create(client: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **kwargs)


def _texts(chunks: list[Any]) -> list[str | None]:
    return [chunk.choices[0].delta.content if chunk.choices else None for chunk in chunks]


# --- what the record says ---------------------------------------------------------------------


def test_a_skimmed_stream_records_what_reading_every_chunk_records(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0))
    list(_create(client))
    telemetry.reconfigure(capture_content=True)  # captured text needs every chunk read
    list(_create(client))
    skimmed, whole = telemetry.records
    for record in (skimmed, whole):
        assert record.outcome is Outcome.OK
        assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
        assert record.usage.output_tokens == TOKENS
        assert record.finish_reasons == ("stop",)
        assert record.timings.chunks == TOKENS + 3  # role, content, finish, the hidden usage chunk
        assert record.timings.ttft_s is not None and record.timings.tpot_s is not None
    assert skimmed.response_model == whole.response_model
    assert skimmed.cost == whole.cost


def test_the_caller_gets_every_chunk_and_not_the_usage_chunk_it_did_not_ask_for(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    plain = openai.OpenAI(base_url=server.base_url, api_key="test")
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0))
    assert _texts(list(_create(client))) == _texts(list(_create(plain)))
    asked = list(_create(client, stream_options={"include_usage": True}))
    assert asked[-1].usage is not None and asked[-1].choices == []
    assert _texts(asked) == _texts(list(_create(plain, stream_options={"include_usage": True})))
    assert [record.usage.output_tokens for record in telemetry.records if record.usage] == [TOKENS, TOKENS]


def test_an_async_stream_is_skimmed_the_same_way(server: LocalOpenAIServer, telemetry: Telemetry) -> None:
    async def main() -> list[Any]:
        client = llmmeter.instrument(
            openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        )
        return [chunk async for chunk in await _create(client)]

    chunks = asyncio.run(main())
    assert all(chunk.choices for chunk in chunks)
    (record,) = telemetry.records
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
    assert record.usage.output_tokens == TOKENS
    assert record.finish_reasons == ("stop",)


# --- streams left before their usage ----------------------------------------------------------


def test_a_stream_closed_early_estimates_its_output_from_its_chunks_and_says_so(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0))
    stream = _create(client)
    received = [next(stream) for _ in range(4)]  # the role chunk, then three content chunks
    stream.close()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED
    assert record.usage is not None and record.usage.source is UsageSource.ESTIMATED
    assert record.usage.estimate_method == STREAM_CHUNKS_METHOD
    assert record.usage.output_tokens == sum(1 for text in _texts(received) if text) == 3
    assert record.usage.input_tokens  # the prompt is still counted with tiktoken
    assert record.timings.tpot_s is not None


def test_a_server_that_drops_the_usage_it_was_asked_for_has_its_next_streams_read_whole(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with LocalOpenAIServer(
        pacing=Pacing(ttft_ms=2, itl_ms=1, tokens=TOKENS), ignores_stream_usage=True
    ) as srv:
        client = llmmeter.instrument(openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0))
        with caplog.at_level(logging.WARNING, logger="llmmeter"):
            list(_create(client))
            list(_create(client))
    first, second = telemetry.records
    assert first.usage is not None and first.usage.estimate_method == STREAM_CHUNKS_METHOD
    assert first.usage.output_tokens == TOKENS
    assert second.usage is not None and second.usage.source is UsageSource.ESTIMATED
    assert second.usage.estimate_method is not None and second.usage.estimate_method.startswith("tiktoken:")
    warnings = [r.getMessage() for r in caplog.records if "ended without the usage" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0]


# --- Ollama: the ``done`` chunk always carries the counts ------------------------------------------
OLLAMA_STREAM = "ollama/ollama-bash-lib__ollama_generate_stream_json.ndjson"  # a real granite3.3:2b stream


def _ollama_generate(server_url: str) -> Iterator[Any]:
    model = truth(OLLAMA_STREAM)["interactions"][0]["model"]
    client = llmmeter.instrument(ollama.Client(host=server_url))
    return client.generate(model=model, prompt="x", stream=True)  # type: ignore[no-any-return]


def _ollama_server() -> Any:
    route = truth(OLLAMA_STREAM)["route"]
    return serve_bodies(RecordedBody(route["method"], route["path"], OLLAMA_STREAM))


def test_an_ollama_stream_is_skimmed_and_still_reads_its_counts_from_the_done_chunk(
    telemetry: Telemetry,
) -> None:
    with _ollama_server() as server:
        chunks = list(_ollama_generate(server.url))
        telemetry.reconfigure(capture_content=True)
        assert list(_ollama_generate(server.url)) == chunks
    skimmed, whole = telemetry.records
    for record in (skimmed, whole):
        assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
        assert (record.usage.input_tokens, record.usage.output_tokens) == (51, 64)
        assert record.finish_reasons == ("stop",)
        assert record.timings.chunks == len(chunks)
        assert record.timings.server is not None and record.timings.server.decode_s is not None
        assert record.timings.tpot_s is not None


def test_an_ollama_stream_closed_early_estimates_its_output_from_its_chunks(telemetry: Telemetry) -> None:
    with _ollama_server() as server:
        stream = _ollama_generate(server.url)
        received = [next(stream) for _ in range(5)]
        stream.close()  # type: ignore[attr-defined]
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED
    assert record.usage is not None and record.usage.estimate_method == STREAM_CHUNKS_METHOD
    assert record.usage.output_tokens == sum(1 for chunk in received if chunk.response) == 5


# --- Gemini: running usage on every chunk, read one object deep after the first output -----------


def test_a_gemini_stream_read_lightly_records_what_reading_it_whole_records(telemetry: Telemetry) -> None:
    from .test_google_genai import ROUTES, google_server
    from .test_google_genai import _client as gemini_client

    def stream(url: str) -> list[Any]:
        client = llmmeter.instrument(gemini_client(url))
        return list(client.models.generate_content_stream(model="gemini-2.5-pro", contents="x"))

    with google_server(ROUTES) as url:
        light = stream(url)
        telemetry.reconfigure(capture_content=True)  # captured text needs every part read
        whole = stream(url)
    assert [chunk.text for chunk in light] == [chunk.text for chunk in whole]
    lightly, wholly = telemetry.records
    assert lightly.usage == wholly.usage and lightly.usage is not None
    assert lightly.usage.source is UsageSource.PROVIDER
    assert lightly.finish_reasons == wholly.finish_reasons == ("STOP",)
    assert lightly.response_id == wholly.response_id and lightly.response_model == wholly.response_model
    assert lightly.timings.chunks == wholly.timings.chunks == 23
    assert lightly.timings.tpot_s is not None and lightly.cost == wholly.cost


# --- which streams are skimmed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream_options", "n", "ask_usage", "expected"),
    [
        (None, None, True, True),  # llmmeter asks for the usage chunk: it will come
        ({"include_usage": True}, 1, True, True),  # the caller asked for it
        ({"include_usage": False}, None, True, False),  # the caller declined it: read every chunk
        (None, None, False, False),  # the server refused stream_options before, or stream_usage=False
        ({"include_usage": True, "continuous_usage_stats": True}, None, True, False),  # vLLM's running totals
        ({"continuous_usage_stats": True}, None, True, False),
        (None, 3, True, False),  # each choice's finish chunk comes when that choice ends
    ],
)
def test_only_a_stream_that_will_end_with_its_usage_is_skimmed(
    stream_options: dict[str, bool] | None, n: int | None, ask_usage: bool, expected: bool
) -> None:
    body: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}
    if stream_options is not None:
        body["stream_options"] = stream_options
    if n is not None:
        body["n"] = n
    spec = OPENAI.plan("/chat/completions", body, True, ask_usage)
    assert spec is not None and spec.usage_expected is expected


# --- timing, exactly --------------------------------------------------------------------------


class _Clock:
    """``time.perf_counter_ns`` for llmmeter, set by the test: each chunk arrives at a known time."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


_MS = 1_000_000


def _chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-skim",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": choices,
            "usage": usage,
        }
    )


def _timed_chunks() -> list[tuple[int, ChatCompletionChunk]]:
    """(arrival ms, chunk): a role chunk, four tokens 100 ms apart, the finish chunk, and the usage
    chunk a whole second later (a server that computes usage slowly)."""

    def delta(content: str | None, finish: str | None = None, role: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": {"content": content, "role": role}, "finish_reason": finish}

    usage = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    return [
        (100, _chunk([delta("", role="assistant")])),
        *((200 + 100 * i, _chunk([delta(word)])) for i, word in enumerate(["a", " b", " c", " d"])),
        (600, _chunk([delta(None, finish="stop")])),
        (1600, _chunk([], usage)),
    ]


def _measurement(skim: bool) -> Measurement:
    record = CallRecord(operation="chat", provider="openai", request_model="gpt-4o-mini", streaming=True)
    measurement = Measurement(llmmeter.get_settings(), record, ChatStreamReader())
    measurement.skim = skim
    return measurement


@pytest.mark.parametrize("skim", [True, False])
def test_tpot_ends_at_the_last_output_chunk_not_at_the_usage_chunk(
    skim: bool, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr(llmmeter.measure, "_perf_ns", clock)
    measurement = _measurement(skim)

    def arriving() -> Iterator[ChatCompletionChunk]:
        for at, chunk in _timed_chunks():
            clock.now = at * _MS
            yield chunk

    seen = list(MeteredStream(arriving(), measurement, hidden=is_usage_only_chunk))
    assert len(seen) == 6  # the usage chunk is hidden
    (record,) = telemetry.records
    assert record.timings.ttft_s == pytest.approx(0.2)
    assert record.timings.tpot_s == pytest.approx(0.1)  # (500 ms - 200 ms) / (4 - 1)
    assert record.usage is not None and record.usage.output_tokens == 4
    assert record.finish_reasons == ("stop",)
    assert record.timings.chunks == 7


def test_an_async_skimmed_stream_times_its_last_output_too(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr(llmmeter.measure, "_perf_ns", clock)
    measurement = _measurement(True)

    async def arriving() -> AsyncIterator[ChatCompletionChunk]:
        for at, chunk in _timed_chunks():
            clock.now = at * _MS
            yield chunk

    async def consume() -> list[Any]:
        return [
            chunk async for chunk in AsyncMeteredStream(arriving(), measurement, hidden=is_usage_only_chunk)
        ]

    assert len(asyncio.run(consume())) == 6
    (record,) = telemetry.records
    assert record.timings.tpot_s == pytest.approx(0.1)
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER


def test_four_trailing_chunks_without_output_leave_tpot_unknown_not_guessed(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr(llmmeter.measure, "_perf_ns", clock)
    measurement = _measurement(True)
    timed = _timed_chunks()
    empty = [
        (700 + i, _chunk([{"index": 0, "delta": {"content": None}, "finish_reason": None}])) for i in range(3)
    ]
    chunks = [*timed[:-2], *empty, *timed[-2:]]  # three empty chunks before the finish chunk

    def arriving() -> Iterator[ChatCompletionChunk]:
        for at, chunk in chunks:
            clock.now = at * _MS
            yield chunk

    list(MeteredStream(arriving(), measurement, hidden=is_usage_only_chunk))
    (record,) = telemetry.records
    assert record.usage is not None and record.usage.output_tokens == 4
    assert record.timings.ttft_s == pytest.approx(0.2)
    assert record.timings.tpot_s is None


def test_a_failing_usage_check_is_logged_once_and_every_chunk_still_reaches_the_caller(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMMETER_STRICT", raising=False)  # the test suite raises llmmeter's own errors

    def broken(chunk: Any) -> bool:
        raise RuntimeError("boom")

    chunks = [chunk for _, chunk in _timed_chunks()]
    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        seen = list(MeteredStream(iter(chunks), _measurement(True), hidden=broken))
    assert seen == chunks
    assert sum("usage-only chunk" in r.getMessage() for r in caplog.records) == 1
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
