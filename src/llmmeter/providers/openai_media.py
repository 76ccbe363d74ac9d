"""The ``openai`` SDK's media endpoints: images, speech, transcription, translation, moderation.

What each is billed by, and so what the record carries:

* images (``images.generate`` / ``edit`` / ``create_variation``): GPT Image models report token
  usage by modality; DALL·E is priced per image by size and quality, so the record's
  :class:`~llmmeter.record.MediaUnits` holds the image count (from the response), size and
  quality (from the response where it says, else the request);
* speech (``audio.speech``): the response is audio bytes with no usage; the characters read
  aloud come from the request;
* transcription and translation: token usage (``gpt-4o-*-transcribe``), or the audio's seconds
  (``usage.type == "duration"``, or ``duration`` in ``verbose_json``, or the header of a WAV file
  sent as bytes);
* moderation: recorded, no usage (free).

Pure: reads request bodies, uploaded bytes already in memory and response objects.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from llmmeter.providers.base import ResponseInfo, field, fields_of, str_or_none
from llmmeter.providers.openai import usage_from_openai
from llmmeter.providers.types import Observed, RequestSpec
from llmmeter.record import MediaUnits

__all__ = ["MEDIA_ENDPOINTS", "TranscriptionStreamReader", "plan_media", "wav_seconds"]

# (url suffix, gen_ai.operation.name)
MEDIA_ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("/images/generations", "generate_image"),
    ("/images/edits", "edit_image"),
    ("/images/variations", "create_image_variation"),
    ("/audio/speech", "text_to_speech"),
    ("/audio/transcriptions", "transcription"),
    ("/audio/translations", "translation"),
    ("/moderations", "moderation"),
)
_IMAGE_OPERATIONS = frozenset({"generate_image", "edit_image", "create_image_variation"})
_AUDIO_INPUT_OPERATIONS = frozenset({"transcription", "translation"})


def plan_media(operation: str, body: Mapping[str, Any], files: Any, stream: bool) -> RequestSpec:
    """The spec of one media request: what it is billed by, and how its response is read."""
    model = body.get("model")
    spec = RequestSpec(
        operation=operation,
        request_model=model if isinstance(model, str) else None,
        read_response=_read_moderation,
    )
    if operation in _IMAGE_OPERATIONS:
        requested = MediaUnits(image_size=str_or_none(body.get("size")), image_quality=_quality(body))

        def read_image(response: Any) -> Observed:
            return _read_images(response, requested)

        spec.read_response = read_image
    elif operation == "text_to_speech":
        text = body.get("input")
        characters = MediaUnits(characters=len(text)) if isinstance(text, str) else None

        def read_speech(response: Any) -> Observed:
            return Observed(media=characters)

        spec.read_response = read_speech
    elif operation in _AUDIO_INPUT_OPERATIONS:
        seconds = wav_seconds(_uploaded_bytes(files))

        def read_transcription(response: Any) -> Observed:
            return _read_transcription(response, seconds)

        spec.read_response = read_transcription
        if stream:
            spec.stream_reader = TranscriptionStreamReader
    return spec


def _quality(body: Mapping[str, Any]) -> str | None:
    quality = str_or_none(body.get("quality"))
    return None if quality == "auto" else quality


def _read_images(response: Any, requested: MediaUnits) -> Observed:
    top = fields_of(response)
    data = top.get("data")
    usage = top.get("usage")
    return Observed(
        usage=usage_from_openai(usage) if usage is not None else None,
        media=MediaUnits(
            images=len(data) if isinstance(data, list) else None,
            image_size=str_or_none(top.get("size")) or requested.image_size,
            image_quality=str_or_none(top.get("quality")) or requested.image_quality,
        ),
    )


def _read_transcription(response: Any, uploaded_seconds: float | None) -> Observed:
    top = fields_of(response)
    observed = Observed(output_text=str_or_none(top.get("text")))
    usage = top.get("usage")
    seconds = _number(top.get("duration"))
    if usage is not None:
        if field(usage, "type") == "duration":
            seconds = _number(field(usage, "seconds"))
        else:
            observed.usage = usage_from_openai(usage)
    seconds = seconds if seconds is not None else uploaded_seconds
    if seconds is not None:
        observed.media = MediaUnits(audio_seconds=seconds)
    return observed


def _read_moderation(response: Any) -> Observed:
    info = ResponseInfo(
        response_id=str_or_none(field(response, "id")), response_model=str_or_none(field(response, "model"))
    )
    return Observed(info=info)


class TranscriptionStreamReader:
    """``audio.transcriptions`` streams: ``transcript.text.delta`` events are output; the
    ``transcript.text.done`` event carries the usage."""

    __slots__ = ("done", "texts")

    def __init__(self) -> None:
        self.done: Any = None
        self.texts: list[str] = []

    def feed(self, event: Any) -> bool:
        kind = field(event, "type")
        if kind == "transcript.text.delta":
            delta = field(event, "delta")
            if delta:
                self.texts.append(delta)
                return True
        elif kind == "transcript.text.done":
            self.done = event
        return False

    def result(self) -> Observed:
        if self.done is not None:
            return _read_transcription(self.done, None)
        return Observed(output_text="".join(self.texts) or None)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _uploaded_bytes(files: Any) -> bytes | None:
    """The uploaded audio when the caller passed it as bytes (never read from a file object:
    the SDK reads that one itself, and moving its position would corrupt the upload)."""
    entries = files.items() if isinstance(files, Mapping) else files or ()
    for entry in entries:
        if not (isinstance(entry, tuple) and len(entry) == 2):
            continue
        value = entry[1]
        content = value[1] if isinstance(value, tuple) and len(value) >= 2 else value
        if isinstance(content, bytes | bytearray):
            return bytes(content)
    return None


def wav_seconds(data: bytes | None) -> float | None:
    """The duration of a PCM WAV file from its header (``None`` for anything else)."""
    if data is None or len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, byte_rate = 12, None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        if chunk_id == b"fmt " and size >= 12:
            (byte_rate,) = struct.unpack("<I", data[offset + 16 : offset + 20])
        elif chunk_id == b"data":
            if not byte_rate:
                return None
            return float(min(size, len(data) - offset - 8) / byte_rate)
        offset += 8 + size + (size & 1)
    return None
