"""A real vLLM server, measured through the real ``openai`` client (``provider="vllm"``).

The server (see ``conftest.py``) runs with ``--enable-per-request-metrics`` and
``--enable-prompt-tokens-details``. What llmmeter records is checked against what vLLM itself
says: the response's ``usage`` and the ``vllm:prompt_tokens_total`` /
``vllm:generation_tokens_total`` counters of its ``/metrics`` endpoint.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import openai
import pytest

import llmmeter
from llmmeter.record import CallRecord, Outcome, UsageSource

from ..conftest import Telemetry
from .conftest import MAX_MODEL_LEN, SERVED_MODEL, VllmServer

pytestmark = pytest.mark.vllm

MESSAGES = [{"role": "system", "content": "You are a test model."}, {"role": "user", "content": "Say hello."}]
CONTINUOUS = {"include_usage": True, "continuous_usage_stats": True}


@pytest.fixture
def client(vllm_server: VllmServer, telemetry: Telemetry) -> openai.OpenAI:
    plain = openai.OpenAI(base_url=vllm_server.base_url, api_key="EMPTY", max_retries=0, timeout=120)
    return llmmeter.instrument(plain, provider="vllm")


def only_record(telemetry: Telemetry) -> CallRecord:
    (record,) = telemetry.records
    return record


def long_prompt() -> str:
    """About 330 tokens, unique per call so that no earlier test warmed the prefix cache."""
    return f"Summarise ({uuid.uuid4().hex}): " + " ".join(f"item{i}" for i in range(120))


# --- chat and completions ---------------------------------------------------------------------------
def test_chat_records_the_servers_own_usage(client: openai.OpenAI, telemetry: Telemetry) -> None:
    response = client.chat.completions.create(
        model=SERVED_MODEL, messages=MESSAGES, max_tokens=8, temperature=0
    )
    record = only_record(telemetry)
    assert response.usage is not None
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
    assert (record.usage.input_tokens, record.usage.output_tokens) == (
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
    )
    assert record.usage.output_tokens == 8  # random weights: the EOS token practically never comes
    assert (record.provider, record.request_model, record.response_model) == (
        "vllm",
        SERVED_MODEL,
        SERVED_MODEL,
    )
    assert record.server_address == "127.0.0.1" and record.outcome is Outcome.OK
    assert record.response_id == response.id


def test_streamed_chat_with_continuous_usage_keeps_the_final_totals(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=SERVED_MODEL,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options=CONTINUOUS,
        )
    )
    running = [chunk.usage.completion_tokens for chunk in chunks if chunk.usage is not None]
    assert len(running) == len(chunks)  # every chunk carries the running totals
    assert running == sorted(running) and running[-1] == 12
    record = only_record(telemetry)
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (chunks[-1].usage.prompt_tokens, 12)  # type: ignore[union-attr]
    timings = record.timings
    assert timings.ttfc_s is not None and timings.ttft_s is not None and timings.tpot_s is not None
    assert 0 < timings.ttfc_s <= timings.ttft_s < timings.duration_s  # type: ignore[operator]
    assert timings.chunks == len(chunks)


def test_stream_closed_early_keeps_the_last_running_total(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = client.chat.completions.create(
        model=SERVED_MODEL,
        messages=MESSAGES,
        max_tokens=200,
        temperature=0,
        stream=True,
        stream_options=CONTINUOUS,
    )
    seen = []
    for chunk in stream:
        seen.append(chunk)
        if len(seen) == 4:
            break
    stream.close()
    record = only_record(telemetry)
    assert record.outcome is Outcome.ABORTED
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
    assert record.usage.output_tokens == seen[-1].usage.completion_tokens == 3  # type: ignore[union-attr]


def test_stream_without_stream_options_gets_usage_asked_for_and_hidden(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=SERVED_MODEL, messages=MESSAGES, max_tokens=6, temperature=0, stream=True
        )
    )
    assert all(chunk.choices for chunk in chunks)  # the usage-only chunk llmmeter asked for is hidden
    record = only_record(telemetry)
    assert record.usage is not None and record.usage.source is UsageSource.PROVIDER
    assert record.usage.output_tokens == 6


def test_n2_stream_with_interleaved_choices(client: openai.OpenAI, telemetry: Telemetry) -> None:
    chunks = list(
        client.chat.completions.create(
            model=SERVED_MODEL,
            messages=MESSAGES,
            max_tokens=5,
            temperature=1.0,
            seed=7,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {chunk.choices[0].index for chunk in chunks if chunk.choices} == {0, 1}
    record = only_record(telemetry)
    assert record.usage is not None and record.usage.output_tokens == 10 == chunks[-1].usage.completion_tokens  # type: ignore[union-attr]
    assert record.finish_reasons == ("length", "length")


def test_completions_plain_and_streamed(client: openai.OpenAI, telemetry: Telemetry) -> None:
    plain = client.completions.create(
        model=SERVED_MODEL, prompt="def hello_world():", max_tokens=7, temperature=0
    )
    streamed = list(
        client.completions.create(
            model=SERVED_MODEL,
            prompt="def hello_world():",
            max_tokens=7,
            temperature=0,
            stream=True,
            stream_options=CONTINUOUS,
        )
    )
    first, second = telemetry.records
    assert plain.usage is not None and streamed[-1].usage is not None
    for record, usage in ((first, plain.usage), (second, streamed[-1].usage)):
        assert record.operation == "text_completion" and record.provider == "vllm"
        assert record.usage is not None
        assert (record.usage.input_tokens, record.usage.output_tokens) == (usage.prompt_tokens, 7)
    assert second.streaming and second.timings.ttft_s is not None


# --- prefix cache, errors ------------------------------------------------------------------------------
def test_repeated_long_prompt_records_the_cached_tokens(client: openai.OpenAI, telemetry: Telemetry) -> None:
    messages = [{"role": "user", "content": long_prompt()}]
    first = client.chat.completions.create(model=SERVED_MODEL, messages=messages, max_tokens=4, temperature=0)
    again = client.chat.completions.create(model=SERVED_MODEL, messages=messages, max_tokens=4, temperature=0)
    cold, warm = telemetry.records
    assert first.usage is not None and again.usage is not None
    assert first.usage.prompt_tokens > 256
    assert cold.usage is not None and cold.usage.cache_read_input_tokens == 0
    assert warm.usage is not None
    assert warm.usage.cache_read_input_tokens == again.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert warm.usage.cache_read_input_tokens is not None and warm.usage.cache_read_input_tokens >= 256
    assert warm.usage.cache_read_input_tokens % 128 == 0  # whole KV blocks of 128 tokens


def test_context_too_long_raises_the_servers_error_unchanged(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(
                model=SERVED_MODEL, messages=MESSAGES, max_tokens=MAX_MODEL_LEN * 5, stream=stream
            )
        assert raised.value.status_code == 400
        assert f"max_model_len={MAX_MODEL_LEN}" in raised.value.message
    for record in telemetry.records:
        assert (record.outcome, record.error_type) == (Outcome.ERROR, "openai.BadRequestError")
        assert record.usage is None
    assert len(telemetry.records) == 2


# --- llmmeter's numbers against vLLM's own ---------------------------------------------------------
def _settled(read: Callable[[], tuple[float, float]], previous: tuple[float, float]) -> tuple[float, float]:
    """vLLM's counters, once they stopped moving (its stats loop runs beside the responses)."""
    current = read()
    for _ in range(20):
        time.sleep(0.1)
        latest = read()
        if latest == current and latest != previous:
            return latest
        current = latest
    return current


