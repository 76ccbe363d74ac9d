"""Instrumentation of vLLM's Python API: ``vllm.LLM`` and ``AsyncLLM``.

``llmmeter.instrument(vllm.LLM(...))`` (:func:`instrument_vllm_llm`) measures ``generate``,
``chat`` and, for a pooling model, ``embed``. One call is a *batch*: it gets one span (kind
INTERNAL, a step record named ``vllm.LLM.generate``/``.chat``/``.embed`` that rolls up tokens and
cost), and every request in it gets its own :class:`~llmmeter.record.CallRecord` (provider
``vllm``, no server address; operation ``text_completion``, ``chat`` or ``embeddings``):

* tokens are exact, from the token ids (prompt, every completion, ``num_cached_tokens``; an
  embedding has input tokens only);
* ``timings.duration_s`` is the batch's wall time -- the caller gets every result only when the
  whole batch returns; there is no client-side TTFT for a batch call;
* ``timings.server`` holds vLLM's own per-request queue time, prefill, decode, TTFT and TPOT from
  ``RequestOutput.metrics`` -- **only when stats logging is on**: ``vllm.LLM`` turns it off by
  default, so create it with ``LLM(..., disable_log_stats=False)``.

``instrument_async_llm(engine)`` measures ``AsyncLLM.generate``: every request is a stream with
client-side TTFT/TPOT (the clock starts when iteration starts, which is when vLLM receives the
request). The returned async generator is an
:class:`~llmmeter.instrument.generators.AsyncMeteredGenerator`, the proxy every measured
generator uses: ``asend``/``athrow``/``aclose`` reach vLLM's generator, and the record is
finished exactly once -- ``ok`` when exhausted, ``error`` on an exception, ``aborted`` on
``aclose()`` before the end or on cancellation, ``abandoned`` when dropped unfinished and
garbage-collected.

Nothing here imports vLLM: objects are recognised by their class names and read by attribute.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from llmmeter._log import guard
from llmmeter.config import get_settings
from llmmeter.instrument.generators import AsyncMeteredGenerator
from llmmeter.measure import Measurement, attach_guarded, detach_guarded, outcome_of
from llmmeter.pipeline import complete
from llmmeter.providers.base import field, str_or_none
from llmmeter.providers.types import apply_observed
from llmmeter.providers.vllm import (
    RequestOutputStreamReader,
    is_delta_output,
    read_request_output,
    request_params_of,
)
from llmmeter.record import CallKind, CallRecord, Outcome, Timings

__all__ = [
    "instrument_async_llm",
    "instrument_vllm_llm",
    "is_vllm_async_engine",
    "is_vllm_engine",
    "is_vllm_llm",
    "uninstrument_vllm",
]

T = TypeVar("T")

PROVIDER = "vllm"
_LLM_CLASSES = frozenset({"LLM"})
_ASYNC_CLASSES = frozenset({"AsyncLLM", "AsyncLLMEngine"})
_INSTRUMENTED_FLAG = "_llmmeter_instrumented"
# method -> (gen_ai.operation.name, the argument holding the request parameters). LLM.embed is
# measured, not LLM.encode: encode also serves classification and scoring, which are not
# embeddings; embed calls encode, and the nested call is not measured twice (see _in_batch).
_BATCH_METHODS: dict[str, tuple[str, str]] = {
    "generate": ("text_completion", "sampling_params"),
    "chat": ("chat", "sampling_params"),
    "embed": ("embeddings", "pooling_params"),
}
_WRAPPED_METHODS = tuple(_BATCH_METHODS)

# True while an instrumented LLM call runs: LLM.chat may call LLM.generate internally.
_in_batch: ContextVar[bool] = ContextVar("llmmeter_vllm_batch", default=False)


# --- recognising vLLM objects ---------------------------------------------------------------------
def _is_vllm_class(obj: Any, names: frozenset[str]) -> bool:
    return any(cls.__name__ in names and cls.__module__.startswith("vllm") for cls in type(obj).__mro__)


def is_vllm_llm(obj: Any) -> bool:
    """True for a ``vllm.LLM`` instance (the offline, batch API)."""
    return _is_vllm_class(obj, _LLM_CLASSES)


def is_vllm_async_engine(obj: Any) -> bool:
    """True for a ``vllm.v1.engine.async_llm.AsyncLLM`` (or its ``AsyncLLMEngine`` alias)."""
    return _is_vllm_class(obj, _ASYNC_CLASSES)


def is_vllm_engine(obj: Any) -> bool:
    """True for anything :func:`instrument_vllm` can measure: ``vllm.LLM`` or ``AsyncLLM``."""
    return is_vllm_llm(obj) or is_vllm_async_engine(obj)


def instrument_vllm(engine: T, *, model: str | None = None) -> T:
    """Dispatch to :func:`instrument_vllm_llm` or :func:`instrument_async_llm`."""
    if is_vllm_async_engine(engine):
        return instrument_async_llm(engine, model=model)
    return instrument_vllm_llm(engine, model=model)


def uninstrument_vllm(engine: T) -> T:
    """Undo :func:`instrument_vllm_llm` / :func:`instrument_async_llm`; returns the same object."""
    for name in (*_WRAPPED_METHODS, _INSTRUMENTED_FLAG):
        vars(engine).pop(name, None)
    return engine


def served_model_name(engine: Any) -> str | None:
    """The model name vLLM reports for ``engine`` (``--served-model-name``, else the model path)."""
    config = field(engine, "model_config")
    if config is None:
        config = field(field(engine, "llm_engine"), "model_config")
    name = field(config, "served_model_name")
    if isinstance(name, list | tuple):
        name = name[0] if name else None
    return str_or_none(name) or str_or_none(field(config, "model"))


def _params_arg(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The request parameters: keyword ``name``, else the second positional argument
    (``generate``/``chat`` take ``sampling_params`` there; ``embed`` takes keywords only)."""
    if name in kwargs:
        return kwargs[name]
    return args[1] if len(args) > 1 else None


