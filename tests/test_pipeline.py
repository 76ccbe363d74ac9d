"""The record pipeline: what the caller's thread waits for, and what happens after the call returned.

Spans end, metric points are recorded, the store and ``on_record`` callbacks get the record on
llmmeter's own thread, after the call returned. The caller's thread prices the record, journals it
and rolls it up into its step, and runs only the callbacks marked ``llmmeter.inline``. Nothing is
lost: a full queue makes the caller deliver, a failing sink is counted and logged, a forked child
delivers its own records and none of its parent's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmmeter
import llmmeter._log
from llmmeter.context import MAX_VALUE_LENGTH, UNPRINTABLE
from llmmeter.pipeline import get_pipeline
from llmmeter.record import CallRecord
from llmmeter.store import read_records
from llmmeter.testing import LocalOpenAIServer

MODEL = "gpt-4o-mini"
QUESTION = [{"role": "user", "content": "Is the monthly budget exceeded?"}]
PIPELINE_THREAD = "llmmeter-pipeline"


def response(call_id: str = "resp-1") -> dict[str, Any]:
    return {
        "id": call_id,
        "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
    }


@llmmeter.metered(model=MODEL, provider="openai")
def llm_call(call_id: str = "resp-1") -> dict[str, Any]:
    return response(call_id)


# --- the example sink of docs/architecture.md ------------------------------------------------------
class JsonLinesSink:
    """Every record as one JSON line (the example of docs/architecture.md, "Adding an exporter")."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def accept(self, record: CallRecord) -> None:
        line = {"operation": record.operation, "model": record.request_model, "cost": record.cost_status}
        self.file.write(json.dumps(line) + "\n")

    def flush(self, timeout: float) -> bool:
        self.file.flush()
        return True

    def close(self, timeout: float) -> bool:
        self.file.close()
        return True


