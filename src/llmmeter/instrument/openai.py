"""Instrumentation of the official ``openai`` package (and every OpenAI-compatible server).

One hook covers every endpoint and every calling style: the client's ``request()`` method, which
``create``, ``parse``, the ``stream()`` helpers, ``with_raw_response`` and
``with_streaming_response`` all go through. The hook

1. reads the endpoint and the JSON body to plan the record (operation, model, provider, server),
2. starts a :class:`~llmmeter.measure.Measurement` just before the SDK sends the request, with the
   call's span current only around the SDK call,
3. hands back exactly what the SDK returned -- a parsed object as is, a stream or a raw response
   behind a transparent proxy that measures it.

``llmmeter.instrument(client)`` hooks one client (and the clients it ``copy()``s);
``instrument_openai()`` hooks the client classes, for every client of the process. Nothing is
patched at import time.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, TypeVar

import wrapt
from opentelemetry import context as otel_context

from llmmeter._log import guard
from llmmeter.config import Settings, get_settings
from llmmeter.instrument.streams import AsyncMeteredStream, MeteredStream
from llmmeter.measure import Attached, ChunkReader, Measurement, outcome_of
from llmmeter.providers.openai_stream import (
    ChatStreamReader,
    CompletionStreamReader,
    ResponsesStreamReader,
    looks_like_vllm,
    output_messages,
)
from llmmeter.record import CallRecord, Outcome

T = TypeVar("T")

_SUPPRESS_KEY = getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
_measuring: ContextVar[bool] = ContextVar("llmmeter_openai_measuring", default=False)

# (url suffix, gen_ai.operation.name, openai.api.type, stream reader); most specific first.
_ENDPOINTS: tuple[tuple[str, str, str | None, type[Any] | None], ...] = (
    ("/chat/completions", "chat", "chat_completions", ChatStreamReader),
    ("/completions", "text_completion", None, CompletionStreamReader),
    ("/embeddings", "embeddings", None, None),
    ("/responses", "chat", "responses", ResponsesStreamReader),
)
_STREAM_USAGE_PROVIDERS = frozenset({"openai", "azure.ai.openai", "vllm"})
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(slots=True)
class _Plan:
    """What one request will be recorded as, and how its result must be read."""

    record: CallRecord
    body: Mapping[str, Any]
    reader_cls: type[Any] | None
    hide_usage_chunk: bool
    args: tuple[Any, ...]

    def new_reader(self) -> ChunkReader | None:
        return self.reader_cls(self.body) if self.reader_cls is not None else None


# --- planning (pure: reads the request, never the network) -------------------------------------
def _plan(
    client: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], settings: Settings, provider: str | None
) -> _Plan | None:
    if len(args) < 2:
        return None
    options = args[1]
    if str(getattr(options, "method", "")).lower() != "post":
        return None
    endpoint = _endpoint_of(str(options.url))
    if endpoint is None:
        return None
    operation, api_type, reader_cls = endpoint
    body = options.json_data if isinstance(options.json_data, Mapping) else {}
    stream = bool(kwargs.get("stream", False))
    host, port, detected_provider = _server_and_provider(client)
    record = CallRecord(
        operation=operation,
        provider=provider or detected_provider,
        request_model=body.get("model") if isinstance(body.get("model"), str) else None,
        server_address=host,
        server_port=port,
        streaming=stream,
        request_params=_request_params(body, api_type),
    )
    hide_usage_chunk = False
    if (
        stream
        and operation != "embeddings"
        and api_type != "responses"
        and settings.stream_usage
        and "include_usage" not in (body.get("stream_options") or {})
        and _accepts_stream_options(record.provider, host, port, settings)
    ):
        args = (args[0], _with_include_usage(options, body), *args[2:])
        hide_usage_chunk = True
    if settings.capture_content:
        record.content = _input_content(body)
    return _Plan(record, body, reader_cls if stream else None, hide_usage_chunk, args)


def _endpoint_of(url: str) -> tuple[str, str | None, type[Any] | None] | None:
    for suffix, operation, api_type, reader_cls in _ENDPOINTS:
        if url.endswith(suffix):
            return operation, api_type, reader_cls
    return None


_server_cache: dict[int, tuple[object, str | None, int | None, str]] = {}


def _server_and_provider(client: Any) -> tuple[str | None, int | None, str]:
    """(host, port, provider) of a client, computed once per base URL object."""
    base_url = getattr(client, "base_url", None)
    cached = _server_cache.get(id(base_url))
    if cached is not None and cached[0] is base_url:
        return cached[1], cached[2], cached[3]
    host = getattr(base_url, "host", None) or None
    port = None
    if host is not None:
        port = getattr(base_url, "port", None) or _DEFAULT_PORTS.get(str(getattr(base_url, "scheme", "")))
    provider = _provider_of(client, host)
    if len(_server_cache) > 256:
        _server_cache.clear()
    _server_cache[id(base_url)] = (base_url, host, port, provider)
    return host, port, provider


def _provider_of(client: Any, host: str | None) -> str:
    from llmmeter.providers.openai import provider_from_host

    if type(client).__name__ in ("AzureOpenAI", "AsyncAzureOpenAI"):
        return "azure.ai.openai"
    return provider_from_host(host) or "openai_compatible"


def _accepts_stream_options(provider: str, host: str | None, port: int | None, settings: Settings) -> bool:
    if provider in _STREAM_USAGE_PROVIDERS:
        return True
    hosts = settings.stream_usage_hosts
    return bool(hosts) and (host in hosts or f"{host}:{port}" in hosts)


def _with_include_usage(options: Any, body: Mapping[str, Any]) -> Any:
    new_options = options.model_copy()
    stream_options = dict(body.get("stream_options") or {})
    stream_options["include_usage"] = True
    new_options.json_data = {**body, "stream_options": stream_options}
    return new_options


_OUTPUT_TYPES = {"json_schema": "json", "json_object": "json", "text": "text"}


def _request_params(body: Mapping[str, Any], api_type: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if api_type is not None:
        params["openai.api.type"] = api_type
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    if isinstance(max_tokens, int):
        params["gen_ai.request.max_tokens"] = max_tokens
    for key, attribute in (
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
    ):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            params[attribute] = float(value)
    seed = body.get("seed")
    if isinstance(seed, int):
        params["gen_ai.request.seed"] = seed
    stop = body.get("stop")
    if isinstance(stop, str):
        params["gen_ai.request.stop_sequences"] = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        params["gen_ai.request.stop_sequences"] = tuple(stop)
    n = body.get("n")
    if isinstance(n, int) and n != 1:
        params["gen_ai.request.choice.count"] = n
    reasoning = body.get("reasoning")
    effort = body.get("reasoning_effort") or (
        reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    )
    if isinstance(effort, str):
        params["gen_ai.request.reasoning.level"] = effort
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") in _OUTPUT_TYPES:
        params["gen_ai.output.type"] = _OUTPUT_TYPES[response_format["type"]]
    tier = body.get("service_tier")
    if isinstance(tier, str) and tier != "auto":
        params["openai.request.service_tier"] = tier
    _embeddings_params(body, params)
    return params


def _embeddings_params(body: Mapping[str, Any], params: dict[str, Any]) -> None:
    dimensions = body.get("dimensions")
    if isinstance(dimensions, int) and not isinstance(dimensions, bool):
        params["gen_ai.embeddings.dimension.count"] = dimensions
    encoding = body.get("encoding_format")
    if isinstance(encoding, str):
        # What went on the wire: the openai SDK asks for base64 itself when the caller set none.
        params["gen_ai.request.encoding_formats"] = (encoding,)


def _input_content(body: Mapping[str, Any]) -> dict[str, Any]:
    for key in ("messages", "input", "prompt"):
        if key in body:
            return {"gen_ai.input.messages": body[key]}
    return {}


# --- reading results ------------------------------------------------------------------------------
def _fill_from_response(plan: _Plan, response: Any) -> Callable[[CallRecord], None]:
    def fill(record: CallRecord) -> None:
        from llmmeter.providers.openai import response_info_from_openai, usage_from_openai

        usage = getattr(response, "usage", None)
        record.usage = usage_from_openai(usage) if usage is not None else None
        info = response_info_from_openai(response)
        record.response_id = info.response_id
        record.response_model = info.response_model
        record.finish_reasons = info.finish_reasons
        record.service_tier = info.service_tier
        if info.provider_cost is not None:
            record.cost = info.provider_cost
        if info.server_timings is not None:
            record.timings.server = info.server_timings
        if record.provider == "openai_compatible" and looks_like_vllm(response):
            record.provider = "vllm"
        if record.provider == "vllm":
            from llmmeter.providers.vllm import apply_vllm_extras

            apply_vllm_extras(record, response)
        if record.content is not None:
            text = _output_text(response)
            if text:
                record.content["gen_ai.output.messages"] = output_messages(text)

    return fill


def _output_text(response: Any) -> str | None:
    """The generated text of a non-streamed response (content capture only)."""
    text = getattr(response, "output_text", None)  # Responses API
    if isinstance(text, str):
        return text
    parts: list[str] = []
    for choice in getattr(response, "choices", None) or ():
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None) if message is not None else getattr(choice, "text", None)
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts) or None


_KINDS = ("Stream", "AsyncStream", "LegacyAPIResponse", "AsyncAPIResponse", "APIResponse")
_kind_cache: dict[type, str | None] = {}


def _kind_of(obj: Any) -> str | None:
    """Which SDK wrapper ``obj`` is (``"Stream"``, ``"LegacyAPIResponse"``...), ``None`` if a model."""
    cls = type(obj)
    try:
        return _kind_cache[cls]
    except KeyError:
        pass
    kind = None
    for base in cls.__mro__:
        if base.__name__ in _KINDS and base.__module__.startswith("openai"):
            kind = base.__name__
            break
    _kind_cache[cls] = kind
    return kind


def _measured_result(result: Any, plan: _Plan, measurement: Measurement) -> Any:
    """Return ``result`` as the caller expects it, measured."""
    kind = _kind_of(result)
    if kind is None:
        measurement.finish(Outcome.OK, fill=_fill_from_response(plan, result))
        return result
    if kind == "Stream":
        measurement.reader = plan.new_reader()
        return MeteredStream(result, measurement, hide_usage_chunk=plan.hide_usage_chunk)
    if kind == "AsyncStream":
        measurement.reader = plan.new_reader()
        return AsyncMeteredStream(result, measurement, hide_usage_chunk=plan.hide_usage_chunk)
    if kind == "LegacyAPIResponse":
        if plan.record.streaming:
            return MeteredRawResponse(result, plan, measurement)
        parsed = None
        with guard("parsing the raw response"):
            parsed = result.parse()  # cached by the SDK: the caller's parse() returns this object
        measurement.finish(Outcome.OK, fill=_fill_from_response(plan, parsed))
        return result
    if kind == "AsyncAPIResponse":
        return AsyncMeteredRawResponse(result, plan, measurement)
    return MeteredRawResponse(result, plan, measurement)


def _measure_parsed(parsed: Any, plan: _Plan, measurement: Measurement) -> Any:
    """What ``raw.parse()`` returned: a stream to proxy, or the final object to read."""
    kind = _kind_of(parsed)
    if kind == "Stream":
        measurement.reader = plan.new_reader()
        return MeteredStream(parsed, measurement, hide_usage_chunk=plan.hide_usage_chunk)
    if kind == "AsyncStream":
        measurement.reader = plan.new_reader()
        return AsyncMeteredStream(parsed, measurement, hide_usage_chunk=plan.hide_usage_chunk)
    measurement.finish(Outcome.OK, fill=_fill_from_response(plan, parsed))
    return parsed


class _RawResponseBookkeeping:
    """What the sync and async raw-response proxies share; only ``parse()`` differs (await)."""

    _self_plan: _Plan
    _self_measurement: Measurement
    _self_parsed: dict[Any, Any]
    _self_finalizer: weakref.finalize[..., Any]

    def _self_setup(self, plan: _Plan, measurement: Measurement) -> None:
        self._self_plan = plan
        self._self_measurement = measurement
        self._self_parsed = {}
        outcome = Outcome.ABANDONED if plan.record.streaming else Outcome.OK
        self._self_finalizer = weakref.finalize(self, measurement.finish, outcome)
        self._self_finalizer.atexit = False

    @staticmethod
    def _self_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return args, tuple(sorted(kwargs.items(), key=lambda kv: kv[0]))

    def _self_failed(self, exc: BaseException) -> None:
        self._self_finalizer.detach()
        self._self_measurement.finish(outcome_of(exc), exc)

    def _self_parsed_result(self, key: Any, parsed: Any) -> Any:
        self._self_finalizer.detach()
        measured = parsed
        with guard("measuring the parsed response"):
            measured = _measure_parsed(parsed, self._self_plan, self._self_measurement)
        self._self_parsed[key] = measured
        return measured


class MeteredRawResponse(_RawResponseBookkeeping, wrapt.BaseObjectProxy):  # type: ignore[misc,type-arg]
    """``with_raw_response`` / ``with_streaming_response`` result: headers etc. untouched;
    ``parse()`` returns the measured object (the same one on every call)."""

    def __init__(self, response: Any, plan: _Plan, measurement: Measurement) -> None:
        super().__init__(response)
        self._self_setup(plan, measurement)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        key = self._self_key(args, kwargs)
        if key in self._self_parsed:
            return self._self_parsed[key]
        try:
            parsed = self.__wrapped__.parse(*args, **kwargs)
        except BaseException as exc:
            self._self_failed(exc)
            raise
        return self._self_parsed_result(key, parsed)


class AsyncMeteredRawResponse(_RawResponseBookkeeping, wrapt.BaseObjectProxy):  # type: ignore[misc,type-arg]
    """Async ``with_streaming_response`` result (``AsyncAPIResponse``: ``await parse()``)."""

    def __init__(self, response: Any, plan: _Plan, measurement: Measurement) -> None:
        super().__init__(response)
        self._self_setup(plan, measurement)

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        key = self._self_key(args, kwargs)
        if key in self._self_parsed:
            return self._self_parsed[key]
        try:
            parsed = await self.__wrapped__.parse(*args, **kwargs)
        except BaseException as exc:
            self._self_failed(exc)
            raise
        return self._self_parsed_result(key, parsed)


# --- the hook -----------------------------------------------------------------------------------
def _should_measure() -> bool:
    if _measuring.get():
        return False
    return not (_SUPPRESS_KEY is not None and otel_context.get_value(_SUPPRESS_KEY))


def _begin(
    client: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], provider: str | None
) -> tuple[_Plan, Measurement] | None:
    settings = get_settings()
    if not settings.enabled:
        return None
    plan = _plan(client, args, kwargs, settings, provider)
    if plan is None:
        return None
    return plan, Measurement(settings, plan.record)


def measured_request(
    wrapped: Callable[..., T],
    client: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    provider: str | None = None,
) -> T:
    """Measure one synchronous ``client.request(...)`` call."""
    if not _should_measure():
        return wrapped(*args, **kwargs)
    started = None
    with guard("planning the request"):
        started = _begin(client, args, kwargs, provider)
    if started is None:
        return wrapped(*args, **kwargs)
    plan, measurement = started
    token = _attach(measurement)
    try:
        result = wrapped(*plan.args, **kwargs)
    except BaseException as exc:
        _detach(token)
        measurement.finish(outcome_of(exc), exc)
        raise
    _detach(token)
    with guard("measuring the result"):
        return _measured_result(result, plan, measurement)  # type: ignore[no-any-return]
    return result


async def measured_async_request(
    wrapped: Callable[..., Awaitable[T]],
    client: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    provider: str | None = None,
) -> T:
    """Measure one asynchronous ``client.request(...)`` call."""
    if not _should_measure():
        return await wrapped(*args, **kwargs)
    started = None
    with guard("planning the request"):
        started = _begin(client, args, kwargs, provider)
    if started is None:
        return await wrapped(*args, **kwargs)
    plan, measurement = started
    token = _attach(measurement)
    try:
        result = await wrapped(*plan.args, **kwargs)
    except BaseException as exc:
        _detach(token)
        measurement.finish(outcome_of(exc), exc)
        raise
    _detach(token)
    with guard("measuring the result"):
        return _measured_result(result, plan, measurement)  # type: ignore[no-any-return]
    return result


def _attach(measurement: Measurement) -> tuple[Attached, Token[bool]] | None:
    with guard("attaching the span context"):
        return measurement.attach(), _measuring.set(True)
    return None


def _detach(token: tuple[Attached, Token[bool]] | None) -> None:
    if token is None:
        return
    with guard("detaching the span context"):
        attached, measuring = token
        _measuring.reset(measuring)
        Measurement.detach(attached)


# --- per-client and process-wide installation ------------------------------------------------------
def is_openai_client(obj: Any) -> bool:
    """True for ``openai.OpenAI``/``AsyncOpenAI``/``AzureOpenAI``... instances."""
    return any(
        cls.__name__ in ("SyncAPIClient", "AsyncAPIClient") and cls.__module__.startswith("openai")
        for cls in type(obj).__mro__
    )


def _is_async_client(client: Any) -> bool:
    return any(cls.__name__ == "AsyncAPIClient" for cls in type(client).__mro__)


def instrument_client(client: T, *, provider: str | None = None) -> T:
    """Measure every request of this one client (and of clients made by its ``with_options``)."""
    if getattr(client, "_llmmeter_instrumented", False):
        return client
    original_request = client.request  # type: ignore[attr-defined]
    original_copy = client.copy  # type: ignore[attr-defined]

    if _is_async_client(client):

        async def request(*args: Any, **kwargs: Any) -> Any:
            return await measured_async_request(original_request, client, args, kwargs, provider)
    else:

        def request(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            return measured_request(original_request, client, args, kwargs, provider)

    def copy(*args: Any, **kwargs: Any) -> Any:
        return instrument_client(original_copy(*args, **kwargs), provider=provider)

    client.request = request  # type: ignore[attr-defined]
    client.copy = copy  # type: ignore[attr-defined]
    client.with_options = copy  # type: ignore[attr-defined]
    client._llmmeter_instrumented = True  # type: ignore[attr-defined]
    return client


def uninstrument_client(client: T) -> T:
    """Undo :func:`instrument_client`."""
    for name in ("request", "copy", "with_options", "_llmmeter_instrumented"):
        vars(client).pop(name, None)
    return client


_installed = False


def _sync_hook(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return measured_request(wrapped, instance, args, kwargs)


def _async_hook(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return measured_async_request(wrapped, instance, args, kwargs)


def instrument_openai() -> None:
    """Measure every ``openai`` client of the process (idempotent)."""
    global _installed
    if _installed:
        return
    from openai import _base_client

    wrapt.wrap_function_wrapper(_base_client, "SyncAPIClient.request", _sync_hook)
    wrapt.wrap_function_wrapper(_base_client, "AsyncAPIClient.request", _async_hook)
    _installed = True


def uninstrument_openai() -> None:
    """Undo :func:`instrument_openai` (idempotent)."""
    global _installed
    if not _installed:
        return
    from openai import _base_client

    for cls in (_base_client.SyncAPIClient, _base_client.AsyncAPIClient):
        method = cls.__dict__["request"]
        if isinstance(method, wrapt.FunctionWrapper):
            setattr(cls, "request", method.__wrapped__)  # noqa: B010 (mypy: method assignment)
    _installed = False
