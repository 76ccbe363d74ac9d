"""Routes: a router's calls are numbered attempts; escalations and fallbacks are recorded.

Through the real ``openai`` client against the local server: every call in ``llmmeter.route(name)``
carries the route name, its attempt number and the escalation reason; the route's own record says
whether it escalated or fell back, how often, its final model, and rolls up tokens and cost; the
``llmmeter.route.requests`` counter makes the escalation rate one division.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import openai
import pytest

import llmmeter
from llmmeter import semconv as sc
from llmmeter.record import CallKind, CallRecord, Outcome
from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

from .conftest import Telemetry

SMALL, LARGE = "gpt-4o-mini", "gpt-4o"
MESSAGES = [{"role": "user", "content": "where is my parcel"}]
FAIL = pacing_headers(error_status=503)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=4)) as srv:
        yield srv


@pytest.fixture
def client(server: LocalOpenAIServer) -> openai.OpenAI:
    return llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0))


@pytest.fixture
def async_client(server: LocalOpenAIServer) -> openai.AsyncOpenAI:
    return llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, max_retries=0))


def ask(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)  # type: ignore[arg-type]


def routes(records: list[CallRecord]) -> list[CallRecord]:
    return [r for r in records if r.kind is CallKind.STEP and r.operation == sc.ROUTE_OPERATION]


def calls(records: list[CallRecord]) -> list[CallRecord]:
    return [r for r in records if r.kind is CallKind.LLM]


def route_points(telemetry: Telemetry) -> dict[tuple[tuple[str, Any], ...], int]:
    points = telemetry.metric_points(sc.ROUTE_REQUESTS_METRIC.name)
    return {tuple(sorted(p.attributes.items())): p.value for p in points}  # type: ignore[attr-defined]


def test_an_escalated_route_numbers_its_calls_and_records_the_final_model(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with llmmeter.route("support-router") as route:
        ask(client, SMALL)
        route.escalate("low_confidence")
        reply = ask(client, LARGE)

    small, large = calls(telemetry.records)
    assert small.attributes == {sc.ROUTE_NAME: "support-router", sc.ROUTE_ATTEMPT: 1}
    assert large.attributes == {
        sc.ROUTE_NAME: "support-router",
        sc.ROUTE_ATTEMPT: 2,
        sc.ROUTE_ESCALATION_REASON: "low_confidence",
    }
    (record,) = routes(telemetry.records)
    assert record.name == "support-router"
    assert record.attributes[sc.ROUTE_ATTEMPTS] == 2
    assert record.attributes[sc.ROUTE_ESCALATED] is True
    assert record.attributes[sc.ROUTE_ESCALATIONS] == 1
    assert record.attributes[sc.ROUTE_ESCALATION_REASON] == "low_confidence"
    assert record.attributes[sc.ROUTE_FALLBACK] is False
    assert record.attributes[sc.ROUTE_FINAL_MODEL] == reply.model
    assert record.attributes[sc.ROUTE_FINAL_PROVIDER] == large.provider
    assert small.cost is not None and large.cost is not None and small.usage and large.usage
    assert record.rollup_cost == small.cost.amount + large.cost.amount
    assert record.rollup_usage is not None
    assert record.rollup_usage.input_tokens == (small.usage.input_tokens or 0) + (
        large.usage.input_tokens or 0
    )
    assert record.rollup_calls == 2
    assert record.timings.duration_s is not None and large.timings.duration_s is not None
    assert record.timings.duration_s >= (small.timings.duration_s or 0) + large.timings.duration_s


def test_a_failed_call_followed_by_a_successful_one_is_a_fallback_without_user_code(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with llmmeter.route("support-router"):
        try:
            ask(client, LARGE, extra_headers=FAIL)
        except openai.InternalServerError:
            ask(client, SMALL)

    failed, answered = calls(telemetry.records)
    assert failed.outcome is Outcome.ERROR and failed.error_type == "openai.InternalServerError"
    assert answered.attributes[sc.ROUTE_FALLBACK_REASON] == "openai.InternalServerError"
    assert answered.attributes[sc.ROUTE_ATTEMPT] == 2
    (record,) = routes(telemetry.records)
    assert record.outcome is Outcome.OK
    assert record.attributes[sc.ROUTE_FALLBACK] is True
    assert record.attributes[sc.ROUTE_FALLBACKS] == 1
    assert record.attributes[sc.ROUTE_FALLBACK_REASON] == "openai.InternalServerError"
    assert record.attributes[sc.ROUTE_ESCALATED] is False
    assert record.attributes[sc.ROUTE_FINAL_MODEL] == answered.response_model


def test_a_route_whose_every_call_failed_has_no_final_model_and_ends_in_error(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with pytest.raises(openai.InternalServerError), llmmeter.route("support-router"):
        ask(client, SMALL, extra_headers=FAIL)

    (record,) = routes(telemetry.records)
    assert record.outcome is Outcome.ERROR and record.error_type == "openai.InternalServerError"
    assert record.attributes[sc.ROUTE_FALLBACK] is False
    assert sc.ROUTE_FINAL_MODEL not in record.attributes  # not observed: absent
    assert sc.ROUTE_FINAL_PROVIDER not in record.attributes


def test_the_escalation_and_fallback_rates_are_one_division_of_the_route_counter(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    for escalate, fail_first in ((False, False), (True, False), (True, True), (False, False)):
        with llmmeter.route("support-router"):
            if fail_first:
                with pytest.raises(openai.InternalServerError):
                    ask(client, SMALL, extra_headers=FAIL)
            ask(client, SMALL)
            if escalate:
                llmmeter.escalate("low_confidence")
                ask(client, LARGE)

    points = route_points(telemetry)
    total = sum(points.values())
    escalated = sum(v for k, v in points.items() if (sc.ROUTE_ESCALATED, "true") in k)
    fallbacks = sum(v for k, v in points.items() if (sc.ROUTE_FALLBACK, "true") in k)
    assert (total, escalated, fallbacks) == (4, 2, 1)
    assert Decimal(escalated) / total == Decimal("0.5")  # 2 of the 4 routes escalated, by hand
    by_final_model: dict[object, int] = {}
    for key, value in points.items():
        model = dict(key)[sc.ROUTE_FINAL_MODEL]
        by_final_model[model] = by_final_model.get(model, 0) + value
    assert by_final_model == {SMALL: 2, LARGE: 2}  # the local server answers as the model asked


def test_routes_span_is_the_parent_of_its_calls_and_every_span_carries_the_route_attributes(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with llmmeter.route("support-router") as route:
        ask(client, SMALL)
        route.escalate("policy")
        ask(client, LARGE)

    spans = telemetry.finished_spans()
    (route_span,) = [s for s in spans if s.name == "support-router"]
    call_spans = [s for s in spans if s is not route_span]
    assert len(call_spans) == 2
    assert all(s.parent is not None and s.parent.span_id == route_span.context.span_id for s in call_spans)
    assert [s.attributes[sc.ROUTE_ATTEMPT] for s in call_spans] == [1, 2]  # type: ignore[index]
    assert call_spans[1].attributes[sc.ROUTE_ESCALATION_REASON] == "policy"  # type: ignore[index]
    assert route_span.attributes[sc.ROUTE_ESCALATED] is True  # type: ignore[index]
    assert route_span.attributes[sc.ROUTE_ATTEMPTS] == 2  # type: ignore[index]
    assert route_span.attributes[sc.ROLLUP_CALLS] == 2  # type: ignore[index]


async def test_async_routes_running_concurrently_each_count_only_their_own_calls(
    async_client: openai.AsyncOpenAI, telemetry: Telemetry
) -> None:
    async def answer(question: int) -> None:
        async with llmmeter.route(f"router-{question}") as route:
            await async_client.chat.completions.create(model=SMALL, messages=MESSAGES)  # type: ignore[arg-type]
            await asyncio.sleep(0)
            if question % 2:
                route.escalate("low_confidence")
                await async_client.chat.completions.create(model=LARGE, messages=MESSAGES)  # type: ignore[arg-type]

    await asyncio.gather(*(answer(q) for q in range(6)))

    by_name = {r.name: r for r in routes(telemetry.records)}
    assert len(by_name) == 6
    for question in range(6):
        record = by_name[f"router-{question}"]
        assert record.attributes[sc.ROUTE_ATTEMPTS] == (2 if question % 2 else 1)
        assert record.attributes[sc.ROUTE_ESCALATED] is bool(question % 2)
        assert record.rollup_calls == record.attributes[sc.ROUTE_ATTEMPTS]
    for call in calls(telemetry.records):
        expected = 2 if call.request_model == LARGE else 1
        assert call.attributes[sc.ROUTE_ATTEMPT] == expected


async def test_the_decorator_makes_every_call_of_an_async_function_a_route_of_its_own(
    async_client: openai.AsyncOpenAI, telemetry: Telemetry
) -> None:
    @llmmeter.route("async-router")
    async def answer(escalate: bool) -> str:
        await async_client.chat.completions.create(model=SMALL, messages=MESSAGES)  # type: ignore[arg-type]
        if escalate:
            llmmeter.escalate("too_long")
            reply = await async_client.chat.completions.create(model=LARGE, messages=MESSAGES)  # type: ignore[arg-type]
            return reply.model
        return "small"

    assert await answer(True) != "small"
    assert await answer(False) == "small"

    first, second = routes(telemetry.records)
    assert (first.attributes[sc.ROUTE_ESCALATED], second.attributes[sc.ROUTE_ESCALATED]) == (True, False)
    assert (first.attributes[sc.ROUTE_ATTEMPTS], second.attributes[sc.ROUTE_ATTEMPTS]) == (2, 1)


def test_the_decorator_works_on_sync_functions_and_passes_results_and_exceptions_through(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    @llmmeter.route("sync-router")
    def answer(fail: bool) -> str:
        if fail:
            raise LookupError("no such order")
        return str(ask(client, SMALL).model)

    assert answer(False).startswith(SMALL)
    with pytest.raises(LookupError, match="no such order"):
        answer(True)

    ok, failed = routes(telemetry.records)
    assert ok.outcome is Outcome.OK and ok.attributes[sc.ROUTE_ATTEMPTS] == 1
    assert failed.outcome is Outcome.ERROR and failed.error_type == "LookupError"
    assert failed.attributes[sc.ROUTE_ATTEMPTS] == 0


def test_a_streamed_call_read_inside_the_route_is_its_final_model(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with llmmeter.route("streaming-router") as route:
        route.escalate("needs_reasoning")
        for _ in ask(client, LARGE, stream=True):
            pass

    (call,) = calls(telemetry.records)
    assert call.streaming and call.attributes[sc.ROUTE_ESCALATION_REASON] == "needs_reasoning"
    (record,) = routes(telemetry.records)
    assert record.attributes[sc.ROUTE_FINAL_MODEL] == call.response_model
    assert record.rollup_cost == call.cost.amount  # type: ignore[union-attr]


def test_calls_from_threads_started_with_the_routes_context_are_its_attempts(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with llmmeter.route("parallel-router"), ThreadPoolExecutor(max_workers=3) as pool:
        context = contextvars.copy_context
        futures = [pool.submit(context().run, ask, client, model) for model in (SMALL, SMALL, LARGE)]
        for future in futures:
            future.result()

    assert sorted(c.attributes[sc.ROUTE_ATTEMPT] for c in calls(telemetry.records)) == [1, 2, 3]
    (record,) = routes(telemetry.records)
    assert record.attributes[sc.ROUTE_ATTEMPTS] == 3 and record.rollup_calls == 3


def test_calls_outside_a_route_carry_no_route_attributes(client: openai.OpenAI, telemetry: Telemetry) -> None:
    with llmmeter.route("support-router"):
        ask(client, SMALL)
    ask(client, SMALL)

    inside, outside = calls(telemetry.records)
    assert sc.ROUTE_NAME in inside.attributes
    assert not any(key.startswith("llmmeter.route.") for key in outside.attributes)


def test_escalate_outside_a_route_is_logged_once_and_changes_nothing(
    client: openai.OpenAI, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        llmmeter.escalate("nowhere")
    assert "outside llmmeter.route()" in caplog.text
    ask(client, SMALL)
    (call,) = calls(telemetry.records)
    assert sc.ROUTE_ESCALATION_REASON not in call.attributes


def test_escalate_applies_to_the_innermost_route(client: openai.OpenAI, telemetry: Telemetry) -> None:
    with llmmeter.route("outer"):
        ask(client, SMALL)
        with llmmeter.route("inner"):
            llmmeter.escalate("inner_reason")
            ask(client, LARGE)

    by_name = {r.name: r for r in routes(telemetry.records)}
    assert by_name["inner"].attributes[sc.ROUTE_ESCALATED] is True
    assert by_name["outer"].attributes[sc.ROUTE_ESCALATED] is False
    assert by_name["outer"].attributes[sc.ROUTE_ATTEMPTS] == 1
    assert by_name["outer"].rollup_calls == 2  # the inner route's call rolls up through it


def test_a_generator_cannot_be_decorated_as_a_route() -> None:
    def chunks() -> Iterator[str]:
        yield "a"

    with pytest.raises(TypeError, match="cannot decorate the generator"):
        llmmeter.route("streaming-router")(chunks)


def test_a_route_needs_a_name_and_is_entered_once() -> None:
    with pytest.raises(TypeError, match="non-empty str"):
        llmmeter.route("")
    route = llmmeter.route("once")
    with route:
        pass
    with pytest.raises(RuntimeError, match="already entered"), route:
        pass


def test_a_route_with_llmmeter_disabled_runs_the_code_and_records_nothing(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    telemetry.reconfigure(enabled=False)
    with llmmeter.route("support-router") as route:
        ask(client, SMALL)
        route.escalate("low_confidence")
    assert telemetry.records == []
    assert route.attempts == 0 and route.escalations == 1
