"""OpenTelemetry export: one span and a set of metric points per call, GenAI semantic conventions.

Checked with the OTel SDK's own in-memory span exporter and metric reader: span names, kinds and
attributes, metric names, units, points split by ``gen_ai.token.type``, advisory bucket
boundaries, exemplars linking metric points to the span, and llmmeter's promise never to replace
the application's global providers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, StatusCode

import llmmeter
from llmmeter import semconv
from llmmeter.record import CallRecord

try:
    from llmmeter.pricing import ModelPrice
except ImportError:  # pragma: no cover - pricing is written alongside the core
    ModelPrice = None  # type: ignore[assignment,misc]

needs_pricing = pytest.mark.skipif(ModelPrice is None, reason="llmmeter.pricing is not importable")

MODEL = "acme-chat-1"
RESPONSE_MODEL = "acme-chat-1-2026-01-15"

TOKEN_USAGE = "gen_ai.client.token.usage"
DURATION = "gen_ai.client.operation.duration"
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
COST = "gen_ai.client.operation.cost"
TTFT = semconv.METRICS["time_to_first_token"].name
TPOT = semconv.METRICS["time_per_output_token"].name

RICH_USAGE: dict[str, Any] = {
    "prompt_tokens": 1_000,
    "completion_tokens": 300,
    "total_tokens": 1_300,
    "prompt_tokens_details": {
        "cached_tokens": 600,
        "cache_write_tokens": 200,
        "text_tokens": 900,
        "image_tokens": 60,
        "audio_tokens": 40,
    },
    "completion_tokens_details": {"reasoning_tokens": 120, "text_tokens": 280, "audio_tokens": 20},
}


def chat_completion(usage: dict[str, Any] | None = None) -> ChatCompletion:
    """A real ``openai`` ChatCompletion (extra usage details kept, as the SDK keeps them)."""
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-otel",
            "object": "chat.completion",
            "created": 1_764_230_400,
            "model": RESPONSE_MODEL,
            "choices": [
                Choice(
                    index=0,
                    finish_reason="stop",
                    message=ChatCompletionMessage(role="assistant", content="hi"),
                ).model_dump()
            ],
            "usage": usage or {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
    )


def chunk(text: str | None, usage: dict[str, Any] | None = None) -> ChatCompletionChunk:
    choices = [] if text is None else [ChunkChoice(index=0, delta=ChoiceDelta(content=text)).model_dump()]
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-stream",
            "object": "chat.completion.chunk",
            "created": 1_764_230_400,
            "model": RESPONSE_MODEL,
            "choices": choices,
            "usage": usage,
        }
    )


@llmmeter.metered(model=MODEL, provider="openai")
def chat(usage: dict[str, Any] | None = None) -> ChatCompletion:
    return chat_completion(usage)


@llmmeter.metered(model=MODEL, provider="openai")
def chat_stream() -> Iterator[ChatCompletionChunk]:
    yield chunk("Hello")
    time.sleep(0.002)
    yield chunk(" there")
    time.sleep(0.002)
    yield chunk(" friend")
    yield chunk(None, usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15})


class ModelOverloaded(Exception):
    """An error an LLM client could raise."""


@llmmeter.metered(model=MODEL, provider="openai")
def overloaded_chat() -> None:
    raise ModelOverloaded("try again later")


def histogram_points(telemetry: Any, name: str) -> list[HistogramDataPoint]:
    points = telemetry.metric_points(name)
    assert all(isinstance(p, HistogramDataPoint) for p in points)
    return points


@pytest.fixture
def acme_priced(telemetry: Any) -> Any:
    """The telemetry fixture, with acme-chat-1 priced at $1 / $2 per million input / output tokens."""
    registry = llmmeter.get_settings().pricing
    assert registry is not None
    registry.register(MODEL, ModelPrice(input_per_mtok="1.00", output_per_mtok="2.00"))
    return telemetry


@pytest.fixture
def own_providers() -> Iterator[Any]:
    """Providers a test builds itself; llmmeter is reset and they are shut down afterwards."""
    made: list[Any] = []

    def keep(provider: Any) -> Any:
        made.append(provider)
        return provider

    yield keep
    llmmeter.configure(store=None, pricing=None)
    for provider in made:
        provider.shutdown()


# --- spans --------------------------------------------------------------------------------------


def test_llm_call_span_is_a_client_span_named_operation_and_model(telemetry: Any) -> None:
    chat()

    [span] = telemetry.finished_spans()
    assert span.name == "chat acme-chat-1"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["gen_ai.response.model"] == RESPONSE_MODEL
    assert attributes["gen_ai.response.id"] == "chatcmpl-otel"
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attributes["gen_ai.usage.input_tokens"] == 100
    assert attributes["gen_ai.usage.output_tokens"] == 20


def test_span_lasts_exactly_the_recorded_duration(telemetry: Any) -> None:
    chat()

    [span] = telemetry.finished_spans()
    [record] = telemetry.records
    assert span.end_time - span.start_time == pytest.approx(record.timings.duration_s * 1e9, abs=1_000)


def test_span_carries_every_usage_part_cache_reasoning_and_modality(telemetry: Any) -> None:
    chat(RICH_USAGE)

    [span] = telemetry.finished_spans()
    attributes = span.attributes
    expected = {
        "gen_ai.usage.input_tokens": 1_000,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 600,
        "gen_ai.usage.cache_write.input_tokens": 200,
        "gen_ai.usage.reasoning.output_tokens": 120,
        "gen_ai.usage.text.input_tokens": 900,
        "gen_ai.usage.image.input_tokens": 60,
        "gen_ai.usage.audio.input_tokens": 40,
        "gen_ai.usage.text.output_tokens": 280,
        "gen_ai.usage.audio.output_tokens": 20,
    }
    assert {key: attributes.get(key) for key in expected} == expected


def test_usage_parts_that_were_not_reported_are_absent_not_zero(telemetry: Any) -> None:
    chat()

    [span] = telemetry.finished_spans()
    for key in (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.image.input_tokens",
    ):
        assert key not in span.attributes


def test_a_call_without_usage_has_no_token_attributes_and_says_usage_is_missing(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def no_usage() -> str:
        return "text only"

    no_usage()

    [span] = telemetry.finished_spans()
    assert "gen_ai.usage.input_tokens" not in span.attributes
    assert "gen_ai.usage.output_tokens" not in span.attributes
    assert span.attributes["llmmeter.usage.source"] == "missing"
    assert telemetry.metric_points(TOKEN_USAGE) == []


@needs_pricing
def test_priced_call_span_carries_the_cost_amount_currency_and_source(acme_priced: Any) -> None:
    chat({"prompt_tokens": 1_000_000, "completion_tokens": 500_000, "total_tokens": 1_500_000})

    [span] = acme_priced.finished_spans()
    [record] = acme_priced.records
    assert record.cost is not None and record.cost.amount == Decimal("2.00")
    assert span.attributes["gen_ai.usage.cost.amount"] == pytest.approx(2.0)
    assert span.attributes["gen_ai.usage.cost.currency"] == "USD"
    assert span.attributes["gen_ai.usage.cost.source"] == "local"
    assert span.attributes["llmmeter.cost.status"] == "priced"


def test_cost_reported_by_the_provider_is_exported_with_source_provider(telemetry: Any) -> None:
    # OpenRouter puts the call's cost in usage.cost.
    chat({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.00042})

    [span] = telemetry.finished_spans()
    assert span.attributes["gen_ai.usage.cost.amount"] == pytest.approx(0.00042)
    assert span.attributes["gen_ai.usage.cost.source"] == "provider"


def test_unpriced_call_has_no_cost_attributes_and_says_why(telemetry: Any) -> None:
    chat()

    [span] = telemetry.finished_spans()
    assert "gen_ai.usage.cost.amount" not in span.attributes
    assert span.attributes["llmmeter.cost.status"] == "unpriced"
    assert telemetry.metric_points(COST) == []


def test_failed_call_span_has_error_type_and_error_status(telemetry: Any) -> None:
    with pytest.raises(ModelOverloaded):
        overloaded_chat()

    [span] = telemetry.finished_spans()
    error_type = f"{ModelOverloaded.__module__}.ModelOverloaded"
    assert span.attributes["error.type"] == error_type
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["llmmeter.outcome"] == "error"
    [point] = histogram_points(telemetry, DURATION)
    assert point.attributes["error.type"] == error_type


def test_step_span_is_internal_and_parents_the_calls_inside_it(telemetry: Any) -> None:
    @llmmeter.metered(name="research", operation="invoke_agent")
    def research() -> None:
        chat()
        chat()

    research()

    step = next(s for s in telemetry.finished_spans() if s.attributes.get("llmmeter.kind") == "step")
    calls = [s for s in telemetry.finished_spans() if s is not step]
    assert step.kind is SpanKind.INTERNAL
    assert step.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert [c.kind for c in calls] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert all(c.parent is not None and c.parent.span_id == step.context.span_id for c in calls)
    assert all(c.context.trace_id == step.context.trace_id for c in calls)


def test_llm_span_is_a_child_of_the_application_span_in_force(telemetry: Any) -> None:
    tracer = telemetry.settings.telemetry.tracer
    with tracer.start_as_current_span("handle-request") as request_span:
        chat()

    call = next(s for s in telemetry.finished_spans() if s.name == "chat acme-chat-1")
    assert call.parent is not None
    assert call.parent.span_id == request_span.get_span_context().span_id


def test_spans_created_inside_a_metered_function_are_its_children(telemetry: Any) -> None:
    tracer = telemetry.settings.telemetry.tracer

    @llmmeter.metered(name="retrieve")
    def retrieve() -> None:
        with tracer.start_as_current_span("vector-search"):
            pass

    retrieve()

    spans = {s.name: s for s in telemetry.finished_spans()}
    assert spans["vector-search"].parent is not None
    assert spans["vector-search"].parent.span_id == spans["retrieve"].context.span_id


def test_record_carries_the_trace_and_span_id_of_its_span(telemetry: Any) -> None:
    chat()

    [span] = telemetry.finished_spans()
    [record] = telemetry.records
    assert record.trace_id == format(span.context.trace_id, "032x")
    assert record.span_id == format(span.context.span_id, "016x")


def test_streamed_call_span_has_stream_flag_time_to_first_chunk_and_token_timings(telemetry: Any) -> None:
    list(chat_stream())

    [span] = telemetry.finished_spans()
    [record] = telemetry.records
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.response.time_to_first_chunk"] == record.timings.ttfc_s
    assert span.attributes["llmmeter.response.time_to_first_token"] == record.timings.ttft_s
    assert span.attributes["llmmeter.response.time_per_output_token"] == record.timings.tpot_s
    assert span.attributes["gen_ai.usage.output_tokens"] == 3


# --- metrics ------------------------------------------------------------------------------------


def test_token_usage_metric_has_one_point_per_token_type_with_the_call_counts(telemetry: Any) -> None:
    chat(RICH_USAGE)
    chat({"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55})

    points = histogram_points(telemetry, TOKEN_USAGE)
    by_type = {p.attributes["gen_ai.token.type"]: p for p in points}
    assert set(by_type) == {"input", "output"}
    assert (by_type["input"].count, by_type["input"].sum) == (2, 1_050)
    assert (by_type["output"].count, by_type["output"].sum) == (2, 305)
    assert (by_type["input"].min, by_type["input"].max) == (50, 1_000)
    for point in points:
        assert point.attributes["gen_ai.operation.name"] == "chat"
        assert point.attributes["gen_ai.provider.name"] == "openai"
        assert point.attributes["gen_ai.request.model"] == MODEL
        assert point.attributes["gen_ai.response.model"] == RESPONSE_MODEL
    assert telemetry.metric(TOKEN_USAGE).unit == "{token}"


def test_duration_metric_records_each_call_in_seconds(telemetry: Any) -> None:
    chat()
    chat()

    [point] = histogram_points(telemetry, DURATION)
    durations = [r.timings.duration_s for r in telemetry.records]
    assert point.count == 2
    assert point.sum == pytest.approx(sum(durations))
    assert telemetry.metric(DURATION).unit == "s"


def test_non_streaming_calls_record_no_chunk_or_token_timing_metrics(telemetry: Any) -> None:
    chat()

    for name in (TIME_TO_FIRST_CHUNK, TTFT, TPOT):
        assert telemetry.metric_points(name) == [], name


def test_streamed_calls_record_time_to_first_chunk_ttft_and_tpot(telemetry: Any) -> None:
    list(chat_stream())

    [record] = telemetry.records
    expected = {
        TIME_TO_FIRST_CHUNK: record.timings.ttfc_s,
        TTFT: record.timings.ttft_s,
        TPOT: record.timings.tpot_s,
    }
    assert all(value is not None for value in expected.values())
    for name, value in expected.items():
        [point] = histogram_points(telemetry, name)
        assert (point.count, point.sum) == (1, pytest.approx(value)), name
        assert telemetry.metric(name).unit == "s"


@needs_pricing
def test_cost_metric_records_each_priced_call_with_its_currency(acme_priced: Any) -> None:
    chat({"prompt_tokens": 1_000, "completion_tokens": 1_000, "total_tokens": 2_000})  # 0.003
    chat({"prompt_tokens": 2_000, "completion_tokens": 0, "total_tokens": 2_000})  # 0.002

    [point] = histogram_points(acme_priced, COST)
    assert point.count == 2
    assert point.sum == pytest.approx(0.005)
    assert point.attributes["gen_ai.usage.cost.currency"] == "USD"
    assert point.attributes["gen_ai.request.model"] == MODEL


def test_steps_record_no_llm_metrics_so_tokens_are_never_counted_twice(telemetry: Any) -> None:
    @llmmeter.metered(name="agent")
    def agent() -> None:
        chat()

    agent()

    points = histogram_points(telemetry, TOKEN_USAGE)
    [input_point] = [p for p in points if p.attributes["gen_ai.token.type"] == "input"]
    assert (input_point.count, input_point.sum) == (1, 100)
    [duration_point] = histogram_points(telemetry, DURATION)
    assert duration_point.count == 1


@pytest.mark.parametrize(
    ("metric", "buckets"),
    [
        (TOKEN_USAGE, semconv.TOKEN_BUCKETS),
        (DURATION, semconv.DURATION_BUCKETS),
        (TIME_TO_FIRST_CHUNK, semconv.DURATION_BUCKETS),
        (TTFT, semconv.TTFT_BUCKETS),
        (TPOT, semconv.TPOT_BUCKETS),
        (COST, semconv.COST_BUCKETS),
    ],
)
def test_histograms_use_the_advisory_bucket_boundaries(
    telemetry: Any, metric: str, buckets: tuple[float, ...]
) -> None:
    registry = llmmeter.get_settings().pricing
    if metric == COST:
        if ModelPrice is None or registry is None:
            pytest.skip("llmmeter.pricing is not importable")
        registry.register(MODEL, ModelPrice(input_per_mtok="1.00", output_per_mtok="2.00"))
    list(chat_stream())

    points = histogram_points(telemetry, metric)
    assert points, metric
    for point in points:
        assert tuple(point.explicit_bounds) == tuple(float(b) for b in buckets)


def test_semconv_bucket_lists_match_the_genai_conventions() -> None:
    assert semconv.DURATION_BUCKETS == (
        0.01,
        0.02,
        0.04,
        0.08,
        0.16,
        0.32,
        0.64,
        1.28,
        2.56,
        5.12,
        10.24,
        20.48,
        40.96,
        81.92,
    )
    assert semconv.TOKEN_BUCKETS == (
        1,
        4,
        16,
        64,
        256,
        1024,
        4096,
        16384,
        65536,
        262144,
        1048576,
        4194304,
        16777216,
        67108864,
    )
    assert semconv.TTFT_BUCKETS == (
        0.001,
        0.005,
        0.01,
        0.02,
        0.04,
        0.06,
        0.08,
        0.1,
        0.25,
        0.5,
        0.75,
        1.0,
        2.5,
        5.0,
        7.5,
        10.0,
    )
    # The semconv TPOT boundaries, all of them, with finer ones below 10 ms added.
    assert set(semconv.TPOT_BUCKETS) >= {
        0.01,
        0.025,
        0.05,
        0.075,
        0.1,
        0.15,
        0.2,
        0.3,
        0.4,
        0.5,
        0.75,
        1.0,
        2.5,
    }
    assert list(semconv.TPOT_BUCKETS) == sorted(semconv.TPOT_BUCKETS)


def test_every_metric_llmmeter_emits_is_declared_in_the_one_table(telemetry: Any) -> None:
    list(chat_stream())
    chat(RICH_USAGE)

    llmmeter.flush()
    data = telemetry.reader.get_metrics_data()
    emitted = {
        metric.name
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    declared = {spec.name for spec in semconv.METRICS.values()}
    assert emitted <= declared
    assert {TOKEN_USAGE, DURATION, TIME_TO_FIRST_CHUNK, TTFT, TPOT} <= emitted


def test_per_chunk_metric_is_off_by_default_and_records_one_point_per_later_chunk_when_on(
    own_providers: Any,
) -> None:
    per_chunk = semconv.METRICS["time_per_output_chunk"].name
    for enabled, expected_count in ((False, 0), (True, 3)):
        reader = InMemoryMetricReader()
        meter_provider = own_providers(MeterProvider(metric_readers=[reader]))
        llmmeter.configure(store=None, pricing=None, meter_provider=meter_provider, per_chunk_metrics=enabled)

        list(chat_stream())  # 4 chunks: 3 gaps

        assert llmmeter.flush()
        data = reader.get_metrics_data()
        points = [
            point
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.name == per_chunk
            for point in metric.data.data_points
        ]
        assert sum(p.count for p in points) == expected_count


# --- exemplars, sampling, global providers -----------------------------------------------------


def test_metric_points_carry_exemplars_linked_to_the_call_span(own_providers: Any) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = own_providers(TracerProvider())
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = own_providers(
        MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOnExemplarFilter())
    )
    llmmeter.configure(
        store=None, pricing=None, tracer_provider=tracer_provider, meter_provider=meter_provider
    )

    list(chat_stream())

    assert llmmeter.flush()  # the span ends and the points are recorded on the pipeline's thread
    [span] = spans.get_finished_spans()
    data = reader.get_metrics_data()
    checked = set()
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    assert point.exemplars, metric.name
                    for exemplar in point.exemplars:
                        assert exemplar.span_id == span.context.span_id, metric.name
                        assert exemplar.trace_id == span.context.trace_id, metric.name
                    checked.add(metric.name)
    assert {TOKEN_USAGE, DURATION, TIME_TO_FIRST_CHUNK, TTFT, TPOT} <= checked


def test_a_sampled_out_call_still_records_its_metrics_and_record(own_providers: Any) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = own_providers(TracerProvider(sampler=ALWAYS_OFF))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = own_providers(MeterProvider(metric_readers=[reader]))
    records: list[CallRecord] = []
    llmmeter.configure(
        store=None,
        pricing=None,
        on_record=records.append,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )

    chat(RICH_USAGE)

    assert llmmeter.flush()
    assert spans.get_finished_spans() == ()
    [record] = records
    assert record.usage is not None and record.usage.input_tokens == 1_000
    data = reader.get_metrics_data()
    sums = {
        (metric.name, point.attributes.get("gen_ai.token.type")): point.sum
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        for point in metric.data.data_points
        if metric.name in (TOKEN_USAGE, DURATION)
    }
    assert sums[(TOKEN_USAGE, "input")] == 1_000
    assert sums[(TOKEN_USAGE, "output")] == 300
    assert sums[(DURATION, None)] == pytest.approx(record.timings.duration_s)


def test_configure_and_instrument_never_replace_the_global_providers(own_providers: Any) -> None:
    tracer_provider_before = trace.get_tracer_provider()
    meter_provider_before = metrics.get_meter_provider()

    llmmeter.configure(store=None)
    chat()
    client = llmmeter.instrument(openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1"))
    llmmeter.uninstrument(client)
    llmmeter.configure(store=None, tracer_provider=TracerProvider(), meter_provider=MeterProvider())

    assert trace.get_tracer_provider() is tracer_provider_before
    assert metrics.get_meter_provider() is meter_provider_before


GLOBAL_PROVIDERS_SCRIPT = """
import llmmeter
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