class Gate:
    """A callback that holds llmmeter's pipeline thread until released (a slow callback)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.threads: list[str] = []
        self.events: list[str] = []

    def __call__(self, record: CallRecord) -> None:
        self.threads.append(threading.current_thread().name)
        if threading.current_thread().name == PIPELINE_THREAD:
            self.open.wait(10)
        self.events.append(f"callback done: {record.response_id}")


@pytest.fixture
def providers() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader, dict[str, Any]]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield spans, reader, {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    llmmeter.flush()
    llmmeter.configure(store=None, pricing=None)
    tracer_provider.shutdown()
    meter_provider.shutdown()


Providers = tuple[InMemorySpanExporter, InMemoryMetricReader, dict[str, Any]]


# --- callbacks ---------------------------------------------------------------------------------------
def test_a_slow_on_record_callback_runs_on_llmmeters_thread_after_the_call_returned(
    providers: Providers,
) -> None:
    gate = Gate()
    llmmeter.configure(store=None, on_record=gate, **providers[2])

    result = llm_call("call-1")
    gate.events.append("call returned")
    gate.open.set()
    assert llmmeter.flush()

    assert result == response("call-1")
    assert gate.events == ["call returned", "callback done: call-1"]
    assert gate.threads == [PIPELINE_THREAD]


def test_an_inline_callback_runs_on_the_callers_thread_before_the_call_returns(
    providers: Providers,
) -> None:
    seen: list[tuple[str, str | None]] = []

    def check_budget(record: CallRecord) -> None:
        assert record.cost is not None  # priced before the callback sees it
        seen.append((threading.current_thread().name, record.response_id))

    llmmeter.configure(store=None, on_record=[llmmeter.inline(check_budget)], **providers[2])

    llm_call("call-1")
    assert seen == [(threading.current_thread().name, "call-1")]


@pytest.mark.parametrize("inline", [False, True], ids=["on-the-pipeline-thread", "inline"])
@pytest.mark.parametrize("app_client", ["sync", "async"])
def test_a_call_made_inside_a_callback_is_measured_but_not_handed_to_the_callbacks_again(
    providers: Providers,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    inline: bool,
    app_client: str,
) -> None:
    monkeypatch.setattr(llmmeter._log, "_seen", set())
    spans = providers[0]
    handed: list[CallRecord] = []
    with LocalOpenAIServer() as server:
        options: dict[str, Any] = {"base_url": server.base_url, "api_key": "local", "max_retries": 0}
        summarizer = llmmeter.instrument(openai.OpenAI(**options))

        def alert(record: CallRecord) -> None:
            handed.append(record)  # an alert that asks an LLM to summarize the expensive call
            summarizer.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)

        llmmeter.configure(store=None, on_record=llmmeter.inline(alert) if inline else alert, **providers[2])
        if app_client == "sync":
            llmmeter.instrument(openai.OpenAI(**options)).chat.completions.create(
                model="gpt-4o-mini", messages=QUESTION
            )
        else:

            async def app() -> None:
                client = llmmeter.instrument(openai.AsyncOpenAI(**options))
                await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
                await client.close()

            asyncio.run(app())
        assert llmmeter.flush()
        assert len(server.requests) == 2  # the application's call and the alert's, nothing more

    assert len(handed) == 1
    assert len(spans.get_finished_spans()) == 2  # both calls measured
    assert get_pipeline().stats.reentrant >= 1
    [logged] = [r for r in caplog.records if "inside an on_record callback" in r.getMessage()]
    assert logged.levelno == logging.WARNING


def test_a_callback_that_calls_sys_exit_does_not_stop_the_pipeline(
    providers: Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMMETER_STRICT", raising=False)
    delivered: list[CallRecord] = []

    def leaving(record: CallRecord) -> None:
        if record.response_id == "first":
            raise SystemExit(3)

    llmmeter.configure(store=None, on_record=[leaving, delivered.append], **providers[2])
    llm_call("first")
    llm_call("second")

    assert llmmeter.flush(timeout=5)
    assert [r.response_id for r in delivered] == ["second"]


def test_a_callback_that_calls_flush_does_not_wait_for_itself(providers: Providers) -> None:
    results: list[bool] = []
    llmmeter.configure(store=None, on_record=lambda record: results.append(llmmeter.flush(timeout=5)))

    started = time.monotonic()
    llm_call()
    assert llmmeter.flush(timeout=5)
    assert time.monotonic() - started < 5
    assert len(results) == 1


# --- spans, metrics and the roll-up, computed after the call ------------------------------------------
def test_the_span_ends_at_the_calls_own_end_time_and_keeps_its_parent_while_the_pipeline_lags(
    providers: Providers,
) -> None:
    spans = providers[0]
    gate = Gate()
    llmmeter.configure(store=None, on_record=gate, **providers[2])
    tracer = trace.get_tracer("app", tracer_provider=providers[2]["tracer_provider"])

    llm_call("warm-up")  # holds the pipeline thread in the gate
    with tracer.start_as_current_span("handle request") as parent:
        llm_call("call-1")
    time.sleep(0.3)  # the pipeline is behind: the span ends later than the call did
    gate.open.set()
    assert llmmeter.flush()

    finished = spans.get_finished_spans()
    [call_span] = [s for s in finished if s.attributes and s.attributes.get("gen_ai.response.id") == "call-1"]
    assert call_span.parent is not None
    assert call_span.parent.span_id == parent.get_span_context().span_id
    assert call_span.end_time is not None and call_span.start_time is not None
    assert (call_span.end_time - call_span.start_time) / 1e9 < 0.25  # not the 0.3 s it waited


def test_a_step_rolls_up_its_children_even_when_the_pipeline_is_behind(providers: Providers) -> None:
    gate = Gate()
    steps: list[CallRecord] = []
    llmmeter.configure(store=None, on_record=[gate, steps.append], **providers[2])

    @llmmeter.metered(name="answer")
    def answer() -> None:
        llm_call("a")
        llm_call("b")

    answer()
    gate.open.set()
    assert llmmeter.flush()

    [step] = [r for r in steps if r.name == "answer"]
    assert step.rollup_calls == 2
    assert step.rollup_usage is not None and step.rollup_usage.input_tokens == 20


# --- nothing is lost -------------------------------------------------------------------------------------
def test_a_full_queue_makes_the_caller_deliver_rather_than_drop(
    providers: Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    delivered: list[CallRecord] = []
    llmmeter.configure(store=None, on_record=[gate, delivered.append], **providers[2])
    monkeypatch.setattr(get_pipeline(), "max_queue", 3)
    before = get_pipeline().stats.snapshot()

    for i in range(10):
        llm_call(f"call-{i}")
    ran_inline = get_pipeline().stats.ran_inline - before.ran_inline
    gate.open.set()
    assert llmmeter.flush()

    assert ran_inline >= 5
    assert sorted(r.response_id or "" for r in delivered) == sorted(f"call-{i}" for i in range(10))
    assert llmmeter.get_settings().pipeline_stats.dropped == before.dropped


class BrokenSink:
    def accept(self, record: CallRecord) -> None:
        raise OSError("disk full")

    def flush(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float) -> bool:
        return True


def test_a_sink_that_fails_is_counted_logged_once_and_the_other_sinks_still_get_the_record(
    providers: Providers, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMMETER_STRICT", raising=False)
    monkeypatch.setattr(llmmeter._log, "_seen", set())
    _, reader, kwargs = providers
    delivered: list[CallRecord] = []
    llmmeter.configure(store=None, sinks=[BrokenSink()], on_record=delivered.append, **kwargs)
    before = get_pipeline().stats.dropped

    for _ in range(3):
        llm_call()
    llmmeter.flush()

    assert len(delivered) == 3
    assert llmmeter.get_settings().pipeline_stats.dropped == before + 3
    warnings = [r for r in caplog.records if r.name == "llmmeter" and r.levelno >= logging.WARNING]
    assert len([w for w in warnings if "BrokenSink" in w.getMessage()]) == 1
    data = reader.get_metrics_data()
    dropped = [
        point.value
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "llmmeter.records.dropped"
        for point in metric.data.data_points
    ]
    assert dropped == [3]  # since this meter provider was configured


class StuckSink:
    """A sink whose delivery never finishes (say, an exporter behind a dead network)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def accept(self, record: CallRecord) -> None:
        pass

    def flush(self, timeout: float) -> bool:
        self.release.wait(30)
        return True

    def close(self, timeout: float) -> bool:
        return self.flush(timeout)


