"""Readers for OpenAI-style streams: Chat Completions, legacy Completions and the Responses API.

A reader is told about every chunk (:meth:`feed`, the hot path: a few attribute reads, no
allocation beyond keeping a reference to streamed text) and, once, says what it saw
(:meth:`result`, an :class:`~llmmeter.providers.types.Observed`). Usage is the provider's own:
OpenAI's usage chunk, usage on the last content chunk (DeepSeek, Together, OpenRouter), vLLM's
``continuous_usage_stats`` running totals (a stream cut short keeps the last running total),
Groq's ``x_groq.usage``, the Responses API's terminal ``response.*`` event. When there is none,
usage is left missing here; the pipeline's estimate step counts the streamed text
(:mod:`llmmeter.providers.estimate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmmeter.providers.base import ResponseInfo
from llmmeter.providers.openai import (
    provider_cost_from_openai_usage,
    server_timings_from_openai_usage,
    usage_from_openai,
)
from llmmeter.providers.types import Observed
from llmmeter.providers.vllm import server_timings_from_vllm_response, vllm_cache_writes


def _extra(model: Any) -> Mapping[str, Any] | None:
    """Pydantic extras of an openai object (fields the SDK does not declare), without copying."""
    return getattr(model, "__pydantic_extra__", None)


def is_usage_only_chunk(chunk: Any) -> bool:
    """The extra chunk OpenAI sends for ``include_usage``: no choices, only usage."""
    return not chunk.choices and chunk.usage is not None


class _OpenAIReaderBase:
    __slots__ = ("first", "last", "last_usage", "texts")

    def __init__(self) -> None:
        self.first: Any = None
        self.last: Any = None
        self.last_usage: Any = None
        self.texts: list[str] = []

    def _observed(self, finish_reasons: tuple[str, ...] | None) -> Observed:
        first, last = self.first, self.last
        observed = Observed(output_text="".join(self.texts) or None)
        usage = self._provider_usage()
        if usage is not None:
            observed.usage = usage_from_openai(usage)
        server = server_timings_from_openai_usage(usage) if usage is not None else None
        if last is not None:
            server = server_timings_from_vllm_response(last) or server
        if first is not None:
            observed.info = ResponseInfo(
                response_id=getattr(first, "id", None),
                response_model=getattr(first, "model", None),
                finish_reasons=finish_reasons,
                service_tier=getattr(last, "service_tier", None) or getattr(first, "service_tier", None),
                provider_cost=provider_cost_from_openai_usage(usage) if usage is not None else None,
                server_timings=server,
            )
            if looks_like_vllm(first):
                observed.provider = "vllm"
        elif finish_reasons is not None or server is not None:
            observed.info = ResponseInfo(finish_reasons=finish_reasons, server_timings=server)
        if observed.usage is not None and observed.usage.cache_write_input_tokens is None:
            observed.usage.cache_write_input_tokens = vllm_cache_writes(usage)
        return observed

    def _provider_usage(self) -> Any:
        if self.last_usage is not None:
            return self.last_usage
        extra = _extra(self.last) if self.last is not None else None
        if extra:
            groq = extra.get("x_groq")
            if isinstance(groq, Mapping) and groq.get("usage") is not None:
                return groq["usage"]
        return None


def looks_like_vllm(obj: Any) -> bool:
    """vLLM's responses and chunks carry fields OpenAI never sends (``stop_reason`` on choices...)."""
    choices = getattr(obj, "choices", None)
    if choices:
        extra = _extra(choices[0])
        if extra and "stop_reason" in extra:
            return True
    extra = _extra(obj)
    return bool(extra and _VLLM_TOP_LEVEL_FIELDS.intersection(extra))


_VLLM_TOP_LEVEL_FIELDS = frozenset({"prompt_token_ids", "prompt_logprobs", "kv_transfer_params"})


