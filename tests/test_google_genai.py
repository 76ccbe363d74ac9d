"""The ``google-genai`` client, measured: the real SDK against real Gemini API and Vertex AI bodies.

The bodies are real responses recorded by Pydantic AI's test suite (``tests/data/google_genai``,
source and license in its ``SOURCE.md``), served on 127.0.0.1 to ``genai.Client(http_options=
{"base_url": ...})``: whole JSON bodies for ``generateContent`` and the embedding endpoints, and
server-sent events for ``streamGenerateContent``, one event at a time with a pause before each, as
Google's servers send them while the model generates. Expected numbers are the recordings' own;
costs are worked out by hand from Google's list prices (``pricing/data/google.yaml``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors
from google.genai import types as genai_types

import llmmeter
from llmmeter import CostStatus, Outcome, Usage
from llmmeter.providers.gemini import GeminiStreamReader

from .conftest import Telemetry
from .recording_support import files, response_text, truth, use_recording

DATA = Path(__file__).resolve().parent / "data" / "google_genai"
PAUSE_S = 0.01
"""The server's pause before each server-sent event."""

WHOLE = "generate_content_video_cached.json"  # gemini-2.5-flash, cached video + audio, thoughts
THINKING = "stream_thinking.sse"  # gemini-2.5-pro, 23 chunks, thoughts first
WEB_SEARCH = "stream_web_search.sse"  # gemini-2.5-pro, tool-use prompt tokens
VERTEX_FLEX = "vertex_flex_stream.sse"  # Vertex, gemini-3-flash-preview, ON_DEMAND_FLEX
ROUTES = {
    "generateContent": WHOLE,
    "streamGenerateContent": THINKING,
    "batchEmbedContents": "embed_gemini_api.json",
    "embedContent": "embed_vertex.json",
}