def test_flush_returns_false_within_its_timeout_when_a_sink_cannot_deliver(providers: Providers) -> None:
    stuck = StuckSink()
    llmmeter.configure(store=None, sinks=[stuck], **providers[2])
    llm_call()

    started = time.monotonic()
    flushed = llmmeter.flush(timeout=0.5)
    waited = time.monotonic() - started
    stuck.release.set()

    assert flushed is False
    assert waited < 0.5 + 0.5


def test_a_sink_passed_to_configure_gets_every_record_as_a_json_line(
    providers: Providers, tmp_path: Path
) -> None:
    path = tmp_path / "records.jsonl"
    llmmeter.configure(sinks=[JsonLinesSink(path)], **providers[2])

    llm_call()
    llm_call()
    assert llmmeter.flush()

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"operation": "chat", "model": MODEL, "cost": "priced"}] * 2


def test_configure_refuses_a_sink_without_the_sink_methods() -> None:
    with pytest.raises(TypeError, match="not a sink"):
        llmmeter.configure(store=None, sinks=[object()])  # type: ignore[list-item]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_delivers_its_own_records_and_none_of_its_parents(
    providers: Providers, tmp_path: Path
) -> None:
    gate = Gate()
    parent_path, child_path = tmp_path / "parent.jsonl", tmp_path / "child.jsonl"
    llmmeter.configure(store=None, sinks=[JsonLinesSink(parent_path)], on_record=gate, **providers[2])
    for i in range(3):
        llm_call(f"parent-{i}")  # held in the parent's queue by the gate: fork copies the queue

    pid = os.fork()
    if pid == 0:  # the child: its own sink, its own pipeline thread
        status = 1
        try:
            llmmeter.configure(store=None, sinks=[JsonLinesSink(child_path)])
            for i in range(2):
                llm_call(f"child-{i}")
            status = 0 if llmmeter.flush(timeout=5) else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    gate.open.set()
    assert llmmeter.flush()

    assert os.waitstatus_to_exitcode(status) == 0
    assert len(child_path.read_text().splitlines()) == 2
    assert len(parent_path.read_text().splitlines()) == 3


