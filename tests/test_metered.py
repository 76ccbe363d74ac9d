"""``@llmmeter.metered``: measure any function -- an LLM call of your own, or a step around several.

The decorated function behaves exactly as before (same return value, same yielded items, same
exception object); llmmeter adds one record and one span per call, and a step's record and span
carry the rolled-up tokens and cost of every measured call made inside it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.completion_usage import CompletionTokensDetails, CompletionUsage, PromptTokensDetails
from opentelemetry import trace

import llmmeter
from llmmeter.record import CallKind, CallRecord, CostStatus, Outcome, UsageSource

try:
    from llmmeter.pricing import ModelPrice
except ImportError:  # pragma: no cover - pricing is written alongside the core
    ModelPrice = None  # type: ignore[assignment,misc]

needs_pricing = pytest.mark.skipif(ModelPrice is None, reason="llmmeter.pricing is not importable")

MODEL = "acme-chat-1"
RESPONSE_MODEL = "acme-chat-1-2026-01-15"


def chat_completion(
    input_tokens: int,
    output_tokens: int,
    *,
    response_id: str = "chatcmpl-1",
    cached_tokens: int | None = None,
    reasoning_tokens: int | None = None,
) -> ChatCompletion:
    """A real ``openai`` ChatCompletion, as ``client.chat.completions.create`` returns it."""
    return ChatCompletion(
        id=response_id,
        object="chat.completion",
        created=1_764_230_400,
        model=RESPONSE_MODEL,
        choices=[
            Choice(
                index=0,
                finish_reason="stop",
                message=ChatCompletionMessage(role="assistant", content="A short summary."),
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            prompt_tokens_details=(
                PromptTokensDetails(cached_tokens=cached_tokens) if cached_tokens is not None else None
            ),
            completion_tokens_details=(
                CompletionTokensDetails(reasoning_tokens=reasoning_tokens)
                if reasoning_tokens is not None
                else None
            ),
        ),
    )


def dict_response(input_tokens: int, output_tokens: int, *, response_id: str = "resp-1") -> dict[str, Any]:
    """The same response as decoded JSON (``httpx`` / ``requests`` users get this)."""
    return {
        "id": response_id,
        "object": "chat.completion",
        "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


def content_chunk(text: str | None, *, role: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id="chatcmpl-s",
        object="chat.completion.chunk",
        created=1_764_230_400,
        model=RESPONSE_MODEL,
        choices=[ChunkChoice(index=0, delta=ChoiceDelta(role=role, content=text), finish_reason=None)],
    )


def usage_chunk(input_tokens: int, output_tokens: int) -> ChatCompletionChunk:
    """OpenAI's last chunk with ``stream_options.include_usage``: no choices, only usage."""
    return ChatCompletionChunk(
        id="chatcmpl-s",
        object="chat.completion.chunk",
        created=1_764_230_400,
        model=RESPONSE_MODEL,
        choices=[],
        usage=CompletionUsage(
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        ),
    )


def llm_records(records: list[CallRecord]) -> list[CallRecord]:
    return [r for r in records if r.kind is CallKind.LLM]


def only(records: list[CallRecord], name: str) -> CallRecord:
    matching = [r for r in records if r.name == name]
    assert len(matching) == 1, f"expected one record named {name!r}, got {len(matching)}"
    return matching[0]


class QuotaExceeded(Exception):
    """An application's own exception type."""


@pytest.fixture
def acme_priced(telemetry: Any) -> Any:
    """The telemetry fixture, with acme-chat-1 priced at $1 / $2 per million input / output tokens."""
    registry = llmmeter.get_settings().pricing
    assert registry is not None
    registry.register(MODEL, ModelPrice(input_per_mtok="1.00", output_per_mtok="2.00"))
    return telemetry


@pytest.fixture
def restore_settings() -> Iterator[None]:
    """For tests that call ``configure`` themselves: leave llmmeter quiet afterwards."""
    yield
    llmmeter.flush()
    llmmeter.configure(store=None, pricing=None)


# --- sync functions -------------------------------------------------------------------------------


