"""``@llmmeter.metered``: measure any function -- an LLM call of your own, or a step around several.

* ``@metered(model="gpt-4o-mini", provider="openai")`` on a function that calls an LLM and returns
  its response (an OpenAI/Anthropic/Gemini-style object or dict with usage): one LLM record with
  the usage and cost read from the return value.
* ``@metered(name="plan-trip")`` on a step that is not an LLM call itself (an agent step, a tool,
  a routing decision): a step record whose span carries the rolled-up tokens and cost of every
  measured call made inside it.
* bare ``@metered``: a step, unless the function returns a response with usage, in which case it
  is recorded as that LLM call.

When a function declared as an LLM call turns out to contain instrumented calls itself (say it
wraps an instrumented OpenAI client), it is recorded as a step over those calls instead, so no
token is counted twice. Works on sync and async functions, generators and async generators; the
function's return value, yielded items and exceptions pass through unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, TypeVar, overload

from llmmeter._log import guard
from llmmeter.config import get_settings
from llmmeter.measure import Measurement, attach_guarded, detach_guarded, outcome_of
from llmmeter.providers import extract_response_info, extract_usage
from llmmeter.providers.anthropic import AnthropicStreamReader
from llmmeter.providers.base import field
from llmmeter.providers.gemini import GeminiStreamReader
from llmmeter.providers.ollama import OllamaStreamReader
from llmmeter.providers.openai_stream import ChatStreamReader
from llmmeter.providers.types import Observed, StreamReader
from llmmeter.record import AttributeValue, CallKind, CallRecord, Outcome

F = TypeVar("F", bound=Callable[..., Any])


class _Spec:
    """What one decorated function declares about itself."""

    __slots__ = ("attributes", "is_llm", "model", "name", "operation", "provider")

    def __init__(
        self,
        fn: Callable[..., Any],
        model: str | None,
        provider: str | None,
        name: str | None,
        operation: str | None,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> None:
        self.is_llm = model is not None or provider is not None
        self.model = model
        self.provider = provider
        self.name = name or fn.__qualname__
        self.operation = operation or ("chat" if self.is_llm else "step")
        self.attributes = dict(attributes or {})

    def begin(self, *, streaming: bool) -> Measurement | None:
        settings = get_settings()
        if not settings.enabled:
            return None
        record = CallRecord(
            operation=self.operation,
            provider=self.provider or "unknown",
            request_model=self.model,
            kind=CallKind.LLM if self.is_llm else CallKind.STEP,
            name=self.name,
            streaming=streaming,
            attributes=dict(self.attributes),
        )
        reader = _YieldedItems(self) if streaming else None
        return Measurement(settings, record, reader)

    def fill_from_result(self, measurement: Measurement, result: Any) -> None:
        """Read usage from the function's return value; decide LLM call vs. step."""
        record = measurement.record
        if record.rollup_calls:
            _become_step(measurement)
            return
        usage = extract_usage(result)
        if usage is None:
            return
        record.kind = CallKind.LLM
        record.usage = usage
        _apply_response_info(record, result)
        if record.operation == "step":
            record.operation = "chat"
        if measurement.span is not None and not self.is_llm:
            with guard("renaming the span"):
                measurement.span.update_name(f"{record.operation} {record.response_model or record.name}")


def _apply_response_info(record: CallRecord, result: Any) -> None:
    info = extract_response_info(result)
    record.response_id = info.response_id or record.response_id
    record.response_model = info.response_model or record.response_model
    record.finish_reasons = info.finish_reasons or record.finish_reasons
    record.service_tier = info.service_tier or record.service_tier
    if info.provider_cost is not None:
        record.cost = info.provider_cost
    if info.server_timings is not None:
        record.timings.server = info.server_timings


def _become_step(measurement: Measurement) -> None:
    record = measurement.record
    record.kind = CallKind.STEP
    record.usage = None


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# Fields of a streamed choice's delta that carry output, for chunks that are not the SDK's own
# objects (those go to ChatStreamReader): dicts of decoded JSON, other SDKs' look-alikes.


_OUTPUT_FIELDS = (
    "content",
    "tool_calls",
    "refusal",
    "function_call",
    "audio",
    "reasoning_content",
    "reasoning",
)


def _choice_has_output(choice: Any) -> bool:
    """An OpenAI-style streamed choice carries output: text, tool-call arguments, audio..."""
    if _get(choice, "text"):
        return True
    delta = _get(choice, "delta")
    return delta is not None and any(_get(delta, name) for name in _OUTPUT_FIELDS)


def _is_openai_chat_chunk(cls: type) -> bool:
    return cls.__name__ == "ChatCompletionChunk" and cls.__module__.startswith("openai.")


_ANTHROPIC_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
    }
)


def _provider_reader(chunk: Any) -> StreamReader | None:
    """The stream reader of the provider whose chunk this is (SDK object or decoded JSON), or
    ``None`` for an item of another shape. Decided once per stream, from its first item."""
    if _is_openai_chat_chunk(type(chunk)):
        return ChatStreamReader()
    if field(chunk, "type") in _ANTHROPIC_EVENTS:
        return AnthropicStreamReader()
    if field(chunk, "candidates") is not None or field(chunk, "usage_metadata") is not None:
        return GeminiStreamReader()
    if field(chunk, "done") is not None and (
        field(chunk, "message") is not None or field(chunk, "response") is not None
    ):
        return OllamaStreamReader()
    return None


