"""LocalOpenAIServer: a real local OpenAI-compatible server, driven here by the real ``openai`` client."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

FAST = Pacing(ttft_ms=0, itl_ms=0, tokens=4)
USER_HI = [{"role": "user", "content": "hello there friend"}]  # 3 + 3 words = 6 prompt tokens
TOOLS: list[Any] = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
TWO_INPUTS = ["hello world", "again"]  # 2 + 1 words = 3 prompt tokens


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=FAST) as srv:
        yield srv


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=FAST, flavor="vllm") as srv:
        yield srv


def client_for(srv: LocalOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0)


def chat_stream(srv: LocalOpenAIServer, **kwargs: Any) -> list[Any]:
    return list(chat_stream_iter(srv, **kwargs))


def chat_stream_iter(srv: LocalOpenAIServer, **kwargs: Any) -> Any:
    return client_for(srv).chat.completions.create(model="gpt-test", messages=USER_HI, stream=True, **kwargs)


def content_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --- chat completions -----------------------------------------------------------------------


def test_chat_non_stream_returns_deterministic_text_and_exact_usage(server: LocalOpenAIServer) -> None:
    result = client_for(server).chat.completions.create(model="gpt-test", messages=USER_HI)

    assert result.choices[0].message.content == "alpha bravo charlie delta"
    assert result.choices[0].finish_reason == "stop"
    assert result.model == "gpt-test"
    assert result.usage is not None
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (6, 4, 10)


def test_prompt_tokens_are_words_of_every_message_plus_three_each(server: LocalOpenAIServer) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]},
    ]
    result = client_for(server).chat.completions.create(model="gpt-test", messages=messages)

    assert result.usage is not None
    assert result.usage.prompt_tokens == (3 + 2) + (3 + 3)


def test_served_model_replaces_the_requested_model_name() -> None:
    with LocalOpenAIServer(pacing=FAST, served_model="gpt-test-2024-08-06") as srv:
        result = client_for(srv).chat.completions.create(model="gpt-test", messages=USER_HI)
        models = [m.id for m in client_for(srv).models.list()]

    assert result.model == "gpt-test-2024-08-06"
    assert models == ["gpt-test-2024-08-06"]


def test_chat_stream_opens_with_a_role_chunk_then_one_token_per_chunk(server: LocalOpenAIServer) -> None:
    chunks = chat_stream(server)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in chunks[1:5]] == ["alpha", " bravo", " charlie", " delta"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_include_usage_adds_a_final_chunk_with_no_choices_and_the_totals(server: LocalOpenAIServer) -> None:
    chunks = chat_stream(server, stream_options={"include_usage": True})

    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (6, 4)
    assert all(c.usage is None for c in chunks[:-1])


def test_continuous_usage_reports_running_totals_on_every_chunk(server: LocalOpenAIServer) -> None:
    chunks = chat_stream(server, stream_options={"include_usage": True, "continuous_usage_stats": True})

    running = [c.usage.completion_tokens for c in chunks]
    assert running == [0, 1, 2, 3, 4, 4, 4]  # role, 4 tokens, finish chunk, usage chunk


def test_reasoning_is_streamed_before_content_and_counted_in_completion_tokens(
    server: LocalOpenAIServer,
) -> None:
    headers = pacing_headers(reasoning_tokens=2, cached_tokens=4)
    chunks = chat_stream(server, stream_options={"include_usage": True}, extra_headers=headers)

    reasoning = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks[1:3]]
    assert reasoning == ["think", " check"]
    assert chunks[3].choices[0].delta.content == "alpha"
    usage = chunks[-1].usage
    assert usage.completion_tokens == 6
    assert usage.completion_tokens_details.reasoning_tokens == 2
    assert usage.prompt_tokens_details.cached_tokens == 4


def test_tokens_per_chunk_groups_tokens_but_keeps_the_count_exact(server: LocalOpenAIServer) -> None:
    headers = pacing_headers(tokens=5, tokens_per_chunk=2)
    chunks = chat_stream(server, stream_options={"include_usage": True}, extra_headers=headers)

    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["alpha bravo", " charlie delta", " echo"]
    assert chunks[-1].usage.completion_tokens == 5


def test_n_choices_are_interleaved_and_all_counted(server: LocalOpenAIServer) -> None:
    chunks = chat_stream(server, n=2, stream_options={"include_usage": True})

    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        texts[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    assert texts == {0: "alpha bravo charlie delta", 1: "alpha bravo charlie delta"}
    assert chunks[-1].usage.completion_tokens == 8


def test_tool_call_streams_function_arguments_that_parse_as_json(server: LocalOpenAIServer) -> None:
    headers = pacing_headers(tool_call=True, tokens=3)
    chunks = chat_stream(server, tools=TOOLS, extra_headers=headers)

    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    assert calls[0].function.name == "lookup"
    assert calls[0].id.startswith("call_")
    assert json.loads("".join(call.function.arguments for call in calls)) == {"input": "alpha bravo charlie"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tools_without_tool_call_pacing_get_a_plain_text_answer(server: LocalOpenAIServer) -> None:
    result = client_for(server).chat.completions.create(model="gpt-test", messages=USER_HI, tools=TOOLS)

    assert result.choices[0].message.tool_calls is None
    assert result.choices[0].message.content == "alpha bravo charlie delta"


async def test_async_client_streams_the_same_chunks(server: LocalOpenAIServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-test", messages=USER_HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    await client.close()

    assert content_of(chunks) == "alpha bravo charlie delta"
    assert chunks[-1].usage.completion_tokens == 4


# --- vLLM flavor ----------------------------------------------------------------------------


def test_vllm_flavor_sends_no_usage_without_stream_options(vllm_server: LocalOpenAIServer) -> None:
    chunks = chat_stream(vllm_server)

    assert all(c.usage is None for c in chunks)
    assert chunks[0].model_extra == {"prompt_token_ids": None, "prompt_text": None}


def test_vllm_flavor_puts_finish_and_stop_reason_on_the_last_content_chunk(
    vllm_server: LocalOpenAIServer,
) -> None:
    chunks = chat_stream(vllm_server, stream_options={})  # vLLM: include_usage defaults to true

    last_content = chunks[-2]
    assert last_content.choices[0].delta.content == " delta"
    assert last_content.choices[0].finish_reason == "stop"
    assert last_content.choices[0].model_extra["stop_reason"] is None
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].system_fingerprint is not None
    assert len(chunks[0].id) == len("chatcmpl-") + 16


def test_vllm_flavor_names_the_reasoning_delta_reasoning(vllm_server: LocalOpenAIServer) -> None:
    chunks = chat_stream(vllm_server, extra_headers=pacing_headers(reasoning_tokens=1))

    assert chunks[1].choices[0].delta.model_extra == {"reasoning": "think"}


def test_vllm_flavor_error_body_uses_vllm_error_type(vllm_server: LocalOpenAIServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat_stream(vllm_server, extra_headers=pacing_headers(error_status=400))

    assert caught.value.body == {
        "message": "Simulated error 400 (llmmeter test server).",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


# --- legacy completions, embeddings, models -------------------------------------------------


def test_legacy_completion_non_stream_counts_prompt_words(server: LocalOpenAIServer) -> None:
    result = client_for(server).completions.create(model="gpt-test", prompt="def hello_world():")

    assert result.choices[0].text == "alpha bravo charlie delta"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (2, 4)


def test_legacy_completion_stream_with_usage(server: LocalOpenAIServer) -> None:
    stream = client_for(server).completions.create(
        model="gpt-test", prompt="a b c", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert "".join(c.choices[0].text for c in chunks if c.choices) == "alpha bravo charlie delta"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)


def test_embeddings_float_and_base64_carry_the_same_vector(server: LocalOpenAIServer) -> None:
    client = client_for(server)
    as_float = client.embeddings.create(model="emb-test", input=TWO_INPUTS, encoding_format="float")
    as_base64 = client.embeddings.create(model="emb-test", input=TWO_INPUTS, encoding_format="base64")
    sdk_default = client.embeddings.create(model="emb-test", input=TWO_INPUTS)  # SDK asks base64, decodes

    encoded = as_base64.data[0].embedding
    assert isinstance(encoded, str)
    decoded = list(struct.unpack("<16f", base64.b64decode(encoded)))
    assert decoded == as_float.data[0].embedding
    assert sdk_default.data[1].embedding == as_float.data[1].embedding
    assert as_float.data[0].embedding != as_float.data[1].embedding
    assert (as_float.usage.prompt_tokens, as_float.usage.total_tokens) == (3, 3)


def test_embeddings_honour_requested_dimensions(server: LocalOpenAIServer) -> None:
    result = client_for(server).embeddings.create(
        model="emb-test", input="x", dimensions=4, encoding_format="float"
    )

    assert len(result.data[0].embedding) == 4
    assert sum(v * v for v in result.data[0].embedding) == pytest.approx(1.0, rel=1e-5)


# --- Responses API --------------------------------------------------------------------------


def test_responses_non_stream_reports_cached_and_reasoning_tokens(server: LocalOpenAIServer) -> None:
    headers = pacing_headers(reasoning_tokens=3, cached_tokens=2)
    result = client_for(server).responses.create(
        model="gpt-test", instructions="be brief", input="hello there", extra_headers=headers
    )

    assert result.output_text == "alpha bravo charlie delta"
    assert result.status == "completed"
    assert result.usage is not None
    assert result.usage.input_tokens == (3 + 2) + (3 + 2)
    assert result.usage.input_tokens_details.cached_tokens == 2
    assert result.usage.output_tokens == 7
    assert result.usage.output_tokens_details.reasoning_tokens == 3
    assert result.usage.total_tokens == 17


def test_responses_stream_emits_the_openai_event_sequence(server: LocalOpenAIServer) -> None:
    events = list(client_for(server).responses.create(model="gpt-test", input="hello", stream=True))

    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert isinstance(events[-1], openai.types.responses.ResponseCompletedEvent)
    assert events[-1].response.output_text == "alpha bravo charlie delta"
    assert events[-1].response.usage.output_tokens == 4


def test_responses_stream_sends_reasoning_text_before_output_text(server: LocalOpenAIServer) -> None:
    headers = pacing_headers(reasoning_tokens=1, tokens=1)
    events = list(
        client_for(server).responses.create(model="gpt-test", input="hi", stream=True, extra_headers=headers)
    )

    deltas = [(e.type, e.delta) for e in events if e.type.endswith(".delta")]
    assert deltas == [("response.reasoning_text.delta", "think"), ("response.output_text.delta", "alpha")]
    assert events[-1].response.usage.output_tokens_details.reasoning_tokens == 1


# --- errors and broken streams ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (429, openai.RateLimitError, "requests"),
        (500, openai.InternalServerError, "server_error"),
    ],
)
def test_error_status_raises_the_matching_openai_exception(
    server: LocalOpenAIServer, status: int, exception: type[openai.APIStatusError], error_type: str
) -> None:
    with pytest.raises(exception) as caught:
        client_for(server).chat.completions.create(
            model="gpt-test", messages=USER_HI, stream=True, extra_headers=pacing_headers(error_status=status)
        )

    assert caught.value.status_code == status
    assert caught.value.type == error_type
    assert server.last_request().status == status


def test_invalid_pacing_header_is_a_bad_request(server: LocalOpenAIServer) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown pacing option"):
        client_for(server).chat.completions.create(
            model="gpt-test", messages=USER_HI, extra_headers={"x-llmmeter-pacing": '{"ttft": 5}'}
        )


def test_pacing_headers_rejects_unknown_options_before_sending() -> None:
    with pytest.raises(ValueError, match="unknown pacing option"):
        pacing_headers(ttft=5)


def test_fail_after_drops_the_connection_mid_stream(server: LocalOpenAIServer) -> None:
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in chat_stream_iter(server, extra_headers=pacing_headers(fail_after=3)):
            received.append(chunk)

    assert len(received) == 3
    assert len(server.last_request().event_times) == 3


def test_fail_after_on_a_non_stream_request_sends_no_response(server: LocalOpenAIServer) -> None:
    with pytest.raises(openai.APIConnectionError):
        client_for(server).chat.completions.create(
            model="gpt-test", messages=USER_HI, extra_headers=pacing_headers(fail_after=0)
        )


# --- pacing and recorded timings --------------------------------------------------------------


def test_pacing_delays_first_content_by_ttft_and_spaces_tokens_by_itl(server: LocalOpenAIServer) -> None:
    ttft, itl = 0.08, 0.05
    started = time.perf_counter()
    arrivals: list[tuple[float, Any]] = []
    for chunk in chat_stream_iter(server, extra_headers=pacing_headers(ttft_ms=80, itl_ms=50, tokens=3)):
        arrivals.append((time.perf_counter(), chunk))
    record = server.last_request()

    content_times = [t for t, chunk in arrivals if chunk.choices and chunk.choices[0].delta.content]
    assert content_times[0] - started >= ttft
    assert content_times[1] - content_times[0] >= itl * 0.6  # client clock: generous margin
    server_times = record.event_times
    # events: role, 3 tokens, finish, [DONE]; the server gaps between tokens are never below itl.
    assert len(server_times) == 6
    assert server_times[1] - record.received_at >= ttft
    assert server_times[2] - server_times[1] >= itl
    assert server_times[3] - server_times[2] >= itl
    # The server stamps an event once its write returned; the client may have read it a few µs before.
    assert content_times[0] >= server_times[1] - 0.001


def test_role_chunk_is_written_at_role_delay_before_the_first_token(server: LocalOpenAIServer) -> None:
    list(chat_stream_iter(server, extra_headers=pacing_headers(role_delay_ms=20, ttft_ms=60, tokens=1)))
    record = server.last_request()

    role_at, first_token_at = (t - record.received_at for t in record.event_times[:2])
    assert 0.02 <= role_at < first_token_at
    assert first_token_at >= 0.06


def test_without_role_chunk_the_first_chunk_carries_role_and_content(server: LocalOpenAIServer) -> None:
    chunks = chat_stream(server, extra_headers=pacing_headers(role_chunk=False, tokens=1))

    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == "alpha"


def test_non_stream_waits_for_the_whole_schedule(server: LocalOpenAIServer) -> None:
    started = time.perf_counter()
    client_for(server).chat.completions.create(
        model="gpt-test", messages=USER_HI, extra_headers=pacing_headers(ttft_ms=30, itl_ms=20, tokens=3)
    )

    assert time.perf_counter() - started >= 0.03 + 2 * 0.02
    assert len(server.last_request().event_times) == 1


def test_requests_are_recorded_with_path_body_headers_and_pacing(server: LocalOpenAIServer) -> None:
    client_for(server).chat.completions.create(
        model="gpt-test", messages=USER_HI, extra_headers=pacing_headers(tokens=2)
    )
    record = server.last_request()

    assert (record.method, record.path) == ("POST", "/v1/chat/completions")
    assert record.body["messages"] == USER_HI
    assert json.loads(record.headers["x-llmmeter-pacing"]) == {"tokens": 2}
    assert record.pacing == Pacing(ttft_ms=0, itl_ms=0, tokens=2)
    assert record.status == 200


# --- lifecycle ----------------------------------------------------------------------------------


def test_stop_ends_open_connections_and_leaves_no_threads() -> None:
    threads_before = set(threading.enumerate())
    srv = LocalOpenAIServer(pacing=Pacing(ttft_ms=0, itl_ms=5_000, tokens=3)).start()
    client = client_for(srv)
    client.chat.completions.create(model="gpt-test", messages=USER_HI, extra_headers=pacing_headers(itl_ms=0))
    stream = client.chat.completions.create(model="gpt-test", messages=USER_HI, stream=True)
    next(iter(stream))  # a stream now sleeps 5 s between tokens; a keep-alive connection idles

    started = time.perf_counter()
    srv.stop()

    assert time.perf_counter() - started < 2.0
    assert set(threading.enumerate()) - threads_before == set()
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    client.close()


def test_server_can_be_restarted_and_stop_is_idempotent() -> None:
    srv = LocalOpenAIServer(pacing=FAST)
    with srv:
        first = client_for(srv).models.list()
    srv.stop()
    with srv:
        second = client_for(srv).models.list()

    assert [m.id for m in first] == [m.id for m in second] == ["llmmeter-test-model"]
