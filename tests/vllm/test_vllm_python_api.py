"""vLLM's Python API, measured in-process: ``vllm.LLM`` batches and ``AsyncLLM`` streams.

One engine of each kind per session (building one takes tens of seconds): an ``LLM`` with stats
logging on (``disable_log_stats=False``), one with vLLM's default (stats off), and an
``AsyncLLM`` driven on one event loop kept for the session.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

import llmmeter
from llmmeter.instrument.vllm import instrument_async_llm, instrument_vllm_llm, is_vllm_engine
from llmmeter.record import CallKind, CallRecord, Outcome, Usage

from ..conftest import Telemetry
from .conftest import MAX_MODEL_LEN, SERVED_MODEL

pytestmark = pytest.mark.vllm

ENGINE_ARGS: dict[str, Any] = {
    "served_model_name": SERVED_MODEL,
    "dtype": "float32",
    "max_model_len": MAX_MODEL_LEN,
    "enforce_eager": True,
    "max_num_seqs": 8,
}
EMBEDDING_MODEL = "tiny-llama-embed"
LONG_PROMPT = "Summarise: " + " ".join(f"item{i}" for i in range(120))


def _shut_down(llm: Any) -> None:
    """Stop the engine-core process now, not in an atexit hook after pytest closed its output."""
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None:
        engine_core.shutdown()


@pytest.fixture(scope="session")
def llm_with_stats(tiny_model_dir: Path) -> Iterator[Any]:
    from vllm import LLM

    llm = LLM(model=str(tiny_model_dir), disable_log_stats=False, **ENGINE_ARGS)
    yield instrument_vllm_llm(llm)
    _shut_down(llm)


@pytest.fixture(scope="session")
def llm_without_stats(tiny_model_dir: Path) -> Iterator[Any]:
    from vllm import LLM

    llm = LLM(model=str(tiny_model_dir), **ENGINE_ARGS)  # vLLM's default: stats logging off
    yield instrument_vllm_llm(llm)
    _shut_down(llm)


@pytest.fixture(scope="session")
def embedding_llm(tiny_model_dir: Path) -> Iterator[Any]:
    """The same tiny model served as a pooling (embedding) model."""
    from vllm import LLM

    args = {**ENGINE_ARGS, "served_model_name": EMBEDDING_MODEL}
    llm = LLM(model=str(tiny_model_dir), runner="pooling", convert="embed", **args)
    yield instrument_vllm_llm(llm)
    _shut_down(llm)


@dataclass
class AsyncEngine:
    engine: Any
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)


@pytest.fixture(scope="session")
def async_engine(tiny_model_dir: Path) -> Iterator[AsyncEngine]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    loop = asyncio.new_event_loop()

    async def build() -> Any:
        return AsyncLLM.from_engine_args(AsyncEngineArgs(model=str(tiny_model_dir), **ENGINE_ARGS))

    engine = loop.run_until_complete(build())
    try:
        yield AsyncEngine(instrument_async_llm(engine), loop)
    finally:
        engine.shutdown()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def sampling(**kwargs: Any) -> Any:
    from vllm import SamplingParams

    return SamplingParams(**{"temperature": 0.0, **kwargs})


def llm_records(telemetry: Telemetry) -> list[CallRecord]:
    return [r for r in telemetry.records if r.kind is CallKind.LLM]


def exact_usage(output: Any) -> tuple[int, int]:
    return len(output.prompt_token_ids), sum(len(c.token_ids) for c in output.outputs)


# --- vllm.LLM ---------------------------------------------------------------------------------------
def test_llm_and_async_llm_are_recognised(llm_without_stats: Any, async_engine: AsyncEngine) -> None:
    assert is_vllm_engine(llm_without_stats) and is_vllm_engine(async_engine.engine)
    assert not is_vllm_engine(object())


def test_generate_batch_is_one_internal_span_with_one_record_per_request(
    llm_with_stats: Any, telemetry: Telemetry
) -> None:
    prompts = ["def hello_world():", "import os", LONG_PROMPT]
    outputs = llm_with_stats.generate(prompts, sampling(max_tokens=6), use_tqdm=False)
    records = llm_records(telemetry)
    assert len(records) == 3
    for record, output in zip(records, outputs, strict=True):
        prompt_tokens, output_tokens = exact_usage(output)
        assert record.usage is not None
        assert (record.usage.input_tokens, record.usage.output_tokens) == (prompt_tokens, output_tokens)
        assert record.usage.cache_read_input_tokens == output.num_cached_tokens
        assert (record.provider, record.operation, record.server_address) == ("vllm", "text_completion", None)
        assert (record.request_model, record.response_id) == (SERVED_MODEL, output.request_id)
        assert record.finish_reasons == ("length",)
        assert record.request_params["gen_ai.request.max_tokens"] == 6
    (batch,) = [r for r in telemetry.records if r.kind is CallKind.STEP]
    assert batch.name == "vllm.LLM.generate" and batch.rollup_calls == 3
    assert batch.rollup_usage is not None
    assert batch.rollup_usage.input_tokens == sum(len(o.prompt_token_ids) for o in outputs)
    (span,) = telemetry.finished_spans()
    assert (span.name, span.kind) == ("vllm.LLM.generate", SpanKind.INTERNAL)


def test_embed_batch_is_one_span_with_one_embeddings_record_per_prompt(
    embedding_llm: Any, telemetry: Telemetry
) -> None:
    outputs = embedding_llm.embed(["hello world", "a b c d e", LONG_PROMPT], use_tqdm=False)
    assert [type(o).__name__ for o in outputs] == ["EmbeddingRequestOutput"] * 3  # vLLM's own, unchanged
    records = llm_records(telemetry)
    assert len(records) == 3
    for record, output in zip(records, outputs, strict=True):
        assert (record.provider, record.operation) == ("vllm", "embeddings")
        assert record.request_model == EMBEDDING_MODEL
        assert record.usage is not None
        assert record.usage.input_tokens == len(output.prompt_token_ids)
        assert record.usage.output_tokens is None  # an embedding has no output tokens: absent, not 0
        assert record.usage.cache_read_input_tokens == output.num_cached_tokens
        assert record.response_id == output.request_id and record.finish_reasons is None
    (batch,) = [r for r in telemetry.records if r.kind is CallKind.STEP]
    assert (batch.name, batch.operation, batch.rollup_calls) == ("vllm.LLM.embed", "embeddings", 3)
    assert batch.rollup_usage is not None
    assert batch.rollup_usage.input_tokens == sum(len(o.prompt_token_ids) for o in outputs)
    (span,) = telemetry.finished_spans()  # LLM.embed calls LLM.encode: measured once
    assert (span.name, span.kind) == ("vllm.LLM.embed", SpanKind.INTERNAL)


def test_embed_error_is_raised_unchanged_and_recorded(embedding_llm: Any, telemetry: Telemetry) -> None:
    from vllm.exceptions import VLLMValidationError
    from vllm.pooling_params import PoolingParams

    with pytest.raises(VLLMValidationError, match="Matryoshka"):  # the tiny model has one size
        embedding_llm.embed(["x"], pooling_params=PoolingParams(dimensions=16), use_tqdm=False)
    (batch,) = telemetry.records
    assert (batch.name, batch.outcome) == ("vllm.LLM.embed", Outcome.ERROR)
    assert batch.error_type == "vllm.exceptions.VLLMValidationError"


def test_generate_with_stats_on_records_vllms_own_timings(llm_with_stats: Any, telemetry: Telemetry) -> None:
    (output,) = llm_with_stats.generate(["def f(x):"], sampling(max_tokens=8), use_tqdm=False)
    (record,) = llm_records(telemetry)
    server = record.timings.server
    stats = output.metrics
    assert server is not None and stats is not None
    assert server.queue_s == pytest.approx(stats.scheduled_ts - stats.queued_ts)
    assert server.prefill_s == pytest.approx(stats.first_token_ts - stats.scheduled_ts)
    assert server.decode_s == pytest.approx(stats.last_token_ts - stats.first_token_ts)
    assert server.ttft_s == pytest.approx(stats.first_token_latency)
    assert server.tpot_s == pytest.approx((stats.last_token_ts - stats.first_token_ts) / 7)
    # The engine's own intervals (one monotonic clock) fit inside the time the caller waited.
    assert server.queue_s is not None and server.prefill_s is not None and server.decode_s is not None
    assert record.timings.duration_s is not None
    assert 0 < server.queue_s + server.prefill_s + server.decode_s <= record.timings.duration_s
    assert server.e2e_s is None
    assert record.timings.ttft_s is None  # a batch call shows no first token to its caller


def _token_counters(llm: Any) -> tuple[float, float]:
    """vLLM's own ``vllm:prompt_tokens`` and ``vllm:generation_tokens`` counters."""
    values = {m.name: m.value for m in llm.get_metrics() if hasattr(m, "value")}
    return values["vllm:prompt_tokens"], values["vllm:generation_tokens"]


