"""Streams through an instrumented ``openai`` client: measured, untouched, finished exactly once.

Every test drives the real ``openai`` package against a real local HTTP server on 127.0.0.1
(:class:`llmmeter.testing.LocalOpenAIServer`) that paces its SSE chunks.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import weakref
from collections.abc import Iterator

import openai
import pytest

import llmmeter
from llmmeter import Outcome, UsageSource
from llmmeter.instrument.sdk import body_change_retries
from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

from .conftest import Telemetry

MESSAGES = [{"role": "user", "content": "Tell me a story about a meter"}]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(
        pacing=Pacing(ttft_ms=5, itl_ms=1, tokens=6), served_model="gpt-4o-mini-2024-07-18"
    ) as srv:
        yield srv


@pytest.fixture
def client(server: LocalOpenAIServer, telemetry: Telemetry) -> openai.OpenAI:
    return llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0))


@pytest.fixture
def async_client(server: LocalOpenAIServer, telemetry: Telemetry) -> openai.AsyncOpenAI:
    return llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0))


def _stream(client: openai.OpenAI, **kwargs: object) -> openai.Stream[object]:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def test_stream_is_still_an_openai_stream_and_yields_the_same_chunks(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    plain = openai.OpenAI(base_url=server.base_url, api_key="test")
    expected = [
        c.choices[0].delta.content
        for c in _stream(plain, stream_options={"include_usage": True})
        if c.choices
    ]
    stream = _stream(client, stream_options={"include_usage": True})
    assert isinstance(stream, openai.Stream)
    assert stream.response.status_code == 200
    got = [c.choices[0].delta.content for c in stream if c.choices]
    assert got == expected
    assert not [name for name in vars(stream.__wrapped__) if "llmmeter" in name or name.startswith("_self_")]


def test_exhausted_stream_gives_one_ok_record_with_provider_usage_and_timings(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    for _ in _stream(client, stream_options={"include_usage": True}):
        pass
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.streaming is True
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
    assert record.usage.output_tokens == 6
    assert record.response_model == "gpt-4o-mini-2024-07-18"
    assert record.finish_reasons == ("stop",)
    timings = record.timings
    assert timings.ttfc_s is not None and timings.ttft_s is not None and timings.tpot_s is not None
    assert 0 < timings.ttfc_s <= timings.ttft_s <= timings.duration_s  # type: ignore[operator]
    assert timings.chunks == 1 + 6 + 1 + 1  # role, 6 tokens, finish, usage


def test_usage_chunk_llmmeter_asked_for_is_hidden_from_the_caller(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    chunks = list(_stream(client))
    assert all(chunk.choices for chunk in chunks), "caller code indexing choices[0] must keep working"
    assert server.last_request().body["stream_options"] == {"include_usage": True}
    (record,) = telemetry.records
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
    assert record.usage.output_tokens == 6


def test_an_unknown_server_is_asked_for_stream_usage_too(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    list(_stream(client))
    assert server.last_request().body["stream_options"] == {"include_usage": True}
    (record,) = telemetry.records
    assert record.provider == "openai_compatible"
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER


def test_the_callers_own_include_usage_choice_is_kept(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    chunks = list(_stream(client, stream_options={"include_usage": False}))
    assert server.last_request().body["stream_options"] == {"include_usage": False}
    assert all(chunk.choices for chunk in chunks)


def test_nothing_is_added_to_a_stream_when_stream_usage_is_off(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    telemetry.reconfigure(stream_usage=False)
    list(_stream(client))
    assert "stream_options" not in server.last_request().body


def test_stream_without_usage_is_estimated_locally_and_marked(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    telemetry.reconfigure(stream_usage=False)
    list(_stream(client))
    (record,) = telemetry.records
    assert record.usage is not None
    assert record.usage.source is UsageSource.ESTIMATED
    assert record.usage.estimate_method and record.usage.estimate_method.startswith("tiktoken:")
    assert record.usage.output_tokens and record.usage.output_tokens > 0
    assert record.usage.input_tokens and record.usage.input_tokens > 0


def test_for_loop_over_the_call_itself_is_recorded_ok_when_exhausted(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    texts = [c.choices[0].delta.content for c in _stream(client) if c.choices]
    assert texts
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.timings.chunks == len(texts) + 1  # and the usage chunk llmmeter asked for, hidden


def test_next_and_for_share_one_position_like_the_sdk_stream(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    plain = openai.OpenAI(base_url=server.base_url, api_key="test")
    expected = [c.choices[0].delta.content for c in _stream(plain)]
    stream = _stream(client)
    got = [next(stream).choices[0].delta.content]
    got += [c.choices[0].delta.content for c in stream]
    assert got == expected
    with pytest.raises(StopIteration):
        next(stream)
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK


def test_keeping_only_the_iterator_keeps_the_stream_measured(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    iterator = iter(_stream(client))
    gc.collect()  # the proxy is gone; its iterator must not be taken for abandoned
    assert telemetry.records == []
    assert sum(1 for _ in iterator) > 0
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK


def test_break_then_drop_is_recorded_once_as_abandoned(client: openai.OpenAI, telemetry: Telemetry) -> None:
    stream = _stream(client, stream_options={"include_usage": True})
    for _ in stream:
        break
    del stream
    gc.collect()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABANDONED
    assert record.timings.ttfc_s is not None


def test_stream_never_iterated_keeps_nothing_alive(client: openai.OpenAI, telemetry: Telemetry) -> None:
    stream = _stream(client)
    sdk_stream = weakref.ref(stream.__wrapped__)
    del stream
    gc.collect()
    assert sdk_stream() is None
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABANDONED
    assert record.timings.ttfc_s is None


def test_close_after_partial_read_is_aborted_and_closing_twice_records_once(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = _stream(client, stream_options={"include_usage": True})
    next(stream)
    next(stream)
    stream.close()
    stream.close()
    gc.collect()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED
    assert record.timings.chunks == 2


def test_with_block_gives_the_proxy_and_finishes_on_exit(client: openai.OpenAI, telemetry: Telemetry) -> None:
    stream = _stream(client, stream_options={"include_usage": True})
    with stream as entered:
        assert entered is stream
        for _ in entered:
            pass
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK


def test_break_inside_with_is_aborted(client: openai.OpenAI, telemetry: Telemetry) -> None:
    with _stream(client, stream_options={"include_usage": True}) as stream:
        for _ in stream:
            break
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


def test_user_exception_inside_with_propagates_unchanged_and_is_recorded(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    error = ValueError("user code failed")
    with pytest.raises(ValueError) as caught, _stream(client) as stream:
        next(stream)
        raise error
    assert caught.value is error
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR
    assert record.error_type == "ValueError"


def test_server_dropping_the_stream_midway_raises_the_sdk_error_once(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = _stream(client, extra_headers=pacing_headers(fail_after=3))
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    plain_error_type = type(caught.value)
    gc.collect()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR
    assert record.error_type == f"openai.{plain_error_type.__name__}"
    assert record.timings.chunks == 3


def test_http_error_propagates_as_the_same_openai_exception(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _stream(client, extra_headers=pacing_headers(error_status=400))
    assert caught.value.status_code == 400
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR
    assert record.error_type == "openai.BadRequestError"
    assert record.usage is None


def test_raw_response_stream_keeps_headers_and_parse_returns_the_measured_stream(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    stream = raw.parse()
    assert raw.parse() is stream
    assert isinstance(stream, openai.Stream)
    assert [c for c in stream]
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.usage is not None and record.usage.output_tokens == 6


def test_streaming_response_context_manager_is_measured(client: openai.OpenAI, telemetry: Telemetry) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        assert response.status_code == 200
        completion = response.parse()
    assert completion.choices[0].message.content
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.usage is not None and record.usage.output_tokens == 6


def test_chat_stream_helper_is_measured(client: openai.OpenAI, telemetry: Telemetry) -> None:
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.usage is not None and record.usage.output_tokens == 6
    assert record.timings.ttft_s is not None


def test_responses_stream_ttft_is_the_first_delta_event(client: openai.OpenAI, telemetry: Telemetry) -> None:
    events = list(client.responses.create(model="gpt-4o-mini", input="Tell me a story", stream=True))
    first_delta = next(i for i, e in enumerate(events) if e.type.endswith(".delta"))
    assert first_delta > 0
    (record,) = telemetry.records
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
    assert record.timings.ttfc_s is not None and record.timings.ttft_s is not None
    assert record.timings.ttft_s > record.timings.ttfc_s


def test_legacy_completions_stream_is_measured(client: openai.OpenAI, telemetry: Telemetry) -> None:
    list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    (record,) = telemetry.records
    assert record.operation == "text_completion"
    assert record.usage is not None and record.usage.output_tokens == 6
    assert record.timings.ttft_s is not None


async def test_async_stream_exhausted(async_client: openai.AsyncOpenAI, telemetry: Telemetry) -> None:
    stream = await async_client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert isinstance(stream, openai.AsyncStream)
    chunks = [chunk async for chunk in stream]
    assert chunks
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.usage is not None and record.usage.output_tokens == 6
    assert record.timings.ttft_s is not None


async def test_async_anext_and_async_for_share_one_position(
    async_client: openai.AsyncOpenAI, telemetry: Telemetry
) -> None:
    stream = await async_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    first = await stream.__anext__()
    rest = [chunk async for chunk in stream]
    assert first.choices and rest
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.timings.chunks == 1 + len(rest) + 1  # and the hidden usage chunk


async def test_async_break_then_drop_is_recorded_once_as_abandoned(
    async_client: openai.AsyncOpenAI, telemetry: Telemetry
) -> None:
    stream = await async_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    async for _ in stream:
        break
    del stream
    for _ in range(3):  # the event loop closes an abandoned async generator in a task of its own
        gc.collect()
        await asyncio.sleep(0)
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABANDONED


async def test_async_break_inside_async_with_is_aborted(
    async_client: openai.AsyncOpenAI, telemetry: Telemetry
) -> None:
    stream = await async_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    async with stream:
        async for _ in stream:
            break
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


async def test_cancelled_task_is_recorded_as_aborted_and_cancellation_propagates(
    async_client: openai.AsyncOpenAI, telemetry: Telemetry
) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        stream = await async_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers=pacing_headers(tokens=50, itl_ms=50),
        )
        async for _ in stream:
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


def test_ttft_and_tpot_match_the_server_pacing(server: LocalOpenAIServer, telemetry: Telemetry) -> None:
    """Generous margins here (shared, noisy machine); benchmarks/ttft_accuracy.py measures exactly."""
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    pacing = pacing_headers(ttft_ms=60, itl_ms=8, tokens=12)
    for _ in range(5):
        list(_stream(client, stream_options={"include_usage": True}, extra_headers=pacing))
    ttft = statistics.median(r.timings.ttft_s for r in telemetry.records)  # type: ignore[type-var]
    tpot = statistics.median(r.timings.tpot_s for r in telemetry.records)  # type: ignore[type-var]
    assert 0.060 <= ttft < 0.090
    assert 0.008 <= tpot < 0.014


def test_ttft_is_what_a_stopwatch_on_the_uninstrumented_client_reads(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    """TTFT starts before the request is built and sent, as the user's own stopwatch would.

    The pacing clock starts later, when the server has the request; the request's delivery is
    part of what the user waits for. Generous margin: benchmarks/ttft_accuracy.py measures exactly.
    """
    plain = openai.OpenAI(base_url=server.base_url, api_key="test")
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="test"))
    pacing = pacing_headers(ttft_ms=50, itl_ms=2, tokens=4)
    stopwatch: list[float] = []
    for _ in range(5):
        start, first = time.perf_counter(), None
        for chunk in _stream(plain, extra_headers=pacing):
            if first is None and chunk.choices and chunk.choices[0].delta.content:  # type: ignore[attr-defined]
                first = time.perf_counter()
        assert first is not None
        stopwatch.append(first - start)
        list(_stream(client, extra_headers=pacing))
    measured = statistics.median(r.timings.ttft_s for r in telemetry.records)  # type: ignore[type-var]
    assert abs(measured - statistics.median(stopwatch)) < 0.020  # 5 samples each on a shared machine
    assert all(r.timings.ttft_s >= 0.050 for r in telemetry.records)  # type: ignore[operator]


# --- a server that refuses stream_options -----------------------------------------------------------
@pytest.fixture
def strict_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=4), rejects_stream_options=True) as srv:
        yield srv


def test_a_server_refusing_stream_options_gets_the_callers_own_request_once_more(
    strict_server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=strict_server.base_url, api_key="t", max_retries=0))
    retries_before = body_change_retries()
    chunks = list(_stream(client))
    assert [c.choices[0].delta.content for c in chunks if c.choices]  # the caller got its stream
    first, second = (request.body for request in strict_server.requests)
    assert first["stream_options"] == {"include_usage": True} and "stream_options" not in second
    assert body_change_retries() == retries_before + 1
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.usage is not None and record.usage.source is UsageSource.ESTIMATED


async def test_a_refusing_server_is_never_asked_again_sync_or_async(
    strict_server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(
        openai.AsyncOpenAI(base_url=strict_server.base_url, api_key="t", max_retries=0)
    )
    for _ in range(3):
        async for _chunk in await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ):
            pass
    bodies = [request.body for request in strict_server.requests]
    assert len(bodies) == 4  # the refused request, then three of the caller's own
    assert ["stream_options" in body for body in bodies] == [True, False, False, False]
    assert [record.outcome for record in telemetry.records] == [Outcome.OK] * 3


def test_a_4xx_that_is_not_about_stream_options_reaches_the_caller_unchanged(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    requests_before = len(server.requests)
    with pytest.raises(openai.NotFoundError):
        _stream(client, extra_headers=pacing_headers(error_status=404))
    assert len(server.requests) == requests_before + 1  # not sent again
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.error_type == "openai.NotFoundError"


def test_the_old_stream_usage_hosts_option_is_accepted_and_ignored_with_a_warning(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry.reconfigure(stream_usage_hosts=["127.0.0.1"])
    list(_stream(client))
    assert server.last_request().body["stream_options"] == {"include_usage": True}
    assert "stream_usage_hosts=...) is no longer needed" in caplog.text
