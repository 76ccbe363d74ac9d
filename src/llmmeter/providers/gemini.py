"""Google Gemini (``google-genai`` SDK objects, or the REST JSON): usage and response info.

Gemini counts thinking *outside* its candidates: ``total = prompt + tool_use_prompt + candidates
+ thoughts``. llmmeter's contract has reasoning inside output, so the normalized
``output_tokens`` is candidates + thoughts and ``reasoning_output_tokens`` is the thoughts.
``prompt_token_count`` already includes the cached content; the tool-use prompt (search results
and the like fed back to the model) is input too.

Both spellings are read: the SDK's ``snake_case`` and the REST API's ``camelCase``.

Pure functions: no I/O, no OTel, no pricing.
"""

from __future__ import annotations

from typing import Any

from llmmeter.providers.base import ResponseInfo, field, int_or_none, str_or_none, sum_known
from llmmeter.record import Usage

__all__ = ["response_info_from_gemini", "usage_from_gemini", "usage_metadata_of"]


def _read(obj: Any, snake_name: str) -> Any:
    value = field(obj, snake_name)
    if value is None and isinstance(obj, dict):
        head, *rest = snake_name.split("_")
        value = obj.get(head + "".join(part.title() for part in rest))
    return value


def usage_metadata_of(response: Any) -> Any:
    """The ``usage_metadata`` (``usageMetadata`` in REST JSON) of a response, or ``None``."""
    return _read(response, "usage_metadata")


def usage_from_gemini(usage_metadata: Any) -> Usage:
    """Normalize a ``GenerateContentResponseUsageMetadata`` (object or dict) into a :class:`Usage`.

    Per-modality parts come from the ``*_tokens_details`` lists (TEXT / IMAGE / AUDIO; VIDEO and
    DOCUMENT have no field of their own and stay inside the totals). Thoughts are text, so they
    are added to the text output when the candidates' text is reported.
    """
    prompt = int_or_none(_read(usage_metadata, "prompt_token_count"))
    tool_prompt = int_or_none(_read(usage_metadata, "tool_use_prompt_token_count"))
    candidates = int_or_none(_read(usage_metadata, "candidates_token_count"))
    if candidates is None:  # the Live API's name for it
        candidates = int_or_none(_read(usage_metadata, "response_token_count"))
    thoughts = int_or_none(_read(usage_metadata, "thoughts_token_count"))

    inputs = _merge(
        _by_modality(_read(usage_metadata, "prompt_tokens_details")),
        _by_modality(_read(usage_metadata, "tool_use_prompt_tokens_details")),
    )
    outputs = _by_modality(_read(usage_metadata, "candidates_tokens_details"))
    if outputs is None:
        outputs = _by_modality(_read(usage_metadata, "response_tokens_details"))
    cached = _by_modality(_read(usage_metadata, "cache_tokens_details")) or {}
    text_output = outputs.get("TEXT") if outputs else None

    return Usage(
        input_tokens=None if prompt is None else prompt + (tool_prompt or 0),
        output_tokens=sum_known(candidates, thoughts),
        cache_read_input_tokens=int_or_none(_read(usage_metadata, "cached_content_token_count")),
        reasoning_output_tokens=thoughts,
        text_input_tokens=inputs.get("TEXT") if inputs else None,
        image_input_tokens=inputs.get("IMAGE") if inputs else None,
        audio_input_tokens=inputs.get("AUDIO") if inputs else None,
        text_output_tokens=None if text_output is None else text_output + (thoughts or 0),
        image_output_tokens=outputs.get("IMAGE") if outputs else None,
        audio_output_tokens=outputs.get("AUDIO") if outputs else None,
        audio_cache_read_input_tokens=cached.get("AUDIO"),
    )


def _by_modality(details: Any) -> dict[str, int] | None:
    """``[{modality, token_count}, ...]`` -> ``{"TEXT": n, ...}``; ``None`` when not reported."""
    if not details:
        return None
    counts: dict[str, int] = {}
    for entry in details:
        modality = str_or_none(_read(entry, "modality"))
        count = int_or_none(_read(entry, "token_count"))
        if modality is not None and count is not None:
            counts[modality] = counts.get(modality, 0) + count
    return counts


def _merge(first: dict[str, int] | None, second: dict[str, int] | None) -> dict[str, int] | None:
    if first is None or second is None:
        return first if second is None else second
    merged = dict(first)
    for modality, count in second.items():
        merged[modality] = merged.get(modality, 0) + count
    return merged


def response_info_from_gemini(response: Any) -> ResponseInfo:
    """Id, model version, candidates' finish reasons and traffic type of a Gemini response.

    ``service_tier`` carries Vertex's ``traffic_type`` (``ON_DEMAND``, ``ON_DEMAND_FLEX``,
    ``PROVISIONED_THROUGHPUT``...), the Gemini notion that changes what a call costs.
    """
    candidates = _read(response, "candidates") or ()
    reasons = tuple(
        reason for candidate in candidates if (reason := str_or_none(_read(candidate, "finish_reason")))
    )
    return ResponseInfo(
        response_id=str_or_none(_read(response, "response_id")),
        response_model=str_or_none(_read(response, "model_version")),
        finish_reasons=reasons or None,
        service_tier=str_or_none(_read(usage_metadata_of(response), "traffic_type")),
    )
