"""Never break the host: when llmmeter itself fails, the application does not notice.

An exporter that raises, a callback that raises, a store that cannot be written, a pricing object
that raises, a provider adapter that raises: the measured call still returns its own value (or
raises its own exception), and the failure is logged once -- one WARNING, however many calls hit
it. These tests run with ``LLMMETER_STRICT`` unset, as in production.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmmeter
import llmmeter._log
from llmmeter.instrument import metered as metered_module  # `llmmeter.instrument` is a function
from llmmeter.record import CallRecord, CostStatus, Outcome

MODEL = "acme-chat-1"
CALLS = 3


def response(input_tokens: int = 10, output_tokens: int = 2) -> dict[str, Any]:
    return {
        "id": "resp-1",
        "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens},
    }


class ApplicationError(Exception):
    """The application's own failure, which must reach the application untouched."""


class ExplodingSpanProcessor(SpanProcessor):
    """A span pipeline that fails synchronously when a span ends (say, a broken custom processor)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        raise ConnectionError("collector unreachable")


class ExplodingSpanExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector unreachable")


class ExplodingPricing:
    """A pricing object (e.g. a company's own) whose ``price`` raises."""

    def price(self, record: CallRecord) -> None:
        raise ArithmeticError("price table corrupt")


@dataclass
class Pipeline:
    """What the calls produced; every reader first delivers what llmmeter's pipeline still holds."""

    reader: InMemoryMetricReader
    span_exporter: InMemorySpanExporter
    collected: list[CallRecord] = field(default_factory=list)

    @property
    def records(self) -> list[CallRecord]:
        llmmeter.flush()
        return self.collected

    @property
    def spans(self) -> InMemorySpanExporter:
        llmmeter.flush()
        return self.span_exporter

    def metric_names(self) -> set[str]:
        llmmeter.flush()
        data = self.reader.get_metrics_data()
        if data is None:
            return set()
        return {
            metric.name
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }


@pytest.fixture(autouse=True)
def production_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMMETER_STRICT unset, and "logged once" counted from a clean slate for each test."""
    monkeypatch.delenv("LLMMETER_STRICT", raising=False)
    monkeypatch.setattr(llmmeter._log, "_seen", set())


@pytest.fixture
def configure() -> Iterator[Callable[..., Pipeline]]:
    """Configure llmmeter with in-memory OTel providers, pricing and store off unless given."""
    providers: list[Any] = []

    def make(*, processors: Sequence[SpanProcessor] = (), **overrides: Any) -> Pipeline:
        spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        for processor in processors:
            tracer_provider.add_span_processor(processor)
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        providers.extend([tracer_provider, meter_provider])
        pipeline = Pipeline(reader=reader, span_exporter=spans)
        settings: dict[str, Any] = {"store": None, "pricing": None, "on_record": pipeline.collected.append}
        settings.update(overrides)
        llmmeter.configure(tracer_provider=tracer_provider, meter_provider=meter_provider, **settings)
        return pipeline

    yield make
    llmmeter.configure(store=None, pricing=None)
    for provider in providers:
        provider.shutdown()


def llmmeter_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    llmmeter.flush()  # spans end and callbacks run on llmmeter's pipeline thread
    return [r for r in caplog.records if r.name.startswith("llmmeter") and r.levelno >= logging.WARNING]


@llmmeter.metered(model=MODEL, provider="openai")
def llm_call(n: int) -> dict[str, Any]:
    return response(input_tokens=n)


@llmmeter.metered(model=MODEL, provider="openai")
def failing_llm_call() -> None:
    raise ApplicationError("the application's own error")


def call_repeatedly() -> list[dict[str, Any]]:
    return [llm_call(n) for n in range(1, CALLS + 1)]


# --- exporters ----------------------------------------------------------------------------------


def test_a_span_pipeline_that_raises_leaves_results_intact_and_is_logged_once(
    configure: Callable[..., Pipeline], caplog: pytest.LogCaptureFixture
) -> None:
    configure(processors=[ExplodingSpanProcessor()])

    results = call_repeatedly()

    assert [r["usage"]["prompt_tokens"] for r in results] == [1, 2, 3]
    [warning] = llmmeter_warnings(caplog)
    assert "OpenTelemetry" in warning.getMessage()


def test_a_span_pipeline_that_raises_does_not_cost_the_records_or_the_metrics(
    configure: Callable[..., Pipeline],
) -> None:
    pipeline = configure(processors=[ExplodingSpanProcessor()])

    call_repeatedly()

    assert [r.usage.input_tokens for r in pipeline.records if r.usage] == [1, 2, 3]
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage"} <= pipeline.metric_names()


def test_the_application_exception_wins_over_a_failing_span_pipeline(
    configure: Callable[..., Pipeline], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = configure(processors=[ExplodingSpanProcessor()])

    for _ in range(CALLS):
        with pytest.raises(ApplicationError, match="own error"):
            failing_llm_call()

    assert len(llmmeter_warnings(caplog)) == 1
    assert [r.outcome for r in pipeline.records] == [Outcome.ERROR] * CALLS


def test_a_span_exporter_that_raises_leaves_results_and_records_intact(
    configure: Callable[..., Pipeline],
) -> None:
    pipeline = configure(processors=[SimpleSpanProcessor(ExplodingSpanExporter())])

    assert [r["usage"]["prompt_tokens"] for r in call_repeatedly()] == [1, 2, 3]
    assert len(pipeline.records) == CALLS


def _sync_function() -> Callable[[], Any]:
    @llmmeter.metered(model=MODEL, provider="openai")
    def call() -> dict[str, Any]:
        return response()

    return call


def _async_function() -> Callable[[], Any]:
    @llmmeter.metered(model=MODEL, provider="openai")
    async def call() -> dict[str, Any]:
        return response()

    return lambda: asyncio.run(call())


def _generator() -> Callable[[], Any]:
    @llmmeter.metered(model=MODEL, provider="openai")
    def call() -> Iterator[str]:
        yield "a"
        yield "b"

    return lambda: list(call())


def _async_generator() -> Callable[[], Any]:
    @llmmeter.metered(model=MODEL, provider="openai")
    async def call() -> AsyncIterator[str]:
        yield "a"
        yield "b"

    async def consume() -> list[str]:
        return [item async for item in call()]

    return lambda: asyncio.run(consume())


@pytest.mark.parametrize(
    ("make_call", "expected"),
    [
        (_sync_function, response()),
        (_async_function, response()),
        (_generator, ["a", "b"]),
        (_async_generator, ["a", "b"]),
    ],
    ids=["function", "coroutine", "generator", "async-generator"],
)
def test_every_kind_of_metered_function_survives_a_failing_span_pipeline(
    configure: Callable[..., Pipeline],
    caplog: pytest.LogCaptureFixture,
    make_call: Callable[[], Callable[[], Any]],
    expected: Any,
) -> None:
    configure(processors=[ExplodingSpanProcessor()])
    call = make_call()

    assert [call() for _ in range(CALLS)] == [expected] * CALLS
    assert len(llmmeter_warnings(caplog)) == 1


def test_llmmeter_failing_to_start_a_measurement_still_runs_the_function_once(
    configure: Callable[..., Pipeline], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure()
    calls: list[int] = []

    def broken_settings() -> Any:
        raise RuntimeError("settings unavailable")

    monkeypatch.setattr(metered_module, "get_settings", broken_settings)

    @llmmeter.metered(model=MODEL, provider="openai")
    def call(n: int) -> int:
        calls.append(n)
        return n * 2

    assert [call(n) for n in range(CALLS)] == [0, 2, 4]
    assert calls == [0, 1, 2]
    assert len(llmmeter_warnings(caplog)) == 1


# --- callbacks ----------------------------------------------------------------------------------


def test_an_on_record_callback_that_raises_is_logged_once_and_the_others_still_run(
    configure: Callable[..., Pipeline], caplog: pytest.LogCaptureFixture
) -> None:
    received: list[CallRecord] = []

    def over_budget(record: CallRecord) -> None:
        raise RuntimeError("budget service down")

    configure(on_record=[over_budget, received.append])

    assert [r["usage"]["prompt_tokens"] for r in call_repeatedly()] == [1, 2, 3]
    llmmeter.flush()
    assert len(received) == CALLS
    [warning] = llmmeter_warnings(caplog)
    assert "over_budget" in warning.getMessage()


def test_the_application_exception_wins_over_a_failing_callback(
    configure: Callable[..., Pipeline],
) -> None:
    def broken(record: CallRecord) -> None:
        raise RuntimeError("callback bug")

    configure(on_record=broken)

    with pytest.raises(ApplicationError):
        failing_llm_call()


# --- the local store ----------------------------------------------------------------------------


def test_an_unwritable_store_path_leaves_calls_intact_and_warns_once_per_problem(
    configure: Callable[..., Pipeline], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "a-regular-file"
    not_a_directory.write_text("this is a file, so no database can be created under it")
    pipeline = configure(store=not_a_directory / "records.sqlite3")

    results = call_repeatedly()
    flushed = llmmeter.flush(timeout=5)
    results += call_repeatedly()
    llmmeter.flush(timeout=5)

    assert [r["usage"]["prompt_tokens"] for r in results] == [1, 2, 3, 1, 2, 3]
    assert flushed is False  # flush tells the caller the records were not written
    assert len(pipeline.records) == 2 * CALLS  # other sinks are unaffected
    warnings = [w.getMessage() for w in llmmeter_warnings(caplog)]
    assert warnings and all("a-regular-file" in w for w in warnings)  # each one names the store
    assert len(warnings) <= 3  # what went wrong (no journal, no database, records lost), not per call


# --- pricing and provider adapters --------------------------------------------------------------


def test_a_pricing_object_that_raises_leaves_results_intact_and_marks_cost_as_error(
    configure: Callable[..., Pipeline], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = configure(pricing=ExplodingPricing())

    assert [r["usage"]["prompt_tokens"] for r in call_repeatedly()] == [1, 2, 3]
    assert len(pipeline.records) == CALLS
    for record in pipeline.records:
        assert record.cost is None
        assert record.cost_status is CostStatus.ERROR
        assert record.usage is not None  # the tokens are still known
    assert len(llmmeter_warnings(caplog)) == 1


def test_a_provider_adapter_that_raises_leaves_results_intact_and_records_usage_as_unknown(
    configure: Callable[..., Pipeline], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_adapter(obj: Any) -> None:
        raise KeyError("usage shape changed in a new SDK release")

    pipeline = configure()
    monkeypatch.setattr(metered_module, "extract_usage", broken_adapter)

    assert [r["usage"]["prompt_tokens"] for r in call_repeatedly()] == [1, 2, 3]
    assert [(r.outcome, r.usage) for r in pipeline.records] == [(Outcome.OK, None)] * CALLS
    assert len(pipeline.spans.get_finished_spans()) == CALLS
    assert len(llmmeter_warnings(caplog)) == 1


def test_a_provider_adapter_that_raises_on_a_stream_leaves_the_items_intact(
    configure: Callable[..., Pipeline], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_adapter(obj: Any) -> None:
        if obj is not None:
            raise KeyError("usage shape changed in a new SDK release")

    pipeline = configure()
    monkeypatch.setattr(metered_module, "extract_usage", broken_adapter)
    final = response(7, 3)

    @llmmeter.metered(model=MODEL, provider="openai")
    def stream() -> Iterator[Any]:
        yield "text"
        yield final

    for _ in range(CALLS):
        items = list(stream())
        assert items[0] == "text" and items[1] is final
    assert [r.usage for r in pipeline.records] == [None] * CALLS
    assert len(llmmeter_warnings(caplog)) == 1


def test_several_failures_at_once_still_leave_the_call_intact(
    configure: Callable[..., Pipeline], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("broken")

    blocked = tmp_path / "file"
    blocked.write_text("")
    configure(
        processors=[ExplodingSpanProcessor()],
        pricing=ExplodingPricing(),
        on_record=broken,
        store=blocked / "records.sqlite3",
    )
    monkeypatch.setattr(metered_module, "extract_usage", broken)

    assert call_repeatedly() == [response(n) for n in range(1, CALLS + 1)]
    with pytest.raises(ApplicationError):
        failing_llm_call()


# --- strict mode is for llmmeter's own tests ----------------------------------------------------


def test_strict_mode_surfaces_a_pipeline_error_at_the_next_flush_instead_of_logging_it(
    configure: Callable[..., Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(record: CallRecord) -> None:
        raise RuntimeError("callback bug")

    configure(on_record=broken)
    monkeypatch.setenv("LLMMETER_STRICT", "1")

    llm_call(1)  # the callback runs on the pipeline's thread, after the call returned
    with pytest.raises(RuntimeError, match="callback bug"):
        llmmeter.flush()


def test_strict_mode_surfaces_an_inline_callback_error_in_the_call(
    configure: Callable[..., Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(record: CallRecord) -> None:
        raise RuntimeError("callback bug")

    configure(on_record=llmmeter.inline(broken))
    monkeypatch.setenv("LLMMETER_STRICT", "1")

    with pytest.raises(RuntimeError, match="callback bug"):
        llm_call(1)
