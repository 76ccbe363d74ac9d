"""Real recorded OpenAI-style traffic, replayed through the real ``openai`` client, measured.

Every interaction of ``../shared/cassettes`` that the ``openai`` package can send is replayed with
vcrpy (``record_mode="none"``: a request that does not match a recording fails, nothing reaches
the network) through ``llmmeter.instrument(openai.OpenAI(...))`` and its async / Azure siblings,
and the record it produces is checked against the truth values of ``index.json`` and against
the recorded response itself. The Anthropic Messages recordings (``api.anthropic.com``) are
replayed through the ``anthropic`` client in ``test_anthropic.py``.

Requests are rebuilt from the recorded JSON body and passed as keyword arguments to the SDK
method of the endpoint (``chat.completions`` / ``completions`` / ``embeddings`` /
``responses``), so what the client sends is what was recorded -- except what llmmeter itself adds
(``stream_options.include_usage`` on chat and completions streams), which is why recordings are
matched on method, scheme, host, port and path, never on the body.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import llmmeter
from llmmeter.record import CallRecord, Outcome, UsageSource
from tests.cassette_support import (
    ANTHROPIC_HOST,
    CASSETTES,
    Replay,
    all_replays,
    expected_usage,
    indexed_files,
    replay,
)

REPLAYS = all_replays()
SUCCESSES = [r for r in REPLAYS if not r.is_error]
ERRORS = [r for r in REPLAYS if r.is_error]
MODES = ("sync", "async")

_PROVIDER_BY_HOST = {
    "api.openai.com": "openai",
    "api.deepseek.com": "deepseek",
    "api.groq.com": "groq",
    "openrouter.ai": "openrouter",
}


# --- truth values -----------------------------------------------------------------------------------
def provider_of(r: Replay) -> str:
    """The ``gen_ai.provider.name`` a replay must be recorded with."""
    if r.is_azure:
        return "azure.ai.openai"
    if r.host == "localhost":
        # The localhost:8000 recordings are vLLM's: its chat and completion choices carry
        # ``stop_reason``, a field only vLLM sends; its embeddings response carries nothing of
        # its own, so nothing tells it apart from any other OpenAI-compatible server.
        return "openai_compatible" if r.operation == "embeddings" else "vllm"
    return _PROVIDER_BY_HOST[r.host]


def reported_usage(r: Replay) -> dict[str, Any] | None:
    """The usage the server reported (response body, or anywhere in the stream), if any."""
    usage = r.truth.get("stream", {}).get("usage") if r.streaming else r.truth.get("usage")
    return None if usage is None else dict(usage)


def stream_events(r: Replay) -> int:
    stream = r.truth["stream"]
    return int(stream.get("data_events", stream.get("sse_events", 0)))


def stream_has_output(r: Replay) -> bool:
    """Whether any streamed event carries generated output (text, tool args, reasoning...)."""
    stream = r.truth["stream"]
    first = stream.get("first_content_event_index", stream.get("first_delta_event_index"))
    if first is not None:
        return True
    return bool(stream.get("reasoning_chunks"))


def final_response(r: Replay) -> dict[str, Any]:
    """The Responses API ``response`` object: the body, or the stream's terminal event's."""
    if not r.streaming:
        return r.response_json()
    terminal = [
        e["response"]
        for e in r.sse_events()
        if e.get("type") in ("response.completed", "response.incomplete", "response.failed")
    ]
    return dict(terminal[-1])


def response_id_of(r: Replay) -> str | None:
    if r.is_responses_api:
        return str(final_response(r)["id"])
    if r.streaming:
        # Azure's first chunk (its prompt_filter_results) has ``id: ""``: not the response's id.
        return next(str(event["id"]) for event in r.sse_events() if event.get("id"))
    response_id = r.response_json().get("id")
    return None if response_id is None else str(response_id)


def finish_reasons_of(r: Replay) -> tuple[str, ...] | None:
    if r.is_responses_api:
        response = final_response(r)
        reason = (response.get("incomplete_details") or {}).get("reason")
        return (reason or response["status"],)
    reasons = r.truth["stream"]["finish_reasons"] if r.streaming else r.truth.get("finish_reasons")
    return tuple(reasons) if reasons else None


# --- replaying ------------------------------------------------------------------------------------------
@dataclass
class Measured:
    """What one replay through an instrumented client produced."""

    replay: Replay
    result: Any = None
    """The returned object; for a stream, the list of chunks the caller saw."""
    returned: Any = None
    """What ``create`` returned (the stream object itself for streams)."""
    error: BaseException | None = None
    records: list[CallRecord] = field(default_factory=list)
    spans: list[ReadableSpan] = field(default_factory=list)

    @property
    def record(self) -> CallRecord:
        assert len(self.records) == 1, f"expected exactly one record, got {len(self.records)}"
        return self.records[0]

    @property
    def span(self) -> ReadableSpan:
        assert len(self.spans) == 1, f"expected exactly one span, got {len(self.spans)}"
        return self.spans[0]


def call_sync(r: Replay, client: Any, directory: Path, body: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Send the recorded request through ``client``; read a stream to its end."""
    with r.cassette(directory):
        returned = r.create_method(client)(**r.create_kwargs(client, body))
        result = list(returned) if r.streaming else returned
    return returned, result


