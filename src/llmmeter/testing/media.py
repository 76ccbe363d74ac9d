"""The media endpoints of :class:`~llmmeter.testing.LocalOpenAIServer`: images, speech,
transcription, translation and moderation, answering in the shapes of OpenAI's API reference.

Each handler takes the request's fields (JSON, or a ``multipart/form-data`` upload decoded to a
dict whose file fields are bytes) and returns ``(status, content type, body bytes)``. What the
responses report is derived from the request, so tests know the truth without a recording:

* images: ``n`` images; GPT Image models add token usage (``input_tokens`` = the prompt's words,
  ``output_tokens`` by size and quality as OpenAI documents) and echo size and quality;
* speech: a WAV of silence, one second per 15 characters;
* transcription: ``whisper-1`` reports the audio's seconds (``usage.type == "duration"``; from the
  uploaded WAV's header), other models token usage; ``verbose_json`` adds ``duration``;
* translation: text only (``verbose_json``: with ``duration``);
* moderation: one result per input, nothing flagged, no usage.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import time
import wave
from collections.abc import Callable, Mapping
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

__all__ = ["MEDIA_ROUTES", "parse_multipart", "silence_wav"]

MediaReply = tuple[int, str, bytes]

# Output tokens of one GPT Image by (quality, size), as OpenAI's image-generation guide lists them.
_IMAGE_TOKENS = {
    ("low", "1024x1024"): 272,
    ("medium", "1024x1024"): 1056,
    ("high", "1024x1024"): 4160,
    ("low", "1024x1536"): 408,
    ("medium", "1024x1536"): 1584,
    ("high", "1024x1536"): 6240,
}
_SAMPLE_RATE = 8000


def silence_wav(seconds: float) -> bytes:
    """A mono 16-bit PCM WAV of ``seconds`` of silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(_SAMPLE_RATE)
        out.writeframes(b"\0\0" * int(seconds * _SAMPLE_RATE))
    return buffer.getvalue()


def _wav_duration(data: Any) -> float:
    if not isinstance(data, bytes):
        return 0.0
    with wave.open(io.BytesIO(data), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """The fields of a ``multipart/form-data`` body: text fields as str, files as bytes."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        fields[name] = payload if part.get_filename() else payload.decode()
    return fields


def _json(payload: Mapping[str, Any]) -> MediaReply:
    return 200, "application/json", json.dumps(payload).encode()


def _images(body: Mapping[str, Any]) -> MediaReply:
    model = str(body.get("model") or "dall-e-2")
    count = int(body.get("n") or 1)
    prompt = str(body.get("prompt") or "")
    if not model.startswith("gpt-image"):
        data = [
            {"url": f"https://images.invalid/{secrets.token_hex(6)}.png", "revised_prompt": prompt}
        ] * count
        return _json({"created": int(time.time()), "data": data})
    size = str(body.get("size") or "1024x1024")
    quality = str(body.get("quality") or "medium")
    size = "1024x1024" if size == "auto" else size
    quality = "medium" if quality == "auto" else quality
    image_in = 323 if "image" in body else 0  # an edit's input image, as GPT Image counts a small one
    text_in = len(prompt.split())
    output = _IMAGE_TOKENS.get((quality, size), 1056) * count
    usage = {
        "input_tokens": text_in + image_in,
        "output_tokens": output,
        "total_tokens": text_in + image_in + output,
        "input_tokens_details": {"text_tokens": text_in, "image_tokens": image_in},
    }
    data = [{"b64_json": base64.b64encode(b"\x89PNG fake").decode()}] * count
    return _json(
        {"created": int(time.time()), "data": data, "size": size, "quality": quality, "usage": usage}
    )


def _speech(body: Mapping[str, Any]) -> MediaReply:
    text = str(body.get("input") or "")
    return 200, "audio/wav", silence_wav(len(text) / 15)


def _transcription(body: Mapping[str, Any], *, translate: bool) -> MediaReply:
    model = str(body.get("model") or "whisper-1")
    seconds = _wav_duration(body.get("file"))
    text = "The quick brown fox jumps over the lazy dog."
    response_format = body.get("response_format") or "json"
    if response_format == "text":
        return 200, "text/plain", text.encode()
    payload: dict[str, Any] = {"text": text}
    if response_format == "verbose_json":
        payload = {"task": "translate" if translate else "transcribe", "language": "english"}
        payload |= {"duration": seconds, "text": text, "segments": []}
    elif not translate and model == "whisper-1":
        payload["usage"] = {"type": "duration", "seconds": round(seconds)}
    elif not translate:
        audio = max(1, round(seconds * 10))
        usage = {"type": "tokens", "input_tokens": audio, "output_tokens": 11, "total_tokens": audio + 11}
        payload["usage"] = usage | {"input_token_details": {"text_tokens": 0, "audio_tokens": audio}}
    return _json(payload)


def _moderation(body: Mapping[str, Any]) -> MediaReply:
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) else [raw]
    result = {"flagged": False, "categories": {"violence": False}, "category_scores": {"violence": 0.0001}}
    model = str(body.get("model") or "omni-moderation-latest")
    return _json({"id": f"modr-{secrets.token_hex(8)}", "model": model, "results": [result] * len(inputs)})


MEDIA_ROUTES: dict[str, Callable[[Mapping[str, Any]], MediaReply]] = {
    "/v1/images/generations": _images,
    "/v1/images/edits": _images,
    "/v1/images/variations": _images,
    "/v1/audio/speech": _speech,
    "/v1/audio/transcriptions": lambda body: _transcription(body, translate=False),
    "/v1/audio/translations": lambda body: _transcription(body, translate=True),
    "/v1/moderations": _moderation,
}
