"""vLLM: exact usage and server-side timings from vLLM's own objects.

Two shapes come from vLLM:

* the Python API's ``RequestOutput`` (``vllm.LLM.generate``/``chat``, ``AsyncLLM.generate``):
  token counts are *exact* -- the lengths of the prompt and output token-id lists -- and, when
  stats logging is on (``LLM(..., disable_log_stats=False)``; the server has it on by default),
  ``RequestOutput.metrics`` is a ``RequestStateStats`` with engine timestamps;
* the OpenAI-compatible server's per-request ``metrics`` object (server flag
  ``--enable-per-request-metrics``), sent on non-streamed responses and on the final usage chunk
  of a stream: ``queue_time_ms``, ``time_to_first_token_ms`` (which, despite its name, starts
  when the request is *scheduled*, after the queue), ``generation_time_ms``, ``mean_itl_ms``,
  ``tokens_per_second``. Its token usage is OpenAI-shaped (see :mod:`llmmeter.providers.openai`)
  plus ``prompt_tokens_details.created_cache_tokens``.

Clocks (the one trap here): ``RequestStateStats.arrival_time`` is the frontend's *wall clock*
(``time.time()``) while ``queued_ts``/``scheduled_ts``/``first_token_ts``/``last_token_ts`` are
the engine core's *monotonic* clock. Only differences between two ``*_ts`` values mean anything;
``arrival_time`` is never subtracted from a ``*_ts``. ``first_token_latency`` is already a
duration (arrival -> first token), measured by vLLM on the wall clock.

All timings here are the *server's* view -- they exclude the network, the HTTP/SSE framing and
the client's own overhead -- and go into :class:`~llmmeter.record.ServerTimings`, never into the
client-side :class:`~llmmeter.record.Timings`.

Pure functions: no I/O, no OTel, no pricing, no import of vLLM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmmeter import semconv
from llmmeter.providers.base import ResponseInfo, field, int_or_none, items_of, str_or_none
from llmmeter.providers.types import Observed
from llmmeter.record import ServerTimings, Usage

__all__ = [
    "RequestOutputStreamReader",
    "completions_of",
    "finish_reasons_from_request_output",
    "is_delta_output",
    "is_vllm_object",
    "read_request_output",
    "request_params_of",
    "server_timings_from_request_output",
    "server_timings_from_request_stats",
    "server_timings_from_vllm_metrics",
    "server_timings_from_vllm_response",
    "usage_from_request_output",
    "usage_from_vllm_usage",
    "vllm_cache_writes",
    "vllm_metrics_of",
]


# --- the Python API: RequestOutput ------------------------------------------------------------
def usage_from_request_output(output: Any) -> Usage:
    """Exact token usage of one finished ``vllm.RequestOutput`` (``FINAL_ONLY``/``CUMULATIVE``).

    * input = ``len(prompt_token_ids)`` (+ ``len(encoder_prompt_token_ids)`` for
      encoder-decoder models, as vLLM's server counts ``prompt_tokens``);
    * output = the sum of ``len(token_ids)`` over every completion (``n > 1`` gives several);
    * cache reads = ``num_cached_tokens`` (prefix-cache hits, part of the input);
    * cache writes = ``num_cache_creation_tokens`` where this vLLM reports it.

    A ``DELTA`` output holds only the newest tokens: sum those with
    :class:`RequestOutputStreamReader` instead. A pooling output
    (``EmbeddingRequestOutput`` of ``LLM.embed``) has input tokens only: its ``outputs`` is one
    vector, not completions, so output tokens stay absent rather than zero.
    """
    return Usage(
        input_tokens=prompt_tokens_of(output),
        output_tokens=_output_tokens(completions_of(output)),
        cache_read_input_tokens=int_or_none(field(output, "num_cached_tokens")),
        cache_write_input_tokens=int_or_none(field(output, "num_cache_creation_tokens")),
    )


def prompt_tokens_of(output: Any) -> int | None:
    """Prompt length of a ``RequestOutput`` (decoder prompt plus encoder prompt), or ``None``."""
    prompt = _length(field(output, "prompt_token_ids"))
    encoder = _length(field(output, "encoder_prompt_token_ids"))
    if prompt is None and encoder is None:
        return None
    return (prompt or 0) + (encoder or 0)


def completions_of(output: Any) -> Sequence[Any] | None:
    """The ``CompletionOutput`` list of a ``RequestOutput``; ``None`` for a pooling output."""
    outputs = field(output, "outputs")
    return outputs if isinstance(outputs, list | tuple) else None


def _output_tokens(completions: Iterable[Any] | None) -> int | None:
    if completions is None:
        return None
    total: int | None = None
    for completion in completions:
        count = _length(field(completion, "token_ids"))
        if count is not None:
            total = count if total is None else total + count
    return total


def _length(ids: Any) -> int | None:
    if ids is None or isinstance(ids, str | bytes):
        return None
    try:
        return len(ids)
    except TypeError:
        return None


def finish_reasons_from_request_output(output: Any) -> tuple[str, ...] | None:
    """``finish_reason`` of each completion that has one (``stop``, ``length``, ``abort``...)."""
    reasons = tuple(
        reason
        for completion in completions_of(output) or ()
        if (reason := str_or_none(field(completion, "finish_reason")))
    )
    return reasons or None


def server_timings_from_request_output(output: Any) -> ServerTimings | None:
    """Server-side timings from ``RequestOutput.metrics``; ``None`` when stats were off."""
    return server_timings_from_request_stats(field(output, "metrics"))


def server_timings_from_request_stats(stats: Any) -> ServerTimings | None:
    """Timings from a v1 ``RequestStateStats`` (or a v0 ``RequestMetrics``); ``None`` if absent.

    v1 (``*_ts`` monotonic engine-core timestamps, as vLLM's own histograms derive them):
    queue = ``scheduled_ts - queued_ts``; prefill = ``first_token_ts - scheduled_ts``;
    decode = ``last_token_ts - first_token_ts``; TPOT = decode / (``num_generation_tokens`` - 1);
    TTFT = ``first_token_latency`` (arrival at the frontend -> the frontend saw the first token,
    the value vLLM's ``vllm:time_to_first_token_seconds`` observes). e2e stays ``None``: vLLM
    does not keep it on the output, and adding the wall-clock TTFT to the engine-clock decode
    would count the first token's trip from the engine core to the frontend twice.
    A timestamp vLLM never set (0) leaves the numbers that need it ``None``.
    """
    if stats is None:
        return None
    if field(stats, "scheduled_ts") is not None or field(stats, "first_token_ts") is not None:
        timings = _from_v1_stats(stats)
    elif field(stats, "first_token_time") is not None:
        timings = _from_v0_metrics(stats)
    else:
        return None
    return None if _is_empty(timings) else timings


def _from_v1_stats(stats: Any) -> ServerTimings:
    queued = _timestamp(field(stats, "queued_ts"))
    scheduled = _timestamp(field(stats, "scheduled_ts"))
    first = _timestamp(field(stats, "first_token_ts"))
    last = _timestamp(field(stats, "last_token_ts"))
    decode = _difference(first, last)
    return ServerTimings(
        ttft_s=_nonnegative(field(stats, "first_token_latency")) if first is not None else None,
        tpot_s=_per_token(decode, int_or_none(field(stats, "num_generation_tokens"))),
        queue_s=_difference(queued, scheduled),
        prefill_s=_difference(scheduled, first),
        decode_s=decode,
    )


def _from_v0_metrics(stats: Any) -> ServerTimings:
    """v0 engine ``RequestMetrics``: every field on the same wall clock."""
    arrival = _timestamp(field(stats, "arrival_time"))
    scheduled = _timestamp(field(stats, "first_scheduled_time"))
    first = _timestamp(field(stats, "first_token_time"))
    last = _timestamp(field(stats, "last_token_time"))
    finished = _timestamp(field(stats, "finished_time"))
    queue = _nonnegative(field(stats, "time_in_queue"))
    return ServerTimings(
        ttft_s=_difference(arrival, first),
        queue_s=queue if queue is not None else _difference(arrival, scheduled),
        prefill_s=_difference(scheduled, first),
        decode_s=_difference(first, last),
        e2e_s=_difference(arrival, finished if finished is not None else last),
    )


def _timestamp(value: Any) -> float | None:
    """A timestamp vLLM actually set (its dataclass defaults are 0.0)."""
    number = _number(value)
    return number if number is not None and number > 0 else None


def _difference(start: float | None, end: float | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return end - start


def _per_token(decode_s: float | None, generated: int | None) -> float | None:
    if decode_s is None or generated is None or generated < 2:
        return None
    return decode_s / (generated - 1)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _nonnegative(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _is_empty(timings: ServerTimings) -> bool:
    return all(
        value is None
        for value in (
            timings.ttft_s,
            timings.tpot_s,
            timings.queue_s,
            timings.prefill_s,
            timings.decode_s,
            timings.e2e_s,
        )
    )


# --- the OpenAI-compatible server -------------------------------------------------------------
def vllm_metrics_of(obj: Any) -> Any:
    """The per-request ``metrics`` object of a vLLM response or stream chunk, or ``None``.

    With the openai SDK it is a pydantic *extra* (``obj.__pydantic_extra__["metrics"]``, a dict);
    on decoded JSON it is ``obj["metrics"]``. Only the final usage chunk of a stream has it.
    """
    metrics = field(obj, "metrics")
    return metrics if metrics is not None and not isinstance(metrics, str | int | float) else None


def server_timings_from_vllm_metrics(metrics: Any) -> ServerTimings | None:
    """Server-side timings from vLLM's per-request ``metrics`` (``--enable-per-request-metrics``).

    vLLM builds that object from the same ``RequestStateStats`` timestamps
    (``build_per_request_timing_metrics`` in vLLM 0.32), and its names need care:

    * ``queue_time_ms`` = scheduled - queued -> ``queue_s``;
    * ``time_to_first_token_ms`` = first token - *scheduled*: despite its name it excludes the
      queue, so it is the prefill -> ``prefill_s``;
    * ``generation_time_ms`` = last token - first token -> ``decode_s``;
    * ``mean_itl_ms`` = decode / (generated tokens - 1) -> ``tpot_s``;
    * ``ttft_s`` = queue + prefill (the engine queued the request -> first token) and
      ``e2e_s`` = queue + prefill + decode: the engine core's view, without the frontend's
      tokenization and the network.

    ``None`` when ``metrics`` is absent (``null``: the flag is off, or a stream without usage).
    """
    if metrics is None:
        return None
    queue = _milliseconds(field(metrics, "queue_time_ms"))
    prefill = _milliseconds(field(metrics, "time_to_first_token_ms"))
    decode = _milliseconds(field(metrics, "generation_time_ms"))
    ttft = queue + prefill if queue is not None and prefill is not None else None
    timings = ServerTimings(
        ttft_s=ttft,
        tpot_s=_milliseconds(field(metrics, "mean_itl_ms")),
        queue_s=queue,
        prefill_s=prefill,
        decode_s=decode,
        e2e_s=ttft + decode if ttft is not None and decode is not None else None,
    )
    return None if _is_empty(timings) else timings


def server_timings_from_vllm_response(obj: Any) -> ServerTimings | None:
    """:func:`server_timings_from_vllm_metrics` of a response or final stream chunk."""
    return server_timings_from_vllm_metrics(vllm_metrics_of(obj))


def _milliseconds(value: Any) -> float | None:
    number = _nonnegative(value)
    return number / 1000.0 if number is not None else None


def usage_from_vllm_usage(usage: Any) -> Usage:
    """An OpenAI-shaped vLLM ``usage``, with vLLM's ``created_cache_tokens`` as cache writes.

    ``prompt_tokens_details`` (``cached_tokens``, ``created_cache_tokens``) is present only when
    the server runs with ``--enable-prompt-tokens-details``; without it both stay ``None``.
    Tokens written to the prefix cache are part of ``prompt_tokens``, like cache reads.
    """
    from llmmeter.providers.openai import usage_from_openai

    normalized = usage_from_openai(usage)
    if normalized.cache_write_input_tokens is None:
        details = field(usage, "prompt_tokens_details")
        normalized.cache_write_input_tokens = int_or_none(field(details, "created_cache_tokens"))
    return normalized


def vllm_cache_writes(usage: Any) -> int | None:
    """Tokens a vLLM server wrote to its prefix cache (``prompt_tokens_details.created_cache_tokens``)."""
    return int_or_none(field(field(usage, "prompt_tokens_details"), "created_cache_tokens"))


_VLLM_RESPONSE_EXTRAS = ("prompt_token_ids", "prompt_logprobs", "kv_transfer_params", "prompt_text")


def is_vllm_object(obj: Any) -> bool:
    """Whether an OpenAI-shaped response/chunk carries fields only vLLM sends.

    vLLM adds ``prompt_token_ids``/``prompt_logprobs``/``kv_transfer_params`` to responses and
    first chunks, and ``stop_reason`` to every choice that finished (and to every completions
    choice); OpenAI sends none of them.
    """
    container = obj if isinstance(obj, Mapping) else getattr(obj, "__pydantic_extra__", None)
    if container and any(key in container for key in _VLLM_RESPONSE_EXTRAS):
        return True
    for choice in items_of(field(obj, "choices")):
        extra = choice if isinstance(choice, Mapping) else getattr(choice, "__pydantic_extra__", None)
        if extra and "stop_reason" in extra:
            return True
    return False


# --- the Python API's requests and streams (driven by llmmeter.instrument.vllm) ---------------------
_FLOAT_PARAMS: tuple[tuple[str, str], ...] = (
    ("temperature", semconv.REQUEST_TEMPERATURE),
    ("top_p", semconv.REQUEST_TOP_P),
    ("top_k", semconv.REQUEST_TOP_K),
    ("frequency_penalty", semconv.REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", semconv.REQUEST_PRESENCE_PENALTY),
)


def request_params_of(sampling_params: Any) -> dict[str, Any]:
    """Semantic-convention request attributes from a ``SamplingParams`` or ``PoolingParams``
    (one, not a list)."""
    params: dict[str, Any] = {}
    if sampling_params is None or isinstance(sampling_params, list | tuple):
        return params
    dimensions = int_or_none(field(sampling_params, "dimensions"))
    if dimensions is not None:
        params[semconv.EMBEDDINGS_DIMENSION_COUNT] = dimensions
    max_tokens = int_or_none(field(sampling_params, "max_tokens"))
    if max_tokens is not None:
        params[semconv.REQUEST_MAX_TOKENS] = max_tokens
    for name, attribute in _FLOAT_PARAMS:
        value = field(sampling_params, name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            params[attribute] = float(value)
    seed = int_or_none(field(sampling_params, "seed"))
    if seed is not None:
        params[semconv.REQUEST_SEED] = seed
    n = int_or_none(field(sampling_params, "n"))
    if n is not None and n != 1:
        params[semconv.REQUEST_CHOICE_COUNT] = n
    stop = field(sampling_params, "stop")
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        params[semconv.REQUEST_STOP_SEQUENCES] = tuple(stop)
    elif isinstance(stop, str):
        params[semconv.REQUEST_STOP_SEQUENCES] = (stop,)
    return params


def is_delta_output(sampling_params: Any) -> bool:
    """Whether ``SamplingParams.output_kind`` is ``DELTA`` (each output holds only new tokens)."""
    kind = field(sampling_params, "output_kind")
    return bool(getattr(kind, "name", kind) == "DELTA")


def read_request_output(output: Any) -> Observed:
    """Usage, request id, finish reasons and server timings of one finished ``RequestOutput``."""
    return Observed(
        usage=usage_from_request_output(output),
        info=ResponseInfo(
            response_id=str_or_none(field(output, "request_id")),
            finish_reasons=finish_reasons_from_request_output(output),
            server_timings=server_timings_from_request_output(output),
        ),
    )


class RequestOutputStreamReader:
    """The stream reader of one ``AsyncLLM.generate`` request's ``RequestOutput`` stream.

    ``delta=True`` for ``RequestOutputKind.DELTA`` (each output carries only the new tokens of
    each completion: counts add up); otherwise each output carries everything so far
    (``CUMULATIVE``, ``FINAL_ONLY``: the latest count of each completion wins).
    """

    __slots__ = ("_counts", "delta", "last", "prompt_tokens")

    def __init__(self, *, delta: bool = False) -> None:
        self.delta = delta
        self.last: Any = None
        self.prompt_tokens: int | None = None
        self._counts: dict[int, int] = {}

    def feed(self, chunk: Any) -> bool:
        """Count the tokens of one ``RequestOutput``; True when it brings new ones."""
        self.last = chunk
        if self.prompt_tokens is None:
            self.prompt_tokens = prompt_tokens_of(chunk)
        counts = self._counts
        new_tokens = False
        for position, completion in enumerate(chunk.outputs):
            ids = completion.token_ids
            if ids is None:
                continue
            index = getattr(completion, "index", position)
            seen = counts.get(index, 0)
            total = seen + len(ids) if self.delta else len(ids)
            if total > seen:
                counts[index] = total
                new_tokens = True
        return new_tokens

    def result(self) -> Observed:
        """Usage, id, finish reasons and server timings from what the stream delivered."""
        last = self.last
        if last is None:
            return Observed()  # nothing arrived: usage stays unobserved
        return Observed(
            usage=Usage(
                input_tokens=self.prompt_tokens,
                output_tokens=sum(self._counts.values()),
                cache_read_input_tokens=int_or_none(field(last, "num_cached_tokens")),
                cache_write_input_tokens=int_or_none(field(last, "num_cache_creation_tokens")),
            ),
            info=ResponseInfo(
                response_id=str_or_none(field(last, "request_id")),
                finish_reasons=finish_reasons_from_request_output(last),
                server_timings=server_timings_from_request_output(last),
            ),
        )