# --- vllm.LLM: one batch span, one record per request ---------------------------------------------
def instrument_vllm_llm(llm: T, *, model: str | None = None) -> T:
    """Measure ``llm.generate``, ``llm.chat`` and ``llm.embed`` of this ``vllm.LLM``; returns the
    same object.

    ``model`` overrides the recorded model name (default: vLLM's served model name, which is the
    model path unless ``served_model_name`` was given) -- use the name your prices are under.
    Server-side timings need ``LLM(..., disable_log_stats=False)``.
    """
    if vars(llm).get(_INSTRUMENTED_FLAG):
        return llm
    model_name = model or served_model_name(llm)
    for method in _BATCH_METHODS:
        original = getattr(llm, method, None)
        if original is not None:
            setattr(llm, method, _batch_method(original, method, model_name))
    setattr(llm, _INSTRUMENTED_FLAG, True)
    return llm


def _batch_method(original: Callable[..., Any], method: str, model: str | None) -> Callable[..., Any]:
    operation, params_name = _BATCH_METHODS[method]

    def measured(*args: Any, **kwargs: Any) -> Any:
        if _in_batch.get():
            return original(*args, **kwargs)
        batch = None
        with guard("starting a vLLM batch measurement"):
            batch = _start_batch(method, operation, model)
        if batch is None:
            return original(*args, **kwargs)
        token = _in_batch.set(True)
        context = attach_guarded(batch)  # spans opened inside vLLM's call nest under the batch
        started_ns = time.perf_counter_ns()
        try:
            outputs = original(*args, **kwargs)
        except BaseException as exc:
            detach_guarded(context)
            _in_batch.reset(token)
            batch.finish(outcome_of(exc), exc)
            raise
        duration_s = (time.perf_counter_ns() - started_ns) / 1e9
        detach_guarded(context)
        _in_batch.reset(token)
        with guard("recording the vLLM batch"):
            request_params = _params_arg(params_name, args, kwargs)
            _record_requests(batch, outputs, operation, model, request_params, duration_s)
        batch.finish(Outcome.OK)
        return outputs

    measured.__wrapped__ = original  # type: ignore[attr-defined]
    measured.__doc__ = getattr(original, "__doc__", None)
    return measured


