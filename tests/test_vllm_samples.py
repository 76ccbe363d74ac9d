"""vLLM, measured from real captured traffic -- no vLLM needed.

``../shared/vllm-samples`` holds raw HTTP exchanges with a real vLLM 0.32.0 server (CPU build,
tiny random-weight Llama served as ``tiny-llama``) and the printed ``RequestOutput`` objects of
its Python API. These tests

* parse the captured bodies with the real ``openai`` types and check what llmmeter's adapters
  read from them (continuous usage, prefix-cache counts, the per-request ``metrics`` object,
  ``n=2`` streams with interleaved choices);
* replay the captured bytes verbatim from a local HTTP server on 127.0.0.1 to an instrumented
  ``openai`` client, and check the records end to end;
* check the Python-API adapters on the ``RequestOutput``/``RequestStateStats`` values vLLM
  printed, and the self-hosted price by GPU-hour.

The truth values quoted in the tests are read off the captured files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from opentelemetry.trace import SpanKind

import llmmeter
from llmmeter.pricing import GpuHourPrice, GpuHourSource, PricingRegistry
from llmmeter.providers.openai_stream import ChatStreamReader, CompletionStreamReader
from llmmeter.providers.types import apply_observed
from llmmeter.providers.vllm import (
    RequestOutputStreamReader,
    finish_reasons_from_request_output,
    is_vllm_object,
    request_params_of,
    server_timings_from_request_output,
    server_timings_from_vllm_metrics,
    server_timings_from_vllm_response,
    usage_from_request_output,
    usage_from_vllm_usage,
    vllm_metrics_of,
)
from llmmeter.record import CallRecord, CostStatus, Outcome, Usage, UsageSource
from llmmeter.report import build_report, render_table
from llmmeter.store import read_records
from llmmeter.testing import LocalOpenAIServer, Pacing

from .conftest import SHARED, Telemetry

SAMPLES = SHARED / "vllm-samples"

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared/vllm-samples is not available")


# --- reading the captures ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Capture:
    """One captured exchange: the request body, the response status, headers and raw body."""

    request: dict[str, Any]
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The SSE ``data:`` payloads, ``[DONE]`` left out."""
        lines = self.body.decode("utf-8").split("\n")
        return [
            json.loads(line[6:]) for line in lines if line.startswith("data: ") and line != "data: [DONE]"
        ]


def capture(name: str) -> Capture:
    """Parse ``NAME.http.txt``: request line, ``request-body:``, blank, status, headers, blank, body."""
    raw = (SAMPLES / f"{name}.http.txt").read_bytes()
    request_part, response_head, body = raw.split(b"\n\n", 2)
    request_line = next(
        line for line in request_part.decode().splitlines() if line.startswith("request-body: ")
    )
    status_line, *header_lines = response_head.decode().splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return Capture(
        request=json.loads(request_line.removeprefix("request-body: ")),
        status=int(status_line.split()[1]),
        headers=headers,
        body=body,
    )


def chat_chunks(name: str) -> list[ChatCompletionChunk]:
    return [ChatCompletionChunk.model_validate(event) for event in capture(name).events]


def read_chat_stream(chunks: list[ChatCompletionChunk], request: dict[str, Any]) -> CallRecord:
    reader = ChatStreamReader()
    for chunk in chunks:
        reader.feed(chunk)
    record = CallRecord(
        operation="chat", provider="openai_compatible", request_model="tiny-llama", streaming=True
    )
    apply_observed(record, reader.result())
    return record


# --- usage from the OpenAI-compatible server ---------------------------------------------------------
def test_continuous_usage_stream_is_read_from_its_final_totals() -> None:
    cap = capture("chat_stream_usage")
    chunks = chat_chunks("chat_stream_usage")
    assert all(chunk.usage is not None for chunk in chunks)  # continuous_usage_stats: every chunk
    record = read_chat_stream(chunks, cap.request)
    assert record.usage == Usage(input_tokens=32, output_tokens=16, source=UsageSource.PROVIDER)
    assert record.provider == "vllm"  # recognised from vLLM-only fields of the chunks
    assert record.response_model == "tiny-llama"
    assert record.finish_reasons == ("length",)


