"""Google Gemini (``google-genai`` SDK objects, or the REST JSON): usage and response info.

Gemini counts thinking *outside* its candidates: ``total = prompt + tool_use_prompt + candidates
+ thoughts``. llmmeter's contract has reasoning inside output, so the normalized
``output_tokens`` is candidates + thoughts and ``reasoning_output_tokens`` is the thoughts.
``prompt_token_count`` already includes the cached content; the tool-use prompt (search results
and the like fed back to the model) is input too.

Both spellings are read: the SDK's ``snake_case`` and the REST API's ``camelCase``.

In a stream every chunk carries the usage so far (cumulative): the last one wins. Output starts
at the first chunk whose candidates carry a non-empty part: text, a thought, a function call,
inline data (an image, audio) or code.

:data:`GOOGLE_GENAI` is the ``google-genai`` SDK's table for :mod:`llmmeter.instrument.methods`:
``models.generate_content``, ``generate_content_stream`` and ``embed_content``, and their
``client.aio.models`` twins. A ``Client(vertexai=True)`` is ``gcp.vertex_ai``, otherwise
``gcp.gemini``. One call is one record, also when the SDK sends several requests for it
(automatic function calling with Python functions as tools, automatic continuation): the
response it returns carries the last request's ``usage_metadata`` only, so the record's usage is
the sum over the requests -- their responses collected from ``Models._generate_content`` (one
request each) in a whole call, a change of ``response_id`` in a stream.

Pure functions: no I/O, no OTel, no pricing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from llmmeter import semconv
from llmmeter.providers.base import (
    ResponseInfo,
    field,
    fields_of,
    int_or_none,
    items_of,
    str_or_none,
    sum_known,
)
from llmmeter.providers.types import EstimateInput, Observed, RequestSpec
from llmmeter.record import Usage

__all__ = [
    "GOOGLE_GENAI",
    "GeminiStreamReader",
    "GoogleGenAIAdapter",
    "read_gemini_embedding",
    "read_gemini_response",
    "response_info_from_gemini",
    "usage_from_gemini",
    "usage_metadata_of",
]


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
    details = items_of(details)
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
    candidates = items_of(_read(response, "candidates"))
    reasons = tuple(
        reason for candidate in candidates if (reason := str_or_none(_read(candidate, "finish_reason")))
    )
    return ResponseInfo(
        response_id=str_or_none(_read(response, "response_id")),
        response_model=str_or_none(_read(response, "model_version")),
        finish_reasons=reasons or None,
        service_tier=_service_tier(usage_metadata_of(response)),
    )


# Vertex's traffic types that are a price tier of their own, under the price table's tier names.
_PRICED_TRAFFIC = {"ON_DEMAND_FLEX": "flex", "ON_DEMAND_PRIORITY": "priority"}


def _service_tier(usage_metadata: Any) -> str | None:
    """Vertex's ``traffic_type`` (flex and priority under their price-tier names), else the tier
    the Gemini API reports (``serviceTier``: ``standard``, ``flex``...)."""
    traffic = str_or_none(_read(usage_metadata, "traffic_type"))
    if traffic is not None:
        return _PRICED_TRAFFIC.get(traffic, traffic)
    return str_or_none(_read(usage_metadata, "service_tier"))


def _output_text(response: Any) -> str | None:
    """The first candidate's generated text, thoughts left out (content capture and estimates)."""
    candidates = items_of(_read(response, "candidates"))
    if not candidates:
        return None
    texts = [
        text
        for part in items_of(field(field(candidates[0], "content"), "parts"))
        if isinstance(text := field(part, "text"), str) and not field(part, "thought")
    ]
    return "".join(texts) or None


def read_gemini_response(response: Any) -> Observed:
    """Usage, response info and text of a whole ``GenerateContentResponse`` (or its JSON)."""
    metadata = usage_metadata_of(response)
    return Observed(
        usage=usage_from_gemini(metadata) if metadata is not None else None,
        info=response_info_from_gemini(response),
        output_text=_output_text(response),
    )


