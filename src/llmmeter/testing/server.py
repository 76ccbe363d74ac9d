"""A real local OpenAI-compatible HTTP server that paces its stream with known delays.

It exists so that llmmeter can be demonstrated, tested and benchmarked with no network and no
API key: point the real ``openai`` client at :attr:`LocalOpenAIServer.base_url` and every chunk
arrives on a schedule you chose, while the server records when it actually wrote each one.

Timeline of one request (all times from :func:`time.perf_counter`, the same clock llmmeter uses):

* ``t0`` = :attr:`RecordedRequest.received_at`, taken right after the request body is parsed;
* the chat role chunk(s), or the ``response.created``/``response.in_progress`` events, are written
  at ``t0 + role_delay_ms``;
* the first *token step* (one chunk per choice carrying reasoning, content or tool-call
  arguments) is written at ``t0 + ttft_ms``;
* every further token step is written ``itl_ms`` after the previous step was flushed, so the
  server-side gap between two steps is never shorter than ``itl_ms``;
* the closing chunks (finish, usage, ``[DONE]``) follow the last step without delay.

A non-streaming request waits for the same schedule and then writes one body. Every SSE event is
its own HTTP/1.1 chunk, flushed on its own, and ``time.perf_counter()`` taken right after each
flush is appended to :attr:`RecordedRequest.event_times`.

Token counts are deterministic and documented, not tiktoken's:

* chat: for every message, 3 + the number of whitespace-separated words (``str.split``) of its
  text content (a string, or the ``text`` of each content part);
* Responses: the same rule, with ``instructions`` and a string ``input`` each counted as one message;
* legacy completions and embeddings: the words of each prompt/input (a token-id list counts its ids);
* output: exactly ``tokens`` content tokens (one word each) plus ``reasoning_tokens`` reasoning
  tokens per choice; ``completion_tokens`` = ``n * (tokens + reasoning_tokens)``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

from llmmeter.testing.media import MEDIA_ROUTES, parse_multipart

__all__ = [
    "PACING_HEADER",
    "Flavor",
    "LocalOpenAIServer",
    "Pacing",
    "RecordedRequest",
    "pacing_headers",
]

logger = logging.getLogger(__name__)

PACING_HEADER = "x-llmmeter-pacing"
"""Request header holding a JSON object of :class:`Pacing` overrides for that one request."""

Flavor = Literal["openai", "vllm"]

_OPENAI_FINGERPRINT = "fp_llmmeter01"
_VLLM_FINGERPRINT = "vllm-0.32.0-llmmeter"
_CONTENT_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
_REASONING_WORDS = ("think", "check", "weigh", "decide")
_TOKENS_PER_MESSAGE = 3
_STOP_WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Pacing:
    """How one response is generated and paced. Times are milliseconds, counts are per choice."""

    ttft_ms: float = 20.0
    """From receiving the request to writing the first token step."""
    itl_ms: float = 5.0
    """From flushing one token step to writing the next."""
    tokens: int = 8
    """Content tokens (words) per choice; one token per chunk unless ``tokens_per_chunk`` > 1."""
    tokens_per_chunk: int = 1
    role_chunk: bool = True
    """Chat streams open with a role-only chunk (``delta.role`` + empty content), like OpenAI."""
    role_delay_ms: float = 0.0
    """From receiving the request to writing the role chunk (vLLM writes it after prefill)."""
    cached_tokens: int = 0
    """Cached prompt tokens to report (capped at the prompt size)."""
    reasoning_tokens: int = 0
    """Reasoning tokens per choice, streamed before the content and counted in completion_tokens."""
    tool_call: bool = False
    """Answer with a streamed function call to the request's first tool (when it has ``tools``)."""
    fail_after: int | None = None
    """Write exactly this many SSE events, then drop the connection (non-stream: no response)."""
    error_status: int | None = None
    """Answer with this HTTP status and an OpenAI-style error body instead of a result."""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            _check_pacing_value(spec.name, getattr(self, spec.name))
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be at least 1")
        if self.error_status is not None and not 400 <= self.error_status <= 599:
            raise ValueError("error_status must be an HTTP error status (400-599)")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Pacing:
        """Return a copy with ``overrides`` applied; unknown keys or wrong types raise ValueError."""
        unknown = set(overrides) - {spec.name for spec in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown pacing option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **overrides)


