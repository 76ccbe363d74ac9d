"""The one record type that flows through llmmeter's pipeline.

instrument -> provider adapter -> :class:`CallRecord` -> pricing -> export.

Every measured call produces exactly one :class:`CallRecord`. The numbers follow one contract
(see ``docs/architecture.md``):

* a value that was not observed is ``None`` -- never a made-up ``0``;
* token parts are *subsets* of their totals: ``cache_read_input_tokens`` and
  ``cache_write_input_tokens`` are inside ``input_tokens``; ``reasoning_output_tokens`` is inside
  ``output_tokens``. Provider adapters normalize to this (Anthropic reports cache tokens outside
  its ``input_tokens``; Gemini reports thoughts outside its candidates) so that pricing and
  export never count a token twice;
* all durations are seconds (``float``), measured with one monotonic clock
  (:func:`time.perf_counter_ns`); ``start_time_unix_ns`` is the wall clock at the start, for
  storage and for the span.

The hot-path types are slotted dataclasses: cheap to create and to fill in.
"""

from __future__ import annotations

import base64
import enum
import itertools
import os
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

AttributeValue = str | bool | int | float

__all__ = [
    "AttributeValue",
    "CallKind",
    "CallRecord",
    "Cost",
    "CostStatus",
    "MediaUnits",
    "Outcome",
    "ServerTimings",
    "Timings",
    "Usage",
    "UsageSource",
    "new_record_id",
]


class UsageSource(enum.StrEnum):
    """Where the token counts of a record come from."""

    PROVIDER = "provider"
    """Reported by the provider (response ``usage``, the stream's usage chunk, token ids)."""
    ESTIMATED = "estimated"
    """Counted locally (tiktoken) because the provider reported nothing: an estimate."""
    MISSING = "missing"
    """Nothing reported and nothing estimated (e.g. the stream was cut before its usage chunk)."""


class Outcome(enum.StrEnum):
    """How a measured call ended."""

    OK = "ok"
    """The call returned (a stream: was read to its end)."""
    ERROR = "error"
    """The call, or the stream mid-way, raised."""
    ABORTED = "aborted"
    """The caller stopped early: a stream closed before its end, a task cancelled, Ctrl-C."""
    ABANDONED = "abandoned"
    """A stream was dropped unfinished and garbage-collected."""


class CallKind(enum.StrEnum):
    """Whether a record is one LLM request or a step that groups several (agent, tool...)."""

    LLM = "llm"
    STEP = "step"


class CostStatus(enum.StrEnum):
    """Why a record has (or has no) cost."""

    PRICED = "priced"
    """Computed from a price table (``Cost.source == "registry"``) or taken from the response."""
    UNPRICED = "unpriced"
    """The model has no price in the registry: cost is ``None``, never ``0``."""
    NO_USAGE = "no_usage"
    """No token counts to price (usage missing)."""
    DISABLED = "disabled"
    """Pricing is switched off (``configure(pricing=None)``)."""
    ERROR = "error"
    """The pricing stage failed; details were logged."""
    PENDING = "pending"
    """Not priced yet: pricing runs on llmmeter's pipeline thread unless something on the caller's
    thread needs the cost (a budget, an inline callback, an enclosing step). Sinks never see it;
    a record read back from the journal in this state is priced then."""


@dataclass(slots=True)
class Usage:
    """Normalized token counts of one call. ``None`` means *not reported*.

    Parts are subsets of totals (see the module docstring). ``*_text/_image/_audio`` split a
    direction by modality; ``cache_write_1h_input_tokens`` is the part of the cache writes made
    with a one-hour TTL (Anthropic), the rest being the default (5-minute) TTL.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None
    cache_write_1h_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    text_input_tokens: int | None = None
    image_input_tokens: int | None = None
    audio_input_tokens: int | None = None
    text_output_tokens: int | None = None
    image_output_tokens: int | None = None
    audio_output_tokens: int | None = None
    audio_cache_read_input_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None
    source: UsageSource = UsageSource.PROVIDER
    estimate_method: str | None = None
    """For ``ESTIMATED`` usage: how it was counted, e.g. ``"tiktoken:o200k_base"``."""

    @property
    def total_tokens(self) -> int | None:
        """Input plus output, when at least one of them is known."""
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def counts(self) -> dict[str, int]:
        """The reported counts only (``None`` fields left out), keyed by field name."""
        out: dict[str, int] = {}
        for f in _COUNT_FIELDS:
            value = getattr(self, f)
            if value is not None:
                out[f] = value
        return out

    def add(self, other: Usage) -> None:
        """Add ``other``'s counts into this one (used to roll nested calls up into a step)."""
        for f in _COUNT_FIELDS:
            theirs = getattr(other, f)
            if theirs is None:
                continue
            mine = getattr(self, f)
            setattr(self, f, theirs if mine is None else mine + theirs)
        if other.source is not UsageSource.PROVIDER and self.source is UsageSource.PROVIDER:
            self.source = other.source


_COUNT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Usage) if f.name not in ("source", "estimate_method")
)
USAGE_COUNT_FIELDS = _COUNT_FIELDS


