"""One hook for SDKs measured method by method (``ollama``, ``google-genai``): no provider inside.

SDKs that are not Stainless-generated have no single ``request()`` to hook; their public methods
are hooked instead, each one named in a small table of the adapter (one module per SDK in
``providers/``)::

    hooks = (
        # (attribute path from the client, "module:Class" owning the method, planning function)
        ("chat", "ollama._client:Client", plan_chat),
        ("aio.models.generate_content", "google.genai.models:AsyncModels", plan_generate_content),
    )

A planning function reads the call's arguments and returns a
:class:`~llmmeter.providers.types.RequestSpec` (``None``: not measured). The hook

1. plans the call; a call the adapter does not know passes straight through,
2. for a whole response: starts a :class:`~llmmeter.measure.Measurement` just before the SDK
   call, with the call's span current around it, and reads the result with
   ``RequestSpec.read_response``;
3. for a stream (``RequestSpec.stream_reader`` set): hands the generator the SDK returned back
   behind :class:`~llmmeter.instrument.generators.MeteredGenerator` /
   :class:`~llmmeter.instrument.generators.AsyncMeteredGenerator`. These SDKs send the request
   only when their generator is first iterated, so the measurement starts then: its clock starts
   when the request goes out, and a generator never iterated sent nothing and records nothing.

When one call may send several requests (``google-genai``'s automatic function calling), the
adapter names the per-request methods (``request_methods``): their responses within a measured
call are collected and the record's usage is their sum.

Errors finish the measurement with their outcome and reach the caller unchanged; llmmeter's own
failures are logged once and the call proceeds. ``instrument_client(client, adapter)`` hooks one
client; ``install(adapter)`` hooks the SDK's classes, for every client of the process.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import wrapt

from llmmeter import semconv
from llmmeter._log import guard
from llmmeter.config import Settings, get_settings
from llmmeter.instrument import scope
from llmmeter.instrument.generators import AsyncMeteredGenerator, MeteredGenerator
from llmmeter.measure import Measurement, outcome_of, servers_without_stream_usage
from llmmeter.providers.types import Observed, RequestSpec, ResponseReader
from llmmeter.record import CallRecord, Outcome, Usage

__all__ = [
    "MethodsAdapter",
    "Planner",
    "install",
    "instrument_client",
    "measured_async_call",
    "measured_call",
    "uninstall",
    "uninstrument_client",
]

T = TypeVar("T")

Planner = Callable[[tuple[Any, ...], Mapping[str, Any]], RequestSpec | None]
"""Reads one call's ``(args, kwargs)``: what it will be recorded as, or ``None`` (not measured)."""

Hook = tuple[str, str, Planner]
"""``(attribute path from the client, "module:Class" owning the method, planning function)``."""


class MethodsAdapter(Protocol):
    """What the per-method hook needs from one SDK's adapter."""

    sdk_module: str
    hooks: Sequence[Hook]
    module_functions: Sequence[str]
    """Module-level functions that are bound methods of a default client made at import
    (``ollama.chat``): :func:`install` binds them again, to the measured methods."""
    request_methods: Sequence[tuple[str, str]]
    """``(attribute path, "module:Class")`` of the methods that send one request each, when a
    hooked method may send several (``google-genai``'s automatic function calling): the responses
    of one measured call are collected and its usage is their sum."""

    def server(self, owner: Any) -> tuple[str, str | None, int | None]:
        """``(gen_ai.provider.name, host, port)`` behind ``owner``, the object whose method is called."""
        ...


# --- planning -------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Call:
    """One planned call: its settings, record and spec (no clock started yet)."""

    settings: Settings
    record: CallRecord
    spec: RequestSpec

    @property
    def streams(self) -> bool:
        return self.spec.stream_reader is not None

    def start(self) -> Measurement:
        """The call's measurement, its clock started now."""
        measurement = Measurement(self.settings, self.record)
        measurement.estimate_input = self.spec.estimate_input
        if self.spec.stream_reader is not None:
            measurement.reader = self.spec.stream_reader()
            if self.spec.usage_expected and not self.settings.capture_content:  # captured text is read whole
                record = self.record
                measurement.skim = (
                    record.server_address,
                    record.server_port,
                ) not in servers_without_stream_usage
        return measurement


def _plan(
    adapter: MethodsAdapter,
    planner: Planner,
    owner: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    provider: str | None,
) -> _Call | None:
    settings = get_settings()
    if not settings.enabled:
        return None
    spec = planner(args, kwargs)
    if spec is None:
        return None
    detected, host, port = adapter.server(owner)
    record = CallRecord(
        operation=spec.operation,
        provider=provider or detected,
        request_model=spec.request_model,
        server_address=host,
        server_port=port,
        streaming=spec.stream_reader is not None,
        request_params=spec.params,
    )
    if settings.capture_content and spec.input_messages is not None:
        record.content = {semconv.INPUT_MESSAGES: spec.input_messages}
    return _Call(settings, record, spec)