_PACING_KINDS: dict[str, str] = {
    "ttft_ms": "number",
    "itl_ms": "number",
    "role_delay_ms": "number",
    "tokens": "count",
    "tokens_per_chunk": "count",
    "cached_tokens": "count",
    "reasoning_tokens": "count",
    "fail_after": "optional count",
    "error_status": "optional count",
    "role_chunk": "bool",
    "tool_call": "bool",
}


def _check_pacing_value(name: str, value: object) -> None:
    kind = _PACING_KINDS[name]
    if kind == "bool":
        valid = isinstance(value, bool)
    elif kind == "optional count" and value is None:
        valid = True
    elif kind == "number":
        valid = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    else:
        valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if not valid:
        raise ValueError(f"pacing option {name!r} must be a non-negative {kind}, got {value!r}")


def pacing_headers(**overrides: Any) -> dict[str, str]:
    """Build ``extra_headers`` that override the server's pacing for one request.

    >>> client.chat.completions.create(..., extra_headers=pacing_headers(tokens=3, itl_ms=0))
    """
    Pacing().with_overrides(overrides)  # fail fast, in the test, on a typo
    return {PACING_HEADER: json.dumps(overrides)}


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server saw it, with the times at which it wrote each SSE event."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """The parsed JSON body (``None`` for a request without one)."""
    received_at: float
    """``time.perf_counter()`` right after the body was parsed: the pacing origin ``t0``."""
    pacing: Pacing | None = None
    """The effective pacing (defaults + header overrides); ``None`` if the header was invalid."""
    status: int | None = None
    event_times: list[float] = field(default_factory=list)
    """``time.perf_counter()`` right after each SSE event (or the one non-stream body) was flushed."""
    client_disconnected: bool = False
    """The client went away before the server finished writing."""
    _finished: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def wait_finished(self, timeout: float = _STOP_WAIT_SECONDS) -> Self:
        """Block until the server is done with this request (its last ``event_times`` entry is in).

        The client can read the final bytes before the server thread has recorded their flush
        time; call this before asserting on ``event_times``.
        """
        if not self._finished.wait(timeout):
            raise TimeoutError(f"server still handling {self.method} {self.path}")
        return self


class _Disconnect(Exception):
    """Raised to end a response early: ``fail_after`` was reached, or the server is stopping."""


@dataclass(frozen=True, slots=True)
class _Piece:
    """One chunk's worth of generated output for one choice."""

    kind: Literal["reasoning", "content", "tool_args"]
    text: str
    tokens: int


def _words(vocabulary: Sequence[str], count: int) -> list[str]:
    return [("" if i == 0 else " ") + vocabulary[i % len(vocabulary)] for i in range(count)]


def _group(tokens: list[str], per_chunk: int) -> list[tuple[str, int]]:
    return [
        ("".join(tokens[i : i + per_chunk]), len(tokens[i : i + per_chunk]))
        for i in range(0, len(tokens), per_chunk)
    ]


def _plan_pieces(pacing: Pacing, tool_call: bool) -> list[_Piece]:
    """The output of one choice, split into chunks: reasoning first, then content or tool args."""
    reasoning = _words(_REASONING_WORDS, pacing.reasoning_tokens)
    content = _words(_CONTENT_WORDS, pacing.tokens)
    pieces = [_Piece("reasoning", text, n) for text, n in _group(reasoning, pacing.tokens_per_chunk)]
    if tool_call and content:
        # Valid JSON once concatenated: {"input": "alpha bravo ..."}
        content[0] = '{"input": "' + content[0]
        content[-1] += '"}'
        pieces += [_Piece("tool_args", text, n) for text, n in _group(content, pacing.tokens_per_chunk)]
    else:
        pieces += [_Piece("content", text, n) for text, n in _group(content, pacing.tokens_per_chunk)]
    return pieces


def _joined(pieces: Sequence[_Piece], kind: str) -> str:
    return "".join(piece.text for piece in pieces if piece.kind == kind)


# ---------------------------------------------------------------------------------------------
# Prompt token counting (deterministic, see the module docstring)
# ---------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _message_tokens(messages: Sequence[Any]) -> int:
    return sum(
        _TOKENS_PER_MESSAGE + len(_content_text(m.get("content") if isinstance(m, dict) else m).split())
        for m in messages
    )


def _prompt_tokens(prompt: Any) -> int:
    """Words of a prompt/input: a string, a list of strings, a token-id list or a list of those."""
    if isinstance(prompt, str):
        return len(prompt.split())
    if isinstance(prompt, list):
        if all(isinstance(item, int) for item in prompt):
            return len(prompt)
        return sum(_prompt_tokens(item) for item in prompt)
    return 0


