"""llmmeter's own error handling: nothing inside llmmeter may break the host application."""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger("llmmeter")

_seen: set[str] = set()
_seen_lock = threading.Lock()


def strict_mode() -> bool:
    """True when ``LLMMETER_STRICT=1``: internal errors are raised (for llmmeter's own tests)."""
    return os.environ.get("LLMMETER_STRICT") == "1"


def log_once(key: str, message: str, *args: object, exc_info: bool = False) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen, at DEBUG afterwards."""
    with _seen_lock:
        first = key not in _seen
        _seen.add(key)
    level = logging.WARNING if first else logging.DEBUG
    logger.log(level, message, *args, exc_info=exc_info)


def internal_error(stage: str) -> None:
    """Report the exception being handled as an llmmeter bug in ``stage`` (call from ``except``)."""
    log_once(
        f"internal:{stage}",
        "llmmeter: internal error in %s (the call itself is unaffected)",
        stage,
        exc_info=True,
    )


class RaisedOnPurpose(Exception):
    """Base of the exceptions llmmeter raises into the application on purpose (a budget refusing a
    call, :class:`llmmeter.BudgetExceeded`): :class:`guard` lets them through."""


def swallowed(stage: str) -> bool:
    """The ``except Exception:`` form of :class:`guard`, for code run on every call (a ``try``
    costs nothing until something raises; a ``with`` block costs three calls)::

        try:
            ...
        except Exception:
            if not swallowed("stage"):
                raise

    True when the exception being handled was logged (once) and may be dropped; False when it
    must propagate (strict mode, or raised into the application on purpose).
    """
    if strict_mode() or isinstance(sys.exc_info()[1], RaisedOnPurpose):
        return False
    internal_error(stage)
    return True


class guard:  # lower-case: used like a function, `with guard("stage"):`
    """Run a block of llmmeter's own work; an ``Exception`` in it is logged once and swallowed.

    Only ``Exception`` is caught: ``KeyboardInterrupt``, ``SystemExit`` and cancellation belong to
    the application. A class rather than ``@contextmanager``: it runs several times per call.
    """

    __slots__ = ("stage",)

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception) or strict_mode():
            return False
        if issubclass(exc_type, RaisedOnPurpose):
            return False
        internal_error(self.stage)
        return True
