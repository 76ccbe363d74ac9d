"""The adapter contract: what a provider adapter hands the instrumentation, as plain data.

An adapter is a few pure functions per API family (modelled on Pydantic Logfire's
``llm_providers/types.py``): no I/O, no OpenTelemetry, no pricing, no mutation of a record.

* :class:`RequestSpec` -- what one request will be recorded as (operation, model, request
  parameters) and how its result is read: :attr:`RequestSpec.read_response` for a whole response,
  :attr:`RequestSpec.stream_reader` for a stream.
* :class:`StreamReader` -- told about every chunk (:meth:`StreamReader.feed`, the hot path), asked
  once for what it saw (:meth:`StreamReader.result`).
* :class:`Observed` -- what a response or a stream said: usage, response info, generated text.
  :func:`apply_observed` copies it onto the record; estimating tokens when the provider reported
  none is one step after it, the same for every provider (:mod:`llmmeter.providers.estimate`).

Instrumentation modules (``instrument/``) know no provider: they call these functions and feed
the results into a :class:`~llmmeter.measure.Measurement`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmmeter import semconv
from llmmeter.providers.base import ResponseInfo
from llmmeter.record import CallRecord, MediaUnits, Usage

__all__ = [
    "EstimateInput",
    "Observed",
    "RequestSpec",
    "ResponseReader",
    "StreamReader",
    "apply_observed",
    "output_messages",
]

_NO_INFO = ResponseInfo()


@dataclass(slots=True)
class Observed:
    """What one response, or one whole stream, told about the call. ``None``: not reported."""

    usage: Usage | None = None
    info: ResponseInfo = _NO_INFO
    provider: str | None = None
    """The provider the response revealed, when it differs from what the host said (vLLM's
    extra fields behind an unknown host)."""
    output_text: str | None = None
    """The generated text (streams keep it anyway; used for content capture and estimates)."""
    output_chunks: int | None = None
    """Streamed chunks that carried output, counted instead of keeping their text (a skimmed
    stream, see :attr:`RequestSpec.usage_expected`): what an estimate counts when no usage came."""
    media: MediaUnits | None = None
    """Images generated, audio seconds, characters read aloud (media endpoints only)."""
    text_of: Callable[[], str | None] | None = None
    """Reads the generated text out of a whole response when it is asked for (:meth:`text`):
    a response with usage and no content capture never needs it."""

    def text(self) -> str | None:
        """The generated text: :attr:`output_text`, else what :attr:`text_of` reads (once)."""
        if self.output_text is None and self.text_of is not None:
            self.output_text, self.text_of = self.text_of(), None
        return self.output_text


class StreamReader(Protocol):
    """A provider's view of one stream: told about every chunk, asked for the result once.

    A stream planned with :attr:`RequestSpec.usage_expected` is skimmed: after its first output
    chunk the reader is not told about each chunk, only about the last four when the stream ends.
    A reader that must see every chunk (Gemini's running usage) defines ``read_lightly()``
    instead: it is called once, and the reader is told about every chunk but may read less of it.
    """

    def feed(self, chunk: Any) -> bool:
        """Take one chunk; True when it carries generated output (text, tool args, reasoning...)."""
        ...

    def result(self) -> Observed:
        """What the chunks seen so far said (called once, when the stream ends however it ends)."""
        ...


ResponseReader = Callable[[Any], Observed]
"""Reads a whole (non-streamed) response object into :class:`Observed`."""


@dataclass(frozen=True, slots=True)
class EstimateInput:
    """The request's input as the local token estimator reads it, when the provider reports none."""

    messages: Sequence[Any] | None = None
    """Chat messages (``role`` / ``content``, OpenAI or Anthropic content blocks)."""
    prompt: str | Sequence[Any] | None = None
    """A plain prompt (legacy completions, Responses ``input`` string, Ollama ``generate``)."""


@dataclass(slots=True)
class RequestSpec:
    """What an adapter made of one request, before it is sent."""

    operation: str
    """``gen_ai.operation.name``: ``chat``, ``text_completion``, ``embeddings``, ``generate_content``..."""
    request_model: str | None
    read_response: ResponseReader
    stream_reader: Callable[[], StreamReader] | None = None
    """Makes the reader of this request's stream; ``None`` when the endpoint does not stream."""
    params: dict[str, Any] = field(default_factory=dict)
    """Request attributes under their semconv names (``gen_ai.request.temperature``...)."""
    estimate_input: EstimateInput | None = None
    input_messages: Any = None
    """The prompt as sent, for content capture only (read only when the user opted in)."""
    hidden: Callable[[Any], bool] | None = None
    """Chunks llmmeter asked for and the caller did not (the usage chunk added by
    ``include_usage``): read, never handed to the caller."""
    body: Mapping[str, Any] | None = None
    """A replacement request body (``stream_options.include_usage`` added); ``None``: unchanged."""
    usage_expected: bool = False
    """The stream will end with the provider's usage (``include_usage`` is in effect): after the
    first output chunk, its chunks are timed and counted but not read, and its last few are read
    when it ends (:meth:`llmmeter.measure.Measurement.observe`)."""


def apply_observed(record: CallRecord, observed: Observed) -> None:
    """Copy what a response said onto the record; what it did not say leaves the record as is."""
    if observed.usage is not None:
        record.usage = observed.usage
    info = observed.info
    if info.response_id is not None:
        record.response_id = info.response_id
    if info.response_model is not None:
        record.response_model = info.response_model
    if info.finish_reasons is not None:
        record.finish_reasons = info.finish_reasons
    if info.service_tier is not None:
        record.service_tier = info.service_tier
    if info.provider_cost is not None:
        record.cost = info.provider_cost
    if info.server_timings is not None:
        record.timings.server = info.server_timings
    if observed.provider is not None:
        record.provider = observed.provider
    if observed.media is not None:
        record.media = observed.media
    if record.content is not None and (text := observed.text()):
        record.content[semconv.OUTPUT_MESSAGES] = output_messages(text)


def output_messages(text: str) -> list[dict[str, Any]]:
    """Generated text in the semantic conventions' output-message shape (content capture only)."""
    return [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
