"""``opentelemetry-instrument`` support: an OpenTelemetry ``BaseInstrumentor`` for llmmeter.

Registered under the ``opentelemetry_instrumentor`` entry point, so
``opentelemetry-instrument python app.py`` measures every ``openai`` client of the app with no
code change (needs the ``opentelemetry-instrumentation`` package: ``pip install
"llmmeter[instrumentation]"``). ``instrument(tracer_provider=..., meter_provider=...)`` keys are
passed to :func:`llmmeter.configure`; by default llmmeter uses the global providers that
``opentelemetry-instrument`` sets up.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from llmmeter import instrument_openai, uninstrument_openai
from llmmeter.config import configure

_CONFIGURE_KEYS = frozenset(
    {
        "tracer_provider",
        "meter_provider",
        "store",
        "pricing",
        "on_record",
        "metric_attributes",
        "capture_content",
        "stream_usage",
        "stream_usage_hosts",
        "per_chunk_metrics",
    }
)


class OpenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Measure every ``openai`` client of the process with llmmeter."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 1.40",)

    def _instrument(self, **kwargs: Any) -> None:
        options = {key: value for key, value in kwargs.items() if key in _CONFIGURE_KEYS}
        if options:
            configure(**options)
        instrument_openai()

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstrument_openai()
