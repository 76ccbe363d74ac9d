"""``opentelemetry-instrument`` support for the ``ollama`` package.

Registered under the ``opentelemetry_instrumentor`` entry point (``llmmeter_ollama``), so
``opentelemetry-instrument python app.py`` measures every ``ollama`` client of the app, and
``ollama.chat(...)``, with no code change. Measuring itself needs nothing beyond the table in
:mod:`llmmeter.providers.ollama`: this module is only the instrumentor.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from llmmeter import instrument_ollama, uninstrument_ollama
from llmmeter.config import configure
from llmmeter.instrument.auto import _CONFIGURE_KEYS

__all__ = ["OllamaInstrumentor"]


class OllamaInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Measure every ``ollama`` client of the process with llmmeter (``instrument()`` keys as
    :class:`~llmmeter.instrument.auto.OpenAIInstrumentor`'s)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("ollama >= 0.4",)

    def _instrument(self, **kwargs: Any) -> None:
        options = {key: value for key, value in kwargs.items() if key in _CONFIGURE_KEYS}
        if options:
            configure(**options)
        instrument_ollama()

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstrument_ollama()
