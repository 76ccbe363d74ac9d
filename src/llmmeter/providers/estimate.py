"""Local token estimates: one step, the same for every provider, run only when usage is missing.

A provider that reported usage is never second-guessed. When it reported none (a stream cut
before its usage chunk, a server that sends no usage), the request's input and the generated
text are counted locally with tiktoken (:mod:`llmmeter.tokens`) and the usage is marked
``estimated`` with the method used. Nothing to count gives ``None``: usage stays missing.
"""

from __future__ import annotations

from collections.abc import Mapping

from llmmeter.providers.types import EstimateInput
from llmmeter.record import Usage, UsageSource

__all__ = ["STREAM_CHUNKS_METHOD", "estimate_usage"]


STREAM_CHUNKS_METHOD = "stream_chunks"
"""Estimate method of output tokens counted as a stream's output chunks (one token per chunk, as
OpenAI-style servers stream them), for a stream whose text was not kept."""


def estimate_usage(
    model: str | None,
    request: EstimateInput | None,
    output_text: str | None,
    output_chunks: int | None = None,
) -> Usage | None:
    """An ``estimated`` :class:`Usage` from the request's input and the generated text (or, when
    the text was not kept, the number of streamed output chunks), or ``None``."""
    from llmmeter.tokens import estimate_chat_input_tokens, estimate_prompt_tokens, estimate_text_tokens

    usage = Usage(source=UsageSource.ESTIMATED)
    methods: list[str] = []
    if output_text:
        estimate = estimate_text_tokens(output_text, model)
        usage.output_tokens = estimate.tokens
        methods.append(estimate.method)
    elif output_chunks:
        usage.output_tokens = output_chunks
        methods.append(STREAM_CHUNKS_METHOD)
    if request is not None:
        messages, prompt = request.messages, request.prompt
        if messages is not None and all(isinstance(message, Mapping) for message in messages):
            estimate = estimate_chat_input_tokens(list(messages), model)
            usage.input_tokens = estimate.tokens
            methods.append(estimate.method)
        elif isinstance(prompt, str) or (isinstance(prompt, list) and prompt):
            estimate = estimate_prompt_tokens(prompt, model)
            usage.input_tokens = estimate.tokens
            methods.append(estimate.method)
    if usage.input_tokens is None and usage.output_tokens is None:
        return None
    usage.estimate_method = methods[0]
    return usage