def test_stream_cut_short_keeps_the_last_running_total_not_an_estimate() -> None:
    cap = capture("chat_stream_usage")
    role_and_five_tokens = chat_chunks("chat_stream_usage")[:6]
    record = read_chat_stream(role_and_five_tokens, cap.request)
    assert record.usage == Usage(input_tokens=32, output_tokens=5, source=UsageSource.PROVIDER)


def test_completions_stream_with_continuous_usage() -> None:
    cap = capture("completion_stream_usage")
    reader = CompletionStreamReader()
    for event in cap.events:
        # As the SDK builds stream chunks: without validation (vLLM sends finish_reason null,
        # which the strict Completion type does not allow).
        reader.feed(Completion.construct(**event))
    record = CallRecord(operation="text_completion", provider="openai_compatible", streaming=True)
    apply_observed(record, reader.result())
    assert record.usage == Usage(input_tokens=10, output_tokens=16)
    assert record.provider == "vllm"


def test_n2_stream_with_interleaved_choices_counts_both_choices() -> None:
    cap = capture("chat_stream_n2_logprobs")
    chunks = chat_chunks("chat_stream_n2_logprobs")
    assert [c.choices[0].index for c in chunks if c.choices][:6] == [0, 1, 0, 0, 1, 0]
    record = read_chat_stream(chunks, cap.request)
    assert record.usage == Usage(input_tokens=32, output_tokens=12)  # 2 choices x max_tokens 6
    assert record.finish_reasons == ("length", "length")


def test_prefix_cache_reads_and_writes_with_prompt_tokens_details() -> None:
    first = ChatCompletion.model_validate(capture("pm_chat_nonstream_first").json)
    again = ChatCompletion.model_validate(capture("pm_chat_nonstream_prefix_cached").json)
    assert usage_from_vllm_usage(first.usage) == Usage(
        input_tokens=329, output_tokens=12, cache_read_input_tokens=0, cache_write_input_tokens=256
    )
    # The same prompt again: its first two 128-token KV blocks come from the prefix cache.
    assert usage_from_vllm_usage(again.usage) == Usage(
        input_tokens=329, output_tokens=12, cache_read_input_tokens=256, cache_write_input_tokens=0
    )


def test_without_prompt_tokens_details_cache_counts_stay_unobserved() -> None:
    response = ChatCompletion.model_validate(capture("chat_nonstream").json)
    usage = usage_from_vllm_usage(response.usage)
    assert usage == Usage(input_tokens=32, output_tokens=16)
    assert usage.cache_read_input_tokens is None and usage.cache_write_input_tokens is None


def test_cache_writes_reported_as_null_stay_unobserved() -> None:
    response = Completion.model_validate(capture("pm_completion_nonstream").json)
    assert usage_from_vllm_usage(response.usage) == Usage(
        input_tokens=6, output_tokens=6, cache_read_input_tokens=0, cache_write_input_tokens=None
    )


# --- the per-request metrics object --------------------------------------------------------------------
def test_per_request_metrics_become_server_timings() -> None:
    response = ChatCompletion.model_validate(capture("pm_chat_nonstream_first").json)
    metrics = vllm_metrics_of(response)
    assert metrics == response.__pydantic_extra__["metrics"]  # type: ignore[index]
    timings = server_timings_from_vllm_metrics(metrics)
    assert timings is not None
    assert timings.queue_s == pytest.approx(0.04410999997617182e-3)
    assert timings.prefill_s == pytest.approx(15.828015000010964e-3)  # vLLM's "time_to_first_token_ms"
    assert timings.ttft_s == pytest.approx((0.04410999997617182 + 15.828015000010964) / 1000)
    assert timings.decode_s == pytest.approx(41.53623900003822e-3)
    assert timings.tpot_s == pytest.approx(3.776021727276202e-3)
    assert timings.e2e_s == pytest.approx(timings.ttft_s + timings.decode_s)  # type: ignore[operator]


