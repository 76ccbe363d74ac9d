"""OTLP on the wire: ``configure(otlp_endpoint=...)`` exports llmmeter's spans and metrics with the
standard OTLP exporters, and what arrives at a receiver on 127.0.0.1 is decoded and checked.

The receivers here are real OTLP endpoints: an HTTP one (stdlib ``http.server``, ``POST
/v1/traces`` and ``/v1/metrics``, protobuf bodies decoded with ``opentelemetry-proto``) and a gRPC
one (``grpcio`` with the ``opentelemetry-proto`` service definitions). Traffic goes through the
real ``openai`` client against the paced local server.
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import llmmeter
from llmmeter import semconv as sc
from llmmeter.record import CallRecord
from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

QUESTION = [{"role": "user", "content": "Summarize the quarterly cost report in two sentences."}]


# --- OTLP receivers ------------------------------------------------------------------------------
@dataclass
class Received:
    """What an OTLP receiver was sent."""

    traces: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def spans(self) -> list[tuple[dict[str, Any], str, Span]]:
        """``(resource attributes, scope name, span)`` of every span received."""
        return [
            (attributes(rs.resource.attributes), ss.scope.name, span)
            for request in self.traces
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def last_metrics(self) -> dict[str, tuple[dict[str, Any], str, Metric]]:
        """By name: ``(resource attributes, scope name, metric)`` from the latest export
        (cumulative temporality: the latest export holds every point so far)."""
        latest: dict[str, tuple[dict[str, Any], str, Metric]] = {}
        for request in self.metrics:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        latest[metric.name] = (attributes(rm.resource.attributes), sm.scope.name, metric)
        return latest


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


class OtlpHttpReceiver:
    """``POST /v1/traces`` and ``/v1/metrics`` on 127.0.0.1, OTLP/HTTP with protobuf bodies."""

    def __init__(self) -> None:
        self.received = Received()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers["Content-Type"] == "application/x-protobuf"
                received.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path == "/v1/traces":
                    received.traces.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    received.metrics.append(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
                    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OtlpGrpcReceiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """The OTLP gRPC trace and metrics services on 127.0.0.1 (no TLS)."""

    def __init__(self) -> None:
        self.received = Received()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{port}"
        self.server.start()

    def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.received.traces.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()
        self.received.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def close(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    server = OtlpHttpReceiver()
    yield server
    server.close()


@pytest.fixture
def records() -> Iterator[list[CallRecord]]:
    """Collects the records of calls; resets llmmeter (closing its exporters) afterwards."""
    collected: list[CallRecord] = []
    yield collected
    llmmeter.configure(store=None, pricing=None)


def drive_traffic() -> None:
    """A streamed and a non-streamed call for team ``search`` through the real openai client."""
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=120, itl_ms=20, tokens=6)) as server:
        client = llmmeter.instrument(
            openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0), provider="openai"
        )
        with llmmeter.attributes(team="search", user_id="u-17"):
            for _ in client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True):
                pass
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=QUESTION,
                extra_headers=pacing_headers(tokens=12, cached_tokens=4),
            )


@pytest.fixture
def exported(receiver: OtlpHttpReceiver, records: list[CallRecord]) -> Received:
    """The traffic's spans and metrics, exported over OTLP/HTTP and flushed."""
    llmmeter.configure(
        store=None,
        on_record=records.append,
        otlp_endpoint=receiver.url,
        otlp_protocol="http/protobuf",
        service_name="checkout-api",
    )
    drive_traffic()
    assert llmmeter.flush()
    return receiver.received