def test_generate_token_counts_equal_vllms_own_counters(llm_with_stats: Any, telemetry: Telemetry) -> None:
    before = _token_counters(llm_with_stats)
    llm_with_stats.generate(["a", "bb cc", "def g():", LONG_PROMPT], sampling(max_tokens=5), use_tqdm=False)
    after = _token_counters(llm_with_stats)
    records = llm_records(telemetry)
    assert sum(r.usage.input_tokens or 0 for r in records) == after[0] - before[0]  # type: ignore[union-attr]
    assert sum(r.usage.output_tokens or 0 for r in records) == after[1] - before[1] == 4 * 5  # type: ignore[union-attr]


def test_parallel_samples_count_the_prompt_once_where_vllms_counter_counts_it_per_sample(
    llm_with_stats: Any, telemetry: Telemetry
) -> None:
    before = _token_counters(llm_with_stats)
    (output,) = llm_with_stats.generate(
        ["def g():"], sampling(max_tokens=5, n=2, temperature=1.0, seed=3), use_tqdm=False
    )
    after = _token_counters(llm_with_stats)
    (record,) = llm_records(telemetry)
    assert record.usage is not None
    # Like vLLM's own OpenAI server (usage.prompt_tokens), one request reads its prompt once...
    assert record.usage.input_tokens == len(output.prompt_token_ids)
    assert record.usage.output_tokens == 2 * 5 == after[1] - before[1]
    # ...while vLLM's engine runs each sample as its own request and counts the prompt twice.
    assert after[0] - before[0] == 2 * len(output.prompt_token_ids)


