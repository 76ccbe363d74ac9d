"""Shared fixtures: an in-memory OTel pipeline and a collecting llmmeter configuration."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _is_loopback(address: object) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths, abstract sockets
        return True
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """The suite never talks to anything but this machine: a non-loopback connect fails loudly."""
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded(method: Any) -> Any:
        def connect(self: socket.socket, address: Any) -> Any:
            if not _is_loopback(address):
                raise OSError(f"llmmeter's tests may only reach loopback addresses, not {address!r}")
            return method(self, address)

        return connect

    socket.socket.connect = guarded(original_connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded(original_connect_ex)  # type: ignore[method-assign]
    yield
    socket.socket.connect, socket.socket.connect_ex = original_connect, original_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever writes to the user's real store."""
    monkeypatch.setenv("LLMMETER_STORE", str(tmp_path / "default-store.sqlite3"))
    # The fleet store's spool and feedback outbox default under $XDG_DATA_HOME (else ~/.local/share).
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")


@dataclass
class Telemetry:
    """What one test's instrumented calls produced.

    Spans end, metric points are recorded and callbacks run on llmmeter's pipeline thread, after
    the call returned: every reader here calls ``llmmeter.flush()`` first, as a user's test would.
    """

    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    collected: list[CallRecord] = field(default_factory=list)
    settings: llmmeter.Settings | None = None
    configure_kwargs: dict[str, object] = field(default_factory=dict)

    @property
    def records(self) -> list[CallRecord]:
        """The records handed to ``on_record`` so far (after delivering everything pending)."""
        assert llmmeter.flush(), "llmmeter.flush() did not deliver everything"
        return self.collected

    def reconfigure(self, **overrides: object) -> llmmeter.Settings:
        """Configure llmmeter again with the same in-memory providers, plus ``overrides``."""
        self.settings = llmmeter.configure(**{**self.configure_kwargs, **overrides})  # type: ignore[arg-type]
        return self.settings

    def finished_spans(self) -> list[ReadableSpan]:
        llmmeter.flush()
        return list(self.spans.get_finished_spans())

    def metric_points(self, name: str) -> list[object]:
        llmmeter.flush()
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
        llmmeter.flush()
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
        "on_record": result.collected.append,
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
    }
    result.reconfigure()
    yield result
    llmmeter.flush()
    llmmeter.configure(store=None, pricing=None)
    meter_provider.shutdown()
    tracer_provider.shutdown()