def test_the_store_gets_the_records_through_the_pipeline(providers: Providers, tmp_path: Path) -> None:
    store = tmp_path / "records.sqlite3"
    llmmeter.configure(store=store, **providers[2])

    llm_call("call-1")
    assert llmmeter.flush()

    [stored] = read_records(store)
    assert stored.response_id == "call-1"


# --- attributes never raise ---------------------------------------------------------------------------
class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text for you")

    def __repr__(self) -> str:
        raise ValueError("no repr either")


def test_an_object_whose_str_raises_is_recorded_as_a_marker_and_logged_once(
    providers: Providers, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llmmeter._log, "_seen", set())
    records: list[CallRecord] = []
    llmmeter.configure(store=None, on_record=llmmeter.inline(records.append), **providers[2])

    with llmmeter.attributes(user_id=Unprintable()):  # type: ignore[arg-type]
        llm_call()
    with llmmeter.attributes(user_id=Unprintable()):  # type: ignore[arg-type]
        llm_call()

    assert [r.attributes["user_id"] for r in records] == [UNPRINTABLE] * 2
    warnings = [r for r in caplog.records if "user_id" in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(warnings) == 1


def test_huge_text_is_cut_and_a_lone_surrogate_escaped() -> None:
    with llmmeter.attributes(note="x" * 1_000_000, model_tag="a\ud800b", big=2**80) as values:
        assert len(str(values["note"])) == MAX_VALUE_LENGTH
        assert values["model_tag"] == "a\\ud800b"
        assert values["big"] == str(2**80)


attribute_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None, categories=None)),  # surrogates included
    st.text(min_size=MAX_VALUE_LENGTH - 2, max_size=MAX_VALUE_LENGTH + 50),
    st.builds(Unprintable),
    st.lists(st.integers(), max_size=3),
    st.decimals(allow_nan=True),
    st.binary(max_size=8),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.text(min_size=1, max_size=8), attribute_values, max_size=4))
def test_attributes_never_raise_and_every_value_reaches_the_span_and_the_store(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    store = tmp_path / f"fuzz-{uuid.uuid4().hex}.sqlite3"  # tmp_path is shared by the examples
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    records: list[CallRecord] = []
    llmmeter.configure(store=store, tracer_provider=tracer_provider, on_record=records.append)
    try:
        with llmmeter.attributes(**values):
            assert llm_call() == response()
        assert llmmeter.flush(timeout=10)
    finally:
        llmmeter.configure(store=None, pricing=None)
        tracer_provider.shutdown()

    [record] = records
    [span] = spans.get_finished_spans()
    [stored] = read_records(store)
    for key, value in record.attributes.items():
        assert isinstance(value, str | bool | int | float)
        if isinstance(value, str):
            value.encode("utf-8")  # valid UTF-8 for every exporter
            assert len(value) <= MAX_VALUE_LENGTH
        assert span.attributes is not None and key in span.attributes
    assert stored.attributes == record.attributes or _nan_equal(stored.attributes, record.attributes)
    assert set(record.attributes) == {key for key, value in values.items() if value is not None}


def _nan_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


# --- the public names -------------------------------------------------------------------------------------
def test_a_sink_is_any_object_with_accept_flush_and_close(tmp_path: Path) -> None:
    sink = JsonLinesSink(tmp_path / "x.jsonl")
    assert isinstance(sink, llmmeter.Sink)
    sink.close(1)
    check: Callable[[CallRecord], None] = llmmeter.inline(print)
    assert callable(check)