def test_server_metric_definitions_agree_with_what_vllm_sent() -> None:
    """vLLM's own ``tokens_per_second`` = completion tokens / (prefill + decode), and
    ``mean_itl_ms`` = decode / (tokens - 1): the fields mean what llmmeter maps them to."""
    for name in ("pm_chat_nonstream_first", "pm_chat_nonstream_prefix_cached", "pm_completion_nonstream"):
        body = capture(name).json
        timings = server_timings_from_vllm_metrics(body["metrics"])
        assert timings is not None and timings.prefill_s is not None and timings.decode_s is not None
        tokens = body["usage"]["completion_tokens"]
        assert body["metrics"]["tokens_per_second"] == pytest.approx(
            tokens / (timings.prefill_s + timings.decode_s)
        )
        assert timings.tpot_s == pytest.approx(timings.decode_s / (tokens - 1))


def test_stream_carries_metrics_only_on_its_final_usage_chunk() -> None:
    chunks = chat_chunks("pm_chat_stream_usage_metrics")
    with_metrics = [chunk for chunk in chunks if vllm_metrics_of(chunk) is not None]
    assert with_metrics == [chunks[-1]] and chunks[-1].choices == []
    timings = server_timings_from_vllm_response(chunks[-1])
    assert timings is not None
    assert timings.prefill_s == pytest.approx(8.148028000050545e-3)
    assert timings.tpot_s == pytest.approx(4.240100909090539e-3)
    assert usage_from_vllm_usage(chunks[-1].usage).cache_read_input_tokens == 256


def test_no_metrics_when_the_server_flag_is_off_or_usage_was_not_asked_for() -> None:
    assert (
        server_timings_from_vllm_response(ChatCompletion.model_validate(capture("chat_nonstream").json))
        is None
    )
    chunks = chat_chunks("pm_chat_stream_metrics_no_usage")
    assert all(server_timings_from_vllm_response(chunk) is None for chunk in chunks)


def test_vllm_objects_are_recognised_and_openai_ones_are_not() -> None:
    assert is_vllm_object(ChatCompletion.model_validate(capture("chat_nonstream").json))
    assert is_vllm_object(chat_chunks("chat_stream_plain")[0])
    assert is_vllm_object(capture("completion_nonstream").json)
    openai_chunk = ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
        }
    )
    assert not is_vllm_object(openai_chunk)


# --- the Python API: RequestOutput, as vLLM printed it ----------------------------------------------------
_OFFLINE = (SAMPLES / "offline_api_output.txt").read_text() if SAMPLES.is_dir() else ""


def _stats(text: str) -> SimpleNamespace:
    """A ``RequestStateStats(k=v, ...)`` repr as an object with the same attributes."""
    inner = re.search(r"RequestStateStats\((.*?)\)", text)
    assert inner is not None
    values = {}
    for item in inner.group(1).split(", "):
        key, value = item.split("=")
        values[key] = value == "True" if value in ("True", "False") else float(value)
    values["num_generation_tokens"] = int(values["num_generation_tokens"])
    return SimpleNamespace(**values)


def _first_request_output() -> SimpleNamespace:
    """``outs[0]`` of ``scripts/offline.py``: the fields the adapters read, values as printed."""
    section = _OFFLINE.split("==== outs[0] RequestOutput", 1)[1]

    def printed(name: str) -> str:
        match = re.search(rf"^  {name} = (.*)$", section, re.MULTILINE)
        assert match is not None
        return match.group(1)

    token_ids = re.search(r"token_ids=(\[[\d, ]*\])", printed("outputs"))
    assert token_ids is not None
    return SimpleNamespace(
        request_id=printed("request_id").strip("'"),
        prompt_token_ids=json.loads(printed("prompt_token_ids")),
        encoder_prompt_token_ids=None,
        outputs=[SimpleNamespace(index=0, token_ids=json.loads(token_ids.group(1)), finish_reason="length")],
        metrics=_stats(printed("metrics")),
        num_cached_tokens=int(printed("num_cached_tokens")),
        num_cache_creation_tokens=int(printed("num_cache_creation_tokens")),
    )


