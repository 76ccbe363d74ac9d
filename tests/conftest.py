"""Shared fixtures: an in-memory OTel pipeline and a collecting llmmeter configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmmeter
from llmmeter.record import CallRecord

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.exists():  # CI: ../shared beside the clone
    SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CASSETTES = SHARED / "cassettes"

# llmmeter's own errors must fail the tests, never hide behind "logged once".
os.environ.setdefault("LLMMETER_STRICT", "1")


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever writes to the user's real store."""
    monkeypatch.setenv("LLMMETER_STORE", str(tmp_path / "default-store.sqlite3"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")


@dataclass
class Telemetry:
    """What one test's instrumented calls produced."""

    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    records: list[CallRecord] = field(default_factory=list)
    settings: llmmeter.Settings | None = None
    configure_kwargs: dict[str, object] = field(default_factory=dict)

    def reconfigure(self, **overrides: object) -> llmmeter.Settings:
        """Configure llmmeter again with the same in-memory providers, plus ``overrides``."""
        self.settings = llmmeter.configure(**{**self.configure_kwargs, **overrides})  # type: ignore[arg-type]
        return self.settings

    def finished_spans(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metric_points(self, name: str) -> list[object]:
        data = self.reader.get_metrics_data()
        points: list[object] = []
        if data is None:
            return points
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def metric(self, name: str) -> object | None:
        data = self.reader.get_metrics_data()
        if data is None:
            return None
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        return metric
        return None


@pytest.fixture
def telemetry(tmp_path: Path) -> Iterator[Telemetry]:
    """llmmeter configured with in-memory span/metric readers and a record collector."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    result = Telemetry(spans=exporter, reader=reader)
    result.configure_kwargs = {
        "store": tmp_path / "records.sqlite3",
        "on_record": result.records.append,
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
    }
    result.reconfigure()
    yield result
    llmmeter.flush()
    llmmeter.configure(store=None, pricing=None)
    meter_provider.shutdown()
    tracer_provider.shutdown()
