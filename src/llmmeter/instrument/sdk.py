"""One hook for every Stainless-generated SDK (``openai``, ``anthropic``): the client's ``request()``.

Every calling style of these SDKs -- ``create``, ``parse``, the ``stream()`` helpers,
``with_raw_response``, ``with_streaming_response``, sync and async -- goes through
``SyncAPIClient.request`` / ``AsyncAPIClient.request``. The hook knows no provider: an
:class:`SdkAdapter` (one module per SDK in ``providers/``) says what a request is recorded as and
how its response is read. The hook

1. asks the adapter to plan the request (operation, model, parameters, a changed body such as
   ``stream_options.include_usage``); a request the adapter does not know passes straight through,
2. starts a :class:`~llmmeter.measure.Measurement` just before the SDK sends the request, with the
   call's span current only around the SDK call,
3. hands back exactly what the SDK returned -- a parsed object as is, a stream or a raw response
   behind a transparent proxy that measures it.

When the server rejects the body llmmeter changed (a 4xx naming the added field), the caller's
own request is sent once more, unchanged, and that base URL is never asked again.

``instrument_client(client, adapter)`` hooks one client (and the clients it ``copy()``s);
``install(adapter)`` hooks the SDK's client classes, for every client of the process. Nothing is
patched at import time.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import wrapt

from llmmeter import semconv
from llmmeter._log import guard, log_once, swallowed
from llmmeter.config import Settings, get_settings
from llmmeter.instrument.scope import enter as _attach
from llmmeter.instrument.scope import leave as _detach
from llmmeter.instrument.scope import should_measure as _should_measure
from llmmeter.instrument.streams import AsyncMeteredStream, MeteredStream
from llmmeter.measure import Measurement, outcome_of, servers_without_stream_usage
from llmmeter.providers.base import fields_of
from llmmeter.providers.types import RequestSpec
from llmmeter.record import CallRecord, Outcome

T = TypeVar("T")

_DEFAULT_PORTS = {"https": 443, "http": 80}
_KINDS = ("Stream", "AsyncStream", "LegacyAPIResponse", "AsyncAPIResponse", "APIResponse")


class SdkAdapter(Protocol):
    """What the generic hook needs from one Stainless-generated SDK's adapter."""

    sdk_module: str
    """The SDK's top-level module (``"openai"``): its ``_base_client`` is hooked, and its
    ``Stream``/``APIResponse`` classes are recognised by this prefix."""

    def provider(self, client: Any, host: str | None) -> str:
        """``gen_ai.provider.name`` for a client talking to ``host``."""
        ...

    def plan(
        self, url: str, body: Mapping[str, Any], stream: bool, ask_usage: bool, files: Any = None
    ) -> RequestSpec | None:
        """What a POST to ``url`` will be recorded as; ``None`` for endpoints not measured.
        ``files``: what a multipart request uploads."""
        ...

    def rejects_body_change(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the server refusing the body change the plan asked for."""
        ...


@dataclass(slots=True)
class _Plan:
    """One request about to be sent: its record, the adapter's spec and the arguments to send."""

    record: CallRecord
    spec: RequestSpec
    args: tuple[Any, ...]
    base_url: str


# --- planning (pure: reads the request, never the network) -------------------------------------
def _plan(
    adapter: SdkAdapter,
    client: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    settings: Settings,
    provider: str | None,
) -> _Plan | None:
    if len(args) < 2:
        return None
    options = args[1]
    # One read of the options' fields: each attribute read of the SDK's pydantic model would go
    # through its __getattr__ hook, on the caller's thread of every call.
    option_fields = fields_of(options)
    if str(option_fields.get("method", "")).lower() != "post":
        return None
    body = option_fields.get("json_data")
    if not isinstance(body, Mapping):
        body = {}
    stream = bool(kwargs.get("stream", False))
    host, port, detected_provider, base_url = _server_of(adapter, client)
    ask_usage = settings.stream_usage and base_url not in _refuses_body_change
    spec = adapter.plan(str(option_fields.get("url")), body, stream, ask_usage, option_fields.get("files"))
    if spec is None:
        return None
    record = CallRecord(
        operation=spec.operation,
        provider=provider or detected_provider,
        request_model=spec.request_model,
        server_address=host,
        server_port=port,
        streaming=stream,
        request_params=spec.params,
    )
    if settings.capture_content and spec.input_messages is not None:
        record.content = {semconv.INPUT_MESSAGES: spec.input_messages}
    if spec.body is not None:
        args = (args[0], _with_body(options, spec.body), *args[2:])
    return _Plan(record, spec, args, base_url)


def _with_body(options: Any, body: Mapping[str, Any]) -> Any:
    new_options = options.model_copy()
    new_options.json_data = body
    return new_options


_server_cache: dict[int, tuple[object, str | None, int | None, str, str]] = {}


def _server_of(adapter: SdkAdapter, client: Any) -> tuple[str | None, int | None, str, str]:
    """(host, port, provider, base URL) of a client, computed once per base URL object."""
    # The Stainless clients keep it in ``_base_url``; their ``base_url`` property may run an import
    # statement on every read (openai 2.x), paid on the caller's thread of every call.
    base_url = getattr(client, "_base_url", None) or getattr(client, "base_url", None)
    cached = _server_cache.get(id(base_url))
    if cached is not None and cached[0] is base_url:
        return cached[1], cached[2], cached[3], cached[4]
    host = getattr(base_url, "host", None) or None
    port = None
    if host is not None:
        port = getattr(base_url, "port", None) or _DEFAULT_PORTS.get(str(getattr(base_url, "scheme", "")))
    provider = _declared_provider(host, port) or adapter.provider(client, host)
    if len(_server_cache) > 256:
        _server_cache.clear()
    _server_cache[id(base_url)] = (base_url, host, port, provider, str(base_url))
    return host, port, provider, str(base_url)


# --- providers declared for hosts llmmeter cannot recognise ---------------------------------------
PROVIDERS_ENV_VAR = "LLMMETER_PROVIDERS"
"""``host=provider`` pairs, comma-separated (``gateway.internal=openai,10.0.0.7:8000=vllm``): for
``opentelemetry-instrument`` users, who cannot call :func:`declare_providers`."""

_declared: dict[str, str] = {}
_env_read = False


def declare_providers(providers: Mapping[str, str]) -> None:
    """Name the provider behind hosts llmmeter cannot recognise (a gateway, a self-hosted server):
    ``{"gateway.internal": "openai", "10.0.0.7:8000": "vllm"}``; a ``host:port`` key wins over a
    bare host. Applies to every client measured from now on."""
    for host, provider in providers.items():
        if not isinstance(host, str) or not isinstance(provider, str) or not host or not provider:
            raise TypeError(
                f"llmmeter: providers must map host names to provider names, got {host!r}: {provider!r}"
            )
        _declared[host.strip().lower()] = provider.strip()
    _server_cache.clear()


def _declared_provider(host: str | None, port: int | None) -> str | None:
    global _env_read
    if not _env_read:
        _env_read = True
        _read_env_declarations()
    if host is None or not _declared:
        return None
    host = host.lower()
    return _declared.get(f"{host}:{port}") or _declared.get(host)


def _read_env_declarations() -> None:
    import os

    for pair in filter(None, (item.strip() for item in os.environ.get(PROVIDERS_ENV_VAR, "").split(","))):
        host, sep, provider = pair.rpartition("=")
        if not sep or not host.strip() or not provider.strip():
            log_once(
                f"providers-env:{pair}",
                "llmmeter: ignoring %r in %s: expected host=provider",
                pair,
                PROVIDERS_ENV_VAR,
            )
            continue
        _declared.setdefault(host.strip().lower(), provider.strip())


# --- servers that refused a changed body ---------------------------------------------------------
_refuses_body_change: set[str] = set()
_retries_lock = threading.Lock()
_retries = 0


def body_change_retries() -> int:
    """How many requests were sent again without llmmeter's body change (this process)."""
    return _retries


def _remember_refusal(plan: _Plan) -> None:
    global _retries
    with _retries_lock:
        _retries += 1
        _refuses_body_change.add(plan.base_url)
    log_once(
        f"body-change:{plan.base_url}",
        "llmmeter: %s refused stream_options.include_usage; sent the request again without it, and "
        "will not ask this server for stream usage again (its streams' usage will be estimated)",
        plan.base_url,
    )


# --- reading results ------------------------------------------------------------------------------
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
        if base.__name__ in _KINDS and base.__module__.split(".", 1)[0] in _SDK_MODULES:
            kind = base.__name__
            break
    _kind_cache[cls] = kind
    return kind


_SDK_MODULES: set[str] = set()


def _stream_proxy(stream: Any, kind: str, plan: _Plan, measurement: Measurement) -> Any:
    spec = plan.spec
    measurement.reader = spec.stream_reader() if spec.stream_reader is not None else None
    if spec.usage_expected and not measurement.settings.capture_content:  # captured text is read whole
        record = measurement.record
        measurement.skim = (record.server_address, record.server_port) not in servers_without_stream_usage
    if kind == "Stream":
        return MeteredStream(stream, measurement, hidden=spec.hidden)
    return AsyncMeteredStream(stream, measurement, hidden=spec.hidden)


def _finish_with(measurement: Measurement, plan: _Plan, response: Any) -> None:
    read = plan.spec.read_response
    measurement.finish(Outcome.OK, read=lambda: read(response))


def _measured_result(result: Any, plan: _Plan, measurement: Measurement) -> Any:
    """Return ``result`` as the caller expects it, measured."""
    kind = _kind_of(result)
    if kind is None:
        _finish_with(measurement, plan, result)
        return result
    if kind in ("Stream", "AsyncStream"):
        return _stream_proxy(result, kind, plan, measurement)
    if kind == "LegacyAPIResponse" and not plan.record.streaming:
        parsed = None
        with guard("parsing the raw response"):
            parsed = result.parse()  # cached by the SDK: the caller's parse() returns this object
        _finish_with(measurement, plan, parsed)
        return result
    if kind == "AsyncAPIResponse":
        return AsyncMeteredRawResponse(result, plan, measurement)
    return MeteredRawResponse(result, plan, measurement)


def _measure_parsed(parsed: Any, plan: _Plan, measurement: Measurement) -> Any:
    """What ``raw.parse()`` returned: a stream to proxy, or the final object to read."""
    kind = _kind_of(parsed)
    if kind in ("Stream", "AsyncStream"):
        return _stream_proxy(parsed, kind, plan, measurement)  # type: ignore[arg-type]
    _finish_with(measurement, plan, parsed)
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

    def _self_closed(self) -> None:
        """Closed without ``parse()`` (the caller read the bytes itself): the response arrived,
        a stream's chunks went unread by llmmeter."""
        self._self_finalizer.detach()
        plan = self._self_plan
        if plan.record.streaming:
            self._self_measurement.finish(Outcome.ABORTED)
        else:
            _finish_with(self._self_measurement, plan, None)  # what the request alone tells

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

    def close(self) -> None:
        """Close the response (``with_streaming_response`` does on exit), then finish."""
        try:
            self.__wrapped__.close()
        finally:
            self._self_closed()


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

    async def close(self) -> None:
        """Close the response (``with_streaming_response`` does on exit), then finish."""
        try:
            await self.__wrapped__.close()
        finally:
            self._self_closed()


# --- the hook -----------------------------------------------------------------------------------
def _begin(
    adapter: SdkAdapter, client: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], provider: str | None
) -> tuple[_Plan, Measurement] | None:
    settings = get_settings()
    if not settings.enabled:
        return None
    plan = _plan(adapter, client, args, kwargs, settings, provider)
    if plan is None:
        return None
    measurement = Measurement(settings, plan.record)
    measurement.estimate_input = plan.spec.estimate_input
    return plan, measurement


