"""Ollama's native API (``ollama`` package): ``chat``, ``generate`` and ``embed``, streamed or not.

Ollama reports its token counts and its own timings on the final object (the whole response, or
the stream's last chunk, ``done: true``):

* ``prompt_eval_count`` -> input tokens, ``eval_count`` -> output tokens. Ollama counts only the
  prompt tokens it evaluated: a prompt served from its KV cache is counted short, and it reports
  no cache counts. An absent count stays ``None``.
* ``load_duration`` (loading the model), ``prompt_eval_duration`` (prefill), ``eval_duration``
  (decode) and ``total_duration``, in nanoseconds -> :class:`~llmmeter.record.ServerTimings`
  (``load_s``, ``prefill_s``, ``decode_s``, ``e2e_s``; ``tpot_s`` = decode / output tokens).

Output in a stream: ``message.content`` / ``message.thinking`` / ``message.tool_calls`` of a chat
chunk, ``response`` / ``thinking`` of a generate chunk. Ollama sends no response id.

Pure functions: no I/O, no OTel, no pricing. The table :data:`OLLAMA` is what
:mod:`llmmeter.instrument.methods` hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmmeter import semconv
from llmmeter.providers.base import ResponseInfo, field, fields_of, int_or_none, str_or_none
from llmmeter.providers.types import EstimateInput, Observed, RequestSpec
from llmmeter.record import ServerTimings, Usage

__all__ = [
    "OLLAMA",
    "OllamaAdapter",
    "OllamaStreamReader",
    "read_ollama_response",
    "server_timings_from_ollama",
    "usage_from_ollama",
]

PROVIDER = "ollama"
_NS = 1e9
_DEFAULT_PORTS = {"https": 443, "http": 80}


def usage_from_ollama(response: Any) -> Usage | None:
    """Input and output tokens of a final Ollama object; ``None`` when it reports neither."""
    prompt = int_or_none(field(response, "prompt_eval_count"))
    output = int_or_none(field(response, "eval_count"))
    if prompt is None and output is None:
        return None
    return Usage(input_tokens=prompt, output_tokens=output)


def _seconds(response: Any, name: str) -> float | None:
    nanoseconds = int_or_none(field(response, name))
    return None if nanoseconds is None else nanoseconds / _NS


def server_timings_from_ollama(response: Any) -> ServerTimings | None:
    """Ollama's own durations (nanoseconds on the wire) in seconds; ``None`` when none reported."""
    load, prefill = _seconds(response, "load_duration"), _seconds(response, "prompt_eval_duration")
    decode, total = _seconds(response, "eval_duration"), _seconds(response, "total_duration")
    if load is None and prefill is None and decode is None and total is None:
        return None
    output = int_or_none(field(response, "eval_count"))
    return ServerTimings(
        load_s=load,
        prefill_s=prefill,
        decode_s=decode,
        e2e_s=total,
        tpot_s=decode / output if decode is not None and output else None,
    )


def _info(response: Any) -> ResponseInfo:
    reason = str_or_none(field(response, "done_reason"))
    return ResponseInfo(
        response_model=str_or_none(field(response, "model")),
        finish_reasons=(reason,) if reason else None,
        server_timings=server_timings_from_ollama(response),
    )


def read_ollama_response(response: Any) -> Observed:
    """Usage, model, done reason, server timings and text of a whole ``chat``/``generate``/``embed``
    response (``ChatResponse``, ``GenerateResponse``, ``EmbedResponse`` or their JSON)."""
    text = field(field(response, "message"), "content")
    if text is None:
        text = field(response, "response")
    return Observed(
        usage=usage_from_ollama(response),
        info=_info(response),
        output_text=text if isinstance(text, str) and text else None,
    )


def _values(obj: Any) -> Any:
    """The fields of a chunk's object when it has no ``__dict__`` to read directly: a dict as is,
    anything else through :func:`~llmmeter.providers.base.fields_of`. (The readers read an SDK
    object's ``__dict__`` themselves -- ollama's models keep no extra fields -- skipping
    ``fields_of``'s extras lookup, a pydantic ``__getattr__`` miss of about 0.4 µs per object.)"""
    if type(obj) is dict:
        return obj
    values = getattr(obj, "__dict__", None)
    return values if values is not None else fields_of(obj)


class OllamaStreamReader:
    """Reads a ``chat``/``generate`` stream: output from the first chunk that carries text,
    thinking or a tool call; usage, timings and the done reason from the ``done: true`` chunk."""

    __slots__ = ("final", "model", "texts")

    def __init__(self) -> None:
        self.final: Any = None
        self.model: Any = None
        self.texts: list[str] = []

    def feed(self, chunk: Any) -> bool:
        # The hot path: an SDK object's __dict__ read directly (no call), then dict reads.
        values = getattr(chunk, "__dict__", None) or _values(chunk)
        message = values.get("message")
        if message is not None:
            said = getattr(message, "__dict__", None) or _values(message)
            text = said.get("content")
            output = bool(text) or bool(said.get("thinking")) or bool(said.get("tool_calls"))
        else:
            text = values.get("response")
            output = bool(text) or bool(values.get("thinking"))
        if text and type(text) is str:
            self.texts.append(text)
        if values.get("done"):
            self.final = chunk
        elif self.model is None:
            self.model = values.get("model")
        return output

    def result(self) -> Observed:
        final = self.final
        observed = Observed(output_text="".join(self.texts) or None)
        if final is not None:
            observed.usage = usage_from_ollama(final)
            observed.info = _info(final)
        elif self.model is not None:
            observed.info = ResponseInfo(response_model=str_or_none(self.model))
        return observed


