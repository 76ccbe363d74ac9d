"""Images, speech, transcription, translation and moderation through an instrumented ``openai``
client: one record each, carrying what the call is billed by.

The real ``openai`` package talks to :class:`llmmeter.testing.LocalOpenAIServer`, whose media
endpoints answer in the shapes of OpenAI's API reference (no public recording of these endpoints
was found; see ``llmmeter.testing.media`` for what each response reports).
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

import llmmeter
from llmmeter import MediaUnits, Outcome, Usage
from llmmeter.providers.openai_media import wav_seconds
from llmmeter.testing import LocalOpenAIServer
from llmmeter.testing.media import silence_wav

from .conftest import Telemetry

# The SDK marks audio.translations deprecated; the endpoint is still served and still billed.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as srv:
        yield srv


@pytest.fixture
def client(server: LocalOpenAIServer, telemetry: Telemetry) -> openai.OpenAI:
    return llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0))


@pytest.fixture
def async_client(server: LocalOpenAIServer, telemetry: Telemetry) -> openai.AsyncOpenAI:
    return llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0))


def test_dall_e_images_are_recorded_by_count_size_and_quality(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    response = client.images.generate(model="dall-e-3", prompt="a meter", n=2, size="1024x1792", quality="hd")
    assert isinstance(response, openai.types.ImagesResponse) and len(response.data) == 2
    (record,) = telemetry.records
    assert record.operation == "generate_image" and record.request_model == "dall-e-3"
    assert record.media == MediaUnits(images=2, image_size="1024x1792", image_quality="hd")
    assert record.usage is None  # DALL·E reports no tokens, and none are made up


def test_gpt_image_tokens_are_recorded_by_modality_with_the_size_and_quality_served(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.images.generate(model="gpt-image-1", prompt="a brass meter on a desk", quality="high")
    (record,) = telemetry.records
    # 6 prompt words; one 1024x1024 high-quality image is 4160 output tokens (OpenAI's table).
    assert record.usage == Usage(
        input_tokens=6, output_tokens=4160, text_input_tokens=6, image_input_tokens=0
    )
    assert record.media == MediaUnits(images=1, image_size="1024x1024", image_quality="high")


def test_an_image_edit_upload_is_recorded_as_edit_image(client: openai.OpenAI, telemetry: Telemetry) -> None:
    client.images.edit(model="gpt-image-1", image=("in.png", b"\x89PNG fake"), prompt="make it red")
    (record,) = telemetry.records
    assert record.operation == "edit_image"
    assert record.usage is not None and record.usage.image_input_tokens == 323


def test_speech_returns_its_audio_unchanged_and_records_the_characters_read(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    text = "Every request has a price and a latency."
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=text)
    assert wav_seconds(audio.content) == pytest.approx(len(text) / 15, abs=0.01)
    (record,) = telemetry.records
    assert record.operation == "text_to_speech" and record.outcome is Outcome.OK
    assert record.media == MediaUnits(characters=len(text))


def test_streamed_speech_through_with_streaming_response_is_measured_when_read(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="hello"
    ) as raw:
        data = b"".join(raw.iter_bytes())
    assert data[:4] == b"RIFF"
    (record,) = telemetry.records
    assert record.media == MediaUnits(characters=5)


def test_whisper_transcription_records_the_seconds_it_reports(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", silence_wav(7.0)))
    assert result.text
    (record,) = telemetry.records
    assert record.operation == "transcription"
    assert record.media == MediaUnits(audio_seconds=7.0)
    assert record.usage is None


def test_token_billed_transcription_records_audio_tokens(client: openai.OpenAI, telemetry: Telemetry) -> None:
    client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=("a.wav", silence_wav(3.0)))
    (record,) = telemetry.records
    assert record.usage == Usage(
        input_tokens=30, output_tokens=11, text_input_tokens=0, audio_input_tokens=30
    )


def test_verbose_json_duration_is_taken_from_the_response(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.audio.translations.create(
        model="whisper-1", file=("a.wav", silence_wav(2.5)), response_format="verbose_json"
    )
    (record,) = telemetry.records
    assert record.operation == "translation" and record.media == MediaUnits(audio_seconds=2.5)


def test_a_plain_translation_takes_its_seconds_from_the_uploaded_wav(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.audio.translations.create(model="whisper-1", file=("a.wav", silence_wav(4.0)))
    (record,) = telemetry.records
    assert record.media == MediaUnits(audio_seconds=4.0)


def test_audio_sent_as_a_file_object_is_never_read_by_llmmeter(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry, tmp_path: object
) -> None:
    import io

    upload = io.BytesIO(silence_wav(1.0))
    client.audio.translations.create(model="whisper-1", file=("a.wav", upload))
    assert server.last_request().body["file"] == silence_wav(1.0)  # the upload arrived whole
    (record,) = telemetry.records
    assert record.media is None  # plain json: no duration reported, and the file object untouched


def test_moderation_is_recorded_with_its_id_and_model(client: openai.OpenAI, telemetry: Telemetry) -> None:
    response = client.moderations.create(model="omni-moderation-latest", input=["a", "b"])
    assert len(response.results) == 2
    (record,) = telemetry.records
    assert record.operation == "moderation"
    assert record.response_id == response.id and record.response_model == "omni-moderation-latest"


async def test_async_media_calls_are_recorded_like_sync_ones(
    async_client: openai.AsyncOpenAI, telemetry: Telemetry
) -> None:
    await async_client.images.generate(model="dall-e-2", prompt="x", n=3, size="256x256")
    await async_client.audio.transcriptions.create(model="whisper-1", file=("a.wav", silence_wav(2.0)))
    image, transcription = telemetry.records
    assert image.media == MediaUnits(images=3, image_size="256x256")
    assert transcription.media == MediaUnits(audio_seconds=2.0)


def test_wav_seconds_reads_only_wav_headers() -> None:
    assert wav_seconds(silence_wav(1.5)) == 1.5
    assert wav_seconds(b"ID3 not a wav") is None
    assert wav_seconds(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert wav_seconds(None) is None