llmmeter.configure(store=None, pricing=None)   # before the application sets its providers

spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
metrics.set_meter_provider(meter_provider)

@llmmeter.metered(model="acme-chat-1", provider="openai")
def chat():
    return {"model": "acme-chat-1", "usage": {"prompt_tokens": 7, "completion_tokens": 1}}

chat()
assert llmmeter.flush()
assert trace.get_tracer_provider() is tracer_provider
assert metrics.get_meter_provider() is meter_provider
names = [s.name for s in spans.get_finished_spans()]
metric_names = {
    m.name
    for rm in reader.get_metrics_data().resource_metrics
    for sm in rm.scope_metrics
    for m in sm.metrics
}
print(names, sorted(metric_names))
"""


def test_configured_without_providers_llmmeter_uses_the_application_global_ones(tmp_path: Any) -> None:
    # In a fresh interpreter: OTel's global providers can be set only once per process.
    script = tmp_path / "global_providers.py"
    script.write_text(GLOBAL_PROVIDERS_SCRIPT)
    env = {**os.environ, "LLMMETER_STRICT": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "['chat acme-chat-1'] ['gen_ai.client.operation.duration', 'gen_ai.client.token.usage']"
    )


def test_configuring_again_with_the_same_meter_provider_keeps_the_token_counters_counting() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    @llmmeter.metered(model="gpt-4o-mini", provider="openai")
    def chat() -> dict[str, object]:
        return {
            "model": "gpt-4o-mini",
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": 6},
            },
        }

    for _ in range(2):  # e.g. an application that calls configure() at start-up and again later
        llmmeter.configure(store=None, pricing=None, meter_provider=meter_provider)
        chat()
    assert llmmeter.flush()
    cached = [
        point.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "llmmeter.client.token.usage"
        for point in metric.data.data_points
        if point.attributes.get("llmmeter.token.kind") == "cache_read_input"
    ]
    assert cached == [12]
    llmmeter.configure(store=None, pricing=None)
    meter_provider.shutdown()


# --- the sampling-relevant attributes at span start ---------------------------------------------
_IDENTITY = {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model"}


class _AttributeReadingSampler(Sampler):
    """A sampler of the user's own, deciding on the span's attributes (as the conventions allow)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any
    ) -> SamplingResult:
        attributes = (
            kwargs.get("attributes") if "attributes" in kwargs else (args[1] if len(args) > 1 else None)
        )
        self.seen.append(dict(attributes or {}))
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "attribute-reading test sampler"