def test_generate_with_stats_off_still_has_exact_tokens_but_no_server_timings(
    llm_without_stats: Any, telemetry: Telemetry
) -> None:
    (output,) = llm_without_stats.generate(["hello"], sampling(max_tokens=3), use_tqdm=False)
    assert output.metrics is None  # LLM() defaults to disable_log_stats=True
    (record,) = llm_records(telemetry)
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == exact_usage(output)
    assert record.timings.server is None  # unobserved, not zeros
    assert record.timings.duration_s is not None and record.timings.duration_s > 0


def test_repeated_long_prompt_records_prefix_cache_hits(llm_with_stats: Any, telemetry: Telemetry) -> None:
    prompt = "Cached? " + LONG_PROMPT
    llm_with_stats.generate([prompt], sampling(max_tokens=2), use_tqdm=False)
    (again,) = llm_with_stats.generate([prompt], sampling(max_tokens=2), use_tqdm=False)
    cold, warm = llm_records(telemetry)
    assert cold.usage is not None and cold.usage.cache_read_input_tokens == 0
    assert warm.usage is not None and warm.usage.cache_read_input_tokens == again.num_cached_tokens >= 256


def test_chat_is_measured_once_as_a_chat_batch(llm_with_stats: Any, telemetry: Telemetry) -> None:
    conversation = [{"role": "user", "content": "hello"}]
    (output,) = llm_with_stats.chat(conversation, sampling(max_tokens=5), use_tqdm=False)
    (record,) = llm_records(telemetry)
    assert record.operation == "chat"
    assert record.usage == Usage(
        input_tokens=len(output.prompt_token_ids),
        output_tokens=5,
        cache_read_input_tokens=output.num_cached_tokens,
        cache_write_input_tokens=getattr(output, "num_cache_creation_tokens", None),
    )
    (span,) = telemetry.finished_spans()
    assert span.name == "vllm.LLM.chat"


def test_generate_error_is_raised_unchanged_and_recorded(
    llm_without_stats: Any, telemetry: Telemetry
) -> None:
    too_long = " ".join(["word"] * (MAX_MODEL_LEN * 2))
    with pytest.raises(Exception) as raised:
        llm_without_stats.generate([too_long], sampling(max_tokens=2), use_tqdm=False)
    assert "maximum context length is 1024 tokens" in str(raised.value)
    (batch,) = telemetry.records
    assert batch.kind is CallKind.STEP and batch.outcome is Outcome.ERROR
    assert batch.error_type is not None and batch.error_type.endswith(type(raised.value).__qualname__)


