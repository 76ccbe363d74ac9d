"""Attribution: ``llmmeter.attributes(...)`` says who and what a call is for.

Every key goes on the call's span, record and local store row; only allow-listed keys (default
``team`` and ``feature``) go on metric points, so a user id never explodes metric cardinality.
Attributes follow the code's context: nested blocks (inner wins), threads and asyncio tasks each
see exactly their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmmeter
import llmmeter._log
from llmmeter.record import CallRecord
from llmmeter.store import read_records

MODEL = "acme-chat-1"


def response(call_id: str, input_tokens: int = 10, output_tokens: int = 2) -> dict[str, Any]:
    """An OpenAI-style response body; its id tells which call produced a record."""
    return {
        "id": call_id,
        "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens},
    }


@llmmeter.metered(model=MODEL, provider="openai")
def llm_call(call_id: str) -> dict[str, Any]:
    return response(call_id)


def record_for(records: list[CallRecord], call_id: str) -> CallRecord:
    [record] = [r for r in records if r.response_id == call_id]
    return record


def all_metric_points(reader: InMemoryMetricReader) -> list[tuple[str, dict[str, Any]]]:
    llmmeter.flush()
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (metric.name, dict(point.attributes))
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        for point in metric.data.data_points
    ]


@dataclass
class Pipeline:
    """What the calls produced; readers deliver what llmmeter's pipeline thread still holds first."""

    span_exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    store: Path
    collected: list[CallRecord] = field(default_factory=list)

    @property
    def records(self) -> list[CallRecord]:
        assert llmmeter.flush()
        return self.collected

    @property
    def spans(self) -> InMemorySpanExporter:
        assert llmmeter.flush()
        return self.span_exporter


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Any]:
    """Configure llmmeter with in-memory OTel providers and any extra ``configure`` arguments."""
    providers: list[Any] = []

    def configure(**overrides: Any) -> Pipeline:
        spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        providers.extend([tracer_provider, meter_provider])
        result = Pipeline(span_exporter=spans, reader=reader, store=tmp_path / "attribution.sqlite3")
        llmmeter.configure(
            store=result.store,
            pricing=None,
            on_record=result.collected.append,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            **overrides,
        )
        return result

    yield configure
    llmmeter.flush()
    llmmeter.configure(store=None, pricing=None)
    for provider in providers:
        provider.shutdown()


# --- the context manager ------------------------------------------------------------------------


def test_nested_blocks_merge_and_the_inner_value_wins_until_the_inner_block_ends() -> None:
    with llmmeter.attributes(team="search", feature="summaries"):
        with llmmeter.attributes(feature="snippets", user_id="u-17"):
            assert dict(llmmeter.current_attributes()) == {
                "team": "search",
                "feature": "snippets",
                "user_id": "u-17",
            }
        assert dict(llmmeter.current_attributes()) == {"team": "search", "feature": "summaries"}
    assert dict(llmmeter.current_attributes()) == {}


def test_the_block_yields_the_attributes_in_force() -> None:
    with llmmeter.attributes(team="search"), llmmeter.attributes(user_id="u-1") as in_force:
        assert dict(in_force) == {"team": "search", "user_id": "u-1"}


def test_none_values_are_ignored_and_do_not_erase_an_outer_value() -> None:
    maybe_user = None
    with llmmeter.attributes(team="search"), llmmeter.attributes(team=None, user_id=maybe_user):
        assert dict(llmmeter.current_attributes()) == {"team": "search"}


def test_str_bool_int_and_float_values_are_kept_as_they_are() -> None:
    with llmmeter.attributes(user_id="u-1", premium=True, tenant_id=42, sample_rate=0.25):
        assert dict(llmmeter.current_attributes()) == {
            "user_id": "u-1",
            "premium": True,
            "tenant_id": 42,
            "sample_rate": 0.25,
        }


