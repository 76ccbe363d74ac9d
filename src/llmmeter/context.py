"""Attribution: who and what a call is for (user, team, feature...), carried by contextvars.

``with llmmeter.attributes(team="search", feature="summaries"):`` applies to every call made in
the block, in this thread or asyncio task and in tasks it creates (contextvars are copied into
new tasks and, with :func:`contextvars.copy_context`, into threads). Blocks nest; the inner value
of a key wins. Every key goes on spans and into the local store; only allow-listed keys go on
metrics (``configure(metric_attributes=...)``) so that a user id never explodes a metric's
cardinality.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from llmmeter._log import log_once
from llmmeter.record import AttributeValue

_EMPTY: Mapping[str, AttributeValue] = MappingProxyType({})
_attributes: ContextVar[Mapping[str, AttributeValue]] = ContextVar("llmmeter_attributes", default=_EMPTY)

MAX_VALUE_LENGTH = 4096
"""Longer text values are cut to this many characters, ending in :data:`TRUNCATED`."""
TRUNCATED = "…[truncated]"
UNPRINTABLE = "<unprintable>"
"""The value recorded for an object whose ``str()`` raised."""
_INT64 = range(-(2**63), 2**63)


def _validated(values: Mapping[str, object]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    try:
        for key, value in values.items():
            if value is not None:
                out[key] = _attribute_value(key, value)
    except Exception:
        # Telemetry must not break the call site, whatever it is given.
        log_once("attribute-error", "llmmeter.attributes: could not read the attributes; some were dropped")
    return out


def _attribute_value(key: str, value: object) -> AttributeValue:
    """``value`` as a plain str, bool, int or float that every exporter and the store accept."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        number = int.__index__(value)
        if number in _INT64:
            return number
        _warn(key, value, "an integer beyond 64 bits; recorded as its text")
        return int.__repr__(number)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return _safe_text(key, str.__str__(value))
    try:
        text = str(value)
    except Exception:
        text = None
    if not isinstance(text, str):
        _warn(key, value, f"an object whose str() failed; recorded as {UNPRINTABLE!r}")
        return UNPRINTABLE
    _warn(key, value, "not a str, bool, int or float; recorded as its text")
    return _safe_text(key, text)


def _safe_text(key: str, text: str) -> str:
    """Text as valid UTF-8 (a lone surrogate escaped: OTLP and SQLite reject it), at most
    :data:`MAX_VALUE_LENGTH` characters."""
    if len(text) > MAX_VALUE_LENGTH:
        _warn(key, text, f"longer than {MAX_VALUE_LENGTH} characters; cut")
        text = text[: MAX_VALUE_LENGTH - len(TRUNCATED)] + TRUNCATED
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            _warn(key, text, "text with lone surrogates; they are escaped (\\udxxx)")
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _warn(key: str, value: object, problem: str) -> None:
    # The value itself is never formatted: its __repr__ may raise too.
    log_once(
        f"attribute:{key}:{problem}",
        "llmmeter.attributes: %s is %s (a %s). Use str, bool, int or float.",
        key,
        problem,
        type(value).__name__,
    )


@contextmanager
def attributes(**values: AttributeValue | None) -> Iterator[Mapping[str, AttributeValue]]:
    """Attach attribution attributes to every call made inside the ``with`` block.

    ``None`` values are ignored, so ``attributes(user_id=maybe_user)`` is safe. A value of another
    type (a list, a Decimal...) is recorded as its ``str()`` and a warning is logged once; never
    does an attribution mistake break the code it wraps: an object whose ``str()`` raises is
    recorded as ``"<unprintable>"``, text longer than 4096 characters is cut, lone surrogates are
    escaped, integers beyond 64 bits become text.
    """
    merged = {**_attributes.get(), **_validated(values)}
    token = _attributes.set(MappingProxyType(merged))
    try:
        yield _attributes.get()
    finally:
        _attributes.reset(token)


def current_attributes() -> Mapping[str, AttributeValue]:
    """The attribution attributes in force here (read-only)."""
    return _attributes.get()