class _YieldedItems:
    """Chunk reader for generator functions: each yielded item is a chunk of the response.

    A stream of a known provider's chunks -- ``openai`` chat chunks, Anthropic events, Gemini
    ``GenerateContentResponse`` chunks, Ollama chunks, as SDK objects or decoded JSON -- is read by
    that provider's own stream reader, so a generator of them gets the same TTFT, usage and
    response info as the instrumented client; any other item (text, an OpenAI-style dict, an object
    of the user's own shape) by its fields.
    """

    __slots__ = ("last_with_usage", "reader", "sniffed", "spec")

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.last_with_usage: Any = None
        self.reader: StreamReader | None = None
        self.sniffed = False

    def feed(self, chunk: Any) -> bool:
        reader = self.reader
        if reader is not None:
            return reader.feed(chunk)
        if isinstance(chunk, str | bytes):
            return bool(chunk)
        if not self.sniffed:
            self.sniffed = True
            reader = self.reader = _provider_reader(chunk)
            if reader is not None:
                return reader.feed(chunk)
        usage = _get(chunk, "usage")
        if usage is not None:
            self.last_with_usage = chunk
        choices = _get(chunk, "choices")
        if choices is None:
            return usage is None  # an item of the user's own shape is output; a bare usage is not
        return any(_choice_has_output(choice) for choice in choices)

    def result(self) -> Observed:
        observed = self.reader.result() if self.reader is not None else Observed()
        last = self.last_with_usage
        if observed.usage is None and last is not None:
            observed.usage = extract_usage(last)
            if observed.usage is not None:
                observed.info = extract_response_info(last)
        return observed


@overload
def metered(func: F, /) -> F: ...


@overload
def metered(
    *,
    model: str | None = None,
    provider: str | None = None,
    name: str | None = None,
    operation: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Callable[[F], F]: ...


def metered(
    func: F | None = None,
    /,
    *,
    model: str | None = None,
    provider: str | None = None,
    name: str | None = None,
    operation: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> F | Callable[[F], F]:
    """Measure every call of the decorated function (see the module docstring).

    Args:
        model: the model the function calls (makes it an LLM call: span ``"chat {model}"``).
        provider: ``gen_ai.provider.name`` of that model (``openai``, ``anthropic``...).
        name: the step's name (default: the function's qualified name).
        operation: ``gen_ai.operation.name``; default ``chat`` for LLM calls, ``step`` otherwise
            (use e.g. ``invoke_agent`` or ``execute_tool`` for agent steps and tools).
        attributes: fixed attribution attributes for this function (merged under the ones from
            :func:`llmmeter.attributes`).
    """

    def decorate(fn: F) -> F:
        spec = _Spec(fn, model, provider, name, operation, attributes)
        if inspect.isasyncgenfunction(fn):
            return _wrap_async_generator(fn, spec)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(fn):
            return _wrap_coroutine(fn, spec)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(fn):
            return _wrap_generator(fn, spec)  # type: ignore[return-value]
        return _wrap_function(fn, spec)  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def _start(spec: _Spec, *, streaming: bool) -> Measurement | None:
    with guard("starting a measurement"):
        return spec.begin(streaming=streaming)
    return None


def _finish_ok(spec: _Spec, measurement: Measurement | None, result: Any) -> None:
    if measurement is not None:
        measurement.finish(Outcome.OK, fill=lambda _record: spec.fill_from_result(measurement, result))


def _finish_failed(measurement: Measurement | None, exc: BaseException) -> None:
    if measurement is not None:
        if measurement.record.rollup_calls:
            _become_step(measurement)
        measurement.finish(outcome_of(exc), exc)


def _wrap_function(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        measurement = _start(spec, streaming=False)
        token = attach_guarded(measurement)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            detach_guarded(token)
            _finish_failed(measurement, exc)
            raise
        detach_guarded(token)
        _finish_ok(spec, measurement, result)
        return result

    return wrapper


def _wrap_coroutine(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        measurement = _start(spec, streaming=False)
        token = attach_guarded(measurement)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            detach_guarded(token)
            _finish_failed(measurement, exc)
            raise
        detach_guarded(token)
        _finish_ok(spec, measurement, result)
        return result

    return wrapper


def _wrap_generator(
    fn: Callable[..., Generator[Any, Any, Any]], spec: _Spec
) -> Callable[..., Generator[Any, Any, Any]]:
    # Still a generator function (frameworks check inspect.isgeneratorfunction), delegating with
    # `yield from`, which forwards send(), throw() and close() and hands back the return value.
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        measurement = _start(spec, streaming=True)
        generator = fn(*args, **kwargs)
        if measurement is None:
            return (yield from generator)
        return (yield from measurement.observe_generator(generator, current=True))

    return wrapper


def _wrap_async_generator(
    fn: Callable[..., AsyncGenerator[Any, Any]], spec: _Spec
) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        measurement = _start(spec, streaming=True)
        generator = fn(*args, **kwargs)
        if measurement is not None:
            generator = measurement.observe_async_generator(generator, current=True)
        # `yield from` for async generators, which have none: asend/athrow/aclose reach `generator`.
        asend, athrow = generator.asend, generator.athrow
        sent: Any = None
        pending: BaseException | None = None
        while True:
            try:
                if pending is None:
                    item = await asend(sent)
                else:
                    item = await athrow(pending)
                    pending = None
            except StopAsyncIteration:
                return
            try:
                sent = yield item
            except GeneratorExit:
                await generator.aclose()
                raise
            except BaseException as exc:
                pending = exc

    return wrapper
