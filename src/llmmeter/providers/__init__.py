"""Provider adapters: pure functions from a provider's response objects to llmmeter's numbers.

:func:`extract_usage` and :func:`extract_response_info` take whatever an instrumented call
returns -- an SDK's pydantic object or a plain dict of decoded JSON, a whole response or one
stream event -- recognise its shape, and hand it to the adapter of its API family:

* OpenAI and OpenAI-compatible (:mod:`.openai`): Chat / legacy Completions, Responses,
  embeddings; DeepSeek, OpenRouter, vLLM, Together, Groq (``x_groq.usage`` in streams);
* Anthropic Messages (:mod:`.anthropic`): ``Message``, ``message_start``, ``message_delta``;
* Google Gemini (:mod:`.gemini`): ``usage_metadata`` / ``usageMetadata``;
* Ollama (:mod:`.ollama`): ``prompt_eval_count`` / ``eval_count``.

No I/O, no OTel, no pricing. Neither function raises: an object of unknown shape gives ``None``
usage and an empty :class:`ResponseInfo`.
"""

from __future__ import annotations

import logging
from typing import Any

from llmmeter.providers.anthropic import response_info_from_anthropic, usage_from_anthropic
from llmmeter.providers.base import ResponseInfo, field
from llmmeter.providers.gemini import response_info_from_gemini, usage_from_gemini, usage_metadata_of
from llmmeter.providers.ollama import read_ollama_response, usage_from_ollama
from llmmeter.providers.openai import response_info_from_openai, usage_from_openai
from llmmeter.record import Usage

__all__ = ["ResponseInfo", "extract_response_info", "extract_usage"]

_log = logging.getLogger("llmmeter")
_ANTHROPIC_TYPES = frozenset({"message", "message_delta"})
_failures_logged: set[str] = set()


def extract_usage(obj: Any) -> Usage | None:
    """The normalized token usage carried by ``obj``, or ``None`` when it carries none.

    ``None`` is the honest answer for a stream chunk before the usage chunk, an error body, or
    an object of unknown shape; it is never turned into zeros.
    """
    try:
        return _extract_usage(_unwrapped(obj))
    except Exception:
        _log_once("extract_usage")
        return None


def extract_response_info(obj: Any) -> ResponseInfo:
    """Id, model, finish reasons, service tier, provider cost and server timings of ``obj``."""
    try:
        return _extract_response_info(_unwrapped(obj))
    except Exception:
        _log_once("extract_response_info")
        return ResponseInfo()


def _unwrapped(obj: Any) -> Any:
    """The full object inside a stream event that wraps one (Responses ``response.*`` events,
    Anthropic ``message_start``); ``obj`` itself otherwise."""
    kind = field(obj, "type")
    if isinstance(kind, str):
        if kind.startswith("response."):
            return field(obj, "response")  # None for delta events: they carry no usage
        if kind == "message_start":
            return field(obj, "message")
    return obj


def _extract_usage(obj: Any) -> Usage | None:
    if obj is None:
        return None
    usage = field(obj, "usage")
    if usage is not None:
        return usage_from_anthropic(usage) if _is_anthropic(obj, usage) else usage_from_openai(usage)
    groq_usage = field(field(obj, "x_groq"), "usage")
    if groq_usage is not None:
        return usage_from_openai(groq_usage)
    metadata = usage_metadata_of(obj)
    if metadata is not None:
        return usage_from_gemini(metadata)
    return usage_from_ollama(obj)


def _is_anthropic(container: Any, usage: Any) -> bool:
    return (
        field(container, "type") in _ANTHROPIC_TYPES
        or field(usage, "cache_read_input_tokens") is not None
        or field(usage, "cache_creation_input_tokens") is not None
    )


def _extract_response_info(obj: Any) -> ResponseInfo:
    if obj is None:
        return ResponseInfo()
    if field(obj, "type") in _ANTHROPIC_TYPES:
        return response_info_from_anthropic(obj)
    if field(obj, "candidates") is not None or usage_metadata_of(obj) is not None:
        return response_info_from_gemini(obj)
    if field(obj, "prompt_eval_count") is not None or field(obj, "eval_count") is not None:
        return read_ollama_response(obj).info
    return response_info_from_openai(obj)


def _log_once(stage: str) -> None:
    if stage in _failures_logged:
        return
    _failures_logged.add(stage)
    _log.debug("llmmeter: %s failed on an unexpected object; reporting nothing", stage, exc_info=True)
