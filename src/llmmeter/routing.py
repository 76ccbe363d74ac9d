"""``llmmeter.route(name)``: a router's decisions as telemetry -- attempts, escalations, fallbacks.

::

    with llmmeter.route("support-router") as route:
        reply = client.chat.completions.create(model="llama-3.1-8b-instruct", messages=m)
        if not confident(reply):
            route.escalate("low_confidence")
            reply = client.chat.completions.create(model="gpt-4o", messages=m)

A route is a step (its record's ``kind`` is ``step``, its operation ``route``) whose LLM calls are
numbered attempts. Every call made inside it carries ``llmmeter.route.name``, its
``llmmeter.route.attempt`` and, once :meth:`Route.escalate` was called, the latest
``llmmeter.route.escalation_reason``. A call that failed (raised) followed by one that succeeded is
a *fallback*, found without any code from the user; the call started after a failure carries
``llmmeter.route.fallback_reason`` (the failed call's error type).

When the block ends, the route's own record gets (in its attributes, under ``llmmeter.route.*``)
how many attempts, escalations and fallbacks it saw, its final model and provider (those of its
last successful call), and, like any step, the rolled-up tokens, cost and duration of its calls.
The ``llmmeter.route.requests`` counter then counts the route by name, escalated, fallback and
final model, so that the escalation rate is one PromQL division.

Attempts are told apart when they start; whether one failed is read when the route ends, so a
stream still being read after the block ends counts as not failed.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from llmmeter import measure
from llmmeter import semconv as sc
from llmmeter._log import guard, log_once
from llmmeter.config import get_settings
from llmmeter.measure import Attached, Measurement, attach_guarded, detach_guarded, outcome_of
from llmmeter.record import AttributeValue, CallKind, CallRecord, Outcome

if TYPE_CHECKING:
    from llmmeter.export.otel import OtelTelemetry, SummedCounter

__all__ = ["Route", "current_route", "escalate", "own_counter", "route"]

F = TypeVar("F", bound=Callable[..., Any])

_current: ContextVar[Route | None] = ContextVar("llmmeter_route", default=None)
_FAILED = (Outcome.ERROR, Outcome.ABORTED)


class Route:
    """One run of a named route: a context manager (``with`` / ``async with``) and a decorator.

    Made by :func:`route`. As a decorator, every call of the decorated function is a new run.
    Not reusable: enter a given ``Route`` once (``llmmeter.route(name)`` again for the next run).
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"llmmeter.route: the name must be a non-empty str, got {name!r}")
        self.name = name
        self.attempts = 0
        """LLM calls started inside the route so far."""
        self.escalations = 0
        """How many times :meth:`escalate` was called."""
        self.escalation_reason: str | None = None
        """The latest reason given to :meth:`escalate`."""
        self._calls: list[CallRecord] = []
        self._lock = threading.Lock()
        self._measurement: Measurement | None = None
        self._attached: Attached | None = None
        self._token: Token[Route | None] | None = None
        self._entered = False

    # --- what the user calls ---------------------------------------------------------------------
    def escalate(self, reason: str) -> None:
        """Mark the calls made from now on as escalated, for ``reason`` (e.g. ``"low_confidence"``)."""
        with self._lock:
            self.escalations += 1
            self.escalation_reason = _reason_text(reason)

    def __call__(self, fn: F) -> F:
        """Decorate a function (sync or async): each of its calls runs in a new route of this name."""
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"@llmmeter.route({self.name!r}) cannot decorate the generator {fn.__qualname__}: "
                "use `with llmmeter.route(...)` inside it, around the calls of one run"
            )
        name = self.name
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with Route(name):
                    return await fn(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with Route(name):
                return fn(*args, **kwargs)

        return cast(F, run)

    def __enter__(self) -> Route:
        if self._entered:
            raise RuntimeError(f"llmmeter.route({self.name!r}) was already entered; make a new one per run")
        self._entered = True
        with guard("starting a route"):
            self._start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            with guard("leaving a route"):  # ValueError if left in another context than entered
                _current.reset(self._token)
        detach_guarded(self._attached)
        with guard("finishing a route"):
            self._finish(exc)

    async def __aenter__(self) -> Route:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # --- start and end -----------------------------------------------------------------------------
    def _start(self) -> None:
        install_call_start_hook()
        self._token = _current.set(self)
        settings = get_settings()
        if not settings.enabled:
            return
        record = CallRecord(
            operation=sc.ROUTE_OPERATION, provider="unknown", kind=CallKind.STEP, name=self.name
        )
        record.attributes[sc.ROUTE_NAME] = self.name
        self._measurement = Measurement(settings, record)
        self._attached = attach_guarded(self._measurement)

    def _finish(self, exc: BaseException | None) -> None:
        measurement = self._measurement
        if measurement is None:
            return
        summary = self._summary()
        measurement.record.attributes.update(summary)
        _count_route(measurement.settings.telemetry, measurement.record, summary)
        if exc is None:
            measurement.finish(Outcome.OK)
        else:
            measurement.finish(outcome_of(exc), exc)

    def _summary(self) -> dict[str, AttributeValue]:
        """The route record's ``llmmeter.route.*`` attributes, from its calls in attempt order."""
        with self._lock:
            calls = list(self._calls)
            escalations, reason = self.escalations, self.escalation_reason
        out: dict[str, AttributeValue] = {
            sc.ROUTE_NAME: self.name,
            sc.ROUTE_ATTEMPTS: len(calls),
            sc.ROUTE_ESCALATED: escalations > 0,
            sc.ROUTE_ESCALATIONS: escalations,
        }
        if reason is not None:
            out[sc.ROUTE_ESCALATION_REASON] = reason
        fallbacks, fallback_reason, final = _walk(calls)
        out[sc.ROUTE_FALLBACK] = fallbacks > 0
        out[sc.ROUTE_FALLBACKS] = fallbacks
        if fallback_reason is not None:
            out[sc.ROUTE_FALLBACK_REASON] = fallback_reason
        if final is not None:
            model = final.response_model or final.request_model
            if model:
                out[sc.ROUTE_FINAL_MODEL] = model
            out[sc.ROUTE_FINAL_PROVIDER] = final.provider
        return out

    # --- the calls inside ----------------------------------------------------------------------------
    def call_started(self, record: CallRecord) -> None:
        """Number an LLM call starting inside this route and tag it (from the call-start hook)."""
        with self._lock:
            previous = self._calls[-1] if self._calls else None
            self._calls.append(record)
            attempt = self.attempts = len(self._calls)
            reason = self.escalation_reason
        attributes = record.attributes
        attributes[sc.ROUTE_NAME] = self.name
        attributes[sc.ROUTE_ATTEMPT] = attempt
        if reason is not None:
            attributes[sc.ROUTE_ESCALATION_REASON] = reason
        if previous is not None and previous.outcome in _FAILED and previous.error_type is not None:
            attributes[sc.ROUTE_FALLBACK_REASON] = previous.error_type


def _walk(calls: list[CallRecord]) -> tuple[int, str | None, CallRecord | None]:
    """(fallbacks, the latest fallback's reason, the last successful call) of calls in attempt order.

    A fallback is a successful call whose previous call failed: ``a fails, b fails, c succeeds`` is
    one fallback (reason: ``b``'s error type), not two.
    """
    fallbacks, reason, final = 0, None, None
    failed: str | None = None
    for record in calls:
        if record.outcome in _FAILED:
            failed = record.error_type or str(record.outcome)
            continue
        if failed is not None:
            fallbacks, reason, failed = fallbacks + 1, failed, None
        if record.outcome is Outcome.OK:
            final = record
    return fallbacks, reason, final


def _reason_text(reason: object) -> str:
    if isinstance(reason, str) and reason:
        return reason[:256]
    log_once("route:reason", "llmmeter: escalate(reason) expects a non-empty str; recorded as its text")
    try:
        return str(reason)[:256] or "unspecified"
    except Exception:
        return "unspecified"


# --- counters of llmmeter's own, outside semconv.METRICS ------------------------------------------------
_counters: weakref.WeakKeyDictionary[OtelTelemetry, dict[str, SummedCounter]] = weakref.WeakKeyDictionary()


def own_counter(telemetry: OtelTelemetry, spec: sc.MetricSpec) -> SummedCounter:
    """The ``spec`` counter on ``telemetry``'s meter (routes, feedback, budget refusals): made on
    first use, so that a process that never routes exports no such metric."""
    counters = _counters.get(telemetry)
    if counters is None:
        counters = _counters.setdefault(telemetry, {})
    counter = counters.get(spec.name)
    if counter is None:
        from llmmeter.export.otel import SummedCounter

        counter = counters[spec.name] = SummedCounter.of(telemetry.meter_provider, telemetry.meter, spec)
    return counter


def _count_route(telemetry: OtelTelemetry, record: CallRecord, summary: dict[str, AttributeValue]) -> None:
    """One ``llmmeter.route.requests`` point. Flags are ``"true"``/``"false"`` strings, the
    same in every exporter, so that PromQL can select ``llmmeter_route_escalated="true"``."""
    attributes: dict[str, AttributeValue] = {
        sc.ROUTE_NAME: record.name or "",
        sc.ROUTE_ESCALATED: "true" if summary[sc.ROUTE_ESCALATED] else "false",
        sc.ROUTE_FALLBACK: "true" if summary[sc.ROUTE_FALLBACK] else "false",
    }
    final_model = summary.get(sc.ROUTE_FINAL_MODEL)
    if final_model is not None:
        attributes[sc.ROUTE_FINAL_MODEL] = final_model
    for key in telemetry.metric_attribute_keys:
        value = record.attributes.get(key)
        if value is not None:
            attributes[key] = value
    own_counter(telemetry, sc.ROUTE_REQUESTS_METRIC).add(1, attributes)


# --- the public functions ----------------------------------------------------------------------------
def route(name: str) -> Route:
    """A named route: ``with llmmeter.route("support-router") as r:``, ``async with``, or
    ``@llmmeter.route("support-router")`` on a function (sync or async).

    Its LLM calls are numbered attempts; :meth:`Route.escalate` marks the calls after it as
    escalated; a failed call followed by a successful one is a fallback. The route's own record
    (a step, operation ``route``) carries the counts, the final model and provider and the rolled-up
    tokens, cost and duration; see :mod:`llmmeter.routing`.
    """
    return Route(name)


def current_route() -> Route | None:
    """The innermost route in force here, if any."""
    return _current.get()


def escalate(reason: str) -> None:
    """:meth:`Route.escalate` on the innermost route in force; outside any route, a warning is
    logged once and nothing else happens."""
    current = _current.get()
    if current is None:
        log_once(
            "route:escalate-outside", "llmmeter.escalate(%r) called outside llmmeter.route(); ignored", reason
        )
        return
    current.escalate(reason)


# --- the call-start hook (routes and budgets) ------------------------------------------------------------
def _on_call_start(measurement: Measurement) -> None:
    """Runs in :class:`~llmmeter.measure.Measurement` as every call starts, once a route or a
    budget was used in this process: the budget check may refuse the call (raises
    :class:`llmmeter.BudgetExceeded`), then a route numbers it."""
    record = measurement.record
    if record.kind is not CallKind.LLM:
        return
    current = _current.get()
    budgets = measurement.settings.budgets
    if budgets is not None:
        attributes = record.attributes
        if current is not None:
            attributes = {**attributes, sc.ROUTE_NAME: current.name}
        budgets.check(attributes, measurement.settings.telemetry)  # raises BudgetExceeded only
    if current is not None:
        with guard("numbering a route's attempt"):
            current.call_started(record)


def install_call_start_hook() -> None:
    """Make every call from now on run :func:`_on_call_start` (idempotent)."""
    measure.call_start_hook = _on_call_start