# --- a local Google endpoint serving recorded bodies ------------------------------------------------
@contextmanager
def google_server(routes: dict[str, Any]) -> Iterator[str]:
    """Serve ``{method: body file}`` (the path's ``:method`` suffix) on 127.0.0.1; yields the base
    URL. ``.sse`` bodies go out event by event, paced; a body that is not a file is sent as is; a
    list of bodies answers one request each, in order."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            method = self.path.split("?", 1)[0].rsplit(":", 1)[-1]
            body = routes.get(method)
            if isinstance(body, list):  # answered in turn, one per request
                body = body.pop(0) if body else None
            if body is None:
                self._whole(404, b'{"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}')
            elif body.endswith(".sse"):
                self._events((DATA / body).read_bytes())
            elif body.endswith(".json"):
                self._whole(200, (DATA / body).read_bytes())
            else:
                self._whole(200, body.encode())

        def _whole(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _events(self, payload: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in payload.split(b"\r\n\r\n"):
                if not event.strip():
                    continue
                time.sleep(PAUSE_S)
                data = event + b"\r\n\r\n"
                try:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                except OSError:  # the client stopped reading
                    return
            with suppress(OSError):
                self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


_clients: list[genai.Client] = []
"""A ``genai.Client`` closes its HTTP connection pool when collected, so a stream read after a
one-line ``_client(url).models.generate_content_stream(...)`` would find it closed: kept alive."""


def _client(url: str, *, vertex: bool = False) -> genai.Client:
    client = genai.Client(vertexai=vertex or None, api_key="test-key", http_options={"base_url": url})
    _clients.append(client)
    return client


def _dump(response: Any) -> Any:
    return response.model_dump(exclude={"sdk_http_response"})


VIDEO_USAGE = Usage(
    input_tokens=17713,
    output_tokens=68 + 821,
    cache_read_input_tokens=17379,
    reasoning_output_tokens=821,
    text_input_tokens=16,
    audio_input_tokens=1917,
    audio_cache_read_input_tokens=1881,
)
THINKING_USAGE = Usage(
    input_tokens=34, output_tokens=469 + 787, reasoning_output_tokens=787, text_input_tokens=34
)


# --- whole responses --------------------------------------------------------------------------------
def test_generate_content_is_returned_unchanged_with_every_usage_part(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        plain = _client(url).models.generate_content(model="gemini-2.5-flash", contents="What is this video?")
        response = llmmeter.instrument(_client(url)).models.generate_content(
            model="gemini-2.5-flash", contents="What is this video?"
        )
    assert type(response) is type(plain) and _dump(response) == _dump(plain)
    (record,) = telemetry.records
    assert record.operation == "generate_content" and record.provider == "gcp.gemini"
    assert record.server_address == "127.0.0.1"
    assert record.request_model == record.response_model == "gemini-2.5-flash"
    assert record.response_id == "JiyGasHJHe-wjMcP4aqWmQg" and record.finish_reasons == ("STOP",)
    assert record.service_tier is None  # the SDK does not keep usageMetadata.serviceTier
    # prompt 17713 includes the cached 17379; thoughts (821) are output on top of the 68 candidates.
    assert record.usage == VIDEO_USAGE
    assert record.timings.ttft_s is None and not record.streaming


def test_generate_content_costs_its_list_price_with_cached_and_audio_rates(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        llmmeter.instrument(_client(url)).models.generate_content(model="gemini-2.5-flash", contents="x")
    (record,) = telemetry.records
    # gemini-2.5-flash per M: input $0.30, audio input $1.00, cached $0.03, cached audio $0.10,
    # output (thinking included) $2.50.
    #   uncached non-audio (17713 - 1917) - (17379 - 1881) = 298  x 0.30 =   89.40
    #   uncached audio      1917 - 1881                    =  36  x 1.00 =   36.00
    #   cached non-audio    17379 - 1881                   = 15498 x 0.03 =  464.94
    #   cached audio                                          1881 x 0.10 =  188.10
    #   output              68 + 821                       =  889 x 2.50 = 2222.50
    #                                                                       3000.94 micro-dollars
    assert record.cost_status is CostStatus.PRICED and record.cost is not None
    assert record.cost.amount == Decimal("0.00300094")


async def test_async_generate_content_is_recorded_like_a_sync_one(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        response = await llmmeter.instrument(_client(url)).aio.models.generate_content(
            model="gemini-2.5-flash", contents="x"
        )
        plain = await _client(url).aio.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert type(response) is genai_types.GenerateContentResponse and _dump(response) == _dump(plain)
    (record,) = telemetry.records
    assert record.usage == VIDEO_USAGE


def test_request_config_is_recorded_under_semconv_names(telemetry: Telemetry) -> None:
    config = genai_types.GenerateContentConfig(
        temperature=0.0, top_p=0.9, top_k=40, max_output_tokens=512, seed=3, stop_sequences=["END"]
    )
    with google_server(ROUTES) as url:
        llmmeter.instrument(_client(url)).models.generate_content(
            model="gemini-2.5-flash", contents="x", config=config
        )
    (record,) = telemetry.records
    assert record.request_params == {
        "gen_ai.request.temperature": 0.0,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.top_k": 40.0,
        "gen_ai.request.max_tokens": 512,
        "gen_ai.request.seed": 3,
        "gen_ai.request.stop_sequences": ("END",),
    }


def test_gemini_api_embeddings_report_no_tokens_and_record_none(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        plain = _client(url).models.embed_content(
            model="gemini-embedding-2-preview", contents="Hello, world!"
        )
        response = llmmeter.instrument(_client(url)).models.embed_content(
            model="gemini-embedding-2-preview", contents="Hello, world!"
        )
    assert _dump(response) == _dump(plain)
    (record,) = telemetry.records
    assert record.operation == "embeddings" and record.outcome is Outcome.OK
    assert record.usage is None  # batchEmbedContents carries no count: missing, never 0


def test_vertex_embeddings_count_their_tokens_and_are_priced(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        response = llmmeter.instrument(_client(url, vertex=True)).models.embed_content(
            model="gemini-embedding-001",
            contents="Hello, world!",
            config=genai_types.EmbedContentConfig(output_dimensionality=3072),
        )
    assert response.embeddings is not None and len(response.embeddings[0].values or ()) == 3072
    (record,) = telemetry.records
    assert record.provider == "gcp.vertex_ai" and record.usage == Usage(input_tokens=4)
    assert record.request_params == {"gen_ai.embeddings.dimension.count": 3072}
    # gemini-embedding-001: $0.15 / M input -> 4 x 0.15 = 0.6 micro-dollars.
    assert record.cost is not None and record.cost.amount == Decimal("0.0000006")


# --- streams --------------------------------------------------------------------------------------
def test_a_stream_is_still_a_generator_of_the_same_chunks(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        plain = [
            _dump(c)
            for c in _client(url).models.generate_content_stream(model="gemini-2.5-pro", contents="x")
        ]
        stream = llmmeter.instrument(_client(url)).models.generate_content_stream(
            model="gemini-2.5-pro", contents="x"
        )
        assert isinstance(stream, types.GeneratorType)
        chunks = [_dump(c) for c in stream]
    assert chunks == plain and len(chunks) == 23


def test_a_stream_records_the_last_chunks_usage_and_ttft_at_the_first_thought(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        for _chunk in llmmeter.instrument(_client(url)).models.generate_content_stream(
            model="gemini-2.5-pro", contents="How do I cross the street?"
        ):
            pass
    (record,) = telemetry.records
    assert record.streaming and record.outcome is Outcome.OK and record.timings.chunks == 23
    assert record.usage == THINKING_USAGE
    assert record.response_id == "beHBaJfEMIi-qtsP3769-Q8" and record.finish_reasons == ("STOP",)
    timings = record.timings
    assert timings.ttft_s is not None and timings.ttfc_s is not None and timings.duration_s is not None
    # The first chunk is a thought: output, so TTFT is taken at it, after the server's pause.
    assert timings.ttft_s == timings.ttfc_s >= PAUSE_S
    assert timings.duration_s >= 23 * PAUSE_S
    assert timings.tpot_s is not None and timings.tpot_s > 0
    # gemini-2.5-pro per M: $1.25 input, $10 output -> 34 x 1.25 + 1256 x 10 = 12602.5 micro-dollars.
    assert record.cost is not None and record.cost.amount == Decimal("0.0126025")


def test_tool_use_prompt_tokens_are_input(telemetry: Telemetry) -> None:
    with google_server({"streamGenerateContent": WEB_SEARCH}) as url:
        list(
            llmmeter.instrument(_client(url)).models.generate_content_stream(
                model="gemini-2.5-pro", contents="x"
            )
        )
    (record,) = telemetry.records
    assert record.usage == Usage(
        input_tokens=17 + 102,
        output_tokens=241 + 412,
        reasoning_output_tokens=412,
        text_input_tokens=17 + 102,
    )
    # 119 x 1.25 + 653 x 10 = 148.75 + 6530 = 6678.75 micro-dollars.
    assert record.cost is not None and record.cost.amount == Decimal("0.00667875")


def test_a_vertex_flex_stream_is_vertex_and_priced_at_the_flex_rate(telemetry: Telemetry) -> None:
    with google_server({"streamGenerateContent": VERTEX_FLEX}) as url:
        list(
            llmmeter.instrument(_client(url, vertex=True)).models.generate_content_stream(
                model="gemini-3-flash-preview", contents="Reply with exactly: OK"
            )
        )
    (record,) = telemetry.records
    assert record.provider == "gcp.vertex_ai" and record.service_tier == "flex"
    assert record.usage == Usage(
        input_tokens=5,
        output_tokens=101,
        reasoning_output_tokens=100,
        text_input_tokens=5,
        text_output_tokens=101,
    )
    # gemini-3-flash-preview per M: $0.50 input, $3.00 output, flex at half:
    # (5 x 0.50 + 101 x 3.00) x 0.5 = (2.5 + 303) x 0.5 = 152.75 micro-dollars.
    assert record.cost is not None and record.cost.amount == Decimal("0.00015275")


async def test_an_async_stream_is_an_async_generator_recorded_like_a_sync_one(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        stream = await llmmeter.instrument(_client(url)).aio.models.generate_content_stream(
            model="gemini-2.5-pro", contents="x"
        )
        assert isinstance(stream, types.AsyncGeneratorType)
        chunks = [_dump(c) async for c in stream]
        plain_stream = await _client(url).aio.models.generate_content_stream(
            model="gemini-2.5-pro", contents="x"
        )
        plain = [_dump(c) async for c in plain_stream]
    assert chunks == plain
    (record,) = telemetry.records
    assert record.usage == THINKING_USAGE and record.timings.chunks == 23
    assert record.timings.ttft_s is not None and record.timings.ttft_s >= PAUSE_S


def _chunk(**fields: Any) -> genai_types.GenerateContentResponse:
    return genai_types.GenerateContentResponse.model_validate(fields)


@pytest.mark.parametrize(
    ("parts", "is_output"),
    [
        ([{"text": "Paris"}], True),
        ([{"text": "Thinking about it", "thought": True}], True),
        ([{"function_call": {"name": "get_weather", "args": {"city": "Paris"}}}], True),
        ([{"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}}], True),
        ([{"text": ""}], False),
        ([{"thought_signature": "CiQBjz1r"}], False),
        ([], False),
    ],
)
def test_output_starts_at_the_first_non_empty_part(parts: list[dict[str, Any]], is_output: bool) -> None:
    reader = GeminiStreamReader()
    assert reader.feed(_chunk(candidates=[{"content": {"role": "model", "parts": parts}}])) is is_output
    assert reader.feed(_chunk(usage_metadata={"prompt_token_count": 3})) is False


@pytest.mark.parametrize("stream", [False, True])
def test_content_capture_is_opt_in_and_records_both_directions(stream: bool, telemetry: Telemetry) -> None:
    telemetry.reconfigure(capture_content=True)
    contents = [genai_types.Content(role="user", parts=[genai_types.Part(text="How do I cross the street?")])]
    with google_server(ROUTES) as url:
        models = llmmeter.instrument(_client(url)).models
        if stream:
            list(models.generate_content_stream(model="gemini-2.5-pro", contents=contents))
        else:
            models.generate_content(model="gemini-2.5-flash", contents=contents)
    (record,) = telemetry.records
    assert record.content is not None
    (message,) = record.content["gen_ai.output.messages"]
    text = message["parts"][0]["content"]
    assert text.startswith("This is a great question!" if stream else "This video")
    assert "Thinking" not in text and "**Clarifying" not in text  # thoughts are not the answer
    (span,) = telemetry.finished_spans()
    assert "How do I cross the street?" in str((span.attributes or {})["gen_ai.input.messages"])


async def test_an_async_stream_failing_midway_is_an_error_with_the_same_exception(
    telemetry: Telemetry,
) -> None:
    first = (DATA / THINKING).read_bytes().split(b"\r\n\r\n")[0].decode()
    with google_server({"streamGenerateContent": first + "\r\n\r\ndata: {not json\r\n\r\n"}) as url:
        stream = await llmmeter.instrument(_client(url)).aio.models.generate_content_stream(
            model="gemini-2.5-pro", contents="x"
        )
        with pytest.raises(ValueError):
            async for _chunk in stream:
                pass
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.timings.chunks == 1


# --- the never-leak matrix --------------------------------------------------------------------------
def _stream(url: str) -> Any:
    return llmmeter.instrument(_client(url)).models.generate_content_stream(
        model="gemini-2.5-pro", contents="x"
    )


def test_a_stream_closed_early_is_aborted_with_the_usage_seen_so_far(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        stream = _stream(url)
        next(stream)
        stream.close()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED
    # Every Gemini chunk carries the usage so far: 34 in, 68 thoughts after the first chunk.
    assert record.usage == Usage(
        input_tokens=34, output_tokens=68, reasoning_output_tokens=68, text_input_tokens=34
    )


def test_breaking_out_of_a_closing_loop_is_aborted(telemetry: Telemetry) -> None:
    from contextlib import closing

    with google_server(ROUTES) as url, closing(_stream(url)) as stream:
        for _chunk in stream:
            break
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


def test_breaking_out_of_a_loop_and_dropping_the_generator_is_abandoned(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        stream = _stream(url)
        for _chunk in stream:
            break
        del stream
        gc.collect()
    (record,) = telemetry.records
    # A generator left suspended by `break` and then dropped is abandoned; `break` inside
    # `closing(...)` is aborted (test_breaking_out_of_a_closing_loop_is_aborted).
    assert record.outcome is Outcome.ABANDONED


def test_a_dropped_stream_is_recorded_abandoned(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        stream = _stream(url)
        next(stream)
        del stream
        gc.collect()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABANDONED


async def test_a_cancelled_task_reading_a_stream_is_recorded_aborted(telemetry: Telemetry) -> None:
    started = asyncio.Event()

    async def read(stream: Any) -> None:
        async for _chunk in stream:
            started.set()
            await asyncio.sleep(10)

    with google_server(ROUTES) as url:
        stream = await llmmeter.instrument(_client(url)).aio.models.generate_content_stream(
            model="gemini-2.5-pro", contents="x"
        )
        task = asyncio.create_task(read(stream))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


def test_a_stream_failing_midway_is_an_error_with_the_same_exception(telemetry: Telemetry) -> None:
    # A real first event, then a body that is not an event: the SDK's own parsing fails mid-stream.
    first = (DATA / THINKING).read_bytes().split(b"\r\n\r\n")[0].decode()
    broken = first + "\r\n\r\ndata: {not json\r\n\r\n"
    with google_server({"streamGenerateContent": broken}) as url:
        plain_error = _raised(
            lambda: list(_client(url).models.generate_content_stream(model="m", contents="x"))
        )
        stream = _stream(url)
        with pytest.raises(type(plain_error)) as raised:
            list(stream)
    assert str(raised.value) == str(plain_error)
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.timings.chunks == 1


def _raised(call: Any) -> BaseException:
    try:
        call()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


def test_an_api_error_reaches_the_caller_unchanged_and_is_recorded(telemetry: Telemetry) -> None:
    with google_server({}) as url, pytest.raises(errors.ClientError) as raised:
        llmmeter.instrument(_client(url)).models.generate_content(model="gemini-2.5-flash", contents="x")
    assert raised.value.code == 404
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.error_type == "google.genai.errors.ClientError"
    assert record.usage is None and record.cost is None


# --- bad input ------------------------------------------------------------------------------------
def test_a_response_without_usage_metadata_leaves_usage_missing_not_zero(telemetry: Telemetry) -> None:
    body = '{"candidates": [{"content": {"parts": [{"text": "Paris"}]}, "finishReason": "STOP"}]}'
    with google_server({"generateContent": body}) as url:
        plain = _client(url).models.generate_content(model="gemini-2.5-flash", contents=[{"role": "user"}])
        response = llmmeter.instrument(_client(url)).models.generate_content(
            model="gemini-2.5-flash", contents=[{"role": "user"}]
        )
    assert _dump(response) == _dump(plain) and response.text == "Paris"
    (record,) = telemetry.records
    assert record.usage is None and record.outcome is Outcome.OK and record.finish_reasons == ("STOP",)


def test_an_unknown_shape_is_handed_back_and_recorded_without_usage(telemetry: Telemetry) -> None:
    with google_server({"generateContent": '{"something": ["else"]}'}) as url:
        response = llmmeter.instrument(_client(url)).models.generate_content(
            model="gemini-2.5-flash", contents=[{"role": "user"}]
        )
    assert isinstance(response, genai_types.GenerateContentResponse)
    (record,) = telemetry.records
    assert record.usage is None and record.outcome is Outcome.OK


def test_text_contents_without_reported_usage_are_estimated_and_marked(telemetry: Telemetry) -> None:
    body = '{"candidates": [{"content": {"parts": [{"text": "Paris"}], "role": "model"}}]}'
    with google_server({"generateContent": body}) as url:
        llmmeter.instrument(_client(url)).models.generate_content(
            model="gemini-2.5-flash", contents="Capital?"
        )
    (record,) = telemetry.records
    assert record.usage is not None and record.usage.source is llmmeter.UsageSource.ESTIMATED


# --- automatic function calling: several requests, one call ---------------------------------------
AFC = "google_genai/logfire__test_instrument_google_genai.yaml"
"""Two recorded requests of one exchange: a functionCall to get_current_weather, then the answer."""


def get_current_weather(location: str) -> str:
    """Returns the current weather.

    Args:
      location: The city and state, e.g. San Francisco, CA
    """
    return "rainy"


AFC_CONFIG = genai_types.GenerateContentConfig(tools=[get_current_weather])
# 42 + 58 prompt tokens, 9 + 9 candidates: the two requests' usage, summed.
AFC_USAGE = Usage(input_tokens=100, output_tokens=18, text_input_tokens=100, text_output_tokens=18)


def test_a_call_the_sdk_answers_with_two_requests_counts_both(telemetry: Telemetry) -> None:
    client = _recorded_client(AFC, 0)
    with use_recording(AFC):
        response = client.models.generate_content(
            model="gemini-2.0-flash-001", contents="What is the weather like in Boston?", config=AFC_CONFIG
        )
    assert response.text == "It is rainy in Boston, MA.\n"
    assert response.usage_metadata is not None and response.usage_metadata.prompt_token_count == 58
    (record,) = telemetry.records
    assert record.usage == AFC_USAGE and record.response_id == "-QtkaLDGCIuT7dcPsNuzuAk"
    # gemini-2.0-flash: $0.10 / M input, $0.40 / M output -> 100 x 0.10 + 18 x 0.40 = 17.2 micro-dollars.
    assert record.cost is not None and record.cost.amount == Decimal("0.0000172")


async def test_an_async_call_answered_with_two_requests_counts_both(telemetry: Telemetry) -> None:
    client = _recorded_client(AFC, 0)
    with use_recording(AFC):
        await client.aio.models.generate_content(
            model="gemini-2.0-flash-001", contents="What is the weather like in Boston?", config=AFC_CONFIG
        )
    (record,) = telemetry.records
    assert record.usage == AFC_USAGE


def test_every_client_counts_both_requests_after_instrument_google_genai(telemetry: Telemetry) -> None:
    client = genai.Client(api_key="test-key", http_options=genai_types.HttpOptions(api_version="v1beta"))
    _clients.append(client)
    llmmeter.instrument_google_genai()
    try:
        with use_recording(AFC):
            client.models.generate_content(
                model="gemini-2.0-flash-001",
                contents="What is the weather like in Boston?",
                config=AFC_CONFIG,
            )
    finally:
        llmmeter.uninstrument_google_genai()
    (record,) = telemetry.records
    assert record.usage == AFC_USAGE


def test_a_stream_the_sdk_continues_with_a_second_request_counts_both(telemetry: Telemetry) -> None:
    # The same two recorded answers, each sent as one server-sent event.
    events = [f"data: {json.dumps(json.loads(response_text(AFC, i)))}\r\n\r\n" for i in (0, 1)]
    with google_server({"streamGenerateContent": events}) as url:
        chunks = list(
            llmmeter.instrument(_client(url)).models.generate_content_stream(
                model="gemini-2.0-flash-001",
                contents="What is the weather like in Boston?",
                config=AFC_CONFIG,
            )
        )
    assert [chunk.response_id for chunk in chunks] == ["-AtkaJ3CG-mm7dcPpc-_sAU", "-QtkaLDGCIuT7dcPsNuzuAk"]
    (record,) = telemetry.records
    assert record.usage == AFC_USAGE and record.timings.chunks == 2


# --- process-wide and undo ------------------------------------------------------------------------
def test_instrument_google_genai_measures_every_client_until_undone(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        llmmeter.instrument_google_genai()
        try:
            _client(url).models.generate_content(model="gemini-2.5-flash", contents="x")
            list(_client(url).models.generate_content_stream(model="gemini-2.5-pro", contents="x"))
        finally:
            llmmeter.uninstrument_google_genai()
        _client(url).models.generate_content(model="gemini-2.5-flash", contents="x")
    assert [r.operation for r in telemetry.records] == ["generate_content", "generate_content"]
    assert [r.streaming for r in telemetry.records] == [False, True]


def test_the_opentelemetry_instrumentor_measures_every_client_until_uninstrumented(
    telemetry: Telemetry,
) -> None:
    from llmmeter.instrument.google_genai import GoogleGenAIInstrumentor

    instrumentor = GoogleGenAIInstrumentor()
    with google_server(ROUTES) as url:
        instrumentor.instrument()
        try:
            _client(url).models.generate_content(model="gemini-2.5-flash", contents="x")
        finally:
            instrumentor.uninstrument()
        _client(url).models.generate_content(model="gemini-2.5-flash", contents="x")
    assert len(telemetry.records) == 1


def test_a_chat_session_of_an_instrumented_client_is_measured(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        chat = llmmeter.instrument(_client(url)).chats.create(model="gemini-2.5-flash")
        chat.send_message("What is this video?")
    (record,) = telemetry.records
    assert record.usage == VIDEO_USAGE


def test_uninstrument_gives_back_the_clients_own_methods(telemetry: Telemetry) -> None:
    with google_server(ROUTES) as url:
        client = _client(url)
        own = client.models.generate_content
        assert llmmeter.uninstrument(llmmeter.instrument(client)) is client
        assert client.models.generate_content == own and "generate_content" not in vars(client.models)
        client.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert telemetry.records == []


# --- every recording in tests/recordings/google_genai, against its truth values -----------------
def _recorded(where: Any) -> list[Any]:
    return [
        pytest.param(file, position, id=f"{file.split('/', 1)[1]}#{position}")
        for file in files("google_genai")
        for position, item in enumerate(truth(file)["interactions"])
        if where(item)
    ]


def _recorded_client(file: str, position: int) -> genai.Client:
    """A client sending to the recorded endpoint and API version (Vertex: the recorded project)."""
    from google.oauth2.credentials import Credentials

    expected = truth(file)["interactions"][position]
    options = genai_types.HttpOptions(api_version=expected["api_version"])
    if not expected["vertexai"]:
        client = genai.Client(api_key="test-key", http_options=options)
    else:
        parts = expected["path"].split("/")
        client = genai.Client(
            vertexai=True,
            project=parts[parts.index("projects") + 1],
            location=parts[parts.index("locations") + 1],
            credentials=Credentials(token="test-token"),
            http_options=options,
        )
    _clients.append(client)
    return llmmeter.instrument(client)


def _true_usage(usage_metadata: dict[str, Any]) -> Usage:
    """The record's usage by the contract: input = prompt (cache inside) + tool-use prompt;
    output = candidates + thoughts; text parts per modality, thoughts counted as text output."""

    def by_modality(key: str) -> dict[str, int]:
        return {entry["modality"]: entry["tokenCount"] for entry in usage_metadata.get(key, ())}

    prompt, tool = usage_metadata.get("promptTokenCount"), usage_metadata.get("toolUsePromptTokenCount")
    candidates, thoughts = (
        usage_metadata.get("candidatesTokenCount"),
        usage_metadata.get("thoughtsTokenCount"),
    )
    inputs, outputs = by_modality("promptTokensDetails"), by_modality("candidatesTokensDetails")
    for modality, count in by_modality("toolUsePromptTokensDetails").items():
        inputs[modality] = inputs.get(modality, 0) + count
    text_out = outputs.get("TEXT")
    return Usage(
        input_tokens=prompt + (tool or 0),
        output_tokens=(candidates or 0) + (thoughts or 0),
        cache_read_input_tokens=usage_metadata.get("cachedContentTokenCount"),
        reasoning_output_tokens=thoughts,
        text_input_tokens=inputs.get("TEXT"),
        audio_input_tokens=inputs.get("AUDIO"),
        text_output_tokens=None if text_out is None else text_out + (thoughts or 0),
        audio_cache_read_input_tokens=by_modality("cacheTokensDetails").get("AUDIO"),
    )


def _check_recorded(record: Any, expected: dict[str, Any]) -> None:
    assert record.outcome is Outcome.OK
    assert record.provider == ("gcp.vertex_ai" if expected["vertexai"] else "gcp.gemini")
    assert record.request_model == expected["model"]
    assert record.response_model == expected["response_model_version"]
    assert record.response_id == expected["response_id"]
    assert record.finish_reasons == (expected["finish_reason"],)
    assert record.usage == _true_usage(expected["usage_metadata"])


@pytest.mark.parametrize(
    ("file", "position"), _recorded(lambda i: not i["request_stream"] and i["status"] == 200)
)
def test_a_recorded_generate_content_gives_its_true_usage(
    file: str, position: int, telemetry: Telemetry
) -> None:
    expected = truth(file)["interactions"][position]
    client = _recorded_client(file, position)
    with use_recording(file, position):
        client.models.generate_content(model=expected["model"], contents="replayed")
    (record,) = telemetry.records
    _check_recorded(record, expected)


@pytest.mark.parametrize(("file", "position"), _recorded(lambda i: i["request_stream"]))
def test_a_recorded_gemini_stream_gives_its_true_usage_and_chunks(
    file: str, position: int, telemetry: Telemetry
) -> None:
    expected = truth(file)["interactions"][position]
    client = _recorded_client(file, position)
    with use_recording(file, position):
        chunks = list(client.models.generate_content_stream(model=expected["model"], contents="replayed"))
    assert len(chunks) == expected["chunks"]
    (record,) = telemetry.records
    _check_recorded(record, expected)
    assert record.timings.chunks == expected["chunks"] and record.timings.ttft_s == record.timings.ttfc_s


@pytest.mark.parametrize(("file", "position"), _recorded(lambda i: i["request_stream"]))
async def test_a_recorded_gemini_stream_gives_the_same_through_client_aio(
    file: str, position: int, telemetry: Telemetry
) -> None:
    expected = truth(file)["interactions"][position]
    client = _recorded_client(file, position)
    with use_recording(file, position):
        stream = await client.aio.models.generate_content_stream(model=expected["model"], contents="replayed")
        [chunk async for chunk in stream]
    (record,) = telemetry.records
    _check_recorded(record, expected)


@pytest.mark.parametrize(("file", "position"), _recorded(lambda i: i["status"] >= 400))
async def test_a_recorded_embed_error_is_an_error_record_and_the_same_client_error(
    file: str, position: int, telemetry: Telemetry
) -> None:
    expected = truth(file)["interactions"][position]
    client = _recorded_client(file, position)
    with use_recording(file, position), pytest.raises(errors.ClientError) as raised:
        await client.aio.models.embed_content(model=expected["model"], contents="replayed")
    assert raised.value.code == expected["status"]
    (record,) = telemetry.records
    assert record.operation == "embeddings" and record.outcome is Outcome.ERROR
    assert record.error_type == "google.genai.errors.ClientError" and record.usage is None