class _StartReadingProcessor(SpanProcessor):
    """A span processor of the user's own that reads attributes in ``on_start``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.seen.append(dict(span.attributes or {}))


def _finished_identity(spans: InMemorySpanExporter) -> dict[str, Any]:
    [span] = spans.get_finished_spans()
    return {key: value for key, value in (span.attributes or {}).items() if key in _IDENTITY}


def test_a_sampler_of_your_own_sees_the_sampling_relevant_attributes_at_span_start(
    own_providers: Any,
) -> None:
    sampler, spans = _AttributeReadingSampler(), InMemorySpanExporter()
    tracer_provider = own_providers(TracerProvider(sampler=sampler))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    llmmeter.configure(store=None, pricing=None, tracer_provider=tracer_provider)
    chat(RICH_USAGE)
    assert llmmeter.flush()
    [at_start] = [seen for seen in sampler.seen if seen.get("gen_ai.operation.name") == "chat"]
    assert set(at_start) >= _IDENTITY
    assert _finished_identity(spans) == {key: at_start[key] for key in _IDENTITY}


def test_a_processor_reading_on_start_sees_them_too_and_the_sdks_own_setup_gets_them_at_the_end(
    own_providers: Any,
) -> None:
    spans, reader = InMemorySpanExporter(), _StartReadingProcessor()
    tracer_provider = own_providers(TracerProvider())
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    llmmeter.configure(store=None, pricing=None, tracer_provider=tracer_provider)
    chat(RICH_USAGE)  # the SDK's own sampler and export processor: identity set at the end
    assert llmmeter.flush()
    assert set(_finished_identity(spans)) >= _IDENTITY
    spans.clear()
    tracer_provider.add_span_processor(reader)  # added later: noticed on the next call
    chat(RICH_USAGE)
    assert llmmeter.flush()
    [at_start] = [seen for seen in reader.seen if seen.get("gen_ai.operation.name") == "chat"]
    assert set(at_start) >= _IDENTITY
    assert set(_finished_identity(spans)) >= _IDENTITY