def test_token_counts_equal_vllms_prometheus_counters(
    client: openai.OpenAI, telemetry: Telemetry, vllm_server: VllmServer
) -> None:
    def counters() -> tuple[float, float]:
        return (
            vllm_server.counter("vllm:prompt_tokens_total"),
            vllm_server.counter("vllm:generation_tokens_total"),
        )

    before = counters()
    client.chat.completions.create(model=SERVED_MODEL, messages=MESSAGES, max_tokens=9, temperature=0.5)
    list(
        client.chat.completions.create(
            model=SERVED_MODEL,
            messages=[{"role": "user", "content": long_prompt()}],
            max_tokens=5,
            stream=True,
            stream_options=CONTINUOUS,
        )
    )
    client.completions.create(model=SERVED_MODEL, prompt=["import os", "def f(x):"], max_tokens=3)
    list(client.completions.create(model=SERVED_MODEL, prompt="class A:", max_tokens=4, stream=True))
    after = _settled(counters, before)
    records = telemetry.records
    assert len(records) == 4 and all(r.usage is not None for r in records)
    prompt_tokens = sum(r.usage.input_tokens or 0 for r in records)  # type: ignore[union-attr]
    generated = sum(r.usage.output_tokens or 0 for r in records)  # type: ignore[union-attr]
    assert generated == 9 + 5 + 2 * 3 + 4
    assert (prompt_tokens, generated) == (after[0] - before[0], after[1] - before[1])