def test_llm_function_returns_the_same_response_object_and_records_its_usage(telemetry: Any) -> None:
    response = chat_completion(120, 30, cached_tokens=100, reasoning_tokens=10)

    @llmmeter.metered(model=MODEL, provider="openai")
    def summarize(text: str) -> ChatCompletion:
        return response

    assert summarize("a long text") is response

    [record] = telemetry.records
    assert record.kind is CallKind.LLM
    assert (record.operation, record.provider) == ("chat", "openai")
    assert (record.request_model, record.response_model) == (MODEL, RESPONSE_MODEL)
    assert record.response_id == "chatcmpl-1"
    assert record.finish_reasons == ("stop",)
    assert record.outcome is Outcome.OK and record.error_type is None
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (120, 30)
    assert record.usage.cache_read_input_tokens == 100
    assert record.usage.reasoning_output_tokens == 10
    assert record.usage.source is UsageSource.PROVIDER
    assert record.streaming is False
    assert record.timings.duration_s is not None and record.timings.duration_s > 0


def test_non_streaming_call_has_no_ttft_or_tpot_never_a_copy_of_the_duration(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def summarize() -> ChatCompletion:
        return chat_completion(10, 5)

    summarize()

    [record] = telemetry.records
    assert record.timings.duration_s is not None
    assert (record.timings.ttfc_s, record.timings.ttft_s, record.timings.tpot_s) == (None, None, None)


def test_plain_dict_response_with_usage_is_read_like_the_sdk_object(telemetry: Any) -> None:
    body = dict_response(42, 7, response_id="resp-dict")

    @llmmeter.metered(model=MODEL, provider="openai")
    def call_over_http() -> dict[str, Any]:
        return body

    assert call_over_http() is body

    [record] = telemetry.records
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (42, 7)
    assert record.usage.cache_read_input_tokens is None  # not reported: None, never 0
    assert record.response_id == "resp-dict"
    assert record.response_model == RESPONSE_MODEL


def test_llm_function_whose_result_carries_no_usage_records_usage_as_unknown(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def just_text() -> str:
        return "the model said hi"

    assert just_text() == "the model said hi"

    [record] = telemetry.records
    assert record.kind is CallKind.LLM
    assert record.usage is None
    assert record.cost is None


def test_bare_decorator_on_a_plain_function_records_a_step_named_after_it(telemetry: Any) -> None:
    @llmmeter.metered
    def route(query: str) -> str:
        return "search" if "find" in query else "chat"

    assert route("find flights") == "search"

    [record] = telemetry.records
    assert record.kind is CallKind.STEP
    assert record.name == route.__qualname__
    assert record.usage is None and record.cost is None
    assert record.rollup_calls == 0


def test_bare_decorator_on_a_function_returning_a_response_records_that_llm_call(telemetry: Any) -> None:
    response = chat_completion(64, 16)

    @llmmeter.metered
    def ask() -> ChatCompletion:
        return response

    assert ask() is response

    [record] = telemetry.records
    assert record.kind is CallKind.LLM
    assert record.operation == "chat"
    assert record.response_model == RESPONSE_MODEL
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (64, 16)


def test_named_step_is_recorded_under_its_name_with_an_internal_span(telemetry: Any) -> None:
    @llmmeter.metered(name="plan-trip")
    def plan() -> list[str]:
        return ["book flight", "book hotel"]

    assert plan() == ["book flight", "book hotel"]

    [record] = telemetry.records
    assert record.kind is CallKind.STEP
    assert record.name == "plan-trip"
    [span] = telemetry.finished_spans()
    assert span.name == "plan-trip"
    assert span.attributes["llmmeter.step.name"] == "plan-trip"


def test_exception_propagates_as_the_same_object_with_its_traceback_and_is_recorded(telemetry: Any) -> None:
    raised = QuotaExceeded("monthly quota exceeded")

    @llmmeter.metered(model=MODEL, provider="openai")
    def over_quota() -> None:
        raise raised

    with pytest.raises(QuotaExceeded) as caught:
        over_quota()

    assert caught.value is raised
    innermost = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert innermost.name == "over_quota"
    assert innermost.line == "raise raised"

    [record] = telemetry.records
    assert record.outcome is Outcome.ERROR
    assert record.error_type == f"{QuotaExceeded.__module__}.QuotaExceeded"
    assert record.usage is None


def test_builtin_exception_type_is_recorded_by_its_plain_name(telemetry: Any) -> None:
    @llmmeter.metered(name="parse")
    def parse() -> None:
        raise ValueError("not JSON")

    with pytest.raises(ValueError, match="not JSON"):
        parse()

    [record] = telemetry.records
    assert record.outcome is Outcome.ERROR
    assert record.error_type == "ValueError"


# --- decorator transparency ---------------------------------------------------------------------


def _sync(a: int, *, b: str = "x") -> str:
    """Sync docstring."""
    return f"{a}{b}"


async def _async(a: int, *, b: str = "x") -> str:
    """Async docstring."""
    return f"{a}{b}"


def _gen(a: int, *, b: str = "x") -> Iterator[str]:
    """Generator docstring."""
    yield f"{a}{b}"


async def _agen(a: int, *, b: str = "x") -> AsyncIterator[str]:
    """Async generator docstring."""
    yield f"{a}{b}"


@pytest.mark.parametrize(
    ("fn", "kind_check"),
    [
        (_sync, inspect.isfunction),
        (_async, inspect.iscoroutinefunction),
        (_gen, inspect.isgeneratorfunction),
        (_agen, inspect.isasyncgenfunction),
    ],
    ids=["function", "coroutine", "generator", "async-generator"],
)
@pytest.mark.parametrize("decorate", [llmmeter.metered, llmmeter.metered(name="step")], ids=["bare", "named"])
def test_decorated_function_keeps_name_docstring_signature_and_kind(
    fn: Any, kind_check: Any, decorate: Any
) -> None:
    wrapped = decorate(fn)

    assert wrapped.__name__ == fn.__name__
    assert wrapped.__qualname__ == fn.__qualname__
    assert wrapped.__doc__ == fn.__doc__
    assert wrapped.__module__ == fn.__module__
    assert wrapped.__wrapped__ is fn
    assert inspect.signature(wrapped) == inspect.signature(fn)
    assert kind_check(wrapped)


def test_decorating_a_method_measures_each_call_with_self_passed_through(telemetry: Any) -> None:
    class Summarizer:
        def __init__(self, tokens: int) -> None:
            self.tokens = tokens

        @llmmeter.metered(model=MODEL, provider="openai")
        def summarize(self) -> ChatCompletion:
            return chat_completion(self.tokens, 1)

    Summarizer(11).summarize()
    Summarizer(22).summarize()

    assert [r.usage.input_tokens for r in telemetry.records if r.usage] == [11, 22]


# --- async functions ----------------------------------------------------------------------------


async def test_async_llm_function_returns_its_response_and_records_usage(telemetry: Any) -> None:
    response = chat_completion(300, 40)

    @llmmeter.metered(model=MODEL, provider="openai")
    async def summarize() -> ChatCompletion:
        await asyncio.sleep(0)
        return response

    assert await summarize() is response

    [record] = telemetry.records
    assert record.kind is CallKind.LLM
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (300, 40)
    assert record.outcome is Outcome.OK


async def test_async_function_exception_propagates_unchanged_and_is_recorded(telemetry: Any) -> None:
    raised = QuotaExceeded("slow down")

    @llmmeter.metered(model=MODEL, provider="openai")
    async def over_quota() -> None:
        await asyncio.sleep(0)
        raise raised

    with pytest.raises(QuotaExceeded) as caught:
        await over_quota()

    assert caught.value is raised
    assert traceback.extract_tb(caught.value.__traceback__)[-1].name == "over_quota"
    [record] = telemetry.records
    assert record.outcome is Outcome.ERROR
    assert record.error_type == f"{QuotaExceeded.__module__}.QuotaExceeded"


async def test_cancelled_async_call_is_recorded_as_aborted_and_the_cancellation_propagates(
    telemetry: Any,
) -> None:
    started = asyncio.Event()

    @llmmeter.metered(model=MODEL, provider="openai")
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [record] = telemetry.records
    assert record.outcome is Outcome.ABORTED


# --- generators ---------------------------------------------------------------------------------


def test_generator_yields_the_same_items_in_order_and_is_recorded_as_a_stream(telemetry: Any) -> None:
    items = [object(), object(), object()]

    @llmmeter.metered(model=MODEL, provider="openai")
    def stream() -> Iterator[object]:
        yield from items

    received = list(stream())

    assert len(received) == 3 and all(got is sent for got, sent in zip(received, items, strict=True))
    [record] = telemetry.records
    assert record.streaming is True
    assert record.timings.chunks == 3
    assert record.timings.ttfc_s is not None
    assert record.timings.duration_s is not None and record.timings.duration_s >= record.timings.ttfc_s
    assert record.outcome is Outcome.OK


def test_generator_of_openai_chunks_records_usage_from_its_usage_chunk(telemetry: Any) -> None:
    chunks = [
        content_chunk("", role="assistant"),
        content_chunk("Hel"),
        content_chunk("lo"),
        usage_chunk(9, 2),
    ]

    @llmmeter.metered(model=MODEL, provider="openai")
    def stream() -> Iterator[ChatCompletionChunk]:
        yield from chunks

    assert list(stream()) == chunks

    [record] = telemetry.records
    assert record.kind is CallKind.LLM
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (9, 2)
    assert record.response_model == RESPONSE_MODEL
    assert record.timings.chunks == 4
    assert record.timings.ttft_s is not None
    assert record.timings.tpot_s is not None


def test_generator_ttft_skips_role_only_chunks_and_tpot_ignores_the_trailing_usage_chunk(
    telemetry: Any,
) -> None:
    # Timeline: role-only chunk at 0; 50 ms later the first text; 50 ms later the second text;
    # 300 ms later the usage chunk. ARCHITECTURE.md section 2: TTFT is the first chunk carrying
    # output, TPOT spans first to last *output* chunk over (output_tokens - 1).
    @llmmeter.metered(model=MODEL, provider="openai")
    def stream() -> Iterator[ChatCompletionChunk]:
        yield content_chunk("", role="assistant")
        time.sleep(0.05)
        yield content_chunk("Hel")
        time.sleep(0.05)
        yield content_chunk("lo")
        time.sleep(0.3)
        yield usage_chunk(9, 2)

    list(stream())

    [record] = telemetry.records
    timings = record.timings
    assert timings.ttfc_s is not None and timings.ttft_s is not None and timings.tpot_s is not None
    assert timings.ttft_s >= 0.05 > timings.ttfc_s
    assert 0.05 <= timings.tpot_s < 0.3


def test_generator_of_text_counts_the_first_non_empty_string_as_the_first_token(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def stream() -> Iterator[str]:
        yield ""
        time.sleep(0.05)
        yield "Hello"
        yield " world"

    assert list(stream()) == ["", "Hello", " world"]

    [record] = telemetry.records
    assert record.timings.ttfc_s is not None and record.timings.ttft_s is not None
    assert record.timings.ttft_s >= 0.05 > record.timings.ttfc_s
    assert record.usage is None  # nothing reported: no made-up counts


def test_generator_return_value_reaches_yield_from(telemetry: Any) -> None:
    @llmmeter.metered(name="collect")
    def collect() -> Iterator[int]:
        yield 1
        yield 2
        return "done"

    def consumer() -> Iterator[int]:
        outcome = yield from collect()
        assert outcome == "done"
        yield 3

    assert list(consumer()) == [1, 2, 3]


def test_generator_exception_propagates_unchanged_after_the_items_before_it(telemetry: Any) -> None:
    raised = QuotaExceeded("cut mid-stream")

    @llmmeter.metered(model=MODEL, provider="openai")
    def stream() -> Iterator[str]:
        yield "partial"
        raise raised

    received: list[str] = []
    with pytest.raises(QuotaExceeded) as caught:
        for item in stream():
            received.append(item)

    assert received == ["partial"]
    assert caught.value is raised
    assert traceback.extract_tb(caught.value.__traceback__)[-1].name == "stream"
    [record] = telemetry.records
    assert record.outcome is Outcome.ERROR
    assert record.error_type == f"{QuotaExceeded.__module__}.QuotaExceeded"


def test_generator_closed_early_by_its_consumer_is_aborted_and_its_cleanup_runs(telemetry: Any) -> None:
    cleaned_up: list[bool] = []

    @llmmeter.metered(model=MODEL, provider="openai")
    def stream() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            cleaned_up.append(True)

    generator = stream()
    assert [next(generator), next(generator)] == [0, 1]
    generator.close()

    assert cleaned_up == [True]
    [record] = telemetry.records
    assert record.outcome is Outcome.ABORTED
    assert record.timings.chunks == 2


async def test_async_generator_yields_the_same_items_and_records_usage(telemetry: Any) -> None:
    chunks = [content_chunk("Hi"), content_chunk("!"), usage_chunk(5, 2)]

    @llmmeter.metered(model=MODEL, provider="openai")
    async def stream() -> AsyncIterator[ChatCompletionChunk]:
        for chunk in chunks:
            await asyncio.sleep(0)
            yield chunk

    received = [chunk async for chunk in stream()]

    assert received == chunks
    [record] = telemetry.records
    assert record.streaming is True
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (5, 2)
    assert record.timings.chunks == 3
    assert record.outcome is Outcome.OK


async def test_async_generator_exception_propagates_unchanged_and_is_recorded(telemetry: Any) -> None:
    raised = QuotaExceeded("connection reset")

    @llmmeter.metered(model=MODEL, provider="openai")
    async def stream() -> AsyncIterator[str]:
        yield "partial"
        raise raised

    received: list[str] = []
    with pytest.raises(QuotaExceeded) as caught:
        async for item in stream():
            received.append(item)

    assert received == ["partial"]
    assert caught.value is raised
    [record] = telemetry.records
    assert record.outcome is Outcome.ERROR


def test_generator_send_reaches_the_generator_and_returns_what_it_yields_back(telemetry: Any) -> None:
    @llmmeter.metered(name="accumulate")
    def accumulate() -> Generator[int, int, None]:
        total = 0
        while True:
            total += yield total

    generator = accumulate()
    assert next(generator) == 0
    assert generator.send(5) == 5
    assert generator.send(2) == 7
    generator.close()

    [record] = telemetry.records
    assert record.outcome is Outcome.ABORTED
    assert record.timings.chunks == 3


async def test_async_generator_asend_reaches_the_generator_and_returns_what_it_yields_back(
    telemetry: Any,
) -> None:
    @llmmeter.metered(name="accumulate")
    async def accumulate() -> AsyncGenerator[int, int]:
        total = 0
        while True:
            total += yield total

    generator = accumulate()
    assert await generator.__anext__() == 0
    assert await generator.asend(5) == 5
    assert await generator.asend(2) == 7
    await generator.aclose()

    [record] = telemetry.records
    assert record.outcome is Outcome.ABORTED
    assert record.timings.chunks == 3


def test_generator_span_is_current_while_its_code_runs_not_while_the_caller_handles_an_item(
    telemetry: Any,
) -> None:
    inside: list[str] = []
    outside: list[str] = []

    @llmmeter.metered(name="produce")
    def produce() -> Iterator[int]:
        for n in range(2):
            inside.append(format(trace.get_current_span().get_span_context().span_id, "016x"))
            yield n

    for _ in produce():
        outside.append(format(trace.get_current_span().get_span_context().span_id, "016x"))

    [record] = telemetry.records
    assert inside == [record.span_id, record.span_id]
    assert record.span_id not in outside


async def test_async_generator_span_is_current_while_its_code_runs_not_while_the_caller_handles_an_item(
    telemetry: Any,
) -> None:
    inside: list[str] = []
    outside: list[str] = []

    @llmmeter.metered(name="produce")
    async def produce() -> AsyncIterator[int]:
        for n in range(2):
            inside.append(format(trace.get_current_span().get_span_context().span_id, "016x"))
            yield n

    async for _ in produce():
        outside.append(format(trace.get_current_span().get_span_context().span_id, "016x"))

    [record] = telemetry.records
    assert inside == [record.span_id, record.span_id]
    assert record.span_id not in outside


# --- nesting and roll-up ------------------------------------------------------------------------


def test_step_carries_the_rolled_up_tokens_of_the_calls_inside_it(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm(input_tokens: int, output_tokens: int) -> ChatCompletion:
        return chat_completion(input_tokens, output_tokens, cached_tokens=input_tokens // 2)

    @llmmeter.metered(name="answer-question")
    def answer() -> str:
        llm(100, 10)
        llm(200, 20)
        return "42"

    assert answer() == "42"

    step = only(telemetry.records, "answer-question")
    assert step.kind is CallKind.STEP
    assert step.usage is None  # a step's own usage stays empty: its tokens are its children's
    assert step.rollup_calls == 2
    assert step.rollup_usage is not None
    assert (step.rollup_usage.input_tokens, step.rollup_usage.output_tokens) == (300, 30)
    assert step.rollup_usage.cache_read_input_tokens == 150

    spans = {span.name: span for span in telemetry.finished_spans()}
    step_span = spans["answer-question"]
    assert step_span.attributes["llmmeter.rollup.calls"] == 2
    assert step_span.attributes["llmmeter.rollup.gen_ai.usage.input_tokens"] == 300
    assert step_span.attributes["llmmeter.rollup.gen_ai.usage.output_tokens"] == 30
    assert step_span.attributes["llmmeter.rollup.gen_ai.usage.cache_read.input_tokens"] == 150
    for span in telemetry.finished_spans():
        if span is not step_span:
            assert span.parent is not None and span.parent.span_id == step_span.context.span_id


def test_roll_up_works_three_levels_deep_and_each_step_sums_only_its_own_subtree(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm(input_tokens: int) -> ChatCompletion:
        return chat_completion(input_tokens, 1)

    @llmmeter.metered(name="tool")
    def tool() -> None:
        llm(1)
        llm(2)

    @llmmeter.metered(name="agent")
    def agent() -> None:
        tool()
        llm(4)

    @llmmeter.metered(name="workflow")
    def workflow() -> None:
        agent()
        llm(8)

    workflow()

    def calls_and_input_tokens(name: str) -> tuple[int, int | None]:
        record = only(telemetry.records, name)
        usage = record.rollup_usage
        return record.rollup_calls, usage.input_tokens if usage else None

    assert {name: calls_and_input_tokens(name) for name in ("tool", "agent", "workflow")} == {
        "tool": (2, 3),
        "agent": (3, 7),
        "workflow": (4, 15),
    }
    workflow_record = only(telemetry.records, "workflow")
    assert workflow_record.rollup_usage is not None and workflow_record.rollup_usage.output_tokens == 4


def test_calls_made_in_a_thread_pool_inside_a_step_roll_up_when_the_context_is_copied(
    telemetry: Any,
) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm(input_tokens: int) -> ChatCompletion:
        time.sleep(0.001)
        return chat_completion(input_tokens, 2)

    @llmmeter.metered(name="fan-out")
    def fan_out() -> list[int]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(contextvars.copy_context().run, llm, n) for n in range(1, 9)]
            return [f.result().usage.prompt_tokens for f in futures]  # type: ignore[union-attr]

    assert fan_out() == list(range(1, 9))

    step = only(telemetry.records, "fan-out")
    assert step.rollup_calls == 8
    assert step.rollup_usage is not None
    assert (step.rollup_usage.input_tokens, step.rollup_usage.output_tokens) == (36, 16)
    step_span = next(s for s in telemetry.finished_spans() if s.name == "fan-out")
    children = [s for s in telemetry.finished_spans() if s.parent is not None]
    assert len(children) == 8
    assert {s.parent.span_id for s in children if s.parent} == {step_span.context.span_id}


async def test_concurrent_async_calls_inside_an_async_step_roll_up(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    async def llm(input_tokens: int) -> ChatCompletion:
        await asyncio.sleep(0.001)
        return chat_completion(input_tokens, 3)

    @llmmeter.metered(name="gather")
    async def gather() -> None:
        await asyncio.gather(*(llm(n) for n in (10, 20, 30)))

    await gather()

    step = only(telemetry.records, "gather")
    assert step.rollup_calls == 3
    assert step.rollup_usage is not None
    assert (step.rollup_usage.input_tokens, step.rollup_usage.output_tokens) == (60, 9)


def test_generator_step_rolls_up_the_calls_made_while_it_produces_items(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm(input_tokens: int) -> ChatCompletion:
        return chat_completion(input_tokens, 1)

    @llmmeter.metered(name="paginate")
    def paginate() -> Iterator[int]:
        for n in (5, 6):
            yield llm(n).usage.prompt_tokens  # type: ignore[union-attr]

    assert list(paginate()) == [5, 6]

    step = only(telemetry.records, "paginate")
    assert step.kind is CallKind.STEP
    assert step.rollup_calls == 2
    assert step.rollup_usage is not None and step.rollup_usage.input_tokens == 11


@needs_pricing
def test_step_carries_the_rolled_up_cost_of_every_call_inside_it(acme_priced: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm(input_tokens: int, output_tokens: int) -> ChatCompletion:
        return chat_completion(input_tokens, output_tokens)

    @llmmeter.metered(name="inner")
    def inner() -> None:
        llm(1_000, 500)  # 0.001 + 0.001

    @llmmeter.metered(name="outer")
    def outer() -> None:
        inner()
        llm(2_000, 0)  # 0.002

    outer()

    calls = llm_records(acme_priced.records)
    assert [c.cost.amount if c.cost else None for c in calls] == [Decimal("0.002"), Decimal("0.002")]
    assert only(acme_priced.records, "inner").rollup_cost == Decimal("0.002")
    outer_record = only(acme_priced.records, "outer")
    assert outer_record.rollup_cost == Decimal("0.004")
    assert outer_record.rollup_unpriced_calls == 0
    outer_span = next(s for s in acme_priced.finished_spans() if s.name == "outer")
    assert outer_span.attributes["llmmeter.rollup.cost.amount"] == pytest.approx(0.004)


def test_step_counts_inner_calls_that_could_not_be_priced(telemetry: Any) -> None:
    @llmmeter.metered(model="model-nobody-prices", provider="acme")
    def llm() -> ChatCompletion:
        return chat_completion(10, 1)

    @llmmeter.metered(name="step")
    def step() -> None:
        llm()
        llm()

    step()

    record = only(telemetry.records, "step")
    assert record.rollup_calls == 2
    assert record.rollup_unpriced_calls == 2
    assert record.rollup_cost is None  # unknown, not zero


def test_function_declared_as_llm_call_that_calls_metered_llm_functions_becomes_a_step(
    telemetry: Any,
) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def raw_call(input_tokens: int) -> ChatCompletion:
        return chat_completion(input_tokens, 5)

    @llmmeter.metered(model=MODEL, provider="openai", name="retrying-call")
    def with_retry() -> ChatCompletion:
        raw_call(100)  # first attempt, response discarded
        return raw_call(100)  # the returned response's tokens are already counted

    with_retry()

    wrapper = only(telemetry.records, "retrying-call")
    assert wrapper.kind is CallKind.STEP
    assert wrapper.usage is None
    assert wrapper.rollup_calls == 2
    assert wrapper.rollup_usage is not None and wrapper.rollup_usage.input_tokens == 200
    calls = llm_records(telemetry.records)
    assert sum(c.usage.input_tokens for c in calls if c.usage and c.usage.input_tokens) == 200
    assert sum(c.usage.output_tokens for c in calls if c.usage and c.usage.output_tokens) == 10
    wrapper_span = next(s for s in telemetry.finished_spans() if s.attributes.get("llmmeter.step.name"))
    assert "gen_ai.usage.input_tokens" not in wrapper_span.attributes
    input_points = [
        p
        for p in telemetry.metric_points("gen_ai.client.token.usage")
        if p.attributes["gen_ai.token.type"] == "input"
    ]
    assert sum(p.sum for p in input_points) == 200


def test_failing_step_is_recorded_as_an_error_and_still_rolls_up_the_calls_it_finished(
    telemetry: Any,
) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm() -> ChatCompletion:
        return chat_completion(50, 5)

    @llmmeter.metered(name="flaky-step")
    def flaky() -> None:
        llm()
        raise TimeoutError("tool timed out")

    with pytest.raises(TimeoutError):
        flaky()

    step = only(telemetry.records, "flaky-step")
    assert step.outcome is Outcome.ERROR
    assert step.error_type == "TimeoutError"
    assert step.rollup_calls == 1
    assert step.rollup_usage is not None and step.rollup_usage.input_tokens == 50


def test_calls_after_a_step_has_ended_are_not_added_to_it(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm() -> ChatCompletion:
        return chat_completion(7, 1)

    @llmmeter.metered(name="step")
    def step() -> None:
        llm()

    step()
    llm()

    record = only(telemetry.records, "step")
    assert record.rollup_calls == 1
    assert record.rollup_usage is not None and record.rollup_usage.input_tokens == 7


# --- the in-process hook ------------------------------------------------------------------------


@needs_pricing
def test_on_record_receives_every_finished_record_exactly_once_complete_with_cost(
    acme_priced: Any,
) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm() -> ChatCompletion:
        return chat_completion(1_000_000, 0)

    @llmmeter.metered(name="step")
    def step() -> None:
        llm()
        llm()

    step()
    llm()

    records = acme_priced.records
    assert len(records) == 4
    assert len({id(r) for r in records}) == 4
    assert [r.kind for r in records] == [CallKind.LLM, CallKind.LLM, CallKind.STEP, CallKind.LLM]
    for call in llm_records(records):
        assert call.cost_status is CostStatus.PRICED
        assert call.cost is not None and call.cost.amount == Decimal("1.00")
        assert call.timings.duration_s is not None


def test_every_callable_in_an_on_record_list_receives_every_record_once(restore_settings: None) -> None:
    first: list[CallRecord] = []
    second: list[CallRecord] = []
    llmmeter.configure(store=None, pricing=None, on_record=[first.append, second.append])

    @llmmeter.metered(model=MODEL, provider="openai")
    def llm(n: int) -> dict[str, Any]:
        return dict_response(n, 1)

    @llmmeter.metered(name="failing")
    def failing() -> None:
        raise RuntimeError("boom")

    llm(1)
    llm(2)
    with pytest.raises(RuntimeError):
        failing()

    assert llmmeter.flush()  # callbacks run on llmmeter's pipeline thread
    assert len(first) == 3
    assert [id(r) for r in first] == [id(r) for r in second]
    assert [r.usage.input_tokens if r.usage else None for r in first] == [1, 2, None]
    assert first[2].outcome is Outcome.ERROR
    assert all(r.cost_status is CostStatus.DISABLED for r in first[:2])


def test_on_record_rejects_a_list_item_that_is_not_callable(restore_settings: None) -> None:
    with pytest.raises(TypeError, match="not callable"):
        llmmeter.configure(store=None, on_record=[print, "not a function"])  # type: ignore[list-item]


def test_disabled_llmmeter_calls_straight_through_without_records(restore_settings: None) -> None:
    records: list[CallRecord] = []
    llmmeter.configure(store=None, pricing=None, on_record=records.append, enabled=False)

    @llmmeter.metered(model=MODEL, provider="openai")
    def llm() -> str:
        return "result"

    assert llm() == "result"
    assert records == []


def test_functools_partial_of_a_metered_function_is_measured(telemetry: Any) -> None:
    @llmmeter.metered(model=MODEL, provider="openai")
    def llm(input_tokens: int, output_tokens: int) -> ChatCompletion:
        return chat_completion(input_tokens, output_tokens)

    short_answer = functools.partial(llm, output_tokens=3)
    short_answer(12)

    [record] = telemetry.records
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (12, 3)