class _ChoicesStreamReader(_OpenAIReaderBase):
    """Streams of chunks with ``choices`` (any number, interleaved) and an optional ``usage``."""

    __slots__ = ("finish_reasons", "ready")

    def __init__(self) -> None:
        super().__init__()
        self.finish_reasons: dict[int, str] = {}
        self.ready = False  # True once a chunk with a model name was seen (the fast path's premise)

    def feed(self, chunk: Any) -> bool:
        return self._general_feed(chunk)

    def _general_feed(self, chunk: Any) -> bool:
        if not self.ready:
            self.first = chunk  # Azure opens with a content-filter chunk that has no id or model
            self.ready = bool(chunk.model)
        self.last = chunk
        usage = chunk.usage
        if usage is not None:
            self.last_usage = usage
        has_output = False
        for choice in chunk.choices:
            if self._choice_has_output(choice):
                has_output = True
            if choice.finish_reason:
                self.finish_reasons[choice.index] = choice.finish_reason
        return has_output

    def _choice_has_output(self, choice: Any) -> bool:
        raise NotImplementedError

    def result(self) -> Observed:
        reasons = self.finish_reasons
        return self._observed(tuple(reasons[i] for i in sorted(reasons)) if reasons else None)


class ChatStreamReader(_ChoicesStreamReader):
    """``chat.completions`` streams (``ChatCompletionChunk``)."""

    __slots__ = ()

    def feed(self, chunk: Any) -> bool:
        # The hot path of every chat stream: the common one-choice text chunk is read from the SDK
        # objects' own ``__dict__``. Each attribute read of an openai (pydantic) object goes
        # through pydantic's ``__getattr__`` hook, which the interpreter cannot specialize: three
        # such reads here instead of five. Anything else (n > 1, tool calls, reasoning, usage,
        # the final chunk, a shape the SDK did not parse) takes the general path. ``last`` is
        # not updated here: what is read from it (service tier, vLLM and Groq extras) is on the
        # chunks the general path sees.
        if self.ready:
            try:
                fields = chunk.__dict__
                choices = fields["choices"]
                if len(choices) == 1 and fields["usage"] is None:
                    choice = choices[0].__dict__
                    content = choice["delta"].content
                    if content and choice["finish_reason"] is None:
                        self.texts.append(content)
                        return True
            except (AttributeError, KeyError, TypeError):
                pass
        return self._general_feed(chunk)

    def _choice_has_output(self, choice: Any) -> bool:
        delta = choice.delta
        if delta is None:
            return False
        content = delta.content
        if content:
            self.texts.append(content)
            return True
        if delta.tool_calls:
            for call in delta.tool_calls:
                arguments = call.function.arguments if call.function is not None else None
                if arguments:
                    self.texts.append(arguments)
            return True
        if delta.refusal or delta.function_call:
            return True
        extra = _extra(delta)
        return bool(
            extra and (extra.get("reasoning_content") or extra.get("reasoning") or extra.get("audio"))
        )


class CompletionStreamReader(_ChoicesStreamReader):
    """Legacy ``completions`` streams (``Completion`` chunks with ``choices[].text``)."""

    __slots__ = ()

    def _choice_has_output(self, choice: Any) -> bool:
        text = choice.text
        if text:
            self.texts.append(text)
            return True
        return False


_TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStreamReader(_OpenAIReaderBase):
    """Responses API streams: typed events; output is any ``*.delta`` event."""

    __slots__ = ("response",)

    def __init__(self) -> None:
        super().__init__()
        self.response: Any = None

    def feed(self, chunk: Any) -> bool:
        event_type: str = chunk.type
        if event_type.endswith(".delta"):
            if event_type == "response.output_text.delta":
                self.texts.append(chunk.delta)
            return True
        if event_type in _TERMINAL_EVENTS or (self.response is None and event_type == "response.created"):
            self.response = chunk.response
        return False

    def result(self) -> Observed:
        observed = Observed(output_text="".join(self.texts) or None)
        response = self.response
        if response is None:
            return observed
        status = response.status
        reason = None
        if status:
            incomplete = (
                getattr(response.incomplete_details, "reason", None) if status == "incomplete" else None
            )
            reason = incomplete or status
        observed.info = ResponseInfo(
            response_id=response.id,
            response_model=response.model,
            finish_reasons=(reason,) if reason else None,
            service_tier=response.service_tier or None,
        )
        if response.usage is not None:
            observed.usage = usage_from_openai(response.usage)
        return observed