# --- spans ---------------------------------------------------------------------------------------
def test_spans_arrive_over_otlp_http_with_the_records_attributes(
    exported: Received, records: list[CallRecord]
) -> None:
    received = exported.spans()
    assert len(received) == len(records) == 2
    by_trace = {span.trace_id.hex(): (resource, scope, span) for resource, scope, span in received}

    for record in records:
        resource, scope, span = by_trace[record.trace_id or ""]
        assert resource["service.name"] == "checkout-api"
        assert scope == "llmmeter"
        assert span.name == "chat gpt-4o-mini" and span.kind == Span.SpanKind.SPAN_KIND_CLIENT
        assert span.span_id.hex() == record.span_id
        got = attributes(span.attributes)
        assert record.usage is not None and record.cost is not None
        assert got[sc.OPERATION_NAME] == "chat" and got[sc.PROVIDER_NAME] == "openai"
        assert got[sc.REQUEST_MODEL] == "gpt-4o-mini" and got[sc.RESPONSE_MODEL] == record.response_model
        assert got[sc.USAGE_INPUT_TOKENS] == record.usage.input_tokens
        assert got[sc.USAGE_OUTPUT_TOKENS] == record.usage.output_tokens
        assert got[sc.COST_AMOUNT] == float(record.cost.amount) and got[sc.COST_CURRENCY] == "USD"
        assert got["team"] == "search" and got["user_id"] == "u-17"
        assert (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9 == pytest.approx(
            record.timings.duration_s, abs=1e-6
        )
    streamed = next(r for r in records if r.streaming)
    streamed_span = attributes(by_trace[streamed.trace_id or ""][2].attributes)
    assert streamed_span[sc.TTFT] == streamed.timings.ttft_s and streamed.timings.ttft_s is not None
    assert streamed.timings.ttft_s >= 0.120
    assert streamed_span[sc.REQUEST_STREAM] is True


# --- metrics -------------------------------------------------------------------------------------
def test_metric_names_units_and_bucket_boundaries_arrive_as_in_semconv(exported: Received) -> None:
    metrics_by_name = exported.last_metrics()

    expected = {spec.name: spec for key, spec in sc.METRICS.items() if key != "time_per_output_chunk"}
    expected.pop(sc.METRICS["unpriced_tokens"].name)  # every call here was priced
    assert set(metrics_by_name) == set(expected)
    for name, spec in expected.items():
        resource, scope, metric = metrics_by_name[name]
        assert resource["service.name"] == "checkout-api" and scope == "llmmeter"
        assert metric.unit == spec.unit and metric.description == spec.description
        if spec.instrument == "histogram":
            assert metric.WhichOneof("data") == "histogram"
            assert (
                metric.histogram.aggregation_temporality
                == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
            )
            for point in metric.histogram.data_points:
                assert tuple(point.explicit_bounds) == spec.buckets
                assert len(point.bucket_counts) == len(spec.buckets) + 1
        else:
            assert metric.WhichOneof("data") == "sum" and metric.sum.is_monotonic


def histogram_points(received: Received, key: str) -> list[Any]:
    return list(received.last_metrics()[sc.METRICS[key].name][2].histogram.data_points)


def test_metric_points_carry_low_cardinality_attributes_and_the_records_values(
    exported: Received, records: list[CallRecord]
) -> None:
    (duration,) = histogram_points(exported, "duration")
    point_attributes = attributes(duration.attributes)
    assert point_attributes["team"] == "search" and "user_id" not in point_attributes  # not a metric key
    assert point_attributes[sc.REQUEST_MODEL] == "gpt-4o-mini"
    assert duration.count == 2
    assert duration.sum == pytest.approx(sum(r.timings.duration_s or 0 for r in records))

    (ttft,) = histogram_points(exported, "time_to_first_token")
    streamed = next(r for r in records if r.streaming)
    assert ttft.count == 1 and ttft.sum == pytest.approx(streamed.timings.ttft_s)
    # The one TTFT (>= 120 ms paced) sits in the (0.1, 0.25] bucket.
    assert list(ttft.bucket_counts) == [0] * 8 + [1] + [0] * 8

    by_type = {attributes(p.attributes)[sc.TOKEN_TYPE]: p for p in histogram_points(exported, "token_usage")}
    assert by_type["input"].sum == sum(r.usage.input_tokens or 0 for r in records if r.usage)
    assert by_type["output"].sum == 6 + 12

    (cost,) = histogram_points(exported, "cost")
    assert attributes(cost.attributes)[sc.COST_CURRENCY] == "USD"
    assert cost.sum == pytest.approx(float(sum(r.cost.amount for r in records if r.cost)))


def test_histogram_exemplars_point_at_the_exported_spans(exported: Received) -> None:
    span_ids = {(span.trace_id, span.span_id) for _, _, span in exported.spans()}
    (duration,) = histogram_points(exported, "duration")

    assert duration.exemplars, "the SDK's trace-based exemplar filter samples measurements made in a span"
    for exemplar in duration.exemplars:
        assert (exemplar.trace_id, exemplar.span_id) in span_ids
        assert exemplar.as_double > 0


# --- the standard environment variables ----------------------------------------------------------
def test_otlp_endpoint_true_follows_the_standard_otel_environment_variables(
    receiver: OtlpHttpReceiver, records: list[CallRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-worker")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")

    llmmeter.configure(store=None, on_record=records.append, otlp_endpoint=True)
    drive_traffic()
    assert llmmeter.flush()

    received = receiver.received
    assert len(received.spans()) == 2 and received.metrics
    resource, _, _ = received.spans()[0]
    assert resource["service.name"] == "billing-worker"
    assert resource["deployment.environment"] == "staging"
    assert all(h["x-tenant"] == "acme" and h["content-encoding"] == "gzip" for h in received.headers)


def test_otlp_over_grpc_delivers_spans_and_metrics(records: list[CallRecord]) -> None:
    grpc_receiver = OtlpGrpcReceiver()
    try:
        llmmeter.configure(
            store=None,
            on_record=records.append,
            otlp_endpoint=grpc_receiver.url,
            otlp_protocol="grpc",
            service_name="checkout-api",
        )
        drive_traffic()
        assert llmmeter.flush()
    finally:
        llmmeter.configure(store=None, pricing=None)
        grpc_receiver.close()

    received = grpc_receiver.received
    assert {span.trace_id.hex() for _, _, span in received.spans()} == {r.trace_id for r in records}
    (duration,) = histogram_points(received, "duration")
    assert tuple(duration.explicit_bounds) == sc.DURATION_BUCKETS and duration.count == 2


def test_the_protocol_comes_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch, records: list[CallRecord]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    grpc_receiver = OtlpGrpcReceiver()
    try:
        llmmeter.configure(store=None, on_record=records.append, otlp_endpoint=grpc_receiver.url)
        drive_traffic()
        assert llmmeter.flush()
    finally:
        llmmeter.configure(store=None, pricing=None)
        grpc_receiver.close()

    assert len(grpc_receiver.received.spans()) == 2


def test_an_unknown_protocol_is_refused_at_configure_time() -> None:
    with pytest.raises(ValueError, match="'http/json' is not supported"):
        llmmeter.configure(store=None, otlp_endpoint="http://127.0.0.1:4318", otlp_protocol="http/json")  # type: ignore[arg-type]


# --- the application's providers win -------------------------------------------------------------
def test_llmmeter_never_installs_global_providers(exported: Received) -> None:
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    assert type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
    settings = llmmeter.get_settings()
    assert settings.exporters is not None and settings.exporters.tracer_provider is not None


def test_passed_providers_win_over_the_endpoint_options(
    receiver: OtlpHttpReceiver, records: list[CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    mine = TracerProvider()
    with caplog.at_level(logging.INFO, logger="llmmeter"):
        settings = llmmeter.configure(store=None, tracer_provider=mine, otlp_endpoint=receiver.url)

    assert settings.exporters is not None
    assert settings.exporters.tracer_provider is None  # the passed one is used
    assert settings.exporters.meter_provider is not None  # metrics still go over OTLP
    assert "a tracer provider was passed to llmmeter.configure()" in caplog.text
    mine.shutdown()


APPLICATION_PROVIDERS_SCRIPT = """
import logging, sys
import openai
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmmeter
from llmmeter.testing import LocalOpenAIServer

logging.basicConfig(stream=sys.stderr, level=logging.INFO)
spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
metrics.set_meter_provider(meter_provider)

settings = llmmeter.configure(store=None, otlp_endpoint=sys.argv[1], prometheus_port=0)
with LocalOpenAIServer() as server:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="local"), provider="openai")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
llmmeter.flush()
assert trace.get_tracer_provider() is tracer_provider and metrics.get_meter_provider() is meter_provider
assert settings.exporters.tracer_provider is None and settings.exporters.meter_provider is None
assert settings.exporters.prometheus_url is None
data = reader.get_metrics_data()
names = sorted(m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
print([s.name for s in spans.get_finished_spans()], "gen_ai.client.operation.duration" in names)
"""


def test_with_application_providers_installed_llmmeter_uses_them_and_says_the_endpoint_is_ignored(
    receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    # A fresh interpreter: OTel's global providers can be set only once per process.
    script = tmp_path / "app_with_providers.py"
    script.write_text(APPLICATION_PROVIDERS_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), receiver.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LLMMETER_STRICT": "1"},
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['chat gpt-4o-mini'] True"
    assert "the application has installed its own global tracer provider" in done.stderr
    assert "the application has installed its own global meter provider" in done.stderr
    assert "otlp_endpoint/prometheus_port options are ignored" in done.stderr
    assert receiver.received.traces == [] and receiver.received.metrics == []


def test_a_missing_exporter_package_is_logged_and_calls_still_work(
    monkeypatch: pytest.MonkeyPatch, records: list[CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("LLMMETER_STRICT")
    for module in (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    ):
        monkeypatch.setitem(sys.modules, module, None)  # "not installed"

    settings = llmmeter.configure(store=None, on_record=records.append, otlp_endpoint="http://127.0.0.1:9")
    drive_traffic()

    assert settings.exporters is not None and settings.exporters.tracer_provider is None
    assert "install llmmeter[otlp]" in caplog.text
    llmmeter.flush()  # callbacks run on llmmeter's pipeline thread
    assert len(records) == 2 and all(r.cost is not None for r in records)


# --- a dead endpoint: flush and exit stay bounded ---------------------------------------------------
DEAD_ENDPOINT_SCRIPT = """
import sys, time
import llmmeter

endpoint, protocol, flush_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
llmmeter.configure(store=None, otlp_endpoint=endpoint, otlp_protocol=protocol)

@llmmeter.metered(model="gpt-4o-mini", provider="openai")
def chat():
    return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

chat()
started = time.monotonic()
flushed = llmmeter.flush(timeout=flush_timeout)
print(flushed, time.monotonic() - started, flush=True)
chat()  # a span still queued for the dead endpoint at exit
print("exiting", flush=True)
"""


@dataclass
class DeadEndpointRun:
    flushed: bool
    flush_seconds: float
    exit_seconds: float
    stderr: str


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A TCP listener that accepts connections (the kernel completes the handshake) and never
    answers: a collector behind a firewall that drops, or a hung one."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture
def refusing() -> str:
    """An address where nothing listens: every connection is refused."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


def run_against_dead_endpoint(
    tmp_path: Path, endpoint: str, protocol: str, flush_timeout: float, exit_timeout: str | None = None
) -> DeadEndpointRun:
    """Run the script in a fresh interpreter; the exit is timed from its last line to its end."""
    script = tmp_path / "dead_endpoint.py"
    script.write_text(DEAD_ENDPOINT_SCRIPT)
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.pop("LLMMETER_EXIT_TIMEOUT", None)  # the default bound unless one is given
    if exit_timeout is not None:
        env["LLMMETER_EXIT_TIMEOUT"] = exit_timeout
    process = subprocess.Popen(
        [sys.executable, str(script), endpoint, protocol, str(flush_timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    flushed, flush_seconds = process.stdout.readline().split()
    assert process.stdout.readline().strip() == "exiting"
    exit_started = time.monotonic()
    process.wait(timeout=60)
    exit_seconds = time.monotonic() - exit_started
    stderr = process.stderr.read()
    assert process.returncode == 0, stderr
    return DeadEndpointRun(flushed == "True", float(flush_seconds), exit_seconds, stderr)


# The exporters' own timeout is 10 s per attempt, with retries: unbounded, flush took 19-28 s and
# exit 7-10 s more (issue 12). The margins below cover interpreter teardown on a loaded machine.
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_flush_and_exit_stay_bounded_when_the_otlp_endpoint_never_answers(
    tmp_path: Path, blackhole: str, protocol: str
) -> None:
    run = run_against_dead_endpoint(tmp_path, blackhole, protocol, flush_timeout=1.0)

    assert run.flushed is False  # nothing was exported, and flush says so
    assert run.flush_seconds < 1.0 + 0.5
    assert run.exit_seconds < 2.0 + 2.0  # default exit_timeout 2 s, plus teardown
    assert "exit_timeout" in run.stderr


def test_flush_returns_false_in_time_when_the_otlp_endpoint_refuses(tmp_path: Path, refusing: str) -> None:
    run = run_against_dead_endpoint(tmp_path, refusing, "http/protobuf", flush_timeout=1.0)

    assert run.flushed is False
    assert run.flush_seconds < 1.0 + 0.5
    assert run.exit_seconds < 2.0 + 2.0


def test_the_exit_bound_is_configurable_with_llmmeter_exit_timeout(tmp_path: Path, blackhole: str) -> None:
    run = run_against_dead_endpoint(
        tmp_path, blackhole, "http/protobuf", flush_timeout=0.2, exit_timeout="0.3"
    )

    assert run.flushed is False
    assert run.exit_seconds < 0.3 + 2.0
    assert "within 0.3 s" in run.stderr


def test_flush_returns_true_once_the_receiver_has_everything(
    receiver: OtlpHttpReceiver, records: list[CallRecord]
) -> None:
    llmmeter.configure(store=None, otlp_endpoint=receiver.url, otlp_protocol="http/protobuf")
    drive_traffic()

    assert llmmeter.flush(timeout=5) is True
    assert (
        len(
            [
                s
                for r in receiver.received.traces
                for rs in r.resource_spans
                for ss in rs.scope_spans
                for s in ss.spans
            ]
        )
        == 2
    )
