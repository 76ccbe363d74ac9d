"""What every SDK hook does around the SDK's own call: decide to measure, make the span current.

Shared by the Stainless request hook (:mod:`llmmeter.instrument.sdk`) and the per-method hook
(:mod:`llmmeter.instrument.methods`). While a measured SDK call runs, a nested hooked call (an SDK
calling its own hooked method, or a client hooked both per object and process-wide) is not
measured a second time; OpenTelemetry's "suppress instrumentation" context is honoured.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from opentelemetry import context as otel_context

from llmmeter._log import guard
from llmmeter.measure import Attached, Measurement

__all__ = ["Scope", "enter", "hold", "leave", "release", "should_measure"]

_SUPPRESS_KEY = getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
_measuring: ContextVar[bool] = ContextVar("llmmeter_sdk_measuring", default=False)

Scope = tuple[Attached, Token[bool]]
"""What :func:`leave` needs to undo :func:`enter`."""


def should_measure() -> bool:
    """False inside a measured SDK call, or when OpenTelemetry instrumentation is suppressed."""
    if _measuring.get():
        return False
    return not (_SUPPRESS_KEY is not None and otel_context.get_value(_SUPPRESS_KEY))


def enter(measurement: Measurement) -> Scope | None:
    """Make the call's span current and mark the SDK call as measured; ``None`` if that failed."""
    with guard("attaching the span context"):
        return measurement.attach(), _measuring.set(True)
    return None


def leave(scope: Scope | None) -> None:
    """Undo :func:`enter` (same thread or task); never raises."""
    if scope is None:
        return
    with guard("detaching the span context"):
        attached, measuring = scope
        _measuring.reset(measuring)
        Measurement.detach(attached)


def hold() -> Token[bool]:
    """Mark an SDK call as measured without a span (a stream's measurement starts later)."""
    return _measuring.set(True)


def release(token: Token[bool]) -> None:
    """Undo :func:`hold`."""
    _measuring.reset(token)
