"""The ``openai`` SDK's adapter: which endpoints are measured, what a request is recorded as, how a
response is read. Pure: reads the request and the response objects, never the network.

Endpoints (matched on the URL path's end, most specific first): Chat Completions, legacy
Completions, Embeddings and the Responses API; images, speech, transcription, translation and
moderation (:mod:`llmmeter.providers.openai_media`). Every stream of the first two asks for the
provider's usage chunk (``stream_options.include_usage``) unless the caller set it either way:
the extra chunk is read and hidden from the caller. A server that rejects the field gets the
caller's own request once more (see :func:`rejects_stream_options`), and is never asked again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from llmmeter import semconv
from llmmeter.providers.base import field, fields_of, items_of
from llmmeter.providers.openai import (
    provider_from_host,
    response_info_from_openai_fields,
    usage_from_openai_fields,
)
from llmmeter.providers.openai_media import MEDIA_ENDPOINTS, plan_media
from llmmeter.providers.openai_stream import (
    ChatStreamReader,
    CompletionStreamReader,
    ResponsesStreamReader,
    is_usage_only_chunk,
    looks_like_vllm,
)
from llmmeter.providers.types import EstimateInput, Observed, RequestSpec
from llmmeter.providers.vllm import server_timings_from_vllm_response, vllm_cache_writes

__all__ = ["OPENAI", "OpenAIAdapter", "read_openai_response", "rejects_stream_options"]

UNKNOWN_SERVER = "openai_compatible"
"""The provider name of an OpenAI-compatible server llmmeter cannot name from its host."""

# (url suffix, gen_ai.operation.name, openai.api.type, stream reader); most specific first.
_ENDPOINTS: tuple[tuple[str, str, str | None, type[Any] | None], ...] = (
    ("/chat/completions", "chat", "chat_completions", ChatStreamReader),
    ("/completions", "text_completion", None, CompletionStreamReader),
    ("/embeddings", "embeddings", None, None),
    ("/responses", "chat", "responses", ResponsesStreamReader),
)
_OUTPUT_TYPES = {"json_schema": "json", "json_object": "json", "text": "text"}
_FLOAT_PARAMS = (
    ("temperature", semconv.REQUEST_TEMPERATURE),
    ("top_p", semconv.REQUEST_TOP_P),
    ("frequency_penalty", semconv.REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", semconv.REQUEST_PRESENCE_PENALTY),
)


class OpenAIAdapter:
    """The generic SDK hook's view of the ``openai`` package (see :mod:`llmmeter.instrument.sdk`)."""

    sdk_module = "openai"

    def provider(self, client: Any, host: str | None) -> str:
        """``azure.ai.openai`` for Azure clients, the provider known for the host, else
        ``openai_compatible`` (a gateway, a proxy, a self-hosted server)."""
        if type(client).__name__ in ("AzureOpenAI", "AsyncAzureOpenAI"):
            return "azure.ai.openai"
        return provider_from_host(host) or UNKNOWN_SERVER

    def plan(
        self, url: str, body: Mapping[str, Any], stream: bool, ask_usage: bool, files: Any = None
    ) -> RequestSpec | None:
        """What a POST to ``url`` with ``body`` will be recorded as; ``None``: not measured.

        ``ask_usage``: may a stream be asked for its usage chunk (the hook says no where the
        server rejected the field before, or when the user switched it off). ``files``: what a
        multipart request uploads (the audio of a transcription).
        """
        endpoint = _endpoint_of(url)
        if endpoint is None:
            for suffix, operation in MEDIA_ENDPOINTS:
                if url.endswith(suffix):
                    return plan_media(operation, body, files, stream)
            return None
        operation, api_type, reader_cls = endpoint
        model = body.get("model")
        spec = RequestSpec(
            operation=operation,
            request_model=model if isinstance(model, str) else None,
            read_response=read_openai_response,
            params=request_params(body, api_type),
            estimate_input=_estimate_input(body),
            input_messages=_input_messages(body),
        )
        if stream and reader_cls is not None:
            spec.stream_reader = reader_cls
            if api_type != "responses":
                _plan_stream_usage(spec, body, ask_usage)
        return spec

    def rejects_body_change(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a server's 4xx refusing the ``stream_options`` llmmeter added."""
        return rejects_stream_options(exc)


OPENAI = OpenAIAdapter()


def _plan_stream_usage(spec: RequestSpec, body: Mapping[str, Any], ask_usage: bool) -> None:
    """Ask a choices stream for its usage chunk (hidden from a caller who did not ask), and say
    whether usage will end it: then its chunks need not be read one by one. Read whole: streams
    with vLLM's running totals (``continuous_usage_stats``, in every chunk) and ``n > 1`` streams
    (each choice's finish chunk comes when that choice ends)."""
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping):
        return  # not a shape llmmeter can extend: the caller's request goes out unchanged
    skimmable = not options.get("continuous_usage_stats") and body.get("n") in (None, 1)
    if "include_usage" not in options:
        if ask_usage:
            spec.body = _with_include_usage(body)
            spec.hidden = is_usage_only_chunk
            spec.usage_expected = skimmable
    elif options.get("include_usage") is True:
        spec.usage_expected = skimmable