def _begin(
    adapter: MethodsAdapter,
    planner: Planner,
    owner: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    provider: str | None,
) -> _Call | None:
    if not scope.should_measure():
        return None
    with guard("planning the call"):
        return _plan(adapter, planner, owner, args, kwargs, provider)
    return None


# --- results --------------------------------------------------------------------------------------
def _failed(call: _Call, exc: BaseException) -> None:
    """The SDK raised before handing back a stream: one record, the call's outcome."""
    with guard("recording the failed call"):
        call.start().finish(outcome_of(exc), exc)


def _stream_result(result: Any, call: _Call) -> Any:
    """A generator measured from its first iteration; anything else read as a whole response."""
    if inspect.isasyncgen(result) or (hasattr(result, "__anext__") and hasattr(result, "__aiter__")):
        return AsyncMeteredGenerator(result, start=call.start)
    if inspect.isgenerator(result) or (hasattr(result, "__next__") and hasattr(result, "__iter__")):
        return MeteredGenerator(result, start=call.start)
    call.record.streaming = False
    call.spec.stream_reader = None
    _read_whole(call.start(), call, result)
    return result


def _read_whole(
    measurement: Measurement, call: _Call, result: Any, responses: list[Any] | None = None
) -> None:
    read = call.spec.read_response
    if responses is not None and len(responses) > 1:
        measurement.finish(Outcome.OK, read=lambda: _read_requests(read, result, responses))
    else:
        measurement.finish(Outcome.OK, read=lambda: read(result))


def _read_requests(read: ResponseReader, result: Any, responses: list[Any]) -> Observed:
    """What the caller got, with the usage of every request the call sent, summed."""
    observed = read(result)
    total: Usage | None = None
    for response in responses:
        usage = read(response).usage
        if usage is None:
            continue
        if total is None:
            total = usage
        else:
            total.add(usage)
    observed.usage = total
    return observed


# --- the responses of the requests one call sends ---------------------------------------------------
_collected: ContextVar[list[Any] | None] = ContextVar("llmmeter_collected_responses", default=None)


def _hand_over(response: Any) -> Any:
    """Give one request's response to the measured call collecting them, if any; return it."""
    bucket = _collected.get()
    if bucket is not None:
        bucket.append(response)
    return response


def _collecting(method: Any) -> Any:
    """``method`` (one request), handing its response to the measured call around it."""
    if inspect.iscoroutinefunction(method):

        async def collect_async(*args: Any, **kwargs: Any) -> Any:
            return _hand_over(await method(*args, **kwargs))

        return collect_async

    def collect(*args: Any, **kwargs: Any) -> Any:
        return _hand_over(method(*args, **kwargs))

    return collect


# --- the hook -------------------------------------------------------------------------------------
def measured_call(
    adapter: MethodsAdapter,
    planner: Planner,
    wrapped: Callable[..., T],
    owner: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    provider: str | None = None,
) -> T:
    """Measure one synchronous SDK method call."""
    call = _begin(adapter, planner, owner, args, kwargs, provider)
    if call is None:
        return wrapped(*args, **kwargs)
    if call.streams:
        held = scope.hold()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _failed(call, exc)
            raise
        finally:
            scope.release(held)
        with guard("measuring the stream"):
            return _stream_result(result, call)  # type: ignore[no-any-return]
        return result
    measurement = call.start()
    entered = scope.enter(measurement)
    responses: list[Any] = []
    collecting = _collected.set(responses)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _collected.reset(collecting)
        scope.leave(entered)
        measurement.finish(outcome_of(exc), exc)
        raise
    _collected.reset(collecting)
    scope.leave(entered)
    _read_whole(measurement, call, result, responses)
    return result


async def measured_async_call(
    adapter: MethodsAdapter,
    planner: Planner,
    wrapped: Callable[..., Awaitable[T]],
    owner: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    provider: str | None = None,
) -> T:
    """Measure one asynchronous SDK method call (the twin of :func:`measured_call`)."""
    call = _begin(adapter, planner, owner, args, kwargs, provider)
    if call is None:
        return await wrapped(*args, **kwargs)
    if call.streams:
        held = scope.hold()
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _failed(call, exc)
            raise
        finally:
            scope.release(held)
        with guard("measuring the stream"):
            return _stream_result(result, call)  # type: ignore[no-any-return]
        return result
    measurement = call.start()
    entered = scope.enter(measurement)
    responses: list[Any] = []
    collecting = _collected.set(responses)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _collected.reset(collecting)
        scope.leave(entered)
        measurement.finish(outcome_of(exc), exc)
        raise
    _collected.reset(collecting)
    scope.leave(entered)
    _read_whole(measurement, call, result, responses)
    return result


# --- per-client and process-wide installation -----------------------------------------------------
_MARK = "_llmmeter_instrumented"


def _owner_of(client: Any, path: str) -> tuple[Any, str]:
    """(the object holding the method, the method's name) for ``"aio.models.generate_content"``."""
    *owners, name = path.split(".")
    owner = client
    for attribute in owners:
        owner = getattr(owner, attribute)
    return owner, name


