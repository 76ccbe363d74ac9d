"""OpenAI and OpenAI-compatible APIs: usage, response info, provider name from the host.

Covers Chat Completions and legacy Completions (``CompletionUsage``), the Responses API
(``ResponseUsage``), embeddings, and what OpenAI-compatible servers add to the same shape:
DeepSeek's ``prompt_cache_hit_tokens``, OpenRouter's ``cost``, Groq's timing fields, vLLM's
``prompt_tokens_details`` (present only when the server runs with ``--enable-prompt-tokens-details``).

OpenAI already reports parts as subsets of totals (``cached_tokens`` inside ``prompt_tokens``,
``reasoning_tokens`` inside ``completion_tokens``), so counts are copied, never adjusted. A detail
the response leaves out stays ``None``; a reported ``0`` stays ``0``.

Pure functions: no I/O, no OTel, no pricing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from llmmeter.providers.base import (
    CountTable,
    ResponseInfo,
    field,
    fields_of,
    items_of,
    str_or_none,
)
from llmmeter.record import Cost, ServerTimings, Usage

__all__ = [
    "provider_cost_from_openai_usage",
    "provider_from_host",
    "response_info_from_openai",
    "response_info_from_openai_fields",
    "server_timings_from_openai_usage",
    "usage_from_openai",
    "usage_from_openai_fields",
]


# (Usage field, source, key) -- sources: 0 = the usage, 1 = its input details, 2 = its output details.
_COMPLETION_USAGE_COUNTS = CountTable(
    ("input_tokens", 0, "prompt_tokens"),
    ("output_tokens", 0, "completion_tokens"),
    ("cache_read_input_tokens", 1, "cached_tokens"),
    ("cache_write_input_tokens", 1, "cache_write_tokens"),
    ("text_input_tokens", 1, "text_tokens"),
    ("image_input_tokens", 1, "image_tokens"),
    ("audio_input_tokens", 1, "audio_tokens"),
    ("reasoning_output_tokens", 2, "reasoning_tokens"),
    ("text_output_tokens", 2, "text_tokens"),
    ("audio_output_tokens", 2, "audio_tokens"),
    ("accepted_prediction_tokens", 2, "accepted_prediction_tokens"),
    ("rejected_prediction_tokens", 2, "rejected_prediction_tokens"),
)
_RESPONSE_USAGE_COUNTS = CountTable(
    ("input_tokens", 0, "input_tokens"),
    ("output_tokens", 0, "output_tokens"),
    ("cache_read_input_tokens", 1, "cached_tokens"),
    ("cache_write_input_tokens", 1, "cache_write_tokens"),
    ("text_input_tokens", 1, "text_tokens"),
    ("image_input_tokens", 1, "image_tokens"),
    ("audio_input_tokens", 1, "audio_tokens"),
    ("reasoning_output_tokens", 2, "reasoning_tokens"),
    ("text_output_tokens", 2, "text_tokens"),
    ("image_output_tokens", 2, "image_tokens"),
)


def usage_from_openai(usage: Any) -> Usage:
    """Normalize an OpenAI-style ``usage`` (pydantic object or dict) into a :class:`Usage`.

    Accepts ``CompletionUsage`` (Chat, legacy Completions, and OpenAI-compatible servers),
    ``ResponseUsage`` (Responses API), the embeddings usage, and the Images / transcription
    ``input_tokens`` shapes. Fields are read straight from the object, never via ``model_dump``.
    """
    return usage_from_openai_fields(fields_of(usage))


def usage_from_openai_fields(top: Mapping[str, Any]) -> Usage:
    """:func:`usage_from_openai` of a usage's fields already read (:func:`fields_of`)."""
    if top.get("prompt_tokens") is not None or top.get("completion_tokens") is not None:
        return _usage_from_completion_usage(top)
    return _usage_from_response_usage(top)


def _usage_from_completion_usage(top: Mapping[str, Any]) -> Usage:
    sources = (
        top,
        fields_of(top.get("prompt_tokens_details")),
        fields_of(top.get("completion_tokens_details")),
    )
    counts = _COMPLETION_USAGE_COUNTS.read(sources)
    if "cache_read_input_tokens" not in counts:
        # DeepSeek's own name for it (newer DeepSeek versions fill cached_tokens too).
        cache_hits = top.get("prompt_cache_hit_tokens")
        if type(cache_hits) is int:
            counts["cache_read_input_tokens"] = cache_hits
    return Usage(**counts)


def _usage_from_response_usage(top: Mapping[str, Any]) -> Usage:
    inputs = top.get("input_tokens_details")
    if inputs is None:
        inputs = top.get("input_token_details")  # the audio transcription spelling
    sources = (top, fields_of(inputs), fields_of(top.get("output_tokens_details")))
    return Usage(**_RESPONSE_USAGE_COUNTS.read(sources))