def _responses_input_tokens(body: Mapping[str, Any]) -> int:
    messages: list[Any] = []
    if body.get("instructions"):
        messages.append(body["instructions"])
    user_input = body.get("input")
    messages += [user_input] if isinstance(user_input, str) else list(user_input or [])
    return _message_tokens(messages)


# ---------------------------------------------------------------------------------------------
# Response shapes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    """What every chunk/body of one response shares."""

    flavor: Flavor
    id: str
    model: str
    created: int
    prompt_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    """Total over all choices."""

    def usage(self, completion_tokens: int, *, running: bool = False) -> dict[str, Any]:
        """Chat/completions usage; ``running`` is the per-chunk usage of ``continuous_usage_stats``."""
        vllm = self.flavor == "vllm"
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }
        if running:  # counts only: the details describe the finished request
            return usage | ({"completion_tokens_details": None} if vllm else {})
        if not vllm:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens, "audio_tokens": 0}
            usage["completion_tokens_details"] = {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
            return usage
        # vLLM reports details only when it has them (prefix-cache hits, a reasoning parser).
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage

    def envelope(self, obj: str) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.model}
        if self.flavor == "openai":
            body |= {"service_tier": "default", "system_fingerprint": _OPENAI_FINGERPRINT}
        return body


def _new_id(prefix: str, flavor: Flavor) -> str:
    return f"{prefix}{secrets.token_hex(8)}" if flavor == "vllm" else f"{prefix}{secrets.token_hex(14)}"


def _reasoning_key(flavor: Flavor) -> str:
    # Current vLLM names the field `reasoning`; OpenAI-compatible servers commonly use `reasoning_content`.
    return "reasoning" if flavor == "vllm" else "reasoning_content"


def _tool_call_delta(piece: _Piece, tool_name: str, call_id: str, first: bool) -> dict[str, Any]:
    call: dict[str, Any] = {"index": 0, "function": {"arguments": piece.text}}
    if first:
        call |= {"id": call_id, "type": "function", "function": {"name": tool_name, "arguments": piece.text}}
    return {"tool_calls": [call]}


def _piece_delta(piece: _Piece, flavor: Flavor, tool: tuple[str, str] | None, first: bool) -> dict[str, Any]:
    if piece.kind == "reasoning":
        return {_reasoning_key(flavor): piece.text}
    if piece.kind == "tool_args" and tool is not None:
        return _tool_call_delta(piece, tool[0], tool[1], first)
    return {"content": piece.text}


def _error_body(status: int, flavor: Flavor, message: str, param: str | None = None) -> dict[str, Any]:
    if flavor == "vllm":
        kind = HTTPStatus(status).phrase.title().replace(" ", "") + "Error"
        return {"error": {"message": message, "type": kind, "param": param, "code": status}}
    kind, code = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", "not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the text."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    vector = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    # Round through float32 so the float and base64 encodings carry the same numbers.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in vector))))


# ---------------------------------------------------------------------------------------------
# Writing, pacing, recording
# ---------------------------------------------------------------------------------------------


class _Pacer:
    """Sleeps on the documented schedule; wakes early (and aborts) when the server stops."""

    def __init__(self, record: RecordedRequest, pacing: Pacing, stopping: threading.Event) -> None:
        self._t0 = record.received_at
        self._pacing = pacing
        self._stopping = stopping
        self._steps = 0

    def before_role(self) -> None:
        self._sleep_until(self._t0 + self._pacing.role_delay_ms / 1000)

    def before_step(self) -> None:
        if self._steps == 0:
            self._sleep_until(self._t0 + self._pacing.ttft_ms / 1000)
        else:
            self._sleep(self._pacing.itl_ms / 1000)
        self._steps += 1

    def _sleep_until(self, deadline: float) -> None:
        self._sleep(deadline - time.perf_counter())

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Disconnect("server stopping")