def test_request_output_usage_is_exact_from_token_ids() -> None:
    output = _first_request_output()
    assert usage_from_request_output(output) == Usage(
        input_tokens=10, output_tokens=8, cache_read_input_tokens=0, cache_write_input_tokens=0
    )


def test_request_output_counts_every_completion_and_the_encoder_prompt() -> None:
    output = SimpleNamespace(
        prompt_token_ids=[1, 2, 3],
        encoder_prompt_token_ids=[7, 8],
        outputs=[SimpleNamespace(token_ids=[5, 6]), SimpleNamespace(token_ids=[9, 9, 9])],
        num_cached_tokens=None,
    )
    assert usage_from_request_output(output) == Usage(input_tokens=5, output_tokens=5)


def test_embedding_output_has_input_tokens_only_and_no_finish_reason() -> None:
    """``LLM.embed`` returns ``EmbeddingRequestOutput``: its ``outputs`` is one vector."""
    output = SimpleNamespace(
        request_id="0",
        prompt_token_ids=[0, 279, 80, 356, 313, 272, 1371],
        outputs=SimpleNamespace(embedding=[0.1] * 128),
        num_cached_tokens=0,
        finished=True,
    )
    assert usage_from_request_output(output) == Usage(input_tokens=7, cache_read_input_tokens=0)
    assert finish_reasons_from_request_output(output) is None


def test_pooling_params_dimensions_become_the_embeddings_dimension_count() -> None:
    assert request_params_of(SimpleNamespace(dimensions=64)) == {"gen_ai.embeddings.dimension.count": 64}
    assert request_params_of(SimpleNamespace(dimensions=None)) == {}


def test_request_stats_become_server_timings_from_monotonic_differences_only() -> None:
    stats = _first_request_output().metrics
    timings = server_timings_from_request_output(SimpleNamespace(metrics=stats))
    assert timings is not None
    assert timings.queue_s == pytest.approx(838.220590492 - 838.220557065)
    assert timings.prefill_s == pytest.approx(838.237652496 - 838.220590492)
    assert timings.decode_s == pytest.approx(838.286514763 - 838.237652496)
    assert timings.ttft_s == pytest.approx(0.026213884353637695)  # first_token_latency
    assert timings.tpot_s == pytest.approx((838.286514763 - 838.237652496) / 7)  # 8 tokens, 7 gaps
    assert timings.e2e_s is None  # not kept by vLLM; never pieced together from two clocks
    # arrival_time is the wall clock (~1.8e9 s): mixing it with the monotonic *_ts would give
    # numbers around 1.8e9 s; every timing here is well under a second.
    assert stats.arrival_time > 1e9
    assert all(
        value < 1
        for value in (timings.queue_s, timings.prefill_s, timings.decode_s, timings.ttft_s, timings.tpot_s)
    )


def test_no_server_timings_when_stats_logging_is_off() -> None:
    # LLM() defaults to disable_log_stats=True: RequestOutput.metrics is None.
    assert "DEFAULT metrics: None" in _OFFLINE
    assert server_timings_from_request_output(SimpleNamespace(metrics=None)) is None


def test_a_request_that_never_got_a_token_has_no_made_up_timings() -> None:
    stats = SimpleNamespace(
        num_generation_tokens=0,
        arrival_time=1795766994.5,
        queued_ts=838.2,
        scheduled_ts=0.0,
        first_token_ts=0.0,
        last_token_ts=0.0,
        first_token_latency=0.0,
    )
    assert server_timings_from_request_output(SimpleNamespace(metrics=stats)) is None


def _async_outputs(kind: str) -> list[SimpleNamespace]:
    """The ``AsyncLLM`` outputs ``scripts/async_stream.py`` printed for one output kind."""
    pattern = re.compile(
        rf"^  {kind} t=.*?finished=(\w+) text=.*? token_ids=(\[[\d, ]*\]) finish_reason=(\w+) "
        r"num_cached_tokens=(\d+)$",
        re.MULTILINE,
    )
    outputs = []
    for finished, ids, reason, cached in pattern.findall(_OFFLINE):
        completion = SimpleNamespace(
            index=0, token_ids=json.loads(ids), finish_reason=None if reason == "None" else reason
        )
        outputs.append(
            SimpleNamespace(
                request_id=f"req-{kind}",
                prompt_token_ids=[0, 457, 608, 80, 356, 67, 91, 272, 1371, 856],
                outputs=[completion],
                finished=finished == "True",
                num_cached_tokens=int(cached),
                metrics=None,
            )
        )
    final_stats = re.findall(rf"  {kind} t=(?:.|\n)*?  final metrics: (RequestStateStats\(.*\))", _OFFLINE)
    outputs[-1].metrics = _stats(final_stats[0])
    return outputs