def rejects_stream_options(exc: BaseException) -> bool:
    """A 4xx whose message names ``stream_options`` or ``include_usage`` (an older vLLM, a
    gateway with a strict schema). Other errors are the caller's, and propagate unchanged."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 400 <= status < 500:
        return False
    text = f"{getattr(exc, 'message', '')} {getattr(exc, 'body', '')}".lower()
    return "stream_options" in text or "include_usage" in text


def _endpoint_of(url: str) -> tuple[str, str | None, type[Any] | None] | None:
    for suffix, operation, api_type, reader_cls in _ENDPOINTS:
        if url.endswith(suffix):
            return operation, api_type, reader_cls
    return None


def _with_include_usage(body: Mapping[str, Any]) -> dict[str, Any]:
    stream_options = dict(body.get("stream_options") or {})
    stream_options["include_usage"] = True
    return {**body, "stream_options": stream_options}


def request_params(body: Mapping[str, Any], api_type: str | None) -> dict[str, Any]:
    """The request attributes worth recording, under their semconv names.

    Only the parameters the body has are read (one C-level key intersection first): a typical
    request sets two or three of the sixteen, and this runs on the caller's thread per call.
    """
    params: dict[str, Any] = {}
    if api_type is not None:
        params[semconv.OPENAI_API_TYPE] = api_type
    for key in body.keys() & _PARAM_READERS.keys():
        _PARAM_READERS[key](body, key, params)
    return params


_ParamReader = Callable[[Mapping[str, Any], str, dict[str, Any]], None]


def _max_tokens(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    # The three spellings in order of precedence, whichever of them this key is.
    value = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    if isinstance(value, int):
        params[semconv.REQUEST_MAX_TOKENS] = value


def _float_param(attribute: str) -> _ParamReader:
    def read(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
        value = body[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            params[attribute] = float(value)

    return read


def _seed(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    if isinstance(body[key], int):
        params[semconv.REQUEST_SEED] = body[key]


def _stop(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    stop = body[key]
    if isinstance(stop, str):
        params[semconv.REQUEST_STOP_SEQUENCES] = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        params[semconv.REQUEST_STOP_SEQUENCES] = tuple(stop)


def _choice_count(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    n = body[key]
    if isinstance(n, int) and n != 1:
        params[semconv.REQUEST_CHOICE_COUNT] = n


def _reasoning_effort(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    reasoning = body.get("reasoning")
    effort = body.get("reasoning_effort") or (
        reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    )
    if isinstance(effort, str):
        params[semconv.REQUEST_REASONING_LEVEL] = effort


def _output_type(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    response_format = body[key]
    if isinstance(response_format, Mapping) and response_format.get("type") in _OUTPUT_TYPES:
        params[semconv.OUTPUT_TYPE] = _OUTPUT_TYPES[response_format["type"]]


def _service_tier(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    tier = body[key]
    if isinstance(tier, str) and tier != "auto":
        params[semconv.OPENAI_REQUEST_SERVICE_TIER] = tier


def _dimensions(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    dimensions = body[key]
    if isinstance(dimensions, int) and not isinstance(dimensions, bool):
        params[semconv.EMBEDDINGS_DIMENSION_COUNT] = dimensions


def _encoding_format(body: Mapping[str, Any], key: str, params: dict[str, Any]) -> None:
    encoding = body[key]
    if isinstance(encoding, str):
        # What went on the wire: the openai SDK asks for base64 itself when the caller set none.
        params[semconv.REQUEST_ENCODING_FORMATS] = (encoding,)


_PARAM_READERS: dict[str, _ParamReader] = {
    "max_completion_tokens": _max_tokens,
    "max_tokens": _max_tokens,
    "max_output_tokens": _max_tokens,
    **{key: _float_param(attribute) for key, attribute in _FLOAT_PARAMS},
    "seed": _seed,
    "stop": _stop,
    "n": _choice_count,
    "reasoning": _reasoning_effort,
    "reasoning_effort": _reasoning_effort,
    "response_format": _output_type,
    "service_tier": _service_tier,
    "dimensions": _dimensions,
    "encoding_format": _encoding_format,
}
"""Request body key -> the reader recording it (a reader may look at related keys too)."""


def _estimate_input(body: Mapping[str, Any]) -> EstimateInput:
    messages = body.get("messages")
    if isinstance(messages, list):
        return EstimateInput(messages=messages)
    prompt = body.get("prompt")
    if prompt is None:
        prompt = body.get("input")  # Responses API and embeddings
    return EstimateInput(prompt=prompt if isinstance(prompt, str | list) else None)


def _input_messages(body: Mapping[str, Any]) -> Any:
    for key in ("messages", "input", "prompt"):
        if key in body:
            return body[key]
    return None


def read_openai_response(response: Any) -> Observed:
    """Usage, response info and generated text of a non-streamed OpenAI-style response."""
    # Each object's fields are read once (on the caller's thread, per call): every attribute
    # read of an openai object goes through pydantic's __getattr__ hook.
    top = fields_of(response)
    usage = top.get("usage")
    usage_values = (
        fields_of(usage) if usage is not None else fields_of(fields_of(top.get("x_groq")).get("usage"))
    )
    observed = Observed(
        usage=usage_from_openai_fields(usage_values) if usage is not None else None,
        info=response_info_from_openai_fields(top, usage_values),
        text_of=lambda: _output_text(response, top),
    )
    if _may_be_vllm(response, top):
        if looks_like_vllm(response):
            observed.provider = "vllm"
        _add_vllm_extras(observed, response, usage)
    return observed


def _may_be_vllm(response: Any, top: Mapping[str, Any]) -> bool:
    """Whether the response carries any field the SDK does not declare (on itself or its first
    choice): everything vLLM adds is such a field, and OpenAI's own responses have none."""
    if type(response) is dict:
        return True
    if getattr(response, "__pydantic_extra__", None):
        return True
    choices = items_of(top.get("choices"))
    return bool(choices) and bool(getattr(choices[0], "__pydantic_extra__", None) or type(choices[0]) is dict)


def _add_vllm_extras(observed: Observed, final: Any, usage: Any) -> None:
    """vLLM's per-request ``metrics`` and prefix-cache writes, where the server sent them."""
    timings = server_timings_from_vllm_response(final)
    if timings is not None:
        observed.info = dataclasses.replace(observed.info, server_timings=timings)
    if observed.usage is not None and observed.usage.cache_write_input_tokens is None and usage is not None:
        observed.usage.cache_write_input_tokens = vllm_cache_writes(usage)


def _output_text(response: Any, top: Mapping[str, Any]) -> str | None:
    """The generated text of a non-streamed response."""
    if top.get("object") == "response":
        # Responses API: a property of the SDK's object (a missing attribute on a pydantic model
        # is slow, so only asked of Responses objects).
        text = getattr(response, "output_text", None)
        return text if isinstance(text, str) and text else None
    parts: list[str] = []
    for choice in items_of(top.get("choices")):
        message = field(choice, "message")
        content = field(message, "content") if message is not None else field(choice, "text")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts) or None
