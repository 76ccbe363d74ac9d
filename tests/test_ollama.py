"""The ``ollama`` client, measured: the real SDK against real Ollama response bodies on 127.0.0.1.

The bodies are Ollama's own published server output (``tests/data/ollama``, source and license in
its ``SOURCE.md``), served by a local HTTP server that writes NDJSON streams line by line, with a
pause before each line, as ``ollama serve`` does while it generates. Expected numbers are the
bodies' own; Ollama is self-hosted, so a call is unpriced until a price is registered.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ollama
import pytest

import llmmeter
from llmmeter import CostStatus, Outcome, ServerTimings, Usage, UsageSource
from llmmeter.pricing import GpuHourPrice, ModelPrice, PricingRegistry
from llmmeter.providers.ollama import OllamaStreamReader

from .conftest import Telemetry
from .recording_support import RecordedBody, files, serve_bodies, truth

DATA = Path(__file__).resolve().parent / "data" / "ollama"
PAUSE_S = 0.02
"""The server's pause before each NDJSON line: a stream's first chunk comes no sooner."""

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue?"}]}
GENERATE = {"model": "llama3.2", "prompt": "Why is the sky blue?"}
EMBED = {"model": "all-minilm", "input": "Why is the sky blue?"}


# --- a local Ollama serving recorded bodies -------------------------------------------------------
class _Server:
    def __init__(self) -> None:
        self.routes: dict[str, str] = {}
        self.url = ""


@contextmanager
def ollama_server(routes: dict[str, str]) -> Iterator[_Server]:
    """Serve ``{path: body file}`` on 127.0.0.1: ``.ndjson`` paced line by line, ``.json`` whole;
    a body that is not a file is sent as is (a malformed answer)."""
    state = _Server()
    state.routes = routes

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = state.routes.get(self.path)
            if body is None:
                self._whole(404, b'{"error":"model not found"}')
            elif body.endswith(".ndjson"):
                self._paced((DATA / body).read_bytes().splitlines())
            elif body.endswith(".json"):
                self._whole(200, (DATA / body).read_bytes().strip())
            else:
                self._whole(200, body.encode())

        def _whole(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _paced(self, lines: list[bytes]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in lines:
                time.sleep(PAUSE_S)
                data = line + b"\n"
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
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


ROUTES = {"/api/chat": "chat.json", "/api/generate": "generate.json", "/api/embed": "embed.json"}
STREAM_ROUTES = {"/api/chat": "chat_stream.ndjson", "/api/generate": "generate_stream.ndjson"}


def _body(file: str) -> Any:
    return json.loads((DATA / file).read_text().splitlines()[-1])


def _client(url: str, *, use_async: bool = False) -> Any:
    return (ollama.AsyncClient if use_async else ollama.Client)(host=url)


# --- whole responses --------------------------------------------------------------------------------
def test_a_chat_response_is_returned_unchanged_with_ollamas_tokens_and_timings(telemetry: Telemetry) -> None:
    with ollama_server(ROUTES) as server:
        plain = _client(server.url).chat(**CHAT)
        response = llmmeter.instrument(_client(server.url)).chat(**CHAT)
    assert type(response) is type(plain) and response == plain
    (record,) = telemetry.records
    assert record.operation == "chat" and record.provider == "ollama"
    assert record.server_address == "127.0.0.1" and record.server_port == int(server.url.rsplit(":", 1)[1])
    assert record.request_model == record.response_model == "llama3.2"
    assert record.response_id is None  # Ollama sends none
    assert record.usage == Usage(input_tokens=26, output_tokens=298)
    assert record.timings.server == ServerTimings(
        load_s=0.002154458,
        prefill_s=0.383809,
        decode_s=4.799921,
        e2e_s=5.191566416,
        tpot_s=4.799921 / 298,
    )
    assert record.timings.ttft_s is None and record.outcome is Outcome.OK


def test_a_generate_response_is_a_text_completion_with_its_counts(telemetry: Telemetry) -> None:
    with ollama_server(ROUTES) as server:
        plain = _client(server.url).generate(**GENERATE)
        response = llmmeter.instrument(_client(server.url)).generate(**GENERATE)
    assert response == plain and response.response == _body("generate.json")["response"]
    (record,) = telemetry.records
    assert record.operation == "text_completion"
    assert record.usage == Usage(input_tokens=26, output_tokens=290)
    assert record.timings.server is not None and record.timings.server.load_s == 0.005025959


def test_an_embedding_counts_its_input_tokens_only(telemetry: Telemetry) -> None:
    with ollama_server(ROUTES) as server:
        plain = _client(server.url).embed(**EMBED, dimensions=10)
        response = llmmeter.instrument(_client(server.url)).embed(**EMBED, dimensions=10)
    assert response == plain and len(response.embeddings[0]) == 10
    (record,) = telemetry.records
    assert record.operation == "embeddings" and record.request_model == "all-minilm"
    assert record.usage == Usage(input_tokens=8)
    assert record.request_params["gen_ai.embeddings.dimension.count"] == 10
    assert record.timings.server == ServerTimings(load_s=0.0010195, e2e_s=0.014143917)


async def test_async_chat_generate_and_embed_are_recorded_like_sync_ones(telemetry: Telemetry) -> None:
    with ollama_server(ROUTES) as server:
        client = llmmeter.instrument(_client(server.url, use_async=True))
        chat = await client.chat(**CHAT)
        await client.generate(**GENERATE)
        await client.embed(**EMBED)
        plain = await _client(server.url, use_async=True).chat(**CHAT)
    assert type(chat) is ollama.ChatResponse and chat == plain
    chat_record, generate_record, embed_record = telemetry.records
    assert chat_record.usage == Usage(input_tokens=26, output_tokens=298)
    assert generate_record.usage == Usage(input_tokens=26, output_tokens=290)
    assert embed_record.usage == Usage(input_tokens=8)


def test_a_declared_provider_names_the_records(telemetry: Telemetry) -> None:
    with ollama_server(ROUTES) as server:
        llmmeter.instrument(_client(server.url), provider="acme.gpu-box").chat(**CHAT)
    (record,) = telemetry.records
    assert record.provider == "acme.gpu-box"


def test_request_options_are_recorded_under_their_semconv_names(telemetry: Telemetry) -> None:
    options = {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 64, "seed": 7, "stop": ["\n"]}
    with ollama_server(ROUTES) as server:
        llmmeter.instrument(_client(server.url)).chat(**CHAT, options=options)
    (record,) = telemetry.records
    assert record.request_params == {
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.top_k": 40.0,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("\n",),
    }


# --- streams --------------------------------------------------------------------------------------
def test_a_chat_stream_is_still_a_generator_of_the_same_chunks(telemetry: Telemetry) -> None:
    import types

    with ollama_server(STREAM_ROUTES) as server:
        plain = list(_client(server.url).chat(**CHAT, stream=True))
        stream = llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True)
        assert isinstance(stream, types.GeneratorType)
        chunks = list(stream)
    assert chunks == plain and [type(c) for c in chunks] == [ollama.ChatResponse] * 2


def test_a_chat_stream_takes_ttft_at_its_first_content_and_usage_from_the_done_chunk(
    telemetry: Telemetry,
) -> None:
    with ollama_server(STREAM_ROUTES) as server:
        for _chunk in llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True):
            pass
    (record,) = telemetry.records
    assert record.streaming and record.outcome is Outcome.OK and record.timings.chunks == 2
    assert record.usage == Usage(input_tokens=26, output_tokens=282)
    timings = record.timings
    assert timings.ttfc_s is not None and timings.ttft_s is not None and timings.duration_s is not None
    # The first chunk ("The") is output: TTFT is taken at it, after the server's pause.
    assert timings.ttft_s == timings.ttfc_s >= PAUSE_S
    assert timings.duration_s >= 2 * PAUSE_S
    assert timings.server is not None and timings.server.decode_s == 4.535599
    assert timings.tpot_s == 0.0  # one output chunk: first and last output are the same moment


def test_a_tool_call_chunk_counts_as_output(telemetry: Telemetry) -> None:
    with ollama_server({"/api/chat": "chat_tools_stream.ndjson"}) as server:
        chunks = list(llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True))
    assert chunks[0].message.tool_calls is not None
    (record,) = telemetry.records
    assert record.timings.ttft_s == record.timings.ttfc_s
    assert record.finish_reasons == ("stop",)
    assert record.usage == Usage(input_tokens=169, output_tokens=15)


def test_a_generate_stream_reads_its_response_chunks(telemetry: Telemetry) -> None:
    with ollama_server(STREAM_ROUTES) as server:
        texts = [
            c.response for c in llmmeter.instrument(_client(server.url)).generate(**GENERATE, stream=True)
        ]
    assert texts == ["The", ""]
    (record,) = telemetry.records
    assert record.operation == "text_completion" and record.streaming
    assert record.usage == Usage(input_tokens=26, output_tokens=259)
    assert record.timings.server is not None and record.timings.server.load_s == 6.338219291


async def test_an_async_stream_is_an_async_generator_recorded_like_a_sync_one(telemetry: Telemetry) -> None:
    import types

    with ollama_server(STREAM_ROUTES) as server:
        stream = await llmmeter.instrument(_client(server.url, use_async=True)).chat(**CHAT, stream=True)
        assert isinstance(stream, types.AsyncGeneratorType)
        chunks = [chunk async for chunk in stream]
        plain = [chunk async for chunk in await _client(server.url, use_async=True).chat(**CHAT, stream=True)]
    assert chunks == plain
    (record,) = telemetry.records
    assert record.usage == Usage(input_tokens=26, output_tokens=282)
    assert record.timings.ttft_s is not None and record.timings.ttft_s >= PAUSE_S


def test_a_stream_never_iterated_sent_nothing_and_records_nothing(telemetry: Telemetry) -> None:
    with ollama_server(STREAM_ROUTES) as server:
        stream = llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True)
        del stream
        gc.collect()
    assert telemetry.records == []


@pytest.mark.parametrize("stream", [False, True])
def test_content_capture_is_opt_in_and_records_both_directions(stream: bool, telemetry: Telemetry) -> None:
    telemetry.reconfigure(capture_content=True)
    with ollama_server(STREAM_ROUTES if stream else ROUTES) as server:
        result = llmmeter.instrument(_client(server.url)).chat(
            model="llama3.2",
            messages=[ollama.Message(role="user", content="why is the sky blue?")],
            stream=stream,
        )
        if stream:
            list(result)
    (record,) = telemetry.records
    assert record.content is not None
    (message,) = record.content["gen_ai.output.messages"]
    assert message["parts"][0]["content"] == ("The" if stream else "Hello! How are you today?")
    (span,) = telemetry.finished_spans()
    assert "why is the sky blue?" in str((span.attributes or {})["gen_ai.input.messages"])


async def test_an_async_stream_failing_midway_is_an_error_with_the_same_exception(
    telemetry: Telemetry,
) -> None:
    (file,) = (param.values[0] for param in _recordings(failing=True))
    with serve_bodies(_served(file)) as server, pytest.raises(ollama.ResponseError) as raised:
        async for _part in await _send_recorded(
            llmmeter.instrument(_client(server.url, use_async=True)), file
        ):
            pass
    assert raised.value.error == truth(file)["interactions"][0]["error"]
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.error_type == "ollama.ResponseError"


@pytest.mark.parametrize(
    ("chunk", "is_output"),
    [
        (ollama.ChatResponse(model="m", message=ollama.Message(role="assistant", content="Hi")), True),
        (
            ollama.ChatResponse(
                model="m", message=ollama.Message(role="assistant", content="", thinking="Hm")
            ),
            True,
        ),
        (
            ollama.ChatResponse(
                model="m",
                message=ollama.Message(
                    role="assistant",
                    content="",
                    tool_calls=[ollama.Message.ToolCall(function={"name": "f", "arguments": {}})],
                ),
            ),
            True,
        ),
        (ollama.ChatResponse(model="m", message=ollama.Message(role="assistant", content="")), False),
        (ollama.GenerateResponse(model="m", response="Hi"), True),
        (ollama.GenerateResponse(model="m", response="", thinking="Hm"), True),
        (ollama.GenerateResponse(model="m", response="", done=True, eval_count=3), False),
    ],
)
def test_output_starts_at_the_first_chunk_with_content_thinking_or_a_tool_call(
    chunk: Any, is_output: bool
) -> None:
    assert OllamaStreamReader().feed(chunk) is is_output


# --- the never-leak matrix --------------------------------------------------------------------------
def test_a_stream_closed_early_is_aborted(telemetry: Telemetry) -> None:
    with ollama_server(STREAM_ROUTES) as server:
        stream = llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True)
        next(stream)
        stream.close()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED and record.timings.ttft_s is not None
    # The done chunk never came: what was seen is estimated locally, and marked so.
    assert record.usage is not None and record.usage.source is UsageSource.ESTIMATED
    assert record.usage.output_tokens == 1  # "The"


def test_breaking_out_of_a_loop_and_dropping_the_generator_is_abandoned(telemetry: Telemetry) -> None:
    with ollama_server(STREAM_ROUTES) as server:
        stream = llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True)
        for _chunk in stream:
            break
        del stream
        gc.collect()
    (record,) = telemetry.records
    # A generator left suspended by `break` and then dropped is abandoned; `break` inside
    # `closing(...)` is aborted (test_breaking_out_of_a_closing_loop_is_aborted).
    assert record.outcome is Outcome.ABANDONED


def test_breaking_out_of_a_closing_loop_is_aborted(telemetry: Telemetry) -> None:
    from contextlib import closing

    with (
        ollama_server(STREAM_ROUTES) as server,
        closing(llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True)) as stream,
    ):
        for _chunk in stream:
            break
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


def test_a_dropped_stream_is_recorded_abandoned(telemetry: Telemetry) -> None:
    with ollama_server(STREAM_ROUTES) as server:
        stream = llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True)
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

    with ollama_server(STREAM_ROUTES) as server:
        stream = await llmmeter.instrument(_client(server.url, use_async=True)).chat(**CHAT, stream=True)
        task = asyncio.create_task(read(stream))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


def test_a_stream_failing_midway_is_an_error_with_the_same_exception(telemetry: Telemetry) -> None:
    with ollama_server({"/api/chat": '{"error":"unexpected EOF"}'}) as server:
        plain_error = _raised(lambda: list(_client(server.url).chat(**CHAT, stream=True)))
        stream = llmmeter.instrument(_client(server.url)).chat(**CHAT, stream=True)
        with pytest.raises(ollama.ResponseError) as raised:
            list(stream)
    assert type(raised.value) is type(plain_error) and str(raised.value) == str(plain_error)
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.error_type == "ollama.ResponseError"
    assert record.usage is None


def _raised(call: Any) -> BaseException:
    try:
        call()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


def test_an_http_error_reaches_the_caller_unchanged_and_is_recorded(telemetry: Telemetry) -> None:
    with ollama_server({}) as server, pytest.raises(ollama.ResponseError) as raised:
        llmmeter.instrument(_client(server.url)).chat(**CHAT)
    assert raised.value.status_code == 404
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.error_type == "ollama.ResponseError"
    assert record.usage is None and record.cost is None


# --- bad input ------------------------------------------------------------------------------------
def test_a_response_without_counts_leaves_usage_missing_not_zero(telemetry: Telemetry) -> None:
    body = '{"model":"all-minilm","embeddings":[[0.25,0.5]]}'
    with ollama_server({"/api/embed": body}) as server:
        plain = _client(server.url).embed(**EMBED)
        response = llmmeter.instrument(_client(server.url)).embed(**EMBED)
    assert response == plain
    (record,) = telemetry.records
    assert record.usage is None and record.outcome is Outcome.OK and record.timings.server is None


def test_a_chat_answer_without_counts_is_estimated_and_marked_never_zero(telemetry: Telemetry) -> None:
    body = '{"model":"llama3.2","message":{"role":"assistant","content":"Rayleigh scattering."},"done":true}'
    with ollama_server({"/api/chat": body}) as server:
        response = llmmeter.instrument(_client(server.url)).chat(**CHAT)
    assert response.message.content == "Rayleigh scattering."
    (record,) = telemetry.records
    assert record.usage is not None and record.usage.source is UsageSource.ESTIMATED
    assert record.usage.input_tokens and record.usage.output_tokens


def test_a_shape_the_sdk_rejects_reaches_the_caller_as_the_sdks_own_error(telemetry: Telemetry) -> None:
    body = '{"model":"llama3.2","done":true,"prompt_eval_count":"many","total_duration":"soon"}'
    with ollama_server({"/api/embed": body}) as server:
        plain_error = _raised(lambda: _client(server.url).embed(**EMBED))
        with pytest.raises(type(plain_error)) as raised:
            llmmeter.instrument(_client(server.url)).embed(**EMBED)
    assert str(raised.value) == str(plain_error)
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.usage is None


# --- cost -----------------------------------------------------------------------------------------
def test_a_self_hosted_model_is_unpriced_until_a_price_is_registered(telemetry: Telemetry) -> None:
    with ollama_server(ROUTES) as server:
        llmmeter.instrument(_client(server.url)).chat(**CHAT)
    (record,) = telemetry.records
    assert record.cost is None and record.cost_status is CostStatus.UNPRICED


def test_a_registered_token_price_prices_ollamas_counts(telemetry: Telemetry) -> None:
    registry = PricingRegistry.default()
    registry.register(
        "llama3.2", ModelPrice(input_per_mtok="0.10", output_per_mtok="0.40"), provider="ollama"
    )
    telemetry.reconfigure(pricing=registry)
    with ollama_server(ROUTES) as server:
        llmmeter.instrument(_client(server.url)).chat(**CHAT)
    (record,) = telemetry.records
    # 26 x $0.10 / M + 298 x $0.40 / M = 2.6 + 119.2 = 121.8 micro-dollars.
    assert record.cost is not None and record.cost.amount == Decimal("0.0001218")


def test_a_gpu_hour_price_at_a_declared_throughput_prices_the_tokens(telemetry: Telemetry) -> None:
    registry = PricingRegistry.default()
    registry.register(
        "llama3.2", GpuHourPrice(usd_per_gpu_hour="1.80", tokens_per_second=90, throughput_counts="output")
    )
    telemetry.reconfigure(pricing=registry)
    with ollama_server(ROUTES) as server:
        llmmeter.instrument(_client(server.url)).chat(**CHAT)
    (record,) = telemetry.records
    # 298 output tokens / 90 tokens/s = 3.3111... s of a $1.80/hour GPU = 1.80 x 298 / 90 / 3600
    # = 0.0016555... USD.
    assert record.cost is not None
    assert abs(record.cost.amount - Decimal("1.80") * 298 / 90 / 3600) < Decimal("1e-12")


# --- process-wide and undo ------------------------------------------------------------------------
def test_instrument_ollama_measures_every_client_and_the_module_functions_until_undone(
    telemetry: Telemetry,
) -> None:
    with ollama_server(ROUTES) as server:
        llmmeter.instrument_ollama()
        try:
            _client(server.url).chat(**CHAT)
        finally:
            llmmeter.uninstrument_ollama()
        _client(server.url).chat(**CHAT)
    assert len(telemetry.records) == 1


def test_instrument_ollama_measures_the_module_functions_too(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_chat = ollama.chat
    with ollama_server(ROUTES) as server:
        monkeypatch.setattr(ollama._client._client, "base_url", server.url)  # ollama.chat's client
        llmmeter.instrument_ollama()
        try:
            response = ollama.chat(**CHAT)
        finally:
            llmmeter.uninstrument_ollama()
        ollama.chat(**CHAT)
    assert ollama.chat == own_chat and response.message.content == "Hello! How are you today?"
    (record,) = telemetry.records
    assert record.usage == Usage(input_tokens=26, output_tokens=298)


def test_the_opentelemetry_instrumentor_measures_every_client_until_uninstrumented(
    telemetry: Telemetry,
) -> None:
    from llmmeter.instrument.ollama import OllamaInstrumentor

    instrumentor = OllamaInstrumentor()
    with ollama_server(ROUTES) as server:
        instrumentor.instrument()
        try:
            _client(server.url).chat(**CHAT)
        finally:
            instrumentor.uninstrument()
        _client(server.url).chat(**CHAT)
    assert len(telemetry.records) == 1


def test_the_instrumentors_are_registered_for_opentelemetry_instrument() -> None:
    import importlib
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    registered = pyproject["project"]["entry-points"]["opentelemetry_instrumentor"]
    for name, cls in (
        ("llmmeter_ollama", "OllamaInstrumentor"),
        ("llmmeter_google_genai", "GoogleGenAIInstrumentor"),
    ):
        module, attribute = registered[name].split(":")
        assert attribute == cls and hasattr(importlib.import_module(module), attribute)


def test_uninstrument_gives_back_the_clients_own_methods(telemetry: Telemetry) -> None:
    with ollama_server(ROUTES) as server:
        client = _client(server.url)
        own = client.chat
        assert llmmeter.uninstrument(llmmeter.instrument(client)) is client
        assert client.chat == own
        client.chat(**CHAT)
    assert telemetry.records == []


def test_instrumenting_twice_measures_once(telemetry: Telemetry) -> None:
    with ollama_server(ROUTES) as server:
        client = llmmeter.instrument(llmmeter.instrument(_client(server.url)))
        client.chat(**CHAT)
    assert len(telemetry.records) == 1


# --- every recording in tests/recordings/ollama, against its truth values -------------------------
def _recordings(*, failing: bool) -> list[Any]:
    return [
        pytest.param(file, id=file.split("/", 1)[1])
        for file in files("ollama")
        if bool(truth(file)["interactions"][0]["error"]) is failing
    ]


def _send_recorded(client: Any, file: str) -> Any:
    """The client method that sends the recorded route, called as a user would."""
    expected = truth(file)["interactions"][0]
    model, stream = expected["model"], expected["stream"]
    if expected["path"] == "/api/generate":
        return client.generate(model=model, prompt="replayed", stream=stream)
    if expected["path"] == "/api/chat":
        return client.chat(model=model, messages=[{"role": "user", "content": "replayed"}], stream=stream)
    return client.embed(model=model, input="replayed")


def _served(file: str) -> RecordedBody:
    route = truth(file)["route"]
    return RecordedBody(route["method"], route["path"], file)


def _check_recorded(record: Any, file: str) -> None:
    expected = truth(file)["interactions"][0]
    assert record.provider == "ollama" and record.outcome is Outcome.OK
    assert record.response_model == expected["model"] and record.streaming is expected["stream"]
    reason = expected["done_reason"]
    assert record.finish_reasons == ((reason,) if reason else None)
    counts = (expected["prompt_eval_count"], expected["eval_count"])
    if counts == (None, None):
        # Nothing reported: usage is estimated locally and marked so, or missing -- never a 0.
        assert record.usage is None or record.usage.source is UsageSource.ESTIMATED
        assert record.timings.server is None
        return
    assert record.usage == Usage(input_tokens=counts[0], output_tokens=counts[1])
    seconds = {
        name: None if expected[key] is None else expected[key] / 1e9
        for name, key in (
            ("load_s", "load_duration"),
            ("prefill_s", "prompt_eval_duration"),
            ("decode_s", "eval_duration"),
            ("e2e_s", "total_duration"),
        )
    }
    server = record.timings.server
    assert server is not None
    assert {name: getattr(server, name) for name in seconds} == seconds


@pytest.mark.parametrize("file", _recordings(failing=False))
def test_a_recorded_ollama_answer_gives_its_true_counts_and_durations(
    file: str, telemetry: Telemetry
) -> None:
    with serve_bodies(_served(file)) as server:
        plain = _send_recorded(_client(server.url), file)
        plain_parts = list(plain) if truth(file)["route"]["stream"] else [plain]
        result = _send_recorded(llmmeter.instrument(_client(server.url)), file)
        parts = list(result) if truth(file)["route"]["stream"] else [result]
    assert parts == plain_parts
    (record,) = telemetry.records
    _check_recorded(record, file)
    if record.streaming:
        assert record.timings.chunks == truth(file)["interactions"][0]["lines"]
        assert record.timings.ttft_s is not None and record.timings.ttfc_s is not None
        assert record.timings.ttft_s >= record.timings.ttfc_s


@pytest.mark.parametrize("file", _recordings(failing=False))
async def test_a_recorded_ollama_answer_gives_the_same_through_the_async_client(
    file: str, telemetry: Telemetry
) -> None:
    with serve_bodies(_served(file)) as server:
        result = await _send_recorded(llmmeter.instrument(_client(server.url, use_async=True)), file)
        if truth(file)["route"]["stream"]:
            [part async for part in result]
    (record,) = telemetry.records
    _check_recorded(record, file)


@pytest.mark.parametrize("file", _recordings(failing=True))
def test_a_recorded_stream_failing_midway_records_an_error_and_raises_the_same(
    file: str, telemetry: Telemetry
) -> None:
    expected = truth(file)["interactions"][0]
    parts: list[Any] = []
    with serve_bodies(_served(file)) as server, pytest.raises(ollama.ResponseError) as raised:
        parts.extend(_send_recorded(llmmeter.instrument(_client(server.url)), file))
    assert raised.value.error == expected["error"] and len(parts) == expected["lines"] - 1
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.error_type == "ollama.ResponseError"
    assert record.timings.chunks == expected["lines"] - 1