def _start_batch(method: str, operation: str, model: str | None) -> Measurement | None:
    settings = get_settings()
    if not settings.enabled:
        return None
    record = CallRecord(
        operation=operation,
        provider=PROVIDER,
        request_model=model,
        kind=CallKind.STEP,
        name=f"vllm.LLM.{method}",
    )
    return Measurement(settings, record)


def _record_requests(
    batch: Measurement,
    outputs: Any,
    operation: str,
    model: str | None,
    request_params: Any,
    duration_s: float,
) -> None:
    """One finished record per ``RequestOutput``, rolled up into the batch step."""
    if not isinstance(outputs, list | tuple):
        return
    per_request_params = isinstance(request_params, list | tuple) and len(request_params) == len(outputs)
    attributes = dict(batch.record.attributes)
    for index, output in enumerate(outputs):
        params = request_params[index] if per_request_params else request_params
        record = CallRecord(
            operation=operation,
            provider=PROVIDER,
            request_model=model,
            response_model=model,
            timings=Timings(
                start_time_unix_ns=batch.record.timings.start_time_unix_ns, duration_s=duration_s
            ),
            request_params=request_params_of(params),
            attributes=dict(attributes),
        )
        apply_observed(record, read_request_output(output))
        complete(batch.settings, record, None, batch)


# --- AsyncLLM: measured streams ---------------------------------------------------------------------
def instrument_async_llm(engine: T, *, model: str | None = None) -> T:
    """Measure ``engine.generate`` of this ``AsyncLLM``: one streamed record per request.

    Each call returns an :class:`~llmmeter.instrument.generators.AsyncMeteredGenerator` around
    vLLM's async generator. Works with every ``RequestOutputKind``: ``CUMULATIVE`` (vLLM's
    default), ``DELTA`` and ``FINAL_ONLY`` (then TTFT is the whole request's time: nothing
    arrives earlier).
    """
    if vars(engine).get(_INSTRUMENTED_FLAG):
        return engine
    original = engine.generate  # type: ignore[attr-defined]
    model_name = model or served_model_name(engine)

    def generate(*args: Any, **kwargs: Any) -> Any:
        stream = original(*args, **kwargs)
        measured = stream
        with guard("wrapping an AsyncLLM stream"):
            sampling_params = _params_arg("sampling_params", args, kwargs)
            start = functools.partial(
                _start_request,
                model_name,
                request_params_of(sampling_params),
                delta=is_delta_output(sampling_params),
            )
            # Started lazily: vLLM submits the request when its generator is first awaited.
            measured = AsyncMeteredGenerator(stream, start=start)
        return measured

    generate.__wrapped__ = original  # type: ignore[attr-defined]
    generate.__doc__ = getattr(original, "__doc__", None)
    engine.generate = generate  # type: ignore[attr-defined]
    setattr(engine, _INSTRUMENTED_FLAG, True)
    return engine


def _start_request(
    model: str | None, request_params: dict[str, Any], *, delta: bool = False
) -> Measurement | None:
    """The measurement of one ``AsyncLLM.generate`` stream, when its iteration starts."""
    settings = get_settings()
    if not settings.enabled:
        return None
    record = CallRecord(
        operation="text_completion",
        provider=PROVIDER,
        request_model=model,
        response_model=model,
        streaming=True,
        request_params=request_params,
    )
    return Measurement(settings, record, RequestOutputStreamReader(delta=delta))