def provider_cost_from_openai_usage(usage: Any) -> Cost | None:
    """The cost the response itself reports (OpenRouter's ``usage.cost``), or ``None``.

    The amount is the exact decimal of the JSON number (``5e-05`` -> ``Decimal("5E-5")``). When
    OpenRouter's ``cost_details`` split it into prompt and completion parts that add up to it, the
    breakdown is kept as ``input`` / ``output``; otherwise the single component is ``total``.
    A reported ``0`` (free model) is a real cost of zero.
    """
    values = fields_of(usage)
    amount = _exact_decimal(values.get("cost"))
    if amount is None:
        return None
    details = fields_of(values.get("cost_details"))
    prompt_cost = _exact_decimal(details.get("upstream_inference_prompt_cost"))
    completion_cost = _exact_decimal(details.get("upstream_inference_completions_cost"))
    components: dict[str, Decimal]
    if prompt_cost is not None and completion_cost is not None and prompt_cost + completion_cost == amount:
        components = {"input": prompt_cost, "output": completion_cost}
    else:
        components = {"total": amount}
    return Cost(amount=amount, components=components, source="provider", price_ref="usage.cost")


def _exact_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        # repr() of a float is the shortest string that round-trips: the number as sent in JSON.
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return number if number.is_finite() else None


_SERVER_TIMING_KEYS = frozenset(("queue_time", "prompt_time", "completion_time"))


def server_timings_from_openai_usage(usage: Any) -> ServerTimings | None:
    """Server-side timings found in an OpenAI-style usage (Groq: ``queue_time``...), or ``None``."""
    values = fields_of(usage)
    if _SERVER_TIMING_KEYS.isdisjoint(values):  # OpenAI's own usage: none of them
        return None
    queue = _seconds(values.get("queue_time"))
    prefill = _seconds(values.get("prompt_time"))
    decode = _seconds(values.get("completion_time"))
    if queue is None and prefill is None and decode is None:
        return None
    return ServerTimings(queue_s=queue, prefill_s=prefill, decode_s=decode)


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def response_info_from_openai(response: Any) -> ResponseInfo:
    """Id, model, finish reasons, service tier, provider cost and server timings of an OpenAI
    response: ``ChatCompletion``, ``ChatCompletionChunk``, ``Completion``,
    ``CreateEmbeddingResponse`` or a Responses ``Response`` (pydantic object or dict)."""
    top = fields_of(response)
    usage = top.get("usage")
    if usage is None:
        usage = fields_of(top.get("x_groq")).get("usage")
    return response_info_from_openai_fields(top, fields_of(usage))


def response_info_from_openai_fields(top: Mapping[str, Any], usage_values: Mapping[str, Any]) -> ResponseInfo:
    """:func:`response_info_from_openai` of a response's and its usage's fields already read."""
    return ResponseInfo(
        response_id=str_or_none(top.get("id")),
        response_model=str_or_none(top.get("model")),
        finish_reasons=_finish_reasons(top),
        service_tier=str_or_none(top.get("service_tier")),
        provider_cost=provider_cost_from_openai_usage(usage_values) if "cost" in usage_values else None,
        server_timings=server_timings_from_openai_usage(usage_values),
    )


def _finish_reasons(top: Mapping[str, Any]) -> tuple[str, ...] | None:
    choices = items_of(top.get("choices"))
    if choices:
        reasons = tuple(
            reason for choice in choices if (reason := str_or_none(field(choice, "finish_reason")))
        )
        return reasons or None
    if top.get("object") == "response":
        # Responses API: an incomplete response says why; otherwise its status is the reason.
        incomplete = str_or_none(fields_of(top.get("incomplete_details")).get("reason"))
        status = incomplete or str_or_none(top.get("status"))
        return (status,) if status else None
    return None


_PROVIDER_BY_HOST: dict[str, str] = {
    "api.openai.com": "openai",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral_ai",
    "api.x.ai": "x_ai",
    "openrouter.ai": "openrouter",
    "api.together.xyz": "together_ai",
    "api.together.ai": "together_ai",
    "api.fireworks.ai": "fireworks_ai",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "aiplatform.googleapis.com": "gcp.vertex_ai",
    "api.anthropic.com": "anthropic",
    "api.perplexity.ai": "perplexity",
    "api.cohere.com": "cohere",
    "api.cohere.ai": "cohere",
    "api.moonshot.ai": "moonshot_ai",
}

_PROVIDER_BY_HOST_SUFFIX: tuple[tuple[str, str], ...] = (
    (".openai.azure.com", "azure.ai.openai"),
    (".cognitiveservices.azure.com", "azure.ai.openai"),
    ("-aiplatform.googleapis.com", "gcp.vertex_ai"),
)


@functools.lru_cache(maxsize=256)
def provider_from_host(host: str | None) -> str | None:
    """The ``gen_ai.provider.name`` for a known API host (a bare host, ``host:port`` or a URL).

    ``None`` for hosts it does not know (``localhost``, a company gateway...): an OpenAI client
    pointed there may be talking to vLLM, Ollama or a proxy, and calling it ``openai`` would be
    wrong. The instrumentation decides what to record then.
    """
    name = _bare_host(host)
    if not name:
        return None
    provider = _PROVIDER_BY_HOST.get(name)
    if provider is not None:
        return provider
    for suffix, suffix_provider in _PROVIDER_BY_HOST_SUFFIX:
        if name.endswith(suffix):
            return suffix_provider
    return None


def _bare_host(host: str | None) -> str | None:
    if not host:
        return None
    text = host.strip().lower()
    if "://" in text:
        return (urlsplit(text).hostname or "").rstrip(".") or None
    if text.startswith("["):  # [IPv6]:port
        return text[1:].split("]", 1)[0] or None
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".") or None
