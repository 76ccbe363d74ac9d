"""The ``anthropic`` client, measured: real SDK, real recorded Messages API traffic.

Every test drives the real ``anthropic`` package against recordings of api.anthropic.com from
public test suites (``../shared/cassettes`` and ``tests/recordings/anthropic``, sources and
licenses in their READMEs), replayed by vcrpy. Expected numbers are the recordings' own, as the
READMEs list them; costs are worked out by hand from Anthropic's list prices.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

import llmmeter
from llmmeter import CostStatus, Outcome, Usage, UsageSource

from .cassette_support import Replay, anthropic_replay
from .conftest import Telemetry
from .recording_support import index as recordings_index
from .recording_support import interactions as recording_interactions
from .recording_support import request_json, shared_ssl_context, use_recording
from .recording_support import truth as recording_truth

NON_STREAMED = "openinference/test_anthropic_instrumentation_messages.yaml"
STREAMED = "openinference/test_anthropic_instrumentation_messages_streaming.yaml"
CACHING = "openllmetry/test_anthropic_prompt_caching_stream_legacy.yaml"
BETA_GZIP = "logfire/test_sync_messages_beta_stream.yaml"


def _client(*, use_async: bool = False) -> Any:
    cls = anthropic.AsyncAnthropic if use_async else anthropic.Anthropic
    return cls(api_key="sk-ant-test", max_retries=0)


def _kwargs(r: Replay) -> dict[str, Any]:
    return dict(r.body)


@pytest.fixture
def cassettes(tmp_path: Path) -> Any:
    def use(file: str, index: int = 0) -> Any:
        return anthropic_replay(file, index).cassette(tmp_path)

    return use


# --- non-streamed ---------------------------------------------------------------------------------
def test_a_message_is_returned_unchanged_and_recorded_with_its_usage(
    cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(NON_STREAMED)
    with cassettes(NON_STREAMED):
        plain = _client().messages.create(**_kwargs(r))
    with cassettes(NON_STREAMED):
        message = llmmeter.instrument(_client()).messages.create(**_kwargs(r))
    assert type(message) is type(plain)
    assert message.model_dump() == plain.model_dump()
    (record,) = telemetry.records
    assert record.operation == "chat" and record.provider == "anthropic"
    assert record.request_model == record.response_model == "claude-sonnet-4-6"
    assert record.response_id == message.id
    assert record.finish_reasons == ("end_turn",)
    assert record.service_tier == "standard"
    assert record.usage == Usage(
        input_tokens=14,
        output_tokens=11,
        cache_read_input_tokens=0,
        cache_write_input_tokens=0,
        cache_write_1h_input_tokens=0,
    )
    assert record.request_params["gen_ai.request.max_tokens"] == 1024
    assert record.timings.ttft_s is None  # not observable without a stream


def test_a_message_costs_its_list_price(cassettes: Any, telemetry: Telemetry) -> None:
    r = anthropic_replay(NON_STREAMED)
    with cassettes(NON_STREAMED):
        llmmeter.instrument(_client()).messages.create(**_kwargs(r))
    (record,) = telemetry.records
    # claude-sonnet-4-6: $3 / M input, $15 / M output -> 14 * 3 + 11 * 15 = 207 micro-dollars.
    assert record.cost_status is CostStatus.PRICED and record.cost is not None
    assert record.cost.amount == Decimal("0.000207")


async def test_an_async_message_is_recorded_like_a_sync_one(cassettes: Any, telemetry: Telemetry) -> None:
    r = anthropic_replay(NON_STREAMED)
    with cassettes(NON_STREAMED):
        message = await llmmeter.instrument(_client(use_async=True)).messages.create(**_kwargs(r))
    assert isinstance(message, anthropic.types.Message)
    (record,) = telemetry.records
    assert record.usage is not None and record.usage.input_tokens == 14 and record.usage.output_tokens == 11


def test_with_raw_response_keeps_headers_and_parses_to_the_same_message(
    cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(NON_STREAMED)
    with cassettes(NON_STREAMED):
        raw = llmmeter.instrument(_client()).messages.with_raw_response.create(**_kwargs(r))
    assert raw.http_response.status_code == 200
    message = raw.parse()
    assert message is raw.parse()
    (record,) = telemetry.records
    assert record.response_id == message.id and record.usage is not None


# --- streamed -------------------------------------------------------------------------------------
def test_a_stream_is_still_an_anthropic_stream_with_the_same_events(
    cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(STREAMED)
    with cassettes(STREAMED):
        plain = [event.model_dump() for event in _client().messages.create(**_kwargs(r))]
    with cassettes(STREAMED):
        stream = llmmeter.instrument(_client()).messages.create(**_kwargs(r))
        assert isinstance(stream, anthropic.Stream)
        events = [event.model_dump() for event in stream]
    assert events == plain
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK and record.streaming
    assert record.timings.chunks == len(plain) == 8  # 9 recorded events; the SDK drops the ping


def test_a_stream_gets_input_from_message_start_and_output_from_message_delta(
    cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(STREAMED)
    with cassettes(STREAMED):
        for _ in llmmeter.instrument(_client()).messages.create(**_kwargs(r)):
            pass
    (record,) = telemetry.records
    usage = record.usage
    assert usage is not None and usage.source is UsageSource.PROVIDER
    assert (usage.input_tokens, usage.output_tokens) == (21, 13)
    assert record.finish_reasons == ("end_turn",)
    timings = record.timings
    assert timings.ttfc_s is not None and timings.ttft_s is not None
    assert timings.ttfc_s <= timings.ttft_s <= timings.duration_s  # type: ignore[operator]


def test_ttft_is_taken_at_the_first_text_delta_not_at_message_start(
    cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(STREAMED)
    seen: list[str] = []
    with cassettes(STREAMED):
        stream = llmmeter.instrument(_client()).messages.create(**_kwargs(r))
        measurement = stream._self_measurement
        for event in stream:
            seen.append(event.type)
            if event.type == "content_block_delta":
                break
        assert measurement._t_first_output is not None
        assert measurement._t_first_output > measurement._t_first_chunk
        stream.close()
    assert seen[0] == "message_start"


@pytest.mark.parametrize(
    ("index", "usage", "cost"),
    [
        # claude-3-5-sonnet: $3 / M input, $3.75 / M 5-minute cache writes, $15 / M output:
        # 4 * 3 + 1165 * 3.75 + 201 * 15 = 12 + 4368.75 + 3015 = 7395.75 micro-dollars.
        (
            0,
            Usage(
                input_tokens=1169, output_tokens=201, cache_write_input_tokens=1165, cache_read_input_tokens=0
            ),
            "0.00739575",
        ),
        # cache reads at $0.30 / M: 4 * 3 + 1165 * 0.30 + 221 * 15 = 12 + 349.5 + 3315 = 3676.5.
        (
            1,
            Usage(
                input_tokens=1169, output_tokens=221, cache_read_input_tokens=1165, cache_write_input_tokens=0
            ),
            "0.0036765",
        ),
    ],
)
def test_cache_writes_and_reads_are_inside_input_and_priced_at_their_own_rates(
    index: int, usage: Usage, cost: str, cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(CACHING, index)
    with cassettes(CACHING, index):
        for _ in llmmeter.instrument(_client()).messages.create(**_kwargs(r)):
            pass
    (record,) = telemetry.records
    assert record.usage == usage
    assert record.cost is not None and record.cost.amount == Decimal(cost)


async def test_an_async_stream_is_recorded_like_a_sync_one(cassettes: Any, telemetry: Telemetry) -> None:
    r = anthropic_replay(STREAMED)
    with cassettes(STREAMED):
        stream = await llmmeter.instrument(_client(use_async=True)).messages.create(**_kwargs(r))
        assert isinstance(stream, anthropic.AsyncStream)
        events = [event async for event in stream]
    assert len(events) == 8  # the SDK drops the ping
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.usage is not None and (record.usage.input_tokens, record.usage.output_tokens) == (21, 13)
    assert record.timings.ttft_s is not None


def test_the_stream_helper_returns_its_own_manager_and_final_message(
    cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(STREAMED)
    kwargs = {key: value for key, value in _kwargs(r).items() if key != "stream"}
    with cassettes(STREAMED):
        manager = llmmeter.instrument(_client()).messages.stream(**kwargs)
        assert isinstance(manager, anthropic.lib.streaming.MessageStreamManager)
        with manager as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert text and final.usage.output_tokens == 13
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK
    assert record.usage is not None and (record.usage.input_tokens, record.usage.output_tokens) == (21, 13)
    assert record.timings.ttft_s is not None


async def test_the_async_stream_helper_is_measured_too(cassettes: Any, telemetry: Telemetry) -> None:
    r = anthropic_replay(STREAMED)
    kwargs = {key: value for key, value in _kwargs(r).items() if key != "stream"}
    with cassettes(STREAMED):
        async with llmmeter.instrument(_client(use_async=True)).messages.stream(**kwargs) as stream:
            final = await stream.get_final_message()
    assert final.usage.output_tokens == 13
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK and record.usage is not None and record.usage.output_tokens == 13


def test_the_beta_endpoint_with_a_gzipped_stream_is_measured(cassettes: Any, telemetry: Telemetry) -> None:
    r = anthropic_replay(BETA_GZIP)
    with cassettes(BETA_GZIP):
        for _ in llmmeter.instrument(_client()).beta.messages.create(**_kwargs(r)):
            pass
    (record,) = telemetry.records
    assert record.response_model == "claude-sonnet-4-20250514"
    assert record.usage is not None and (record.usage.input_tokens, record.usage.output_tokens) == (19, 9)


# --- finished exactly once -----------------------------------------------------------------------
def _open_stream(cassettes: Any) -> Iterator[Any]:
    r = anthropic_replay(STREAMED)
    with cassettes(STREAMED):
        yield llmmeter.instrument(_client()).messages.create(**_kwargs(r))


def test_a_stream_closed_early_is_aborted_with_the_usage_seen_so_far(
    cassettes: Any, telemetry: Telemetry
) -> None:
    for stream in _open_stream(cassettes):
        next(iter(stream))  # message_start only
        stream.close()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED
    assert record.usage is not None and record.usage.input_tokens == 21


def test_breaking_out_of_a_with_block_finishes_the_stream_aborted(
    cassettes: Any, telemetry: Telemetry
) -> None:
    for stream in _open_stream(cassettes):
        with stream:
            for _event in stream:
                break
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


def test_a_dropped_stream_is_recorded_abandoned(cassettes: Any, telemetry: Telemetry) -> None:
    for stream in _open_stream(cassettes):
        next(iter(stream))
        del stream
        gc.collect()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABANDONED


async def test_a_cancelled_task_reading_a_stream_is_recorded_aborted(
    cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(STREAMED)
    started = asyncio.Event()

    async def read(stream: Any) -> None:
        async for _event in stream:
            started.set()
            await asyncio.sleep(10)

    with cassettes(STREAMED):
        stream = await llmmeter.instrument(_client(use_async=True)).messages.create(**_kwargs(r))
        task = asyncio.create_task(read(stream))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.close()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED


def test_an_api_error_reaches_the_caller_unchanged_and_is_recorded(telemetry: Telemetry) -> None:
    from llmmeter.testing import LocalOpenAIServer

    with LocalOpenAIServer() as server:  # answers 404 to /v1/messages: a real HTTP error
        client = llmmeter.instrument(
            anthropic.Anthropic(base_url=server.base_url.removesuffix("/v1"), api_key="t", max_retries=0)
        )
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.error_type == "anthropic.NotFoundError"
    assert record.usage is None and record.cost_status is CostStatus.NO_USAGE


# --- process-wide and undo ------------------------------------------------------------------------
def test_instrument_anthropic_measures_every_client_until_undone(
    cassettes: Any, telemetry: Telemetry
) -> None:
    r = anthropic_replay(NON_STREAMED)
    llmmeter.instrument_anthropic()
    try:
        with cassettes(NON_STREAMED):
            _client().messages.create(**_kwargs(r))
    finally:
        llmmeter.uninstrument_anthropic()
    with cassettes(NON_STREAMED):
        _client().messages.create(**_kwargs(r))
    assert len(telemetry.records) == 1


def test_uninstrument_gives_back_an_unmeasured_client(cassettes: Any, telemetry: Telemetry) -> None:
    r = anthropic_replay(NON_STREAMED)
    client = llmmeter.uninstrument(llmmeter.instrument(_client()))
    with cassettes(NON_STREAMED):
        client.messages.create(**_kwargs(r))
    assert telemetry.records == []


# --- every recorded Anthropic call of tests/recordings -------------------------------------------
def _recorded_client(*, use_async: bool = False) -> Any:
    if use_async:
        http: Any = anthropic.DefaultAsyncHttpxClient(verify=shared_ssl_context())
        return llmmeter.instrument(
            anthropic.AsyncAnthropic(api_key="sk-ant-t", max_retries=0, http_client=http)
        )
    http = anthropic.DefaultHttpxClient(verify=shared_ssl_context())
    return llmmeter.instrument(anthropic.Anthropic(api_key="sk-ant-t", max_retries=0, http_client=http))


def _recorded_calls(stream: bool) -> list[Any]:
    return [
        pytest.param(entry["file"], position, id=f"{entry['file'].split('/')[-1]}#{position}")
        for entry in recordings_index()
        if entry["file"].startswith("anthropic/")
        for position, interaction in enumerate(entry["interactions"])
        if interaction["status"] == 200 and interaction["request_stream"] is stream
    ]


def _normalized(reported: dict[str, Any]) -> Usage:
    """Anthropic's usage as llmmeter's contract states it, written out from the recorded JSON."""
    writes = reported.get("cache_creation_input_tokens")
    reads = reported.get("cache_read_input_tokens")
    one_hour = (reported.get("cache_creation") or {}).get("ephemeral_1h_input_tokens")
    return Usage(
        input_tokens=reported["input_tokens"] + (writes or 0) + (reads or 0),
        output_tokens=reported["output_tokens"],
        cache_read_input_tokens=reads,
        cache_write_input_tokens=writes,
        cache_write_1h_input_tokens=one_hour,
    )


def _recorded_messages(client: Any, file: str, position: int) -> Any:
    uri = recording_interactions(file)[position]["request"]["uri"]
    return client.beta.messages if "beta=true" in uri else client.messages


@pytest.mark.parametrize(("file", "position"), _recorded_calls(stream=True))
def test_every_recorded_stream_gives_its_final_usage_and_a_ttft_at_its_first_output(
    file: str, position: int, telemetry: Telemetry
) -> None:
    expected = recording_truth(file)["interactions"][position]
    with use_recording(file, position):
        stream = _recorded_messages(_recorded_client(), file, position).create(**request_json(file, position))
        for _ in stream:
            pass
    (record,) = telemetry.records
    assert record.usage == _normalized(expected["final_usage"])
    assert record.finish_reasons == (expected["stop_reason"],)
    assert record.timings.ttft_s is not None and record.timings.ttfc_s is not None
    assert record.timings.ttft_s >= record.timings.ttfc_s


@pytest.mark.parametrize(("file", "position"), _recorded_calls(stream=False))
async def test_every_recorded_message_gives_its_usage_sync_and_async(
    file: str, position: int, telemetry: Telemetry
) -> None:
    expected = _normalized(recording_truth(file)["interactions"][position]["usage"])
    body = request_json(file, position)
    with use_recording(file, position):
        _recorded_messages(_recorded_client(), file, position).create(**body)
    with use_recording(file, position):
        await _recorded_messages(_recorded_client(use_async=True), file, position).create(**body)
    assert [record.usage for record in telemetry.records] == [expected, expected]


def test_one_hour_cache_writes_are_priced_at_their_own_rate(telemetry: Telemetry) -> None:
    file = "anthropic/pydantic-ai__test_anthropic_cache_earlier_breakpoint_raised_to_later_longer_ttl.yaml"
    with use_recording(file, 0):
        for _ in _recorded_client().beta.messages.create(**request_json(file, 0)):
            pass
    (record,) = telemetry.records
    # claude-sonnet-4-6: $3 / M input, $6 / M one-hour cache writes, $15 / M output:
    # 13 * 3 + 3913 * 6 + 4 * 15 = 39 + 23478 + 60 = 23577 micro-dollars.
    assert record.cost is not None and record.cost.amount == Decimal("0.023577")


def test_cache_reads_and_five_minute_writes_in_one_message_are_priced_apart(telemetry: Telemetry) -> None:
    file = "anthropic/pydantic-ai__test_anthropic_cache_real_api.yaml"
    with use_recording(file, 1):
        _recorded_client().messages.create(**request_json(file, 1))
    (record,) = telemetry.records
    # claude-sonnet-4-5: $3 / M input, $0.30 / M cache reads, $3.75 / M 5-minute writes, $15 / M
    # output: 3 * 3 + 1111 * 0.30 + 418 * 3.75 + 33 * 15 = 9 + 333.3 + 1567.5 + 495 = 2404.8.
    assert record.cost is not None and record.cost.amount == Decimal("0.0024048")


def test_ttft_of_a_tool_call_stream_is_taken_at_its_first_delta(telemetry: Telemetry) -> None:
    file = "anthropic/openllmetry__test_anthropic_tools_streaming_legacy.yaml"
    with use_recording(file, 0):
        stream = _recorded_client().messages.create(**request_json(file, 0))
        types = [event.type for event in stream]
    (record,) = telemetry.records
    assert types.index("content_block_delta") == 2  # message_start, content_block_start first
    assert record.timings.ttft_s is not None and record.timings.ttft_s > record.timings.ttfc_s  # type: ignore[operator]


def test_a_stream_helper_that_fails_with_a_404_reaches_the_caller_and_is_recorded(
    telemetry: Telemetry,
) -> None:
    file = "anthropic/opentelemetry-python-contrib__test_sync_messages_stream_api_error.yaml"
    body = {key: value for key, value in request_json(file, 0).items() if key != "stream"}
    client = _recorded_client()
    with (
        use_recording(file, 0),
        pytest.raises(anthropic.NotFoundError),
        client.messages.stream(**body) as stream,
    ):
        stream.get_final_message()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.error_type == "anthropic.NotFoundError"
    assert record.request_model == "invalid-model-name" and record.usage is None