async def call_async(
    r: Replay, client: Any, directory: Path, body: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    with r.cassette(directory):
        returned = await r.create_method(client)(**r.create_kwargs(client, body))
        result = [chunk async for chunk in returned] if r.streaming else returned
    return returned, result


def call(
    r: Replay, client: Any, directory: Path, mode: str, body: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    if mode == "async":
        return asyncio.run(call_async(r, client, directory, body))
    return call_sync(r, client, directory, body)


def measure(r: Replay, mode: str, directory: Path, telemetry: Any) -> Measured:
    measured = Measured(r)
    client = llmmeter.instrument(r.client(use_async=mode == "async"))
    try:
        measured.returned, measured.result = call(r, client, directory, mode)
    except openai.APIError as exc:
        measured.error = exc
    measured.records = list(telemetry.records)
    measured.spans = telemetry.finished_spans()
    return measured


def plain_error(r: Replay, mode: str, directory: Path) -> BaseException:
    """The exception the uninstrumented client raises for the same recording."""
    try:
        call(r, r.client(use_async=mode == "async"), directory, mode)
    except openai.APIError as exc:
        return exc
    raise AssertionError(f"{r.id}: the plain client raised nothing")


def _params(replays: list[Replay]) -> list[Any]:
    return [pytest.param((mode, r), id=f"{mode}-{r.id}") for r in replays for mode in MODES]


def _replaying(name: str, replays: list[Replay]) -> Any:
    """A fixture that replays each of ``replays`` (sync and async) through an instrumented client."""

    @pytest.fixture(name=name, params=_params(replays))
    def fixture(request: pytest.FixtureRequest, tmp_path: Path, telemetry: Any) -> Measured:
        mode, r = request.param
        result = measure(r, mode, tmp_path, telemetry)
        if result.error is not None:
            raise AssertionError(f"{r.id}: replay raised {result.error!r}")
        return result

    return fixture


measured = _replaying("measured", SUCCESSES)
reported = _replaying("reported", [r for r in SUCCESSES if reported_usage(r) is not None])
unreported = _replaying("unreported", [r for r in SUCCESSES if reported_usage(r) is None])


@pytest.fixture(params=_params(ERRORS))
def failed(request: pytest.FixtureRequest, tmp_path: Path, telemetry: Any) -> tuple[Measured, BaseException]:
    mode, r = request.param
    expected = plain_error(r, mode, tmp_path)
    return measure(r, mode, tmp_path, telemetry), expected


# --- the replay set -------------------------------------------------------------------------------------
def test_every_cassette_is_replayed_here_except_anthropic_messages() -> None:
    on_disk = sorted(str(p.relative_to(CASSETTES)) for p in CASSETTES.glob("*/*.yaml"))
    assert sorted(indexed_files()) == on_disk
    replayed = {r.file for r in REPLAYS}
    skipped = set(on_disk) - replayed
    for file in skipped:
        data = json.loads((CASSETTES / "index.json").read_text())
        hosts = {i["host"] for entry in data if entry["file"] == file for i in entry["interactions"]}
        assert hosts == {ANTHROPIC_HOST}, file
    assert len(skipped) == 4
    assert len(REPLAYS) == 81


# --- per interaction: successful calls ------------------------------------------------------------
def test_each_call_produces_exactly_one_record_and_one_span(measured: Measured) -> None:
    assert len(measured.records) == 1
    assert len(measured.spans) == 1
    assert measured.record.outcome is Outcome.OK
    assert measured.record.error_type is None


def test_record_usage_equals_the_recorded_usage(reported: Measured) -> None:
    record = reported.record
    usage = reported_usage(reported.replay)
    assert usage is not None
    assert record.usage == expected_usage(usage)
    assert record.usage is not None
    assert record.usage.total_tokens == usage["total_tokens"]
    if "cost" in usage:  # OpenRouter says what the call cost
        assert record.cost is not None
        assert record.cost.amount == Decimal(repr(usage["cost"]))
        assert record.cost.source == "provider"


def test_stream_without_usage_gets_a_marked_local_estimate(unreported: Measured) -> None:
    r, record = unreported.replay, unreported.record
    assert r.streaming  # every non-streamed success in the set reports usage
    usage = record.usage
    assert usage is not None
    assert usage.source is UsageSource.ESTIMATED
    assert usage.estimate_method
    assert usage.output_tokens is not None and usage.output_tokens > 0
    assert usage.input_tokens is not None and usage.input_tokens > 0
    assert usage.cache_read_input_tokens is None  # nothing observed: no made-up zero
    assert usage.reasoning_output_tokens is None


def test_record_names_the_response_it_read(measured: Measured) -> None:
    r, record = measured.replay, measured.record
    assert record.operation == r.operation
    assert record.provider == provider_of(r)
    assert record.request_model == r.body["model"]
    assert record.response_model == r.truth["response_model"]
    assert record.response_id == response_id_of(r)
    assert record.finish_reasons == finish_reasons_of(r)
    assert record.streaming is r.streaming
    assert record.server_address == r.host
    assert record.server_port == r.port


def test_streams_have_first_chunk_and_first_token_times(measured: Measured) -> None:
    r, timings = measured.replay, measured.record.timings
    assert timings.duration_s is not None and timings.duration_s > 0
    if not r.streaming:
        assert timings.ttfc_s is None
        assert timings.ttft_s is None
        assert timings.tpot_s is None
        assert timings.chunks is None
        return
    assert timings.chunks == stream_events(r)
    assert timings.ttfc_s is not None and 0 < timings.ttfc_s <= timings.duration_s
    if not stream_has_output(r):
        assert timings.ttft_s is None  # e.g. all 50 tokens spent on hidden reasoning
        return
    assert timings.ttft_s is not None and timings.ttfc_s <= timings.ttft_s <= timings.duration_s
    usage = measured.record.usage
    assert usage is not None and usage.output_tokens is not None
    if usage.output_tokens >= 2:
        assert timings.tpot_s is not None and timings.tpot_s >= 0


def test_span_is_named_after_operation_and_model_with_genai_attributes(measured: Measured) -> None:
    r, record, span = measured.replay, measured.record, measured.span
    assert span.name == f"{r.operation} {r.body['model']}"
    assert span.kind is SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == r.operation
    assert attributes["gen_ai.provider.name"] == provider_of(r)
    assert attributes["gen_ai.request.model"] == r.body["model"]
    assert attributes["gen_ai.response.model"] == r.truth["response_model"]
    assert attributes.get("gen_ai.response.id") == response_id_of(r)
    reasons = attributes.get("gen_ai.response.finish_reasons")
    assert (tuple(reasons) if isinstance(reasons, tuple | list) else reasons) == finish_reasons_of(r)
    assert attributes["server.address"] == r.host
    assert attributes["server.port"] == r.port
    assert attributes.get("gen_ai.request.stream") is (True if r.streaming else None)
    assert record.usage is not None
    assert attributes["gen_ai.usage.input_tokens"] == record.usage.input_tokens
    assert attributes.get("gen_ai.usage.output_tokens") == record.usage.output_tokens
    assert attributes["llmmeter.usage.source"] == record.usage.source.value
    assert attributes["llmmeter.outcome"] == "ok"
    assert "error.type" not in attributes
    if r.streaming and record.timings.ttfc_s is not None:
        assert attributes["gen_ai.response.time_to_first_chunk"] == record.timings.ttfc_s


# --- per interaction: error responses ---------------------------------------------------------------
def test_error_response_raises_what_the_plain_client_raises(failed: tuple[Measured, BaseException]) -> None:
    measured, expected = failed
    error = measured.error
    assert error is not None
    assert type(error) is type(expected)
    assert isinstance(error, openai.APIStatusError) and isinstance(expected, openai.APIStatusError)
    assert error.status_code == expected.status_code == measured.replay.status
    assert error.body == expected.body
    assert str(error) == str(expected)


def test_error_response_is_recorded_with_its_error_type(failed: tuple[Measured, BaseException]) -> None:
    measured, expected = failed
    r, record, span = measured.replay, measured.record, measured.span
    error_type = f"openai.{type(expected).__name__}"
    assert record.outcome is Outcome.ERROR
    assert record.error_type == error_type
    assert record.usage is None  # nothing was reported, nothing is made up
    assert record.response_model is None
    assert record.provider == provider_of(r)
    assert record.request_model == r.body["model"]
    assert record.timings.ttft_s is None
    assert span.name == f"{r.operation} {r.body['model']}"
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == error_type
    assert attributes["llmmeter.outcome"] == "error"
    assert attributes["gen_ai.request.model"] == r.body["model"]


# --- transparency: instrumented and plain clients are indistinguishable -----------------------------
NON_STREAMED_SAMPLES = [
    "opentelemetry-python-contrib/test_chat_completion_with_content.yaml",
    "openllmetry/test_completion.yaml",
    "opentelemetry-python-contrib/test_embeddings_with_content.yaml",
    "opentelemetry-python-contrib/test_responses_create_basic[content_mode0].yaml",
    "openllmetry/test_azure__test_chat.yaml",
    "openllmetry/test_chat_context_propagation.yaml",
]
STREAMED_SAMPLES = [
    "elastic-otel-python-instrumentations/test_chat_stream.yaml",  # llmmeter asks for usage
    "opentelemetry-python-contrib/test_chat_completion_streaming.yaml",  # the caller asked
    "opentelemetry-python-contrib/test_responses_create_streaming[content_mode0].yaml",
    "openllmetry/test_streaming_with_api_usage_capture.yaml",
    "openllmetry/test_async_completion_streaming.yaml",
    "openllmetry/test_azure__test_chat_streaming.yaml",
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("file", NON_STREAMED_SAMPLES)
def test_instrumented_client_returns_what_the_plain_client_returns(
    file: str, mode: str, tmp_path: Path, telemetry: Any
) -> None:
    r = replay(file)
    _, plain = call(r, r.client(use_async=mode == "async"), tmp_path, mode)
    _, measured = call(r, llmmeter.instrument(r.client(use_async=mode == "async")), tmp_path, mode)
    assert type(measured) is type(plain)
    assert measured.model_dump() == plain.model_dump()
    assert len(telemetry.records) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("file", STREAMED_SAMPLES)
def test_instrumented_stream_yields_what_the_plain_stream_yields(
    file: str, mode: str, tmp_path: Path, telemetry: Any
) -> None:
    r = replay(file)
    _, plain = call(r, r.client(use_async=mode == "async"), tmp_path, mode)
    stream, measured = call(r, llmmeter.instrument(r.client(use_async=mode == "async")), tmp_path, mode)
    assert isinstance(stream, openai.AsyncStream if mode == "async" else openai.Stream)
    assert [chunk.model_dump() for chunk in measured] == [chunk.model_dump() for chunk in plain]
    assert [type(chunk) for chunk in measured] == [type(chunk) for chunk in plain]
    assert len(telemetry.records) == 1


def _sent_bodies(
    r: Replay, mode: str, directory: Path, body: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], Any]:
    """The JSON bodies the instrumented client sent, and what the caller got back."""
    seen: list[Any] = []
    client = llmmeter.instrument(r.client(use_async=mode == "async"))

    async def run_async() -> Any:
        with r.cassette(directory, seen_requests=seen) as cassette:
            stream = await r.create_method(client)(**r.create_kwargs(client, body))
            result = [chunk async for chunk in stream] if r.streaming else stream
        return cassette, result

    if mode == "async":
        cassette, result = asyncio.run(run_async())
    else:
        with r.cassette(directory, seen_requests=seen) as cassette:
            returned = r.create_method(client)(**r.create_kwargs(client, body))
            result = list(returned) if r.streaming else returned
    assert cassette.play_count == 1
    # vcrpy hands the hook the one request several times (matching, then playing it).
    distinct = {request.body: request for request in seen}
    return [json.loads(request_body) for request_body in distinct], result


@pytest.mark.parametrize("mode", MODES)
def test_usage_chunk_llmmeter_asked_for_is_hidden_from_the_caller(
    mode: str, tmp_path: Path, telemetry: Any
) -> None:
    # Recorded with include_usage; replayed for a caller who did not ask for it, so the usage
    # chunk in the reply is the one llmmeter's own stream_options brought.
    r = replay("opentelemetry-python-contrib/test_chat_completion_streaming.yaml")
    caller_body = {k: v for k, v in r.body.items() if k != "stream_options"}
    sent, chunks = _sent_bodies(r, mode, tmp_path, caller_body)
    assert sent == [{**caller_body, "stream_options": {"include_usage": True}}]
    assert chunks, "the stream yielded nothing"
    assert all(chunk.choices for chunk in chunks)
    _, plain = call(r, r.client(use_async=mode == "async"), tmp_path, mode)
    assert [c.model_dump() for c in chunks] == [c.model_dump() for c in plain if c.choices]
    record = telemetry.records[0]
    assert len(telemetry.records) == 1
    assert record.usage == expected_usage(r.truth["stream"]["usage"])
    assert record.timings.chunks == stream_events(r)


@pytest.mark.parametrize(
    "file",
    [
        "opentelemetry-python-contrib/test_responses_create_streaming[content_mode0].yaml",
        "opentelemetry-python-contrib/test_chat_completion_with_content.yaml",  # not streamed
        "openllmetry/test_azure__test_chat.yaml",
    ],
)
def test_request_is_sent_unchanged_where_llmmeter_adds_nothing(
    file: str, tmp_path: Path, telemetry: Any
) -> None:
    r = replay(file)
    sent, _ = _sent_bodies(r, "sync", tmp_path)
    assert sent == [r.body]


@pytest.mark.parametrize(
    "file",
    [
        "openllmetry/test_streaming_with_api_usage_capture.yaml",  # DeepSeek
        "openllmetry/test_chat_streaming_legacy.yaml",  # Groq
        "openllmetry/test_trace_propagation_stream[OpenAI].yaml",  # localhost: not known beforehand
    ],
)
def test_every_chat_stream_asks_for_its_usage_chunk_whatever_the_host(
    file: str, tmp_path: Path, telemetry: Any
) -> None:
    r = replay(file)
    sent, _ = _sent_bodies(r, "sync", tmp_path)
    assert sent == [{**r.body, "stream_options": {"include_usage": True}}]


@pytest.mark.parametrize("mode", MODES)
def test_azure_stream_is_sent_with_include_usage(mode: str, tmp_path: Path, telemetry: Any) -> None:
    r = replay("openllmetry/test_azure__test_chat_streaming.yaml", 1)
    sent, chunks = _sent_bodies(r, mode, tmp_path)
    assert sent == [{**r.body, "stream_options": {"include_usage": True}}]
    _, plain = call(r, r.client(use_async=mode == "async"), tmp_path, mode)
    # Azure's own first chunk (prompt_filter_results, no choices) reaches the caller as sent.
    assert [c.model_dump() for c in chunks] == [c.model_dump() for c in plain]
    assert not chunks[0].choices


# --- with_raw_response / with_streaming_response ------------------------------------------------
CHAT = "opentelemetry-python-contrib/test_chat_completion_with_content.yaml"
CHAT_STREAM = "opentelemetry-python-contrib/test_chat_completion_streaming.yaml"


def _assert_recorded(telemetry: Any, r: Replay) -> CallRecord:
    assert len(telemetry.records) == 1
    record: CallRecord = telemetry.records[0]
    assert record.outcome is Outcome.OK
    assert record.usage == expected_usage(reported_usage(r) or {})
    assert record.response_id == response_id_of(r)
    assert record.streaming is r.streaming
    return record


def test_raw_response_keeps_headers_and_parses_to_the_measured_object(tmp_path: Path, telemetry: Any) -> None:
    r = replay(CHAT)
    _, plain = call(r, r.client(), tmp_path, "sync")
    client = llmmeter.instrument(r.client())
    with r.cassette(tmp_path):
        raw = r.create_method(client, "with_raw_response")(**r.create_kwargs(client))
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.status_code == 200
    parsed = raw.parse()
    assert parsed is raw.parse()
    assert parsed.model_dump() == plain.model_dump()
    _assert_recorded(telemetry, r)


def test_raw_response_of_a_stream_parses_to_a_measured_stream(tmp_path: Path, telemetry: Any) -> None:
    r = replay(CHAT_STREAM)
    _, plain = call(r, r.client(), tmp_path, "sync")
    client = llmmeter.instrument(r.client())
    with r.cassette(tmp_path):
        raw = r.create_method(client, "with_raw_response")(**r.create_kwargs(client))
        assert raw.headers["content-type"].startswith("text/event-stream")
        stream = raw.parse()
        assert stream is raw.parse()
        assert isinstance(stream, openai.Stream)
        chunks = list(stream)
    assert [c.model_dump() for c in chunks] == [c.model_dump() for c in plain]
    record = _assert_recorded(telemetry, r)
    assert record.timings.ttft_s is not None


async def test_async_raw_response_parses_to_the_measured_object(tmp_path: Path, telemetry: Any) -> None:
    r = replay(CHAT)
    client = llmmeter.instrument(r.client(use_async=True))
    with r.cassette(tmp_path):
        raw = await r.create_method(client, "with_raw_response")(**r.create_kwargs(client))
    assert raw.headers["content-type"].startswith("application/json")
    parsed = raw.parse()
    assert parsed is raw.parse()
    assert parsed.usage.prompt_tokens == r.truth["usage"]["prompt_tokens"]
    _assert_recorded(telemetry, r)


def test_streaming_response_is_measured_when_parsed(tmp_path: Path, telemetry: Any) -> None:
    r = replay(CHAT)
    client = llmmeter.instrument(r.client())
    with (
        r.cassette(tmp_path),
        r.create_method(client, "with_streaming_response")(**r.create_kwargs(client)) as response,
    ):
        assert response.headers["content-type"].startswith("application/json")
        parsed = response.parse()
        assert parsed is response.parse()
    assert parsed.id == response_id_of(r)
    _assert_recorded(telemetry, r)


def test_streaming_response_of_a_stream_is_measured_to_its_end(tmp_path: Path, telemetry: Any) -> None:
    r = replay(CHAT_STREAM)
    client = llmmeter.instrument(r.client())
    with (
        r.cassette(tmp_path),
        r.create_method(client, "with_streaming_response")(**r.create_kwargs(client)) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = response.parse()
        assert isinstance(stream, openai.Stream)
        chunks = list(stream)
    assert len(chunks) == stream_events(r)
    record = _assert_recorded(telemetry, r)
    assert record.timings.chunks == stream_events(r)
    assert record.timings.ttfc_s is not None and record.timings.ttft_s is not None


async def test_async_streaming_response_of_a_stream_is_measured_to_its_end(
    tmp_path: Path, telemetry: Any
) -> None:
    r = replay("opentelemetry-python-contrib/test_async_chat_completion_streaming.yaml")
    client = llmmeter.instrument(r.client(use_async=True))
    with r.cassette(tmp_path):
        async with r.create_method(client, "with_streaming_response")(**r.create_kwargs(client)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = await response.parse()
            assert isinstance(stream, openai.AsyncStream)
            chunks = [chunk async for chunk in stream]
    assert len(chunks) == stream_events(r)
    record = _assert_recorded(telemetry, r)
    assert record.timings.ttft_s is not None
