"""Test helpers that ship with llmmeter: a local, paced, OpenAI-compatible server.

Used by the offline demo (no network, no API key), by TTFT/TPOT accuracy tests and by benchmarks.
"""

from llmmeter.testing.server import (
    PACING_HEADER,
    Flavor,
    LocalOpenAIServer,
    Pacing,
    RecordedRequest,
    pacing_headers,
)

__all__ = [
    "PACING_HEADER",
    "Flavor",
    "LocalOpenAIServer",
    "Pacing",
    "RecordedRequest",
    "pacing_headers",
]
