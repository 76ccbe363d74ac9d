"""Replaying the recordings in ``tests/recordings`` through the real provider SDKs.

``tests/recordings/<provider>/`` holds real HTTP traffic of Anthropic's Messages API and Google's
Gemini API (vcrpy cassettes taken from public test suites) and real Ollama response bodies;
``tests/recordings/index.json`` holds the true values of every interaction (its README says where
each file comes from). Two ways to replay them, neither touching the network:

- :func:`use_recording` replays a cassette with vcrpy (``record_mode="none"``), matching requests on
  method, scheme, host, port and path (plus the body when asked), so ``anthropic`` and
  ``google.genai`` clients get the recorded bytes back, gzip-compressed ``!!binary`` bodies
  included (vcrpy hands them over with their ``Content-Encoding``, as the server did).
- :func:`serve_bodies` serves recorded bodies from a small HTTP server on 127.0.0.1 — NDJSON
  streams line by line, as ``ollama serve`` does, and a cassette's server-sent events event by
  event, with optional gaps between them — so ``ollama.Client(host=server.url)``, or an
  ``anthropic``/``genai`` client given ``server.url`` as its base URL, reads a real stream over a
  real socket (what a TTFT test needs).

The approach follows ``cassette_support.py`` (one interaction written alone into a temporary
cassette, so interactions recorded several times in one file replay one by one).
"""

from __future__ import annotations

import gzip
import json
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import vcr  # type: ignore[import-untyped]
import yaml

RECORDINGS = Path(__file__).resolve().parent / "recordings"

_MATCH_ON = ["method", "scheme", "host", "port", "path"]


# --- what is recorded ---------------------------------------------------------------------------
@cache
def index() -> tuple[dict[str, Any], ...]:
    """Every entry of ``recordings/index.json``: one per file, with its interactions' true values."""
    return tuple(json.loads((RECORDINGS / "index.json").read_text()))


def truth(file: str) -> dict[str, Any]:
    """The ``index.json`` entry of one recording (``file`` relative to ``tests/recordings``)."""
    for entry in index():
        if entry["file"] == file:
            return entry
    raise KeyError(file)


def files(provider: str) -> list[str]:
    """The recordings of one provider (``anthropic``, ``google_genai`` or ``ollama``)."""
    return [entry["file"] for entry in index() if entry["provider"] == provider]


@cache
def interactions(file: str) -> tuple[dict[str, Any], ...]:
    """The recorded interactions of a cassette, in recording order."""
    data = yaml.safe_load((RECORDINGS / file).read_text())
    return tuple(data["interactions"])


def request_json(file: str, position: int = 0) -> dict[str, Any]:
    """The JSON body the client sent in one recorded interaction."""
    return dict(json.loads(interactions(file)[position]["request"]["body"]))


def response_text(file: str, position: int = 0) -> str:
    """A recorded response body as the client reads it (gunzipped if it was sent compressed)."""
    raw = interactions(file)[position]["response"]["body"]["string"]
    if isinstance(raw, bytes):
        return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    return str(raw)


def sse_payloads(text: str) -> list[dict[str, Any]]:
    """The JSON payloads of a server-sent-events body, in order (``[DONE]`` left out)."""
    payloads = []
    for line in text.splitlines():
        if line.startswith("data:"):
            data = line[len("data:") :].strip()
            if data and data != "[DONE]":
                payloads.append(json.loads(data))
    return payloads


@cache
def shared_ssl_context() -> ssl.SSLContext:
    """One SSL context for every replaying client: loading the CA bundle per client would dominate
    the replay time, and nothing is verified anyway (vcrpy answers before any TLS handshake)."""
    return ssl.create_default_context()


# --- vcrpy replay -------------------------------------------------------------------------------
@contextmanager
def use_recording(file: str, position: int | None = None, *, match_body: bool = False) -> Iterator[Any]:
    """Replay a cassette (or only its interaction ``position``) for the requests made inside.

    Requests match on method and URL path (and on the body with ``match_body``); a request the
    cassette does not hold raises vcrpy's ``CannotOverwriteExistingCassetteException``.
    """
    recorder = vcr.VCR(record_mode="none", match_on=[*_MATCH_ON, *(["body"] if match_body else [])])
    if position is None:
        with recorder.use_cassette(str(RECORDINGS / file)) as cassette:
            yield cassette
        return
    with tempfile.TemporaryDirectory(prefix="llmmeter-recording-") as directory:
        single = Path(directory) / "interaction.yaml"
        interaction = interactions(file)[position]
        single.write_text(yaml.safe_dump({"interactions": [interaction], "version": 1}))
        with recorder.use_cassette(str(single)) as cassette:
            yield cassette