@pytest.mark.parametrize(("kind", "delta"), [("DELTA", True), ("CUMULATIVE", False)])
def test_async_stream_reader_counts_tokens_of_both_output_kinds(kind: str, delta: bool) -> None:
    outputs = _async_outputs(kind)
    assert len(outputs) == 6
    reader = RequestOutputStreamReader(delta=delta)
    assert all(reader.feed(output) for output in outputs)  # every output brought one new token
    record = CallRecord(operation="text_completion", provider="vllm", streaming=True)
    apply_observed(record, reader.result())
    assert record.usage == Usage(input_tokens=10, output_tokens=6, cache_read_input_tokens=0)
    assert record.finish_reasons == ("length",)
    assert record.response_id == f"req-{kind}"
    assert record.timings.server is not None and record.timings.server.tpot_s is not None


# --- end to end: captured bytes replayed to an instrumented openai client --------------------------------
@dataclass
class ReplayServer:
    """Serves captured responses verbatim on 127.0.0.1, one per request, in the order queued."""

    queue: list[Capture] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def serve(self, *names: str) -> None:
        self.queue.extend(capture(name) for name in names)


def _handler(owner: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            owner.requests.append(json.loads(self.rfile.read(length) or b"{}"))
            cap = owner.queue.pop(0)
            self.send_response(cap.status)
            for name, value in cap.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "date", "server"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(cap.body)))
            self.end_headers()
            self.wfile.write(cap.body)

    return Handler


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    server = ReplayServer()
    server.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _client(replay: ReplayServer, provider: str | None = None) -> openai.OpenAI:
    return llmmeter.instrument(
        openai.OpenAI(base_url=replay.base_url, api_key="EMPTY", max_retries=0), provider=provider
    )


def test_replayed_chat_is_detected_as_vllm_with_exact_usage(
    replay: ReplayServer, telemetry: Telemetry
) -> None:
    replay.serve("chat_nonstream")
    request = capture("chat_nonstream").request
    response = _client(replay).chat.completions.create(**request)
    assert response.usage is not None and response.usage.completion_tokens == 16
    (record,) = telemetry.records
    assert record.provider == "vllm"
    assert (record.request_model, record.response_model) == ("tiny-llama", "tiny-llama")
    assert record.usage == Usage(input_tokens=32, output_tokens=16)
    assert (record.server_address, record.streaming, record.outcome) == ("127.0.0.1", False, Outcome.OK)
    (span,) = telemetry.finished_spans()
    assert span.kind is SpanKind.CLIENT  # a server across the network, unlike the in-process engine


def test_replayed_continuous_usage_stream_records_provider_usage_and_client_timings(
    replay: ReplayServer, telemetry: Telemetry
) -> None:
    replay.serve("chat_stream_usage")
    request = capture("chat_stream_usage").request
    chunks = list(_client(replay).chat.completions.create(**request))
    assert len(chunks) == 18  # role + 16 tokens + the usage-only chunk the caller asked for
    (record,) = telemetry.records
    assert record.provider == "vllm"
    assert record.usage == Usage(input_tokens=32, output_tokens=16, source=UsageSource.PROVIDER)
    assert record.timings.chunks == 18
    assert record.timings.ttft_s is not None and record.timings.tpot_s is not None
    assert record.finish_reasons == ("length",)