@pytest.mark.parametrize(
    "bad_value",
    [["a", "b"], {"nested": 1}, object(), Decimal("1.5"), b"bytes"],
    ids=["list", "dict", "object", "decimal", "bytes"],
)
def test_a_value_of_another_type_is_kept_as_text_and_never_breaks_the_block(
    bad_value: object, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llmmeter._log, "_seen", set())
    ran = False
    with caplog.at_level(logging.WARNING, logger="llmmeter"), llmmeter.attributes(user_id=bad_value):  # type: ignore[arg-type]
        ran = True
        assert llmmeter.current_attributes()["user_id"] == str(bad_value)
    assert ran
    assert "user_id" in caplog.text
    assert dict(llmmeter.current_attributes()) == {}


def test_current_attributes_is_read_only() -> None:
    with llmmeter.attributes(team="search"):
        in_force = llmmeter.current_attributes()
        with pytest.raises(TypeError):
            in_force["team"] = "ads"  # type: ignore[index]
        assert llmmeter.current_attributes()["team"] == "search"


def test_the_block_is_left_cleanly_when_the_body_raises() -> None:
    with pytest.raises(KeyError), llmmeter.attributes(team="search"):
        raise KeyError("boom")
    assert dict(llmmeter.current_attributes()) == {}


# --- attributes on records, spans, the store and metrics -----------------------------------------


def test_every_key_goes_on_the_record_the_span_and_the_store(pipeline: Any) -> None:
    p = pipeline()
    with llmmeter.attributes(user_id="u-17", team="search", feature="summaries", tenant_id=7):
        llm_call("call-1")

    expected = {"user_id": "u-17", "team": "search", "feature": "summaries", "tenant_id": 7}
    [record] = p.records
    assert record.attributes == expected
    [span] = p.spans.get_finished_spans()
    assert {key: span.attributes[key] for key in expected} == expected
    assert llmmeter.flush()
    [stored] = read_records(p.store)
    assert stored.attributes == expected


def test_only_team_and_feature_reach_metric_points_by_default(pipeline: Any) -> None:
    p = pipeline()
    with llmmeter.attributes(user_id="u-17", team="search", feature="summaries", request_tag="r-99"):
        llm_call("call-1")

    points = all_metric_points(p.reader)
    assert {name for name, _ in points} >= {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"}
    for name, attributes in points:
        assert attributes["team"] == "search", name
        assert attributes["feature"] == "summaries", name
        assert "user_id" not in attributes, name
        assert "request_tag" not in attributes, name


def test_configured_metric_attributes_replace_the_default_allow_list(pipeline: Any) -> None:
    p = pipeline(metric_attributes=["tenant_id", "user_tier"])
    with llmmeter.attributes(tenant_id=7, user_tier="pro", team="search", user_id="u-17"):
        llm_call("call-1")

    points = all_metric_points(p.reader)
    assert points
    for name, attributes in points:
        assert (attributes["tenant_id"], attributes["user_tier"]) == (7, "pro"), name
        assert "team" not in attributes and "user_id" not in attributes, name
    [span] = p.spans.get_finished_spans()
    assert (span.attributes["team"], span.attributes["user_id"]) == ("search", "u-17")


def test_an_empty_allow_list_keeps_every_attribution_key_off_metrics(pipeline: Any) -> None:
    p = pipeline(metric_attributes=[])
    with llmmeter.attributes(team="search", feature="summaries"):
        llm_call("call-1")

    for name, attributes in all_metric_points(p.reader):
        assert "team" not in attributes and "feature" not in attributes, name


def test_calls_with_different_allow_listed_values_land_in_separate_metric_series(pipeline: Any) -> None:
    p = pipeline()
    for team in ("search", "ads", "search"):
        with llmmeter.attributes(team=team, user_id=f"user-of-{team}"):
            llm_call(f"call-{team}")

    duration_points = [
        attributes
        for name, attributes in all_metric_points(p.reader)
        if name == "gen_ai.client.operation.duration"
    ]
    assert sorted(a["team"] for a in duration_points) == ["ads", "search"]


def test_attributes_fixed_on_the_decorator_are_merged_under_the_context_ones(telemetry: Any) -> None:
    fixed = {"feature": "default-feature", "component": "rag"}

    @llmmeter.metered(model=MODEL, provider="openai", attributes=fixed)
    def call() -> dict[str, Any]:
        return response("fixed")

    with llmmeter.attributes(feature="summaries", user_id="u-3"):
        call()

    [record] = telemetry.records
    assert record.attributes == {"feature": "summaries", "component": "rag", "user_id": "u-3"}


def test_a_call_outside_any_block_has_no_attribution(telemetry: Any) -> None:
    with llmmeter.attributes(team="search"):
        pass
    llm_call("bare")

    [record] = telemetry.records
    assert record.attributes == {}


def test_steps_and_the_calls_inside_them_carry_the_attributes_in_force_at_each(telemetry: Any) -> None:
    @llmmeter.metered(name="agent")
    def agent() -> None:
        llm_call("plain")
        with llmmeter.attributes(tool="search"):
            llm_call("tooled")

    with llmmeter.attributes(team="search"):
        agent()

    records = telemetry.records
    assert record_for(records, "plain").attributes == {"team": "search"}
    assert record_for(records, "tooled").attributes == {"team": "search", "tool": "search"}
    [step] = [r for r in records if r.name == "agent"]
    assert step.attributes == {"team": "search"}


# --- isolation across threads and tasks --------------------------------------------------------


def test_fifty_concurrent_threads_each_record_exactly_their_own_attributes(telemetry: Any) -> None:
    threads = 50
    all_inside = threading.Barrier(threads)

    @llmmeter.metered(model=MODEL, provider="openai")
    def call_while_others_run(call_id: str) -> dict[str, Any]:
        all_inside.wait(timeout=10)  # every thread is inside its call, its attributes set
        return response(call_id)

    def worker(i: int) -> None:
        with llmmeter.attributes(user_id=f"u-{i}", team=f"team-{i % 5}", shard=i):
            call_while_others_run(f"thread-{i}")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(worker, i) for i in range(threads)]:
            future.result()

    assert len(telemetry.records) == threads
    for i in range(threads):
        record = record_for(telemetry.records, f"thread-{i}")
        assert record.attributes == {"user_id": f"u-{i}", "team": f"team-{i % 5}", "shard": i}
    spans_by_user = {span.attributes["user_id"]: span for span in telemetry.finished_spans()}
    assert set(spans_by_user) == {f"u-{i}" for i in range(threads)}
    assert all(spans_by_user[f"u-{i}"].attributes["shard"] == i for i in range(threads))


