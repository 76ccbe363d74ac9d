"""``@llmmeter.metered`` reads every supported provider's responses and streams as the clients do.

A function of your own that calls an SDK uninstrumented and returns (or yields) what it got --
Anthropic events, Gemini chunks, Ollama chunks, as SDK objects or decoded JSON -- gives the same
usage, response model and a TTFT taken at the first output, as the instrumented client does on
the same recorded traffic (``tests/recordings`` and ``../shared/cassettes``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import ollama
import pytest
from google import genai
from google.genai import types as genai_types

import llmmeter
from llmmeter import CallRecord, Outcome, Usage

from .cassette_support import anthropic_replay
from .conftest import Telemetry
from .recording_support import (
    RecordedBody,
    request_json,
    response_text,
    serve_bodies,
    sse_payloads,
    truth,
    use_recording,
)

STREAMED = "openinference/test_anthropic_instrumentation_messages_streaming.yaml"
CACHING = "openllmetry/test_anthropic_prompt_caching_stream_legacy.yaml"
GEMINI_STREAM = "google_genai/pydantic-ai__test_google_model_web_fetch_tool_stream.yaml"
OLLAMA_STREAM = "ollama/ollama-bash-lib__ollama_generate_stream_json.ndjson"
OLLAMA_CHAT = "ollama/ollama__api__chat_request_structured_outputs.json"


def _only(telemetry: Telemetry) -> CallRecord:
    (record,) = telemetry.records
    telemetry.records.clear()
    return record


def _same_as_the_client(metered: CallRecord, instrumented: CallRecord) -> None:
    assert metered.usage == instrumented.usage and metered.usage is not None
    assert metered.response_model == instrumented.response_model
    assert metered.finish_reasons == instrumented.finish_reasons
    assert metered.timings.ttft_s is not None and metered.timings.ttfc_s is not None
    assert metered.timings.ttft_s >= metered.timings.ttfc_s


# --- Anthropic -------------------------------------------------------------------------------------
@pytest.mark.parametrize("file", [STREAMED, CACHING])
def test_a_metered_generator_of_anthropic_events_reads_them_like_the_client(
    file: str, tmp_path: Path, telemetry: Telemetry
) -> None:
    r = anthropic_replay(file)
    with r.cassette(tmp_path):
        for _ in llmmeter.instrument(anthropic.Anthropic(api_key="t", max_retries=0)).messages.create(
            **r.body
        ):
            pass
    instrumented = _only(telemetry)

    @llmmeter.metered(model=r.body["model"], provider="anthropic")
    def ask() -> Iterator[Any]:
        yield from anthropic.Anthropic(api_key="t", max_retries=0).messages.create(**r.body)

    with r.cassette(tmp_path):
        events = list(ask())
    assert events[0].type == "message_start"
    _same_as_the_client(_only(telemetry), instrumented)


def test_a_metered_stream_whose_message_delta_has_only_output_keeps_the_input_side(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    r = anthropic_replay(CACHING)

    @llmmeter.metered(model="claude-3-5-sonnet-20240620", provider="anthropic")
    def ask() -> Iterator[Any]:
        yield from r.sse_events()  # the decoded JSON events, as a raw-HTTP caller would have them

    list(ask())
    record = _only(telemetry)
    assert record.usage == Usage(
        input_tokens=1169, output_tokens=201, cache_write_input_tokens=1165, cache_read_input_tokens=0
    )
    assert record.cost is not None and str(record.cost.amount) == "0.00739575"


def test_a_metered_function_returning_an_anthropic_message_reads_its_cache_tokens(
    telemetry: Telemetry,
) -> None:
    file = "anthropic/pydantic-ai__test_anthropic_cache_real_api.yaml"

    @llmmeter.metered(model="claude-sonnet-4-5", provider="anthropic")
    def ask() -> Any:
        return anthropic.Anthropic(api_key="t", max_retries=0).messages.create(**request_json(file, 1))

    with use_recording(file, 1):
        ask()
    record = _only(telemetry)
    assert record.usage == Usage(
        input_tokens=1532,
        output_tokens=33,
        cache_read_input_tokens=1111,
        cache_write_input_tokens=418,
        cache_write_1h_input_tokens=0,
    )


# --- Gemini ----------------------------------------------------------------------------------------
def _gemini() -> genai.Client:
    api_version = truth(GEMINI_STREAM)["interactions"][0]["api_version"]
    return genai.Client(api_key="test-key", http_options=genai_types.HttpOptions(api_version=api_version))


def _gemini_request() -> dict[str, Any]:
    body = request_json(GEMINI_STREAM, 0)
    model = truth(GEMINI_STREAM)["interactions"][0]["model"]
    return {"model": model, "contents": body["contents"]}


def test_a_metered_generator_of_gemini_chunks_reads_them_like_the_client(telemetry: Telemetry) -> None:
    client = llmmeter.instrument(_gemini())  # kept: a collected genai.Client closes its connection
    with use_recording(GEMINI_STREAM, 0):
        for _ in client.models.generate_content_stream(**_gemini_request()):
            pass
    instrumented = _only(telemetry)

    @llmmeter.metered(model="gemini-2.5-flash", provider="gcp.gemini")
    def ask() -> Iterator[Any]:
        plain = _gemini()
        yield from plain.models.generate_content_stream(**_gemini_request())

    with use_recording(GEMINI_STREAM, 0):
        chunks = list(ask())
    assert len(chunks) == 3
    _same_as_the_client(_only(telemetry), instrumented)


def test_a_metered_generator_of_gemini_rest_json_reads_the_camel_case_like_the_client(
    telemetry: Telemetry,
) -> None:
    # A user calling the REST API directly yields the decoded SSE payloads: usageMetadata,
    # finishReason, modelVersion, responseId -- the same recorded stream the SDK parsed above.
    client = llmmeter.instrument(_gemini())
    with use_recording(GEMINI_STREAM, 0):
        for _ in client.models.generate_content_stream(**_gemini_request()):
            pass
    instrumented = _only(telemetry)
    payloads = sse_payloads(response_text(GEMINI_STREAM, 0))
    assert "usageMetadata" in payloads[-1]

    @llmmeter.metered(model="gemini-2.5-flash", provider="gcp.gemini")
    def ask() -> Iterator[dict[str, Any]]:
        yield from payloads

    assert list(ask()) == payloads
    _same_as_the_client(_only(telemetry), instrumented)


# --- Ollama ----------------------------------------------------------------------------------------
def _ollama_body(file: str) -> RecordedBody:
    route = truth(file)["route"]
    return RecordedBody(route["method"], route["path"], file)


def test_a_metered_generator_of_ollama_chunks_reads_them_like_the_client(telemetry: Telemetry) -> None:
    model = truth(OLLAMA_STREAM)["interactions"][0]["model"]
    with serve_bodies(_ollama_body(OLLAMA_STREAM)) as server:
        for _ in llmmeter.instrument(ollama.Client(host=server.url)).generate(
            model=model, prompt="x", stream=True
        ):
            pass
        instrumented = _only(telemetry)

        @llmmeter.metered(model=model, provider="ollama")
        def ask() -> Iterator[Any]:
            yield from ollama.Client(host=server.url).generate(model=model, prompt="x", stream=True)

        list(ask())
    record = _only(telemetry)
    _same_as_the_client(record, instrumented)
    assert (record.usage.input_tokens, record.usage.output_tokens) == (51, 64)  # type: ignore[union-attr]


def test_a_metered_function_returning_an_ollama_response_reads_its_counters(telemetry: Telemetry) -> None:
    expected = truth(OLLAMA_CHAT)["interactions"][0]
    with serve_bodies(_ollama_body(OLLAMA_CHAT)) as server:

        @llmmeter.metered(model=expected["model"], provider="ollama")
        def ask() -> Any:
            return ollama.Client(host=server.url).chat(model=expected["model"], messages=[])

        response = ask()
    record = _only(telemetry)
    assert record.outcome is Outcome.OK
    assert record.usage == Usage(input_tokens=response.prompt_eval_count, output_tokens=response.eval_count)
    assert record.timings.server is not None and record.timings.server.e2e_s is not None
