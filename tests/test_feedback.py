"""``llmmeter.feedback()``: a judgement of a call, stored beside its record and seen in its trace."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import llmmeter
from llmmeter import semconv as sc
from llmmeter.feedback import read_feedback
from llmmeter.testing import LocalOpenAIServer, Pacing

from .conftest import Telemetry

MESSAGES = [{"role": "user", "content": "is this refundable"}]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=2)) as srv:
        yield srv


@pytest.fixture
def client(server: LocalOpenAIServer) -> openai.OpenAI:
    return llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0))


def ask(client: openai.OpenAI, model: str = "gpt-4o-mini") -> Any:
    return client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]


def store_of(telemetry: Telemetry) -> Path:
    assert telemetry.settings is not None and telemetry.settings.store is not None
    return telemetry.settings.store.path


def test_feedback_is_stored_linked_to_the_judged_call_and_emitted_in_its_trace(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    reply = ask(client)

    given = llmmeter.feedback(reply.id, score=1.0, label="correct", comment="spot on")

    (call,) = telemetry.records
    assert given.stored and given.record_id == call.record_id
    assert (given.trace_id, given.span_id) == (call.trace_id, call.span_id)
    assert read_feedback(store_of(telemetry)) == [given]
    feedback_span = next(s for s in telemetry.finished_spans() if s.name == "feedback")
    assert feedback_span.parent is not None
    assert format(feedback_span.context.trace_id, "032x") == call.trace_id
    assert format(feedback_span.parent.span_id, "016x") == call.span_id
    (event,) = feedback_span.events
    assert event.name == sc.FEEDBACK_EVENT
    assert dict(event.attributes or {}) == {
        sc.FEEDBACK_SCORE: 1.0,
        sc.FEEDBACK_LABEL: "correct",
        sc.FEEDBACK_COMMENT: "spot on",
    }
    (point,) = telemetry.metric_points(sc.FEEDBACK_METRIC.name)
    assert dict(point.attributes) == {  # type: ignore[attr-defined]
        sc.FEEDBACK_LABEL: "correct",
        sc.REQUEST_MODEL: "gpt-4o-mini",
    }


def test_feedback_on_a_routed_call_counts_by_route_name(client: openai.OpenAI, telemetry: Telemetry) -> None:
    with llmmeter.route("support-router"):
        good, bad = ask(client), ask(client)
    llmmeter.feedback(good, label="correct")  # the response itself is accepted too
    llmmeter.feedback(bad.id, label="wrong", score=0)

    points = {
        point.attributes[sc.FEEDBACK_LABEL]: point  # type: ignore[attr-defined]
        for point in telemetry.metric_points(sc.FEEDBACK_METRIC.name)
    }
    assert set(points) == {"correct", "wrong"}
    assert all(p.attributes[sc.ROUTE_NAME] == "support-router" for p in points.values())  # type: ignore[attr-defined]
    stored = read_feedback(store_of(telemetry))
    assert [(f.response_id, f.label, f.score) for f in stored] == [
        (good.id, "correct", None),
        (bad.id, "wrong", 0.0),
    ]


def test_feedback_for_a_response_never_recorded_is_stored_unlinked(telemetry: Telemetry) -> None:
    given = llmmeter.feedback("chatcmpl-from-elsewhere", label="wrong")

    assert given.stored and given.record_id is None and given.trace_id is None
    assert read_feedback(store_of(telemetry), "chatcmpl-from-elsewhere") == [given]
    feedback_span = next(s for s in telemetry.finished_spans() if s.name == "feedback")
    assert feedback_span.parent is None
    assert feedback_span.attributes is not None
    assert feedback_span.attributes[sc.FEEDBACK_FOUND] is False


def test_feedback_from_another_thread_finds_a_call_just_made(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    reply = ask(client)
    results: list[llmmeter.Feedback] = []
    worker = threading.Thread(target=lambda: results.append(llmmeter.feedback(reply.id, score=0.5)))
    worker.start()
    worker.join(10)
    (given,) = results
    assert given.record_id == telemetry.records[0].record_id


def test_without_a_store_feedback_is_still_exported(client: openai.OpenAI, telemetry: Telemetry) -> None:
    telemetry.reconfigure(store=None)
    reply = ask(client)
    given = llmmeter.feedback(reply.id, label="correct")
    assert not given.stored and given.record_id is None
    assert [s.name for s in telemetry.finished_spans()].count("feedback") == 1


def test_reading_feedback_from_a_store_without_any_gives_nothing(tmp_path: Path) -> None:
    assert read_feedback(tmp_path / "missing.sqlite3") == []


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("chatcmpl-1",), {}, ValueError, "give a score, a label or a comment"),
        (("chatcmpl-1",), {"score": float("nan")}, ValueError, "finite number"),
        (("chatcmpl-1",), {"score": True}, ValueError, "finite number"),
        (("chatcmpl-1",), {"label": 3}, TypeError, "label must be a str"),
        ((None,), {"label": "x"}, TypeError, "response id"),
        (("",), {"label": "x"}, TypeError, "response id"),
    ],
)
def test_bad_feedback_arguments_get_a_one_line_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str, telemetry: Telemetry
) -> None:
    with pytest.raises(error) as raised:
        llmmeter.feedback(*args, **kwargs)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert read_feedback(store_of(telemetry)) == []


def test_long_and_hostile_text_is_cut_and_kept_valid(telemetry: Telemetry) -> None:
    given = llmmeter.feedback("chatcmpl-2", label="x" * 1000, comment="\ud800" + "y" * 10_000)
    assert given.label is not None and len(given.label) == 256 and given.label.endswith("[truncated]")
    assert given.comment is not None and given.comment.startswith("\\ud800") and len(given.comment) == 4096
    assert read_feedback(store_of(telemetry)) == [given]


def test_with_a_fleet_store_that_does_not_answer_feedback_waits_in_the_outbox(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # where the fleet store's spool goes
    settings = telemetry.reconfigure(store="postgresql://llmmeter@127.0.0.1:1/telemetry")
    with caplog.at_level(logging.DEBUG, logger="llmmeter"):  # logged once per process: maybe DEBUG
        given = llmmeter.feedback("chatcmpl-3", label="correct", comment="kept")
    assert given.stored and given.record_id is None
    assert [s.name for s in telemetry.finished_spans()] == ["feedback"]
    assert (
        "feedback: the fleet store postgresql://llmmeter@127.0.0.1:1/telemetry did not answer" in caplog.text
    )
    spool = settings.store.spool_path  # type: ignore[union-attr]
    with sqlite3.connect(spool / "feedback.sqlite3") as outbox:
        waiting = outbox.execute("SELECT response_id, label, comment FROM outbox").fetchall()
    assert waiting == [("chatcmpl-3", "correct", "kept")]