def test_declared_vllm_provider_gets_usage_asked_for_and_the_extra_chunk_hidden(
    replay: ReplayServer, telemetry: Telemetry
) -> None:
    replay.serve("chat_stream_usage")
    request = {k: v for k, v in capture("chat_stream_usage").request.items() if k != "stream_options"}
    chunks = list(_client(replay, provider="vllm").chat.completions.create(**request))
    assert replay.requests[0]["stream_options"] == {"include_usage": True}
    assert len(chunks) == 17 and all(chunk.choices for chunk in chunks)
    (record,) = telemetry.records
    assert record.provider == "vllm"
    assert record.usage == Usage(input_tokens=32, output_tokens=16)


def test_replayed_n2_stream(replay: ReplayServer, telemetry: Telemetry) -> None:
    replay.serve("chat_stream_n2_logprobs")
    list(_client(replay).chat.completions.create(**capture("chat_stream_n2_logprobs").request))
    (record,) = telemetry.records
    assert record.usage == Usage(input_tokens=32, output_tokens=12)
    assert record.finish_reasons == ("length", "length")
    assert record.request_params["gen_ai.request.choice.count"] == 2


def test_context_too_long_error_is_raised_unchanged_and_recorded(
    replay: ReplayServer, telemetry: Telemetry
) -> None:
    replay.serve("error_stream_context_too_long")
    request = capture("error_stream_context_too_long").request
    with pytest.raises(openai.BadRequestError) as raised:
        _client(replay, provider="vllm").chat.completions.create(**request)
    assert raised.value.status_code == 400
    assert "max_model_len=1024" in raised.value.message
    (record,) = telemetry.records
    assert (record.provider, record.outcome, record.error_type) == (
        "vllm",
        Outcome.ERROR,
        "openai.BadRequestError",
    )
    assert record.usage is None  # nothing was generated, nothing is made up


def test_replayed_per_request_metrics_are_recorded_as_server_timings(
    replay: ReplayServer, telemetry: Telemetry
) -> None:
    replay.serve("pm_chat_nonstream_first", "pm_chat_stream_usage_metrics")
    client = _client(replay)
    client.chat.completions.create(**capture("pm_chat_nonstream_first").request)
    list(client.chat.completions.create(**capture("pm_chat_stream_usage_metrics").request))
    plain, streamed = telemetry.records
    assert plain.timings.server is not None and streamed.timings.server is not None
    assert plain.timings.server.prefill_s == pytest.approx(15.828015000010964e-3)
    assert streamed.timings.server.prefill_s == pytest.approx(8.148028000050545e-3)
    assert plain.usage is not None and plain.usage.cache_write_input_tokens == 256
    assert streamed.usage is not None and streamed.usage.cache_read_input_tokens == 256


# --- self-hosted cost by the GPU-hour --------------------------------------------------------------------
def test_vllm_records_are_priced_by_gpu_hour_beside_api_priced_models(
    replay: ReplayServer, telemetry: Telemetry
) -> None:
    registry = PricingRegistry.default()
    registry.add_source(
        GpuHourSource(
            {"tiny-llama": GpuHourPrice(usd_per_gpu_hour="2.49", gpu_count=1, tokens_per_second=2000)},
            provider="vllm",
        )
    )
    telemetry.reconfigure(pricing=registry)
    replay.serve("pm_chat_nonstream_first")
    _client(replay).chat.completions.create(**capture("pm_chat_nonstream_first").request)
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=5)) as api:
        api_client = openai.OpenAI(base_url=api.base_url, api_key="test", max_retries=0)
        llmmeter.instrument(api_client, provider="openai").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "four words of prompt"}]
        )
    vllm_record, api_record = telemetry.records
    # 1x H100 at $2.49/h serving tiny-llama at 2000 tokens/s: 341 tokens take 0.1705 s of the GPU.
    assert vllm_record.cost_status is CostStatus.PRICED and vllm_record.cost is not None
    with localcontext(Context(prec=60)):  # the registry's documented precision
        expected = Decimal("2.49") * (Decimal(329 + 12) / Decimal(2000)) / Decimal(3600)
    assert vllm_record.cost.amount == expected
    assert round(vllm_record.cost.amount, 12) == Decimal("0.000117929167")
    assert list(vllm_record.cost.components) == ["gpu_time"]
    assert api_record.cost_status is CostStatus.PRICED and api_record.cost is not None
    assert api_record.cost.components.keys() >= {"input", "output"}
    table = render_table(build_report(telemetry.records, by="model"))
    assert "tiny-llama" in table and "gpt-4o-mini" in table


