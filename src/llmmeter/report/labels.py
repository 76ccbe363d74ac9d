"""The one table of what the report calls each token kind, and each latency.

The table, HTML and CSV headers all read from here, so a kind cannot be "cached in" in one format
and "cached input" in another.
"""

from __future__ import annotations

from typing import Final

from llmmeter.record import USAGE_COUNT_FIELDS

__all__ = ["LATENCY_LABELS", "TOKEN_LABELS", "missing_token_labels", "token_label"]

TOKEN_LABELS: Final[dict[str, str]] = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cached input",
    "cache_write_input_tokens": "cache write",
    "cache_write_1h_input_tokens": "cache write 1h",
    "reasoning_output_tokens": "reasoning",
    "text_input_tokens": "text input",
    "image_input_tokens": "image input",
    "audio_input_tokens": "audio input",
    "text_output_tokens": "text output",
    "image_output_tokens": "image output",
    "audio_output_tokens": "audio output",
    "audio_cache_read_input_tokens": "cached audio input",
    "accepted_prediction_tokens": "prediction accepted",
    "rejected_prediction_tokens": "prediction rejected",
}
"""Short human label of every :class:`~llmmeter.Usage` count field, keyed by field name."""

LATENCY_LABELS: Final[dict[str, str]] = {"ttft": "TTFT", "tpot": "TPOT", "duration": "duration"}
"""Human label of each latency metric of the report."""


def token_label(kind: str) -> str:
    """The label of a token kind (its field name when unknown, e.g. from a newer store)."""
    return TOKEN_LABELS.get(kind, kind)


def missing_token_labels() -> tuple[str, ...]:
    """Usage count fields without a label here (a test keeps this empty)."""
    return tuple(kind for kind in USAGE_COUNT_FIELDS if kind not in TOKEN_LABELS)
