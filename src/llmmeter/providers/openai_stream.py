"""Readers for OpenAI-style streams: Chat Completions, legacy Completions and the Responses API.

A reader is told about every chunk (:meth:`feed`, the hot path: a few attribute reads, no
allocation beyond keeping a reference to streamed text) and, once, fills the record
(:meth:`finalize`). Where usage comes from, in order:

1. the provider's own numbers -- OpenAI's usage chunk, usage on the last content chunk
   (DeepSeek, Together, OpenRouter), vLLM's ``continuous_usage_stats`` running totals (a stream
   cut short keeps the last running total), Groq's ``x_groq.usage``, the Responses API's
   terminal ``response.*`` event;
2. otherwise a local tiktoken estimate of the streamed text and of the request's input,
   marked ``estimated``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmmeter.record import CallRecord, Usage, UsageSource


def _extra(model: Any) -> Mapping[str, Any] | None:
    """Pydantic extras of an openai object (fields the SDK does not declare), without copying."""
    return getattr(model, "__pydantic_extra__", None)


def output_messages(text: str) -> list[dict[str, Any]]:
    """Generated text in the semantic conventions' output-message shape (content capture only)."""
    return [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]


class _OpenAIReaderBase:
    __slots__ = ("first", "last", "last_usage", "request", "texts")

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.request = request
        self.first: Any = None
        self.last: Any = None
        self.last_usage: Any = None
        self.texts: list[str] = []

    def _capture_output(self, record: CallRecord) -> None:
        if record.content is not None and self.texts:
            record.content["gen_ai.output.messages"] = output_messages("".join(self.texts))

    def _finalize_common(self, record: CallRecord) -> None:
        self._capture_output(record)
        first = self.first
        if first is not None:
            record.response_id = getattr(first, "id", None)
            record.response_model = getattr(first, "model", None)
            tier = getattr(self.last, "service_tier", None) or getattr(first, "service_tier", None)
            if tier:
                record.service_tier = tier
            if looks_like_vllm(first) and record.provider == "openai_compatible":
                record.provider = "vllm"
        usage = self._provider_usage()
        if usage is not None:
            from llmmeter.providers.openai import (
                provider_cost_from_openai_usage,
                server_timings_from_openai_usage,
                usage_from_openai,
            )

            record.usage = usage_from_openai(usage)
            cost = provider_cost_from_openai_usage(usage)
            if cost is not None:
                record.cost = cost
            server = server_timings_from_openai_usage(usage)
            if server is not None:
                record.timings.server = server
        else:
            record.usage = self._estimate(record)
        if record.provider == "vllm" and self.last is not None:
            from llmmeter.providers.vllm import apply_vllm_extras

            apply_vllm_extras(record, self.last, usage)

    def _provider_usage(self) -> Any:
        if self.last_usage is not None:
            return self.last_usage
        extra = _extra(self.last) if self.last is not None else None
        if extra:
            groq = extra.get("x_groq")
            if isinstance(groq, Mapping) and groq.get("usage") is not None:
                return groq["usage"]
        return None

    def _estimate(self, record: CallRecord) -> Usage | None:
        from llmmeter.tokens import estimate_chat_input_tokens, estimate_prompt_tokens, estimate_text_tokens

        model = record.response_model or record.request_model
        methods: list[str] = []
        usage = Usage(source=UsageSource.ESTIMATED)
        if self.texts:
            estimate = estimate_text_tokens("".join(self.texts), model)
            usage.output_tokens = estimate.tokens
            methods.append(estimate.method)
        messages = self.request.get("messages")
        prompt = self.request.get("prompt")
        if isinstance(messages, list):
            estimate = estimate_chat_input_tokens(messages, model)
            usage.input_tokens = estimate.tokens
            methods.append(estimate.method)
        elif isinstance(prompt, str | list):
            estimate = estimate_prompt_tokens(prompt, model)
            usage.input_tokens = estimate.tokens
            methods.append(estimate.method)
        if usage.input_tokens is None and usage.output_tokens is None:
            return None
        usage.estimate_method = methods[0] if methods else None
        return usage


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

    def __init__(self, request: Mapping[str, Any]) -> None:
        super().__init__(request)
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

    def finalize(self, record: CallRecord) -> None:
        self._finalize_common(record)
        if self.finish_reasons:
            record.finish_reasons = tuple(self.finish_reasons[i] for i in sorted(self.finish_reasons))


class ChatStreamReader(_ChoicesStreamReader):
    """``chat.completions`` streams (``ChatCompletionChunk``)."""

    __slots__ = ()

    def feed(self, chunk: Any) -> bool:
        # The hot path of every chat stream: the common one-choice text chunk is read inline;
        # anything else (n > 1, tool calls, reasoning...) takes the general path.
        choices = chunk.choices
        if self.ready and len(choices) == 1 and chunk.usage is None:
            self.last = chunk
            choice = choices[0]
            delta = choice.delta
            content = delta.content if delta is not None else None
            if content and choice.finish_reason is None:
                self.texts.append(content)
                return True
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

    def __init__(self, request: Mapping[str, Any]) -> None:
        super().__init__(request)
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

    def finalize(self, record: CallRecord) -> None:
        self._capture_output(record)
        response = self.response
        if response is not None:
            record.response_id = response.id
            record.response_model = response.model
            if response.service_tier:
                record.service_tier = response.service_tier
            status = response.status
            if status:
                reason = (
                    getattr(response.incomplete_details, "reason", None) if status == "incomplete" else None
                )
                record.finish_reasons = (reason or status,)
            if response.usage is not None:
                from llmmeter.providers.openai import usage_from_openai

                record.usage = usage_from_openai(response.usage)
                return
        record.usage = self._estimate_responses(record)

    def _estimate_responses(self, record: CallRecord) -> Usage | None:
        from llmmeter.tokens import estimate_prompt_tokens, estimate_text_tokens

        model = record.response_model or record.request_model
        usage = Usage(source=UsageSource.ESTIMATED)
        if self.texts:
            estimate = estimate_text_tokens("".join(self.texts), model)
            usage.output_tokens = estimate.tokens
            usage.estimate_method = estimate.method
        request_input = self.request.get("input")
        if isinstance(request_input, str):
            estimate = estimate_prompt_tokens(request_input, model)
            usage.input_tokens = estimate.tokens
            usage.estimate_method = usage.estimate_method or estimate.method
        if usage.input_tokens is None and usage.output_tokens is None:
            return None
        return usage
