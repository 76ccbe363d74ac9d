"""Anthropic Messages API: usage and response info.

Anthropic reports ``input_tokens`` *without* the cache: cache reads (``cache_read_input_tokens``)
and cache writes (``cache_creation_input_tokens``) come on top. llmmeter's contract has parts
inside totals, so the normalized ``input_tokens`` is the sum of the three. Cache writes are split
by TTL in ``cache_creation`` (5-minute and 1-hour writes are priced differently).

In a stream, ``message_start`` carries the input side and ``message_delta`` the final,
cumulative output side: :func:`usage_from_anthropic_stream` merges the two.

Pure functions: no I/O, no OTel, no pricing.
"""

from __future__ import annotations

from typing import Any

from llmmeter.providers.base import ResponseInfo, field, int_or_none, str_or_none, sum_known
from llmmeter.record import Usage

__all__ = ["response_info_from_anthropic", "usage_from_anthropic", "usage_from_anthropic_stream"]

_INPUT_SIDE_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def usage_from_anthropic(usage: Any) -> Usage:
    """Normalize an Anthropic ``Usage`` / ``MessageDeltaUsage`` (pydantic object or dict).

    ``input_tokens`` = uncached input + cache reads + cache writes (``None`` when the uncached
    input itself was not reported, as in most ``message_delta`` events);
    ``reasoning_output_tokens`` = ``output_tokens_details.thinking_tokens``.
    """
    uncached = int_or_none(field(usage, "input_tokens"))
    cache_read = int_or_none(field(usage, "cache_read_input_tokens"))
    cache_write, cache_write_1h = _cache_writes(usage)
    return Usage(
        input_tokens=None if uncached is None else uncached + (cache_read or 0) + (cache_write or 0),
        output_tokens=int_or_none(field(usage, "output_tokens")),
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
        cache_write_1h_input_tokens=cache_write_1h,
        reasoning_output_tokens=int_or_none(field(field(usage, "output_tokens_details"), "thinking_tokens")),
    )


def _cache_writes(usage: Any) -> tuple[int | None, int | None]:
    """(all cache writes, the one-hour-TTL part of them)."""
    by_ttl = field(usage, "cache_creation")
    five_minutes = int_or_none(field(by_ttl, "ephemeral_5m_input_tokens"))
    one_hour = int_or_none(field(by_ttl, "ephemeral_1h_input_tokens"))
    total = int_or_none(field(usage, "cache_creation_input_tokens"))
    if total is None:
        total = sum_known(five_minutes, one_hour)
    return total, one_hour


def usage_from_anthropic_stream(message_start_usage: Any, message_delta_usage: Any) -> Usage:
    """The final usage of a streamed message from its ``message_start`` and last ``message_delta``.

    The delta's counts are cumulative and win; input-side counts the delta leaves out come from
    ``message_start``. Either argument may be ``None`` (a stream cut short).
    """
    if message_delta_usage is None:
        return usage_from_anthropic(message_start_usage)
    if message_start_usage is None:
        return usage_from_anthropic(message_delta_usage)
    merged: dict[str, Any] = {
        name: field(message_start_usage, name)
        for name in (*_INPUT_SIDE_FIELDS, "cache_creation", "output_tokens", "output_tokens_details")
    }
    for name in merged:
        value = field(message_delta_usage, name)
        if value is not None:
            merged[name] = value
    return usage_from_anthropic(merged)


def response_info_from_anthropic(message: Any) -> ResponseInfo:
    """Id, model, stop reason and service tier of an Anthropic ``Message`` (or a
    ``message_delta`` event, which carries only the stop reason)."""
    stop_reason = str_or_none(field(message, "stop_reason"))
    if stop_reason is None:
        stop_reason = str_or_none(field(field(message, "delta"), "stop_reason"))
    return ResponseInfo(
        response_id=str_or_none(field(message, "id")),
        response_model=str_or_none(field(message, "model")),
        finish_reasons=(stop_reason,) if stop_reason else None,
        service_tier=str_or_none(field(field(message, "usage"), "service_tier")),
    )