@dataclass(slots=True)
class Cost:
    """What a call cost: an exact ``Decimal`` with its currency and a per-component breakdown.

    ``components`` maps a component name (``input``, ``cached_input``, ``cache_write``, ``output``,
    ``reasoning``, ``audio_input``, ``audio_output``, ``image_input``, ``image_output``,
    ``request``, ``image``, ``audio_seconds``, ``characters``, ``gpu_time``...) to its amount;
    the components sum to ``amount``.
    ``source`` is ``"registry"`` (computed from a price table) or ``"provider"`` (the response
    said what it cost). ``price_ref`` names the price that was applied, for audits.
    """

    amount: Decimal
    currency: str = "USD"
    components: dict[str, Decimal] = field(default_factory=dict)
    source: str = "registry"
    price_ref: str | None = None


@dataclass(slots=True)
class MediaUnits:
    """What a media call is billed by besides tokens. ``None`` means *not observed*.

    Images: how many were generated, at which size and quality (DALL·E is priced per image by
    both); audio: the seconds transcribed or translated (``whisper-1`` is priced per minute);
    characters: the text a speech model read aloud (``tts-1`` is priced per character).
    """

    images: int | None = None
    image_size: str | None = None
    """As requested, e.g. ``"1024x1024"``; ``None`` when the model's default was used."""
    image_quality: str | None = None
    """As requested: ``"standard"``/``"hd"`` (DALL·E 3), ``"low"``/``"medium"``/``"high"``."""
    audio_seconds: float | None = None
    characters: int | None = None


@dataclass(slots=True)
class ServerTimings:
    """Timings the *server* reported about itself (vLLM ``metrics``, Groq ``x_groq``...).

    Kept apart from the client-side :class:`Timings` because the two clocks measure different
    things: the server's TTFT excludes the network and the client's own overhead.
    """

    ttft_s: float | None = None
    tpot_s: float | None = None
    queue_s: float | None = None
    prefill_s: float | None = None
    decode_s: float | None = None
    e2e_s: float | None = None
    load_s: float | None = None
    """Loading the model before serving the request (Ollama's ``load_duration``)."""


@dataclass(slots=True)
class Timings:
    """Client-side timings of one call (seconds), as defined in the architecture contract.

    * ``ttfc_s``: start -> first chunk of any kind (streams only).
    * ``ttft_s``: start -> first chunk carrying generated output (streams only).
    * ``tpot_s``: (last output chunk - first output chunk) / (output tokens - 1); ``None``
      when fewer than 2 output tokens or not streamed.
    * ``duration_s``: start -> response fully received (stream exhausted, closed or failed).
    """

    start_time_unix_ns: int = 0
    duration_s: float | None = None
    ttfc_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    chunks: int | None = None
    server: ServerTimings | None = None


def _new_process_prefix() -> str:
    # 72 random bits per process: ids from different processes and hosts never meet in practice.
    return base64.urlsafe_b64encode(os.urandom(9)).decode("ascii")


_id_prefix = _new_process_prefix()
_id_counter = itertools.count(1)


def new_record_id() -> str:
    """A record id unique across processes and hosts: a random per-process prefix (drawn again in a
    forked child) and a counter, so that creating one costs a string format, not a ``uuid4``."""
    return f"{_id_prefix}.{next(_id_counter):x}"


def _new_ids_after_fork() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = _new_process_prefix(), itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_ids_after_fork)


@dataclass(slots=True)
class CallRecord:
    """One measured call: what was called, by whom, when, how long, how many tokens, what cost."""

    operation: str
    """``chat``, ``text_completion``, ``embeddings``, ``generate_content``... or a step's kind."""
    provider: str
    """``gen_ai.provider.name`` value: ``openai``, ``azure.ai.openai``, ``vllm``, ``groq``..."""
    request_model: str | None = None
    response_model: str | None = None
    kind: CallKind = CallKind.LLM
    name: str | None = None
    """A step's name (``@metered(name=...)``) or the decorated function's qualified name."""
    server_address: str | None = None
    server_port: int | None = None
    streaming: bool = False
    timings: Timings = field(default_factory=Timings)
    usage: Usage | None = None
    media: MediaUnits | None = None
    """Images, audio seconds, characters: for image, speech and transcription calls only."""
    cost: Cost | None = None
    cost_status: CostStatus = CostStatus.NO_USAGE
    outcome: Outcome = Outcome.OK
    error_type: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] | None = None
    service_tier: str | None = None
    request_params: dict[str, Any] = field(default_factory=dict)
    """Request parameters worth recording (temperature, max_tokens, seed...), semconv names."""
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    """Attribution (user, team, feature...) from :func:`llmmeter.attributes` and the call site."""
    trace_id: str | None = None
    span_id: str | None = None
    rollup_usage: Usage | None = None
    """For steps: the summed usage of every LLM call made inside it."""
    rollup_cost: Decimal | None = None
    rollup_calls: int = 0
    rollup_unpriced_calls: int = 0
    content: dict[str, Any] | None = None
    """Prompts and completions, only when the user opted in to content capture."""
    record_id: str = field(default_factory=new_record_id, compare=False)
    """Unique across processes and hosts (see :func:`new_record_id`): the local store writes a
    record once however often it is replayed. Not part of equality: two records with the same
    values are equal whatever their ids."""