def test_an_undeclared_vllm_server_gives_exact_stream_usage_equal_to_its_counters(
    vllm_server: VllmServer, telemetry: Telemetry
) -> None:
    """No ``provider="vllm"``: llmmeter still asks every stream for its usage chunk, so the counts
    are vLLM's own, not tiktoken estimates (once 14 vs 20 input and 2 vs 24 output tokens)."""
    plain = openai.OpenAI(base_url=vllm_server.base_url, api_key="EMPTY", max_retries=0, timeout=120)
    client = llmmeter.instrument(plain)

    def counters() -> tuple[float, float]:
        return (
            vllm_server.counter("vllm:prompt_tokens_total"),
            vllm_server.counter("vllm:generation_tokens_total"),
        )

    before = counters()
    chunks = list(
        client.chat.completions.create(model=SERVED_MODEL, messages=MESSAGES, max_tokens=24, stream=True)
    )
    assert all(chunk.choices for chunk in chunks)  # the usage chunk llmmeter asked for stays hidden
    list(client.completions.create(model=SERVED_MODEL, prompt="class A:", max_tokens=4, stream=True))
    after = _settled(counters, before)
    records = telemetry.records
    assert len(records) == 2
    assert all(r.usage is not None and r.usage.source is UsageSource.PROVIDER for r in records)
    prompt_tokens = sum(r.usage.input_tokens or 0 for r in records)  # type: ignore[union-attr]
    generated = sum(r.usage.output_tokens or 0 for r in records)  # type: ignore[union-attr]
    assert generated == 24 + 4
    assert (prompt_tokens, generated) == (after[0] - before[0], after[1] - before[1])


# --- the server's own timings ---------------------------------------------------------------------------
def test_per_request_metrics_are_recorded_beside_client_timings(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.chat.completions.create(model=SERVED_MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    list(
        client.chat.completions.create(
            model=SERVED_MODEL,
            messages=MESSAGES,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options=CONTINUOUS,
        )
    )
    for record in telemetry.records:
        server = record.timings.server
        assert server is not None
        assert server.ttft_s is not None and server.queue_s is not None and server.decode_s is not None
        assert server.tpot_s is not None and server.tpot_s > 0
        # The server's view (queued -> last token) excludes the network and the client's share.
        assert record.timings.duration_s is not None and server.e2e_s is not None
        assert server.e2e_s == pytest.approx(server.ttft_s + server.decode_s)
        assert server.e2e_s <= record.timings.duration_s
    streamed = telemetry.records[1]
    assert streamed.timings.ttft_s is not None and streamed.timings.server is not None
    assert streamed.timings.server.ttft_s <= streamed.timings.ttft_s  # type: ignore[operator]