class _SseWriter:
    """Writes SSE events as individual HTTP/1.1 chunks and records each flush time."""

    def __init__(self, handler: _Handler, record: RecordedRequest, fail_after: int | None) -> None:
        self._handler = handler
        self._record = record
        self._fail_after = fail_after

    def open(self) -> None:
        handler = self._handler
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("x-request-id", f"req_{secrets.token_hex(12)}")
        handler.end_headers()
        self._record.status = 200

    def event(self, data: Mapping[str, Any] | str, event: str | None = None) -> None:
        if self._fail_after is not None and len(self._record.event_times) >= self._fail_after:
            raise _Disconnect("fail_after reached")
        payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        text = (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
        self._write_chunk(text.encode())

    def close(self) -> None:
        self._handler.wfile.write(b"0\r\n\r\n")
        self._handler.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        wfile = self._handler.wfile
        wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        wfile.flush()
        self._record.event_times.append(time.perf_counter())


class _Handler(BaseHTTPRequestHandler):
    """Routes one HTTP request to the endpoint that builds its response."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    # --- plumbing -------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        body: Any
        try:
            if content_type.startswith("multipart/form-data"):
                body = parse_multipart(content_type, raw)
            else:
                body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, ValueError):
            body = None
        record = RecordedRequest(
            method=self.command,
            path=self.path.split("?", 1)[0],
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            received_at=time.perf_counter(),
        )
        owner = self.server.owner
        owner._record(record)
        try:
            self._serve(record, owner)
        except _Disconnect:
            self.close_connection = True
        except OSError:
            record.client_disconnected = True
            self.close_connection = True
        except Exception:
            logger.exception("llmmeter test server failed on %s %s", record.method, record.path)
            self.close_connection = True
        finally:
            record._finished.set()

    def _serve(self, record: RecordedRequest, owner: LocalOpenAIServer) -> None:
        media = MEDIA_ROUTES.get(record.path) if record.method == "POST" else None
        if media is not None and isinstance(record.body, dict):
            self._send_bytes(*media(record.body), record)
            return
        route = _ROUTES.get((record.method, record.path))
        if route is None:
            self._send_error(404, f"Unknown route {record.method} {record.path}", record)
            return
        if record.method == "POST" and not isinstance(record.body, dict):
            self._send_error(400, "The request body must be a JSON object.", record)
            return
        try:
            record.pacing = owner.pacing.with_overrides(json.loads(self.headers.get(PACING_HEADER) or "{}"))
        except (ValueError, TypeError) as err:
            self._send_error(400, f"Invalid {PACING_HEADER} header: {err}", record, param=PACING_HEADER)
            return
        if owner.rejects_stream_options and "stream_options" in record.body:  # type: ignore[operator]
            message = "Unrecognized request argument supplied: stream_options"
            self._send_error(400, message, record, param="stream_options")
            return
        if record.pacing.error_status is not None:
            status = record.pacing.error_status
            self._send_error(status, f"Simulated error {status} (llmmeter test server).", record)
            return
        route(self, record, record.pacing, owner)

    def _send_json(self, status: int, payload: Mapping[str, Any], record: RecordedRequest) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{secrets.token_hex(12)}")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        record.status = status
        record.event_times.append(time.perf_counter())

    def _send_bytes(self, status: int, content_type: str, data: bytes, record: RecordedRequest) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        record.status = status
        record.event_times.append(time.perf_counter())

    def _send_error(
        self, status: int, message: str, record: RecordedRequest, param: str | None = None
    ) -> None:
        self._send_json(status, _error_body(status, self.server.owner.flavor, message, param), record)

    def _reply(self, record: RecordedRequest, prefix: str, prompt_tokens: int, choices: int) -> _Reply:
        """The shared envelope; ``choices`` multiplies the per-choice reasoning tokens."""
        owner = self.server.owner
        pacing = record.pacing or owner.pacing
        return _Reply(
            flavor=owner.flavor,
            id=_new_id(prefix, owner.flavor),
            model=owner.served_model or str(record.body.get("model", "")),
            created=int(time.time()),
            prompt_tokens=prompt_tokens,
            cached_tokens=min(pacing.cached_tokens, prompt_tokens),
            reasoning_tokens=pacing.reasoning_tokens * choices,
        )

    def _start_stream(self, record: RecordedRequest, pacing: Pacing) -> tuple[_SseWriter, _Pacer]:
        writer = _SseWriter(self, record, pacing.fail_after)
        writer.open()
        return writer, _Pacer(record, pacing, self.server.owner._stopping)

    def _wait_whole_schedule(self, record: RecordedRequest, pacing: Pacing, steps: int) -> None:
        """Non-stream: wait as long as the stream would have taken, or drop per ``fail_after``."""
        pacer = _Pacer(record, pacing, self.server.owner._stopping)
        for _ in range(steps):
            pacer.before_step()
        if pacing.fail_after is not None:
            raise _Disconnect("fail_after on a non-streaming request: no response at all")

    # --- /v1/chat/completions ---------------------------------------------------------------

    def serve_chat_completions(
        self, record: RecordedRequest, pacing: Pacing, owner: LocalOpenAIServer
    ) -> None:
        body = record.body
        n = int(body.get("n") or 1)
        tools = body.get("tools") or []
        wants_tool = pacing.tool_call and bool(tools)
        pieces = _plan_pieces(pacing, wants_tool)
        reply = self._reply(record, "chatcmpl-", _message_tokens(body.get("messages") or []), n)
        tool = None
        if wants_tool:
            tool_prefix = "chatcmpl-tool-" if owner.flavor == "vllm" else "call_"
            tool = (str(tools[0].get("function", {}).get("name", "tool")), _new_id(tool_prefix, owner.flavor))
        finish = "tool_calls" if tool else "stop"
        if body.get("stream"):
            self._stream_chat(record, pacing, reply, pieces, n, tool, finish)
            return
        self._wait_whole_schedule(record, pacing, len(pieces))
        self._send_json(200, _chat_completion(reply, pieces, n, tool, finish), record)

    def _stream_chat(
        self,
        record: RecordedRequest,
        pacing: Pacing,
        reply: _Reply,
        pieces: list[_Piece],
        n: int,
        tool: tuple[str, str] | None,
        finish: str,
    ) -> None:
        include_usage, continuous = self._stream_usage(record.body, reply.flavor)
        vllm = reply.flavor == "vllm"
        writer, pacer = self._start_stream(record, pacing)
        sent_tokens = 0

        def chunk(choice: dict[str, Any], first: bool = False, last: bool = False) -> dict[str, Any]:
            data = reply.envelope("chat.completion.chunk") | {"choices": [choice]}
            if continuous:
                data["usage"] = reply.usage(sent_tokens, running=True)
            elif include_usage and not vllm:
                data["usage"] = None
            if vllm and first:
                data |= {"prompt_token_ids": None, "prompt_text": None}
            if vllm and last and not include_usage:  # vLLM puts it on the usage chunk when there is one
                data["system_fingerprint"] = _VLLM_FINGERPRINT
            return data

        if pacing.role_chunk:
            pacer.before_role()
            role: dict[str, Any] = {"role": "assistant", "content": ""} | ({} if vllm else {"refusal": None})
            for index in range(n):
                writer.event(chunk(_stream_choice(index, role, vllm, token_ids=False), first=True))
        for step, piece in enumerate(pieces):
            pacer.before_step()
            delta = _piece_delta(piece, reply.flavor, tool, first=piece is _first_of(pieces, "tool_args"))
            if step == 0 and not pacing.role_chunk:
                delta = {"role": "assistant"} | delta
            is_last = step == len(pieces) - 1
            for index in range(n):
                sent_tokens += piece.tokens
                choice = _stream_choice(index, delta, vllm)
                if vllm and is_last:
                    choice |= {"finish_reason": finish, "stop_reason": None}
                writer.event(chunk(choice, last=vllm and is_last))
        if not vllm or not pieces:
            for index in range(n):
                writer.event(chunk(_stream_choice(index, {}, vllm) | {"finish_reason": finish}, last=vllm))
        if include_usage:
            final = reply.envelope("chat.completion.chunk") | {
                "choices": [],
                "usage": reply.usage(sent_tokens),
            }
            if vllm:
                final["system_fingerprint"] = _VLLM_FINGERPRINT
            writer.event(final)
        writer.event("[DONE]")
        writer.close()

    def _stream_usage(self, body: Mapping[str, Any], flavor: Flavor) -> tuple[bool, bool]:
        if self.server.owner.ignores_stream_usage:
            return False, False
        return _usage_options(body, flavor)

    # --- /v1/completions (legacy) -----------------------------------------------------------

    def serve_completions(self, record: RecordedRequest, pacing: Pacing, owner: LocalOpenAIServer) -> None:
        body = record.body
        prompt = body.get("prompt", "")
        many = isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], int)
        prompts = prompt if many else [prompt]
        n = int(body.get("n") or 1) * len(prompts)
        content_only = dataclasses.replace(pacing, reasoning_tokens=0)
        pieces = _plan_pieces(content_only, tool_call=False)
        reply = self._reply(record, "cmpl-", _prompt_tokens(prompt), 0)
        if not body.get("stream"):
            self._wait_whole_schedule(record, pacing, len(pieces))
            self._send_json(200, _completion(reply, pieces, n), record)
            return
        include_usage, continuous = self._stream_usage(body, reply.flavor)
        vllm = reply.flavor == "vllm"
        writer, pacer = self._start_stream(record, pacing)
        sent_tokens = 0
        for step, piece in enumerate(pieces):
            pacer.before_step()
            finish = "stop" if step == len(pieces) - 1 else None
            for index in range(n):
                sent_tokens += piece.tokens
                choice = {"index": index, "text": piece.text, "logprobs": None, "finish_reason": finish}
                if vllm:
                    choice |= {"stop_reason": None, "prompt_token_ids": None, "token_ids": None}
                data = reply.envelope("text_completion") | {"choices": [choice]}
                if continuous:
                    data["usage"] = reply.usage(sent_tokens, running=True)
                writer.event(data)
        if include_usage:
            final = reply.envelope("text_completion") | {"choices": [], "usage": reply.usage(sent_tokens)}
            writer.event(final | ({"system_fingerprint": _VLLM_FINGERPRINT} if vllm else {}))
        writer.event("[DONE]")
        writer.close()

    # --- /v1/embeddings -----------------------------------------------------------------------

    def serve_embeddings(self, record: RecordedRequest, pacing: Pacing, owner: LocalOpenAIServer) -> None:
        body = record.body
        raw_input = body.get("input", "")
        many = isinstance(raw_input, list) and not all(isinstance(i, int) for i in raw_input)
        inputs = raw_input if many else [raw_input]
        dimensions = int(body.get("dimensions") or owner.embedding_dimensions)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            vector = _embedding(json.dumps(item), dimensions)
            packed = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": packed if as_base64 else vector})
        self._wait_whole_schedule(record, pacing, 1)
        prompt_tokens = _prompt_tokens(inputs)
        result: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": owner.served_model or str(body.get("model", "")),
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        if owner.flavor == "vllm":
            result = {"id": _new_id("embd-", "vllm"), "created": int(time.time())} | result
        self._send_json(200, result, record)

    # --- /v1/responses ------------------------------------------------------------------------

    def serve_responses(self, record: RecordedRequest, pacing: Pacing, owner: LocalOpenAIServer) -> None:
        body = record.body
        pieces = _plan_pieces(pacing, tool_call=False)
        reply = self._reply(record, "resp_", _responses_input_tokens(body), 1)
        session = _ResponseSession(reply, body, pieces)
        if not body.get("stream"):
            self._wait_whole_schedule(record, pacing, len(pieces))
            self._send_json(200, session.response("completed"), record)
            return
        writer, pacer = self._start_stream(record, pacing)
        for event in session.events(pacer):
            writer.event(event, event=str(event["type"]))
        writer.close()

    # --- /v1/models ---------------------------------------------------------------------------

    def serve_models(self, record: RecordedRequest, pacing: Pacing, owner: LocalOpenAIServer) -> None:
        model_id = owner.served_model or "llmmeter-test-model"
        entry: dict[str, Any] = {"id": model_id, "object": "model", "created": int(time.time())}
        entry["owned_by"] = "vllm" if owner.flavor == "vllm" else "llmmeter"
        self._send_json(200, {"object": "list", "data": [entry]}, record)


_ROUTES = {
    ("POST", "/v1/chat/completions"): _Handler.serve_chat_completions,
    ("POST", "/v1/completions"): _Handler.serve_completions,
    ("POST", "/v1/embeddings"): _Handler.serve_embeddings,
    ("POST", "/v1/responses"): _Handler.serve_responses,
    ("GET", "/v1/models"): _Handler.serve_models,
}


def _usage_options(body: Mapping[str, Any], flavor: Flavor) -> tuple[bool, bool]:
    """(include_usage, continuous_usage_stats) following vLLM's rule.

    Usage is streamed only when ``stream_options`` is present; vLLM then defaults include_usage to
    true (OpenAI: false); running per-chunk usage needs include_usage as well.
    """
    options = body.get("stream_options")
    if not isinstance(options, dict):
        return False, False
    include = bool(options.get("include_usage", flavor == "vllm"))
    return include, include and bool(options.get("continuous_usage_stats"))


def _first_of(pieces: Sequence[_Piece], kind: str) -> _Piece | None:
    return next((piece for piece in pieces if piece.kind == kind), None)


def _stream_choice(index: int, delta: dict[str, Any], vllm: bool, token_ids: bool = True) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
    return choice | ({"token_ids": None} if vllm and token_ids else {})


def _chat_completion(
    reply: _Reply, pieces: list[_Piece], n: int, tool: tuple[str, str] | None, finish: str
) -> dict[str, Any]:
    vllm = reply.flavor == "vllm"
    message: dict[str, Any] = {"role": "assistant", "content": _joined(pieces, "content") or None}
    if not vllm:
        message["refusal"] = None
    if tool:
        function = {"name": tool[0], "arguments": _joined(pieces, "tool_args")}
        message["tool_calls"] = [{"id": tool[1], "type": "function", "function": function}]
    if reply.reasoning_tokens:
        message[_reasoning_key(reply.flavor)] = _joined(pieces, "reasoning")
    choices = []
    for index in range(n):
        choice = {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
        choices.append(choice | ({"stop_reason": None} if vllm else {}))
    completion_tokens = n * sum(piece.tokens for piece in pieces)
    result = reply.envelope("chat.completion") | {"choices": choices, "usage": reply.usage(completion_tokens)}
    return result | ({"system_fingerprint": _VLLM_FINGERPRINT} if vllm else {})


def _completion(reply: _Reply, pieces: list[_Piece], n: int) -> dict[str, Any]:
    text = _joined(pieces, "content")
    choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": "stop"} for i in range(n)]
    vllm = reply.flavor == "vllm"
    if vllm:
        choices = [choice | {"stop_reason": None} for choice in choices]
    completion_tokens = n * sum(piece.tokens for piece in pieces)
    result = reply.envelope("text_completion") | {"choices": choices, "usage": reply.usage(completion_tokens)}
    return result | ({"system_fingerprint": _VLLM_FINGERPRINT} if vllm else {})


class _ResponseSession:
    """Builds the Responses API object and its stream events (shapes per ``openai.types.responses``)."""

    def __init__(self, reply: _Reply, body: Mapping[str, Any], pieces: list[_Piece]) -> None:
        self._reply = reply
        self._body = body
        self._pieces = pieces
        self._sequence = 0
        self._reasoning_id = f"rs_{secrets.token_hex(12)}"
        self._message_id = f"msg_{secrets.token_hex(12)}"

    def response(self, status: str) -> dict[str, Any]:
        done = status == "completed"
        reply = self._reply
        output_tokens = sum(piece.tokens for piece in self._pieces)
        return {
            "id": reply.id,
            "object": "response",
            "created_at": reply.created,
            "completed_at": int(time.time()) if done else None,
            "status": status,
            "model": reply.model,
            "output": self._output_items("completed") if done else [],
            "instructions": self._body.get("instructions"),
            "max_output_tokens": self._body.get("max_output_tokens"),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "temperature": self._body.get("temperature", 1.0),
            "top_p": self._body.get("top_p", 1.0),
            "error": None,
            "incomplete_details": None,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "metadata": {},
            "usage": None
            if not done
            else {
                "input_tokens": reply.prompt_tokens,
                "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
                "total_tokens": reply.prompt_tokens + output_tokens,
            },
        }

    def _reasoning_item(self, status: str) -> dict[str, Any]:
        text = _joined(self._pieces, "reasoning") if status == "completed" else ""
        content = [{"type": "reasoning_text", "text": text}] if status == "completed" else []
        return {
            "id": self._reasoning_id,
            "type": "reasoning",
            "summary": [],
            "content": content,
            "status": status,
        }

    def _message_item(self, status: str) -> dict[str, Any]:
        content = [_output_text(_joined(self._pieces, "content"))] if status == "completed" else []
        return {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def _output_items(self, status: str) -> list[dict[str, Any]]:
        reasoning = [self._reasoning_item(status)] if _first_of(self._pieces, "reasoning") else []
        return [*reasoning, self._message_item(status)]

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def events(self, pacer: _Pacer) -> Iterator[dict[str, Any]]:
        """All stream events in order; sleeps on the pacer's schedule between them."""
        pacer.before_role()
        yield self._event("response.created", response=self.response("in_progress"))
        yield self._event("response.in_progress", response=self.response("in_progress"))
        has_reasoning = _first_of(self._pieces, "reasoning") is not None
        if has_reasoning:
            yield from self._item_events(pacer, 0, "reasoning")
        yield from self._item_events(pacer, int(has_reasoning), "content")
        yield self._event("response.completed", response=self.response("completed"))

    def _item_events(self, pacer: _Pacer, output_index: int, kind: str) -> Iterator[dict[str, Any]]:
        reasoning = kind == "reasoning"
        item = self._reasoning_item if reasoning else self._message_item
        item_id = self._reasoning_id if reasoning else self._message_id
        text_event = "response.reasoning_text" if reasoning else "response.output_text"
        text = _joined(self._pieces, kind)
        where = {"item_id": item_id, "output_index": output_index, "content_index": 0}
        extra: dict[str, Any] = {} if reasoning else {"logprobs": []}
        empty_part = {"type": "reasoning_text", "text": ""} if reasoning else _output_text("")
        full_part = {"type": "reasoning_text", "text": text} if reasoning else _output_text(text)
        yield self._event("response.output_item.added", output_index=output_index, item=item("in_progress"))
        yield self._event("response.content_part.added", part=empty_part, **where)
        for piece in self._pieces:
            if piece.kind == kind:
                pacer.before_step()
                yield self._event(f"{text_event}.delta", delta=piece.text, **where, **extra)
        yield self._event(f"{text_event}.done", text=text, **where, **extra)
        yield self._event("response.content_part.done", part=full_part, **where)
        yield self._event("response.output_item.done", output_index=output_index, item=item("completed"))


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its open connections so that stop() can end them all."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: LocalOpenAIServer) -> None:
        super().__init__(address, _Handler)
        self.owner = owner
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            daemon=True,
            name="llmmeter-test-conn",
        )
        with self._connections_lock:
            self._connections[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self, timeout: float) -> None:
        with self._connections_lock:
            open_connections = list(self._connections.items())
        for _, sock in open_connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked reading a keep-alive request
        for thread, _ in open_connections:
            thread.join(timeout)


class LocalOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 with exactly known chunk timing.

    >>> with LocalOpenAIServer(pacing=Pacing(ttft_ms=80, itl_ms=10)) as srv:
    ...     client = openai.OpenAI(base_url=srv.base_url, api_key="test")

    Endpoints: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
    ``/v1/responses``, the media endpoints of :mod:`llmmeter.testing.media` (images, speech,
    transcription, translation, moderation) and ``GET /v1/models``. ``pacing`` holds the defaults; a request's
    ``x-llmmeter-pacing`` header (see :func:`pacing_headers`) overrides them for that request.
    ``flavor="vllm"`` mimics vLLM's chunk shapes; ``served_model`` replaces the request's model
    name in responses (like a dated snapshot). ``rejects_stream_options=True`` answers any request
    carrying ``stream_options`` with a 400 naming it, as strict gateways and older servers do;
    ``ignores_stream_usage=True`` accepts it and streams no usage (servers that drop the field).
    Every request is appended to :attr:`requests`.
    """

    def __init__(
        self,
        *,
        pacing: Pacing | None = None,
        flavor: Flavor = "openai",
        served_model: str | None = None,
        embedding_dimensions: int = 16,
        port: int = 0,
        rejects_stream_options: bool = False,
        ignores_stream_usage: bool = False,
    ) -> None:
        if flavor not in ("openai", "vllm"):
            raise ValueError(f"flavor must be 'openai' or 'vllm', got {flavor!r}")
        self.pacing = pacing or Pacing()
        self.flavor: Flavor = flavor
        self.served_model = served_model
        self.embedding_dimensions = embedding_dimensions
        self.rejects_stream_options = rejects_stream_options
        self.ignores_stream_usage = ignores_stream_usage
        self.requests: list[RecordedRequest] = []
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._requests_lock = threading.Lock()

    @property
    def port(self) -> int:
        """The bound port (only meaningful once started)."""
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, ready for ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        """Bind and serve in a background daemon thread. Returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="llmmeter-test-server",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open connections (aborting paced streams) and join every thread."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections(_STOP_WAIT_SECONDS)
        httpd.server_close()
        thread.join(_STOP_WAIT_SECONDS)
        self._httpd = self._thread = None

    def last_request(self, timeout: float = _STOP_WAIT_SECONDS) -> RecordedRequest:
        """The most recent request, once the server has finished writing it."""
        with self._requests_lock:
            if not self.requests:
                raise LookupError("no request received yet")
            record = self.requests[-1]
        return record.wait_finished(timeout)

    def _record(self, record: RecordedRequest) -> None:
        with self._requests_lock:
            self.requests.append(record)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
