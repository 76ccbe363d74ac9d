"""Replaying the shared cassettes (``../shared/cassettes``) through the real ``openai`` client.

Each recorded interaction becomes one :class:`Replay`: the request it recorded (rebuilt as the
keyword arguments of the SDK method that sends it), the client that reaches its endpoint, and
the truth values ``index.json`` holds for it. :meth:`Replay.cassette` writes the interaction
alone into a standard vcrpy cassette (pydantic-ai's ``parsed_body`` files converted as the
cassettes' README says), so interactions recorded several times in one file replay one by one.
Nothing here touches the network: vcrpy replays with ``record_mode="none"``.
"""

from __future__ import annotations

import gzip
import inspect
import json
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import openai
import vcr  # type: ignore[import-untyped]
import yaml

from llmmeter.record import Usage, UsageSource

CASSETTES = Path(__file__).resolve().parents[2] / "shared" / "cassettes"

ANTHROPIC_HOST = "api.anthropic.com"
"""Recordings of Anthropic's Messages API: the ``openai`` client cannot replay them."""

# Endpoint path suffix -> (SDK resource path, gen_ai.operation.name); most specific first.
_ENDPOINTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("/chat/completions", ("chat", "completions"), "chat"),
    ("/completions", ("completions",), "text_completion"),
    ("/embeddings", ("embeddings",), "embeddings"),
    ("/responses", ("responses",), "chat"),
)


@dataclass(frozen=True)
class Replay:
    """One recorded interaction, ready to be replayed through an ``openai`` client."""

    file: str
    """Path of the cassette below the cassettes folder."""
    index: int
    """Position of the interaction in its cassette."""
    interaction: Mapping[str, Any]
    """The interaction as recorded (``parsed_body`` already converted)."""
    truth: Mapping[str, Any]
    """The interaction's entry in ``index.json``."""

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}"

    # --- the request ----------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return str(self.interaction["request"]["uri"])

    @property
    def host(self) -> str:
        return urlsplit(self.uri).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.uri)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body the client sent."""
        return dict(json.loads(self.interaction["request"]["body"]))

    @property
    def is_azure(self) -> bool:
        return self.host.endswith(".openai.azure.com")

    @property
    def streaming(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def status(self) -> int:
        return int(self.interaction["response"]["status"]["code"])

    @property
    def is_error(self) -> bool:
        return self.status >= 400

    @property
    def endpoint_suffix(self) -> str:
        path = urlsplit(self.uri).path
        for suffix, _, _ in _ENDPOINTS:
            if path.endswith(suffix):
                return suffix
        raise ValueError(f"{self.id}: no openai SDK method for {path}")

    @property
    def operation(self) -> str:
        """The ``gen_ai.operation.name`` the call must be recorded as."""
        return next(op for suffix, _, op in _ENDPOINTS if suffix == self.endpoint_suffix)

    @property
    def is_responses_api(self) -> bool:
        return self.endpoint_suffix == "/responses"

    def base_url(self) -> str:
        parts = urlsplit(self.uri)
        return f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix(self.endpoint_suffix)}"

    def client(self, *, use_async: bool = False) -> Any:
        """A fresh ``openai`` client for the recorded endpoint (no retries: one request, one reply)."""
        options: dict[str, Any] = {
            "api_key": "test",
            "max_retries": 0,
            "http_client": _http_client(use_async),
        }
        if self.is_azure:
            parts = urlsplit(self.uri)
            deployment = parts.path.split("/deployments/", 1)[1].split("/", 1)[0]
            azure_cls = openai.AsyncAzureOpenAI if use_async else openai.AzureOpenAI
            return azure_cls(
                azure_endpoint=f"{parts.scheme}://{parts.netloc}",
                azure_deployment=deployment,
                api_version=parse_qs(parts.query)["api-version"][0],
                **options,
            )
        client_cls = openai.AsyncOpenAI if use_async else openai.OpenAI
        return client_cls(base_url=self.base_url(), **options)

    def create_method(self, client: Any, style: str = "") -> Callable[..., Any]:
        """``client.<resource>[.with_raw_response|.with_streaming_response].create``."""
        resource = client
        for name in next(path for suffix, path, _ in _ENDPOINTS if suffix == self.endpoint_suffix):
            resource = getattr(resource, name)
        if style:
            resource = getattr(resource, style)
        method: Callable[..., Any] = resource.create
        return method

    def create_kwargs(self, client: Any, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The recorded body as keyword arguments of ``create``; fields the SDK method does not
        declare go through ``extra_body`` so the request carries them unchanged."""
        body = self.body if body is None else body
        declared = inspect.signature(self.create_method(client)).parameters
        kwargs = {key: value for key, value in body.items() if key in declared}
        extra = {key: value for key, value in body.items() if key not in declared}
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    # --- the cassette -----------------------------------------------------------------------------
    @contextmanager
    def cassette(self, directory: Path, *, seen_requests: list[Any] | None = None) -> Iterator[Any]:
        """Replay this interaction alone; matching ignores the body (llmmeter may add
        ``stream_options``). ``seen_requests`` collects the requests the client sent."""
        path = directory / f"{Path(self.file).stem}-{self.index}.yaml"
        path.write_text(_single_interaction_cassette(self.file, self.index))

        def remember(request: Any) -> Any:
            if seen_requests is not None:
                seen_requests.append(request)
            return request

        recorder = vcr.VCR(
            record_mode="none",
            match_on=["method", "scheme", "host", "port", "path"],
            before_record_request=remember,
        )
        with recorder.use_cassette(str(path)) as cassette:
            if seen_requests is not None:
                seen_requests.clear()  # vcrpy also passed the recorded request through the hook
            yield cassette

    # --- what the server sent -------------------------------------------------------------------
    def response_text(self) -> str:
        """The response body as the client reads it (gunzipped when it was sent gzip-compressed)."""
        raw = self.interaction["response"]["body"]["string"]
        if isinstance(raw, bytes):
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            return raw.decode("utf-8")
        return str(raw)

    def response_json(self) -> dict[str, Any]:
        return dict(json.loads(self.response_text()))

    def sse_events(self) -> list[dict[str, Any]]:
        """The JSON payloads of the streamed ``data:`` events (``[DONE]`` left out)."""
        events = []
        for line in self.response_text().splitlines():
            if line.startswith("data:"):
                data = line[len("data:") :].strip()
                if data and data != "[DONE]":
                    events.append(json.loads(data))
        return events


@cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _http_client(use_async: bool) -> Any:
    # The SDK's own default client, sharing one SSL context: loading the CA bundle for every
    # client would dominate the replay time. Nothing is verified anyway: vcrpy answers.
    if use_async:
        return openai.DefaultAsyncHttpxClient(verify=_ssl_context())
    return openai.DefaultHttpxClient(verify=_ssl_context())


@cache
def _single_interaction_cassette(file: str, index: int) -> str:
    interaction = _interactions(file)[index]
    return str(yaml.safe_dump({"interactions": [interaction], "version": 1}))


def _converted(interaction: dict[str, Any]) -> dict[str, Any]:
    """pydantic-ai's ``parsed_body`` interaction as a standard one (see the cassettes' README)."""
    request = dict(interaction["request"])
    response = dict(interaction["response"])
    if "parsed_body" in request:
        request["body"] = json.dumps(request.pop("parsed_body"))
    if "parsed_body" in response:
        response["body"] = {"string": json.dumps(response.pop("parsed_body"))}
    return {"request": request, "response": response}


@cache
def _index() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads((CASSETTES / "index.json").read_text()))


def indexed_files() -> list[str]:
    """Every cassette file ``index.json`` describes."""
    return [entry["file"] for entry in _index()]


@cache
def _interactions(file: str) -> tuple[dict[str, Any], ...]:
    data = yaml.safe_load((CASSETTES / file).read_text())
    return tuple(_converted(interaction) for interaction in data["interactions"])


def all_replays() -> list[Replay]:
    """Every recorded interaction the ``openai`` client can replay (Anthropic ones left out)."""
    replays = []
    for entry in _index():
        interactions = _interactions(entry["file"])
        for position, truth in enumerate(entry["interactions"]):
            if truth["host"] == ANTHROPIC_HOST:
                continue
            replays.append(Replay(entry["file"], position, interactions[position], truth))
    return replays


def anthropic_replay(file: str, index: int = 0) -> Replay:
    """One recorded Anthropic Messages interaction (replayed through the ``anthropic`` SDK)."""
    for entry in _index():
        if entry["file"] == file:
            return Replay(file, index, _interactions(file)[index], entry["interactions"][index])
    raise KeyError(f"{file}#{index}")


def replay(file: str, index: int = 0) -> Replay:
    """The replay of one interaction, by cassette file and position."""
    for candidate in all_replays():
        if candidate.file == file and candidate.index == index:
            return candidate
    raise KeyError(f"{file}#{index}")


def expected_usage(reported: Mapping[str, Any]) -> Usage:
    """The :class:`Usage` a provider-reported usage object must normalize to.

    Written out field by field from the recorded JSON (Chat/Completions/embeddings shape or
    Responses shape) so the test does not trust the adapter it checks: a detail the response
    does not report stays ``None``; DeepSeek's ``prompt_cache_hit_tokens`` counts as cached input
    only when ``cached_tokens`` is absent.
    """
    if "input_tokens" in reported:
        inputs = reported.get("input_tokens_details") or {}
        outputs = reported.get("output_tokens_details") or {}
        return Usage(
            input_tokens=reported["input_tokens"],
            output_tokens=reported["output_tokens"],
            cache_read_input_tokens=inputs.get("cached_tokens"),
            reasoning_output_tokens=outputs.get("reasoning_tokens"),
            source=UsageSource.PROVIDER,
        )
    prompt = reported.get("prompt_tokens_details") or {}
    completion = reported.get("completion_tokens_details") or {}
    cached = prompt.get("cached_tokens", reported.get("prompt_cache_hit_tokens"))
    return Usage(
        input_tokens=reported["prompt_tokens"],
        output_tokens=reported.get("completion_tokens"),
        cache_read_input_tokens=cached,
        reasoning_output_tokens=completion.get("reasoning_tokens"),
        text_input_tokens=prompt.get("text_tokens"),
        image_input_tokens=prompt.get("image_tokens"),
        audio_input_tokens=prompt.get("audio_tokens"),
        text_output_tokens=completion.get("text_tokens"),
        audio_output_tokens=completion.get("audio_tokens"),
        accepted_prediction_tokens=completion.get("accepted_prediction_tokens"),
        rejected_prediction_tokens=completion.get("rejected_prediction_tokens"),
        source=UsageSource.PROVIDER,
    )