def read_gemini_embedding(response: Any) -> Observed:
    """Input tokens of an ``EmbedContentResponse``: its ``usage_metadata`` when reported, else the
    sum of Vertex's per-embedding ``statistics.token_count``; the Gemini API reports none."""
    metadata = _read(response, "usage_metadata")
    if metadata is not None:
        prompt = int_or_none(_read(metadata, "prompt_token_count"))
        if prompt is not None:
            return Observed(usage=Usage(input_tokens=prompt))
    counts = [
        int_or_none(_read(_read(embedding, "statistics"), "token_count"))
        for embedding in items_of(_read(response, "embeddings"))
    ]
    if not counts or None in counts:
        return Observed()
    return Observed(usage=Usage(input_tokens=sum(count for count in counts if count is not None)))


def _values(obj: Any) -> Any:
    """The fields of a chunk's object when it has no ``__dict__`` to read directly: a dict as is,
    anything else through :func:`~llmmeter.providers.base.fields_of`. (The readers read an SDK
    object's ``__dict__`` themselves -- google-genai's models forbid extra fields -- skipping
    ``fields_of``'s extras lookup, a pydantic ``__getattr__`` miss of about 0.4 µs per object.)"""
    if type(obj) is dict:
        # REST JSON spells the fields the readers use in camelCase: one C-level key intersection
        # tells, and only such a dict is copied with those keys renamed.
        return {_SNAKE.get(k, k): v for k, v in obj.items()} if _SNAKE.keys() & obj.keys() else obj
    values = getattr(obj, "__dict__", None)
    return values if values is not None else fields_of(obj)


_SNAKE = {
    "usageMetadata": "usage_metadata",
    "responseId": "response_id",
    "modelVersion": "model_version",
    "finishReason": "finish_reason",
    "inlineData": "inline_data",
    "functionCall": "function_call",
    "executableCode": "executable_code",
    "codeExecutionResult": "code_execution_result",
    "fileData": "file_data",
}
"""The REST API's camelCase names of the fields :class:`GeminiStreamReader` reads."""


# Parts that are generated output besides text (a thought is text with ``thought: true``).
_OUTPUT_PARTS = ("function_call", "inline_data", "executable_code", "code_execution_result", "file_data")