def _retry_unchanged(adapter: SdkAdapter, plan: _Plan, args: tuple[Any, ...], exc: BaseException) -> bool:
    """Whether to send the caller's own request again: the server refused llmmeter's change."""
    if plan.args is args:
        return False
    refused = False
    with guard("checking the server's refusal"):
        refused = adapter.rejects_body_change(exc)
    if refused:
        _remember_refusal(plan)
        plan.spec.hidden = None  # the caller's own request: every chunk is theirs
        plan.spec.usage_expected = False
    return refused


def measured_request(
    adapter: SdkAdapter,
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
    try:
        started = _begin(adapter, client, args, kwargs, provider)
    except Exception:
        if not swallowed("planning the request"):
            raise
    if started is None:
        return wrapped(*args, **kwargs)
    plan, measurement = started
    token = _attach(measurement)
    try:
        try:
            result = wrapped(*plan.args, **kwargs)
        except Exception as exc:
            if not _retry_unchanged(adapter, plan, args, exc):
                raise
            result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _detach(token)
        measurement.finish(outcome_of(exc), exc)
        raise
    _detach(token)
    try:
        return _measured_result(result, plan, measurement)  # type: ignore[no-any-return]
    except Exception:
        if not swallowed("measuring the result"):
            raise
    measurement.finish(Outcome.OK)
    return result


async def measured_async_request(
    adapter: SdkAdapter,
    wrapped: Callable[..., Awaitable[T]],
    client: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    provider: str | None = None,
) -> T:
    """Measure one asynchronous ``client.request(...)`` call (the twin of :func:`measured_request`)."""
    if not _should_measure():
        return await wrapped(*args, **kwargs)
    started = None
    try:
        started = _begin(adapter, client, args, kwargs, provider)
    except Exception:
        if not swallowed("planning the request"):
            raise
    if started is None:
        return await wrapped(*args, **kwargs)
    plan, measurement = started
    token = _attach(measurement)
    try:
        try:
            result = await wrapped(*plan.args, **kwargs)
        except Exception as exc:
            if not _retry_unchanged(adapter, plan, args, exc):
                raise
            result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _detach(token)
        measurement.finish(outcome_of(exc), exc)
        raise
    _detach(token)
    try:
        return _measured_result(result, plan, measurement)  # type: ignore[no-any-return]
    except Exception:
        if not swallowed("measuring the result"):
            raise
    measurement.finish(Outcome.OK)
    return result


# --- per-client and process-wide installation ------------------------------------------------------
def is_client_of(sdk_module: str, obj: Any) -> bool:
    """True for instances of an SDK's clients (``openai.OpenAI``, ``anthropic.AsyncAnthropic``...)."""
    for cls in type(obj).__mro__:
        if cls.__name__ in ("SyncAPIClient", "AsyncAPIClient") and cls.__module__.startswith(
            sdk_module + "."
        ):
            return True
    return False


def _is_async_client(client: Any) -> bool:
    return any(cls.__name__ == "AsyncAPIClient" for cls in type(client).__mro__)


def instrument_client(client: T, adapter: SdkAdapter, *, provider: str | None = None) -> T:
    """Measure every request of this one client (and of clients made by its ``with_options``)."""
    if getattr(client, "_llmmeter_instrumented", False):
        return client
    _SDK_MODULES.add(adapter.sdk_module)
    original_request = client.request  # type: ignore[attr-defined]
    original_copy = client.copy  # type: ignore[attr-defined]

    if _is_async_client(client):

        async def request(*args: Any, **kwargs: Any) -> Any:
            return await measured_async_request(adapter, original_request, client, args, kwargs, provider)
    else:

        def request(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            return measured_request(adapter, original_request, client, args, kwargs, provider)

    def copy(*args: Any, **kwargs: Any) -> Any:
        return instrument_client(original_copy(*args, **kwargs), adapter, provider=provider)

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


_installed: set[str] = set()


def install(adapter: SdkAdapter) -> None:
    """Measure every client of the adapter's SDK in this process, existing and future (idempotent)."""
    if adapter.sdk_module in _installed:
        return
    base_client = importlib.import_module(f"{adapter.sdk_module}._base_client")
    _SDK_MODULES.add(adapter.sdk_module)

    def sync_hook(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return measured_request(adapter, wrapped, instance, args, kwargs)

    def async_hook(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return measured_async_request(adapter, wrapped, instance, args, kwargs)

    wrapt.wrap_function_wrapper(base_client, "SyncAPIClient.request", sync_hook)
    wrapt.wrap_function_wrapper(base_client, "AsyncAPIClient.request", async_hook)
    _installed.add(adapter.sdk_module)


def uninstall(adapter: SdkAdapter) -> None:
    """Undo :func:`install` (idempotent)."""
    if adapter.sdk_module not in _installed:
        return
    base_client = importlib.import_module(f"{adapter.sdk_module}._base_client")
    for cls in (base_client.SyncAPIClient, base_client.AsyncAPIClient):
        method = cls.__dict__["request"]
        if isinstance(method, wrapt.FunctionWrapper):
            setattr(cls, "request", method.__wrapped__)  # noqa: B010 (mypy: method assignment)
    _installed.discard(adapter.sdk_module)
