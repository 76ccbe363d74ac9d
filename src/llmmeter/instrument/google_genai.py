"""``opentelemetry-instrument`` support for the ``google-genai`` package.

Registered under the ``opentelemetry_instrumentor`` entry point (``llmmeter_google_genai``), so
``opentelemetry-instrument python app.py`` measures every ``genai.Client`` of the app (and its
``client.aio``) with no code change. Measuring itself needs nothing beyond the table in
:mod:`llmmeter.providers.gemini`: this module is only the instrumentor.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from llmmeter import instrument_google_genai, uninstrument_google_genai
from llmmeter.config import configure
from llmmeter.instrument.auto import _CONFIGURE_KEYS

__all__ = ["GoogleGenAIInstrumentor"]


class GoogleGenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Measure every ``google-genai`` client of the process with llmmeter (``instrument()`` keys as
    :class:`~llmmeter.instrument.auto.OpenAIInstrumentor`'s)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("google-genai >= 1.0",)

    def _instrument(self, **kwargs: Any) -> None:
        options = {key: value for key, value in kwargs.items() if key in _CONFIGURE_KEYS}
        if options:
            configure(**options)
        instrument_google_genai()

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstrument_google_genai()