class GeminiStreamReader:
    """Reads a ``generate_content_stream``: output from the first chunk with a non-empty part;
    usage, id, model version and traffic type from the last chunk that had them.

    Read lightly (:meth:`read_lightly`, when nothing needs the generated text): once a chunk had
    output and running usage, each later chunk is read one object deep (its usage, its id, whether
    it has candidates) instead of four (chunk, candidate, content, parts), and the finish reasons
    come from the last chunk with candidates. Gemini sends its running usage totals on every
    chunk, so a stream left early keeps its last total, and a new ``response_id`` midway (the SDK
    continuing the stream with another request) is still seen.
    """

    __slots__ = (
        "earlier",
        "last",
        "last_candidates",
        "light",
        "lightly",
        "reasons",
        "response_id",
        "texts",
        "usage_metadata",
    )

    def __init__(self) -> None:
        self.last: Any = None
        self.usage_metadata: Any = None
        self.response_id: Any = None
        self.earlier: list[Any] = []
        """The final ``usage_metadata`` of the requests before the current one (a new
        ``response_id``: the SDK sent another request within the same stream)."""
        self.reasons: tuple[str, ...] | None = None
        self.texts: list[str] = []
        self.lightly = False  # allowed to read lightly
        self.light = False  # reading lightly now
        self.last_candidates: Any = None

    def read_lightly(self) -> None:
        """Nothing needs this stream's text: read later chunks lightly (see the class)."""
        self.lightly = True

    def feed(self, chunk: Any) -> bool:
        if self.light:
            try:  # the light path: one hooked read (the chunk's __dict__), then dict subscripts
                values = chunk.__dict__
                metadata, candidates = values["usage_metadata"], values["candidates"]
            except (AttributeError, KeyError, TypeError):
                pass
            else:
                self.last = chunk
                if metadata is not None:
                    response_id = values["response_id"]
                    if response_id != self.response_id:
                        self._running_usage(metadata, response_id)
                    self.usage_metadata = metadata
                if candidates:
                    self.last_candidates = candidates
                    return True
                return False
        self.last = chunk
        # An SDK object's __dict__ read directly (no call), then dict reads.
        values = getattr(chunk, "__dict__", None) or _values(chunk)
        metadata = values.get("usage_metadata")
        if metadata is not None:
            self._running_usage(metadata, values.get("response_id"))
        if self.light:
            candidates = values.get("candidates")
            if candidates:
                self.last_candidates = candidates
                return True
            return False
        candidates = items_of(values.get("candidates"))
        if not candidates:
            return False
        output = False
        for candidate in candidates:
            said = getattr(candidate, "__dict__", None) or _values(candidate)
            if said.get("finish_reason") is not None:
                self._finished(candidates)
            content = said.get("content")
            if content is not None:
                output = self._read_parts(
                    (getattr(content, "__dict__", None) or _values(content)).get("parts"), output
                )
        if output and self.lightly and metadata is not None:
            self.light = True
        return output

    def _running_usage(self, metadata: Any, response_id: Any) -> None:
        """Keep a chunk's running usage; a new ``response_id`` closes the previous request's."""
        if response_id != self.response_id and response_id is not None:
            if self.response_id is not None and self.usage_metadata is not None:
                self.earlier.append(self.usage_metadata)
            self.response_id = response_id
        self.usage_metadata = metadata

    def _read_parts(self, parts: Any, output: bool) -> bool:
        for part in items_of(parts):
            values = getattr(part, "__dict__", None) or _values(part)
            text = values.get("text")
            if text and type(text) is str:
                output = True
                if not values.get("thought"):
                    self.texts.append(text)
            elif not output:
                for name in _OUTPUT_PARTS:
                    if values.get(name) is not None:
                        output = True
                        break
        return output

    def _finished(self, candidates: Any) -> None:
        reasons = tuple(
            reason for candidate in candidates if (reason := str_or_none(_read(candidate, "finish_reason")))
        )
        self.reasons = reasons or self.reasons

    def result(self) -> Observed:
        # Read lightly, the text is the first chunks' only: not an output text to count or capture.
        observed = Observed(output_text=None if self.light else "".join(self.texts) or None)
        if self.light and self.last_candidates is not None:
            candidates = items_of(self.last_candidates)
            if any(_read(candidate, "finish_reason") is not None for candidate in candidates):
                self._finished(candidates)
        metadata = self.usage_metadata
        if metadata is not None:
            usage = observed.usage = usage_from_gemini(metadata)
            for earlier in self.earlier:
                usage.add(usage_from_gemini(earlier))
        last = self.last
        if last is not None:
            observed.info = ResponseInfo(
                response_id=str_or_none(_read(last, "response_id")),
                response_model=str_or_none(_read(last, "model_version")),
                finish_reasons=self.reasons,
                service_tier=_service_tier(metadata),
            )
        return observed