async def test_two_hundred_concurrent_asyncio_tasks_each_record_exactly_their_own_attributes(
    telemetry: Any,
) -> None:
    tasks = 200
    all_inside = asyncio.Barrier(tasks)

    @llmmeter.metered(model=MODEL, provider="openai")
    async def call_while_others_run(call_id: str) -> dict[str, Any]:
        await all_inside.wait()
        return response(call_id)

    async def worker(i: int) -> None:
        with llmmeter.attributes(user_id=f"u-{i}", team=f"team-{i % 7}"):
            await asyncio.sleep(0)
            with llmmeter.attributes(attempt=i % 3):
                await call_while_others_run(f"task-{i}")

    async with asyncio.timeout(20):
        await asyncio.gather(*(worker(i) for i in range(tasks)))

    assert len(telemetry.records) == tasks
    for i in range(tasks):
        record = record_for(telemetry.records, f"task-{i}")
        assert record.attributes == {"user_id": f"u-{i}", "team": f"team-{i % 7}", "attempt": i % 3}


async def test_a_task_created_inside_a_block_inherits_it_and_its_own_changes_stay_in_it() -> None:
    seen_in_task: dict[str, Any] = {}

    async def child() -> None:
        with llmmeter.attributes(user_id="child-user"):
            seen_in_task.update(llmmeter.current_attributes())
            await asyncio.sleep(0)

    with llmmeter.attributes(team="search"):
        task = asyncio.create_task(child())
        await asyncio.sleep(0)
        assert dict(llmmeter.current_attributes()) == {"team": "search"}
        await task

    assert seen_in_task == {"team": "search", "user_id": "child-user"}


def test_threads_given_a_copied_context_see_the_submitting_block(telemetry: Any) -> None:
    with llmmeter.attributes(team="batch-jobs"), ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(contextvars.copy_context().run, llm_call, f"job-{i}") for i in range(8)]
        for future in futures:
            future.result()

    assert len(telemetry.records) == 8
    assert all(record.attributes == {"team": "batch-jobs"} for record in telemetry.records)
