"""Anthropic Messages API: usage, response info, and the ``anthropic`` SDK's adapter.

Anthropic reports ``input_tokens`` *without* the cache: cache reads (``cache_read_input_tokens``)
and cache writes (``cache_creation_input_tokens``) come on top. llmmeter's contract has parts
inside totals, so the normalized ``input_tokens`` is the sum of the three. Cache writes are split
by TTL in ``cache_creation`` (5-minute and 1-hour writes are priced differently).

In a stream, ``message_start`` carries the input side and ``message_delta`` the final,
cumulative output side: :func:`usage_from_anthropic_stream` merges the two.

Pure functions: no I/O, no OTel, no pricing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmmeter import semconv
from llmmeter.providers.base import ResponseInfo, field, int_or_none, items_of, str_or_none, sum_known
from llmmeter.providers.types import EstimateInput, Observed, RequestSpec
from llmmeter.record import Usage

__all__ = [
    "ANTHROPIC",
    "AnthropicAdapter",
    "AnthropicStreamReader",
    "read_anthropic_response",
    "response_info_from_anthropic",
    "usage_from_anthropic",
    "usage_from_anthropic_stream",
]

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


# --- the anthropic SDK's adapter (driven by llmmeter.instrument.sdk) -------------------------------
_STOP_PARAM = semconv.REQUEST_STOP_SEQUENCES
_FLOAT_PARAMS = (
    ("temperature", semconv.REQUEST_TEMPERATURE),
    ("top_p", semconv.REQUEST_TOP_P),
)
_CLIENT_PROVIDERS = {
    "AnthropicBedrock": "aws.bedrock",
    "AsyncAnthropicBedrock": "aws.bedrock",
    "AnthropicVertex": "gcp.vertex_ai",
    "AsyncAnthropicVertex": "gcp.vertex_ai",
}
# Deltas that carry generated output: text, extended thinking, tool-call input, citations.
_OUTPUT_DELTAS = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


class AnthropicAdapter:
    """The generic SDK hook's view of the ``anthropic`` package: the Messages API."""

    sdk_module = "anthropic"

    def provider(self, client: Any, host: str | None) -> str:
        """``anthropic``; ``aws.bedrock`` / ``gcp.vertex_ai`` for the Bedrock and Vertex clients."""
        return _CLIENT_PROVIDERS.get(type(client).__name__, "anthropic")

    def plan(
        self, url: str, body: Mapping[str, Any], stream: bool, ask_usage: bool, files: Any = None
    ) -> RequestSpec | None:
        """``/v1/messages`` (and its beta form) is measured as ``chat``; other endpoints are not."""
        if not url.split("?", 1)[0].endswith("/messages"):
            return None
        model = body.get("model")
        messages = body.get("messages")
        return RequestSpec(
            operation="chat",
            request_model=model if isinstance(model, str) else None,
            read_response=read_anthropic_response,
            stream_reader=AnthropicStreamReader if stream else None,
            params=_request_params(body),
            estimate_input=_estimate_input(body.get("system"), messages),
            input_messages=messages,
        )

    def rejects_body_change(self, exc: BaseException) -> bool:
        """Never: the adapter leaves the request body as the caller wrote it."""
        return False


ANTHROPIC = AnthropicAdapter()


def _request_params(body: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        params[semconv.REQUEST_MAX_TOKENS] = max_tokens
    for key, attribute in _FLOAT_PARAMS:
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            params[attribute] = float(value)
    top_k = body.get("top_k")
    if isinstance(top_k, int) and not isinstance(top_k, bool):
        params[semconv.REQUEST_TOP_K] = float(top_k)
    stop = body.get("stop_sequences")
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        params[_STOP_PARAM] = tuple(stop)
    return params


def _estimate_input(system: Any, messages: Any) -> EstimateInput | None:
    if not isinstance(messages, list):
        return None
    if isinstance(system, str | list) and system:
        messages = [{"role": "system", "content": system}, *messages]
    return EstimateInput(messages=messages)


def read_anthropic_response(message: Any) -> Observed:
    """Usage, response info and generated text of a non-streamed Anthropic ``Message``."""
    usage = field(message, "usage")
    return Observed(
        usage=usage_from_anthropic(usage) if usage is not None else None,
        info=response_info_from_anthropic(message),
        output_text=_message_text(message),
    )


def _message_text(message: Any) -> str | None:
    blocks = items_of(field(message, "content"))
    return "".join(text for block in blocks if isinstance(text := field(block, "text"), str)) or None


class AnthropicStreamReader:
    """Reads a Messages stream's events: ``message_start`` (id, model, input-side usage),
    ``content_block_delta`` (output: text, thinking, tool input), ``message_delta`` (stop reason,
    cumulative usage). Output counts from the first delta that carries some."""

    __slots__ = ("delta_usage", "message", "stop_reason", "texts")

    def __init__(self) -> None:
        self.message: Any = None
        self.delta_usage: Any = None
        self.stop_reason: str | None = None
        self.texts: list[str] = []

    def feed(self, event: Any) -> bool:
        kind = field(event, "type")
        if kind == "content_block_delta":
            delta = field(event, "delta")
            key = _OUTPUT_DELTAS.get(field(delta, "type"))
            if key is None:
                return False
            value = field(delta, key)
            if not value:
                return False
            if key == "text":
                self.texts.append(value)
            return True
        if kind == "message_start":
            self.message = field(event, "message")
        elif kind == "message_delta":
            usage = field(event, "usage")
            if usage is not None:
                self.delta_usage = usage
            reason = str_or_none(field(field(event, "delta"), "stop_reason"))
            if reason:
                self.stop_reason = reason
        return False

    def result(self) -> Observed:
        message = self.message
        start_usage = field(message, "usage")
        observed = Observed(output_text="".join(self.texts) or None)
        if start_usage is not None or self.delta_usage is not None:
            observed.usage = usage_from_anthropic_stream(start_usage, self.delta_usage)
        if message is not None or self.stop_reason is not None:
            observed.info = ResponseInfo(
                response_id=str_or_none(field(message, "id")),
                response_model=str_or_none(field(message, "model")),
                finish_reasons=(self.stop_reason,) if self.stop_reason else None,
                service_tier=str_or_none(field(start_usage, "service_tier")),
            )
        return observed