# --- planning the google-genai package's calls ------------------------------------------------------
_FLOAT_CONFIG = (
    ("temperature", semconv.REQUEST_TEMPERATURE),
    ("top_p", semconv.REQUEST_TOP_P),
    ("top_k", semconv.REQUEST_TOP_K),
    ("presence_penalty", semconv.REQUEST_PRESENCE_PENALTY),
    ("frequency_penalty", semconv.REQUEST_FREQUENCY_PENALTY),
)
_INT_CONFIG = (
    ("max_output_tokens", semconv.REQUEST_MAX_TOKENS),
    ("seed", semconv.REQUEST_SEED),
    ("candidate_count", semconv.REQUEST_CHOICE_COUNT),
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _request_params(config: Any) -> dict[str, Any]:
    """A ``GenerateContentConfig`` (or its dict) under semconv names."""
    params: dict[str, Any] = {}
    if config is None:
        return params
    for key, attribute in _FLOAT_CONFIG:
        value = field(config, key)
        if _is_int(value) or isinstance(value, float):
            params[attribute] = float(value)
    for key, attribute in _INT_CONFIG:
        value = field(config, key)
        if _is_int(value):
            params[attribute] = value
    stop = field(config, "stop_sequences")
    if isinstance(stop, list | tuple) and stop and all(isinstance(s, str) for s in stop):
        params[semconv.REQUEST_STOP_SEQUENCES] = tuple(stop)
    return params


def _estimate_input(contents: Any) -> EstimateInput | None:
    """Plain-text contents only (a string or a list of strings); anything richer is not estimated."""
    if isinstance(contents, str) and contents:
        return EstimateInput(prompt=contents)
    if isinstance(contents, list) and contents and all(isinstance(item, str) for item in contents):
        return EstimateInput(prompt="\n".join(contents))
    return None


def _model(kwargs: Mapping[str, Any]) -> str | None:
    model = kwargs.get("model")
    return model if isinstance(model, str) and model else None


def _plan_generate(kwargs: Mapping[str, Any], stream: bool) -> RequestSpec:
    contents = kwargs.get("contents")
    return RequestSpec(
        operation="generate_content",
        request_model=_model(kwargs),
        read_response=read_gemini_response,
        stream_reader=GeminiStreamReader if stream else None,
        usage_expected=stream,  # running usage totals on every chunk (read lightly, see the reader)
        params=_request_params(kwargs.get("config")),
        estimate_input=_estimate_input(contents),
        input_messages=contents,
    )


def plan_generate_content(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> RequestSpec:
    """``models.generate_content(*, model, contents, config)``."""
    return _plan_generate(kwargs, stream=False)


def plan_generate_content_stream(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> RequestSpec:
    """``models.generate_content_stream(*, model, contents, config)``."""
    return _plan_generate(kwargs, stream=True)


def plan_embed_content(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> RequestSpec:
    """``models.embed_content(*, model, contents, config)``."""
    params: dict[str, Any] = {}
    dimensions = field(kwargs.get("config"), "output_dimensionality")
    if _is_int(dimensions):
        params[semconv.EMBEDDINGS_DIMENSION_COUNT] = dimensions
    return RequestSpec(
        operation="embeddings",
        request_model=_model(kwargs),
        read_response=read_gemini_embedding,
        params=params,
    )


_SYNC, _ASYNC = "google.genai.models:Models", "google.genai.models:AsyncModels"
_DEFAULT_PORTS = {"https": 443, "http": 80}


class GoogleGenAIAdapter:
    """The per-method hook's view of the ``google-genai`` package: ``Client.models`` and
    ``Client.aio.models``."""

    sdk_module = "google.genai"
    module_functions = ()
    # One HTTP request each: automatic function calling and continuation send several per call.
    request_methods = (("models._generate_content", _SYNC), ("aio.models._generate_content", _ASYNC))
    hooks = (
        ("models.generate_content", _SYNC, plan_generate_content),
        ("models.generate_content_stream", _SYNC, plan_generate_content_stream),
        ("models.embed_content", _SYNC, plan_embed_content),
        ("aio.models.generate_content", _ASYNC, plan_generate_content),
        ("aio.models.generate_content_stream", _ASYNC, plan_generate_content_stream),
        ("aio.models.embed_content", _ASYNC, plan_embed_content),
    )

    def server(self, owner: Any) -> tuple[str, str | None, int | None]:
        """``gcp.vertex_ai`` for a Vertex client, ``gcp.gemini`` otherwise, at the base URL's host."""
        api_client = getattr(owner, "_api_client", None)
        provider = "gcp.vertex_ai" if getattr(api_client, "vertexai", False) else "gcp.gemini"
        base_url = getattr(getattr(api_client, "_http_options", None), "base_url", None)
        if not isinstance(base_url, str):
            return provider, None, None
        parts = urlsplit(base_url)
        return provider, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)


GOOGLE_GENAI = GoogleGenAIAdapter()