def test_gpu_hour_price_applies_to_vllm_only_when_restricted_to_it() -> None:
    registry = PricingRegistry()
    registry.add_source(GpuHourSource({"tiny-llama": GpuHourPrice(usd_per_gpu_hour="2.49")}, provider="vllm"))
    usage = Usage(input_tokens=10, output_tokens=8)
    assert registry.cost(usage, model="tiny-llama", provider="openai") is None
    cost = registry.cost(usage, model="tiny-llama", provider="vllm", duration_s=0.5)
    # No declared throughput: the measured busy time (0.5 s) of the request is what it used.
    with localcontext(Context(prec=60)):
        expected = Decimal("2.49") * Decimal("0.5") / Decimal(3600)
    assert cost is not None and cost.amount == expected


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vllm_deployment.py"


def test_vllm_deployment_example_runs_offline_and_prices_by_gpu_hour(tmp_path: Path) -> None:
    store = tmp_path / "example.sqlite3"
    env = {key: value for key, value in os.environ.items() if key != "LLMMETER_VLLM_URL"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--store", str(store), "--tokens-per-second", "2500"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = read_records(store)
    vllm_records = [r for r in records if r.provider == "vllm"]
    assert [(r.operation, r.streaming) for r in vllm_records] == [
        ("chat", True),
        ("chat", False),
        ("text_completion", False),
    ]
    for record in vllm_records:
        assert record.request_model == "tiny-llama" and record.usage is not None and record.cost is not None
        tokens = (record.usage.input_tokens or 0) + (record.usage.output_tokens or 0)
        with localcontext(Context(prec=60)):
            expected = Decimal("2.49") * (Decimal(tokens) / Decimal(2500)) / Decimal(3600)
        assert record.cost.amount == expected
    (api_record,) = [r for r in records if r.provider == "openai"]
    assert api_record.cost is not None and api_record.cost.components.keys() >= {"input", "output"}
    report = result.stdout.split("$ llmmeter report", 1)[1]
    assert re.search(r"tiny-llama\s+vllm\s+3\s", report) and re.search(r"gpt-4o-mini\s+openai\s+1\s", report)


def test_replayed_pooling_server_embeddings_record_the_servers_input_tokens(
    replay: ReplayServer, telemetry: Telemetry
) -> None:
    replay.serve("embed_server_embeddings")
    request = capture("embed_server_embeddings").request
    response = _client(replay, provider="vllm").embeddings.create(**request)
    assert len(response.data[0].embedding) == 128
    (record,) = telemetry.records
    assert (record.provider, record.operation) == ("vllm", "embeddings")
    assert record.response_model == "tiny-llama-embed"
    assert record.usage is not None and record.usage.input_tokens == 7
    assert record.usage.output_tokens == 0  # what vLLM sent (completion_tokens: 0), not made up
    points = telemetry.metric_points("gen_ai.client.token.usage")
    # Semconv: an embedding's token usage is its input; no output point of 0 skews the histogram.
    assert [p.attributes["gen_ai.token.type"] for p in points] == ["input"]  # type: ignore[attr-defined]
    (span,) = telemetry.finished_spans()
    assert span.attributes is not None
    assert span.attributes["gen_ai.request.encoding_formats"] == ("float",)


def test_embeddings_on_a_generate_model_server_raise_its_404_unchanged(
    replay: ReplayServer, telemetry: Telemetry
) -> None:
    replay.serve("embeddings_unsupported")
    request = capture("embeddings_unsupported").request
    with pytest.raises(openai.NotFoundError) as raised:
        _client(replay, provider="vllm").embeddings.create(**request)
    assert raised.value.status_code == 404
    (record,) = telemetry.records
    assert (record.operation, record.outcome) == ("embeddings", Outcome.ERROR)
    assert record.error_type == "openai.NotFoundError"
