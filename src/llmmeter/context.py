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

_ALLOWED_TYPES = (str, bool, int, float)


def _validated(values: Mapping[str, object]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, _ALLOWED_TYPES):
            out[key] = value
            continue
        # Telemetry must not break the call site: keep the value, as text, and say so once.
        log_once(
            f"attribute-type:{key}",
            "llmmeter.attributes: %s=%r is a %s; recorded as its text. Use str, bool, int or float.",
            key,
            value,
            type(value).__name__,
        )
        out[key] = str(value)
    return out


@contextmanager
def attributes(**values: AttributeValue | None) -> Iterator[Mapping[str, AttributeValue]]:
    """Attach attribution attributes to every call made inside the ``with`` block.

    ``None`` values are ignored, so ``attributes(user_id=maybe_user)`` is safe. A value of another
    type (a list, a Decimal...) is recorded as its ``str()`` and a warning is logged once: an
    attribution mistake never breaks the code it wraps.
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