def test_llmmeter_instrument_dispatches_to_vllm(llm_with_stats: Any) -> None:
    assert llmmeter.instrument(llm_with_stats) is llm_with_stats


# --- AsyncLLM streams -------------------------------------------------------------------------------------
async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [output async for output in stream]


@pytest.mark.parametrize("kind", ["DELTA", "CUMULATIVE"])
def test_async_stream_gets_client_side_ttft_and_tpot(
    async_engine: AsyncEngine, telemetry: Telemetry, kind: str
) -> None:
    from vllm.sampling_params import RequestOutputKind

    params = sampling(max_tokens=6, output_kind=RequestOutputKind[kind])
    outputs = async_engine.run(
        collect(async_engine.engine.generate("def hello_world():", params, f"req-{kind}"))
    )
    assert outputs[-1].finished
    (record,) = telemetry.records
    assert record.outcome is Outcome.OK and record.streaming
    assert record.usage is not None
    assert record.usage.input_tokens == len(outputs[-1].prompt_token_ids)
    assert record.usage.output_tokens == 6 == outputs[-1].metrics.num_generation_tokens
    assert record.response_id == f"req-{kind}"
    timings = record.timings
    assert timings.chunks == len(outputs)
    assert timings.ttft_s is not None and timings.tpot_s is not None
    assert 0 < timings.ttft_s < timings.duration_s  # type: ignore[operator]
    assert timings.server is not None and timings.server.ttft_s is not None
    assert timings.server.ttft_s <= timings.ttft_s  # the engine's view excludes this process's share


def test_async_stream_closed_early_is_aborted_with_the_tokens_seen(
    async_engine: AsyncEngine, telemetry: Telemetry
) -> None:
    from vllm.sampling_params import RequestOutputKind

    async def two_then_close() -> list[Any]:
        stream = async_engine.engine.generate(
            "import sys", sampling(max_tokens=200, output_kind=RequestOutputKind.DELTA), "req-close"
        )
        seen = []
        async for output in stream:
            seen.append(output)
            if len(seen) == 2:
                break
        await stream.aclose()
        return seen

    seen = async_engine.run(two_then_close())
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABORTED
    assert record.usage is not None
    assert record.usage.output_tokens == sum(len(o.outputs[0].token_ids) for o in seen) < 200


def test_async_stream_cancelled_is_aborted(async_engine: AsyncEngine, telemetry: Telemetry) -> None:
    async def cancelled() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in async_engine.engine.generate("x = 1", sampling(max_tokens=500), "req-cancel"):
                first.set()

        task = asyncio.ensure_future(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async_engine.run(cancelled())
    (record,) = telemetry.records
    assert (record.outcome, record.error_type) == (Outcome.ABORTED, "asyncio.exceptions.CancelledError")
    assert record.usage is not None and 0 < (record.usage.output_tokens or 0) < 500


def test_async_stream_dropped_unfinished_is_abandoned_once(
    async_engine: AsyncEngine, telemetry: Telemetry
) -> None:
    async def drop() -> None:
        stream = async_engine.engine.generate("y = 2", sampling(max_tokens=300), "req-drop")
        async for _ in stream:
            break
        del stream
        gc.collect()
        await asyncio.sleep(0.2)  # let vLLM's generator finalizer abort the request

    async_engine.run(drop())
    gc.collect()
    (record,) = telemetry.records
    assert record.outcome is Outcome.ABANDONED


def test_async_stream_never_iterated_records_nothing(async_engine: AsyncEngine, telemetry: Telemetry) -> None:
    stream = async_engine.engine.generate("z = 3", sampling(max_tokens=3), "req-never")
    del stream
    gc.collect()
    assert telemetry.records == []


def test_async_stream_error_is_raised_unchanged_and_recorded(
    async_engine: AsyncEngine, telemetry: Telemetry
) -> None:
    too_long = " ".join(["word"] * (MAX_MODEL_LEN * 2))

    async def consume() -> None:
        async for _ in async_engine.engine.generate(too_long, sampling(max_tokens=2), "req-too-long"):
            pass

    with pytest.raises(Exception) as raised:
        async_engine.run(consume())
    assert "maximum context length is 1024 tokens" in str(raised.value)
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.usage is None
    assert record.error_type is not None and record.error_type.endswith(type(raised.value).__qualname__)