# --- planning the ollama package's calls ----------------------------------------------------------
_FLOAT_OPTIONS = (
    ("temperature", semconv.REQUEST_TEMPERATURE),
    ("top_p", semconv.REQUEST_TOP_P),
    ("top_k", semconv.REQUEST_TOP_K),
    ("frequency_penalty", semconv.REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", semconv.REQUEST_PRESENCE_PENALTY),
)


def _argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], position: int, name: str) -> Any:
    return args[position] if len(args) > position else kwargs.get(name)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _request_params(options: Any) -> dict[str, Any]:
    """``options`` (a dict or ``ollama.Options``) under their semconv names."""
    params: dict[str, Any] = {}
    if options is None:
        return params
    for key, attribute in _FLOAT_OPTIONS:
        value = field(options, key)
        if _number(value):
            params[attribute] = float(value)
    num_predict = field(options, "num_predict")
    if isinstance(num_predict, int) and not isinstance(num_predict, bool) and num_predict >= 0:
        params[semconv.REQUEST_MAX_TOKENS] = num_predict
    seed = field(options, "seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        params[semconv.REQUEST_SEED] = seed
    stop = field(options, "stop")
    if isinstance(stop, list | tuple) and stop and all(isinstance(s, str) for s in stop):
        params[semconv.REQUEST_STOP_SEQUENCES] = tuple(stop)
    return params


def _model(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _plain_messages(messages: Any) -> list[Any] | None:
    """Messages as mappings (the estimator reads ``role``/``content``); ``ollama.Message`` too."""
    if not isinstance(messages, list | tuple):
        return None
    plain = []
    for message in messages:
        if isinstance(message, Mapping):
            plain.append(message)
        elif hasattr(message, "model_dump"):
            plain.append(message.model_dump(exclude_none=True))
        else:
            return None
    return plain


def plan_chat(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> RequestSpec:
    """``chat(model, messages, *, tools, stream, think, format, options, keep_alive)``."""
    messages = _argument(args, kwargs, 1, "messages")
    plain = _plain_messages(messages)
    return RequestSpec(
        operation="chat",
        request_model=_model(_argument(args, kwargs, 0, "model")),
        read_response=read_ollama_response,
        stream_reader=OllamaStreamReader if kwargs.get("stream") else None,
        usage_expected=bool(kwargs.get("stream")),  # the ``done`` chunk always carries the counts
        params=_request_params(kwargs.get("options")),
        estimate_input=EstimateInput(messages=plain) if plain is not None else None,
        input_messages=messages,
    )


def plan_generate(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> RequestSpec:
    """``generate(model, prompt, suffix, *, system, ..., stream, options, ...)``."""
    prompt = _argument(args, kwargs, 1, "prompt")
    system = kwargs.get("system")
    text = "\n".join(part for part in (system, prompt) if isinstance(part, str) and part)
    return RequestSpec(
        operation="text_completion",
        request_model=_model(_argument(args, kwargs, 0, "model")),
        read_response=read_ollama_response,
        stream_reader=OllamaStreamReader if kwargs.get("stream") else None,
        usage_expected=bool(kwargs.get("stream")),  # the ``done`` chunk always carries the counts
        params=_request_params(kwargs.get("options")),
        estimate_input=EstimateInput(prompt=text) if text else None,
        input_messages=[{"role": "user", "content": prompt}] if isinstance(prompt, str) else None,
    )


def plan_embed(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> RequestSpec:
    """``embed(model, input, truncate, options, keep_alive, dimensions)``."""
    params = _request_params(_argument(args, kwargs, 3, "options"))
    dimensions = _argument(args, kwargs, 5, "dimensions")
    if isinstance(dimensions, int) and not isinstance(dimensions, bool):
        params[semconv.EMBEDDINGS_DIMENSION_COUNT] = dimensions
    return RequestSpec(
        operation="embeddings",
        request_model=_model(_argument(args, kwargs, 0, "model")),
        read_response=read_ollama_response,
        params=params,
    )


class OllamaAdapter:
    """The per-method hook's view of the ``ollama`` package: ``Client`` and ``AsyncClient``."""

    sdk_module = "ollama"
    module_functions = ("chat", "generate", "embed")  # ollama.chat(...): the default client's
    request_methods = ()  # every hooked method sends one request
    hooks = (
        ("chat", "ollama._client:Client", plan_chat),
        ("generate", "ollama._client:Client", plan_generate),
        ("embed", "ollama._client:Client", plan_embed),
        ("chat", "ollama._client:AsyncClient", plan_chat),
        ("generate", "ollama._client:AsyncClient", plan_generate),
        ("embed", "ollama._client:AsyncClient", plan_embed),
    )

    def server(self, owner: Any) -> tuple[str, str | None, int | None]:
        """``ollama`` at the client's host and port (``OLLAMA_HOST``, default 127.0.0.1:11434)."""
        base_url = getattr(getattr(owner, "_client", None), "base_url", None)
        host = getattr(base_url, "host", None) or None
        port = getattr(base_url, "port", None) or _DEFAULT_PORTS.get(str(getattr(base_url, "scheme", "")))
        return PROVIDER, host, port


OLLAMA = OllamaAdapter()