# --- recorded bodies served from 127.0.0.1 -----------------------------------------------------
@dataclass(frozen=True)
class RecordedBody:
    """One recorded response, served for ``method`` + ``path``.

    ``file`` is an Ollama body (``.ndjson`` streamed line by line, ``.json`` whole) or a cassette,
    whose interaction ``position`` is served as recorded (status, content type, body; a
    server-sent-events body event by event), so an SDK pointed at the server reads a real stream
    over a real socket. ``gap_seconds`` pauses before every chunk after the first: the recordings
    hold no timing, a test that measures TTFT or TPOT sets its own.
    """

    method: str
    path: str
    file: str
    """The body's file, relative to ``tests/recordings``."""
    position: int = 0
    gap_seconds: float = 0.0

    @classmethod
    def from_cassette(cls, file: str, position: int = 0, *, gap_seconds: float = 0.0) -> RecordedBody:
        """The response of a recorded interaction, served at the method and path it was sent to."""
        request = interactions(file)[position]["request"]
        path = urlsplit(request["uri"]).path
        return cls(request["method"], path, file, position=position, gap_seconds=gap_seconds)

    @property
    def is_cassette(self) -> bool:
        return self.file.endswith(".yaml")

    @property
    def status(self) -> int:
        if self.is_cassette:
            return int(interactions(self.file)[self.position]["response"]["status"]["code"])
        return 200

    @property
    def content_type(self) -> str:
        if self.is_cassette:
            headers = interactions(self.file)[self.position]["response"]["headers"]
            recorded = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
            return str(recorded[0]) if recorded else "application/json"
        return "application/x-ndjson" if self.file.endswith(".ndjson") else "application/json; charset=utf-8"

    @property
    def streamed(self) -> bool:
        return self.file.endswith(".ndjson") or self.content_type.startswith("text/event-stream")

    @property
    def chunks(self) -> list[bytes]:
        """The body as the server writes it: one NDJSON line or one SSE event per chunk, or whole."""
        if self.is_cassette:
            text = response_text(self.file, self.position)
            if not self.streamed:
                return [text.encode()]
            cuts = [match.end() for match in _SSE_EVENT_END.finditer(text)]
            pieces = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            return [piece.encode() for piece in pieces if piece]
        raw = (RECORDINGS / self.file).read_bytes()
        if self.file.endswith(".ndjson"):
            return [line + b"\n" for line in raw.splitlines() if line.strip()]
        return [raw.strip()]


_SSE_EVENT_END = re.compile(r"\r?\n\r?\n")


@dataclass
class BodyServer:
    """A local server replaying recorded bodies; ``requests`` are the (method, path, JSON) it got."""

    url: str
    requests: list[tuple[str, str, Any]] = field(default_factory=list)


@contextmanager
def serve_bodies(*bodies: RecordedBody) -> Iterator[BodyServer]:
    """Serve recorded bodies on 127.0.0.1 (a free port) while the block runs.

    Each request gets the body recorded for its method and path (the query is ignored). Streams
    (NDJSON, server-sent events) go out with chunked transfer encoding, one line or event per
    chunk, as Ollama, Anthropic and Gemini send them. An unknown route gets a 404 with Ollama's
    error shape.
    """
    routes: Mapping[tuple[str, str], RecordedBody] = {(body.method, body.path): body for body in bodies}
    server_state = BodyServer(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            server_state.requests.append((self.command, path, json.loads(raw) if raw else None))
            body = routes.get((self.command, path))
            if body is None:
                self._send_whole(404, "application/json; charset=utf-8", b'{"error":"no recording"}')
            elif body.streamed:
                self._send_chunked(body)
            else:
                self._send_whole(body.status, body.content_type, body.chunks[0])

        do_GET = do_POST = do_DELETE = _answer

        def _send_whole(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send_chunked(self, body: RecordedBody) -> None:
            self.send_response(body.status)
            self.send_header("Content-Type", body.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for number, chunk in enumerate(body.chunks):
                if number and body.gap_seconds:
                    time.sleep(body.gap_seconds)
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="recorded-bodies", daemon=True
    )
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