def _hooked(adapter: MethodsAdapter, planner: Planner, owner: Any, method: Any, provider: str | None) -> Any:
    if inspect.iscoroutinefunction(method):

        async def measured_async(*args: Any, **kwargs: Any) -> Any:
            return await measured_async_call(adapter, planner, method, owner, args, kwargs, provider)

        return measured_async

    def measured(*args: Any, **kwargs: Any) -> Any:
        return measured_call(adapter, planner, method, owner, args, kwargs, provider)

    return measured


def _own_hooks(client: Any, adapter: MethodsAdapter) -> list[tuple[Any, str, Planner]]:
    """(owner, method name, planner) of the hooks that apply to this client's own objects (a
    sync client's table rows, not its async twin's)."""
    hooks = []
    for path, location, planner in adapter.hooks:
        with guard("finding the method to hook"):
            owner, name = _owner_of(client, path)
            if isinstance(owner, _class_of(location)):
                hooks.append((owner, name, planner))
    return hooks


def _own_request_methods(client: Any, adapter: MethodsAdapter) -> list[tuple[Any, str]]:
    """(owner, method name) of the adapter's per-request methods this client has (an SDK version
    without one is measured call by call, with the usage of the call's last request)."""
    methods = []
    for path, location in adapter.request_methods:
        with guard("finding the per-request method"):
            owner, name = _owner_of(client, path)
            if isinstance(owner, _class_of(location)) and callable(getattr(owner, name, None)):
                methods.append((owner, name))
    return methods


def instrument_client(client: T, adapter: MethodsAdapter, *, provider: str | None = None) -> T:
    """Measure the calls of this one client; returns the same object (idempotent)."""
    if getattr(client, _MARK, False):
        return client
    for owner, name, planner in _own_hooks(client, adapter):
        setattr(owner, name, _hooked(adapter, planner, owner, getattr(owner, name), provider))
    for owner, name in _own_request_methods(client, adapter):
        setattr(owner, name, _collecting(getattr(owner, name)))
    setattr(client, _MARK, True)
    return client


def uninstrument_client(client: T, adapter: MethodsAdapter) -> T:
    """Undo :func:`instrument_client`: the client's own methods again."""
    if not getattr(client, _MARK, False):
        return client
    for owner, name, _planner in _own_hooks(client, adapter):
        vars(owner).pop(name, None)
    for owner, name in _own_request_methods(client, adapter):
        vars(owner).pop(name, None)
    vars(client).pop(_MARK, None)
    return client


_installed: set[str] = set()
_replaced_functions: dict[str, dict[str, Any]] = {}


def _class_of(location: str) -> type:
    module_name, class_name = location.split(":", 1)
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def install(adapter: MethodsAdapter) -> None:
    """Measure every client of the adapter's SDK in this process, existing and future (idempotent)."""
    if adapter.sdk_module in _installed:
        return
    for path, location, planner in adapter.hooks:
        cls = _class_of(location)
        name = path.rsplit(".", 1)[-1]
        wrapt.wrap_function_wrapper(cls, name, _class_hook(adapter, planner, cls.__dict__[name]))
    for path, location in adapter.request_methods:
        cls = _class_of(location)
        name = path.rsplit(".", 1)[-1]
        if callable(cls.__dict__.get(name)):
            wrapt.wrap_function_wrapper(cls, name, _class_collecting(cls.__dict__[name]))
    _rebind_module_functions(adapter)
    _installed.add(adapter.sdk_module)


def _rebind_module_functions(adapter: MethodsAdapter) -> None:
    """``ollama.chat`` was bound to the default client before its class was hooked: bind it again."""
    module = importlib.import_module(adapter.sdk_module)
    originals = _replaced_functions.setdefault(adapter.sdk_module, {})
    for name in adapter.module_functions:
        function: Any = getattr(module, name, None)
        owner = getattr(function, "__self__", None)
        if owner is None:
            continue
        originals[name] = function
        setattr(module, name, getattr(owner, function.__name__))


def _class_hook(adapter: MethodsAdapter, planner: Planner, method: Any) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(method):

        def async_hook(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return measured_async_call(adapter, planner, wrapped, instance, args, kwargs)

        return async_hook

    def hook(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return measured_call(adapter, planner, wrapped, instance, args, kwargs)

    return hook


def _class_collecting(method: Any) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(method):

        async def async_hook(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            return _hand_over(await wrapped(*args, **kwargs))

        return async_hook

    def hook(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _hand_over(wrapped(*args, **kwargs))

    return hook


def uninstall(adapter: MethodsAdapter) -> None:
    """Undo :func:`install` (idempotent)."""
    if adapter.sdk_module not in _installed:
        return
    rows = [(path, location) for path, location, _planner in adapter.hooks]
    for path, location in [*rows, *adapter.request_methods]:
        cls = _class_of(location)
        name = path.rsplit(".", 1)[-1]
        method = cls.__dict__.get(name)
        if isinstance(method, wrapt.FunctionWrapper):
            setattr(cls, name, method.__wrapped__)
    module = importlib.import_module(adapter.sdk_module)
    for name, function in _replaced_functions.pop(adapter.sdk_module, {}).items():
        setattr(module, name, function)
    _installed.discard(adapter.sdk_module)
