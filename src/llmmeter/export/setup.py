"""Providers llmmeter builds for its own telemetry when the application has none.

``llmmeter.configure(otlp_endpoint=..., prometheus_port=...)`` asks for llmmeter's spans and
metrics to leave the process over OTLP and/or be served on a Prometheus scrape endpoint. The rule:

* the application's providers win. When the application installed global SDK providers (itself,
  or through ``opentelemetry-instrument``), or passed ``tracer_provider`` / ``meter_provider`` to
  :func:`llmmeter.configure`, llmmeter uses those for that signal and logs that the endpoint
  options are ignored for it: exporting is then the application's business;
* otherwise llmmeter builds a private SDK ``TracerProvider`` / ``MeterProvider`` with the standard
  exporters (``opentelemetry-exporter-otlp-proto-http`` / ``-grpc``,
  ``opentelemetry-exporter-prometheus``) and uses them for **its own telemetry only**. It never
  sets a global provider, so the application's other instrumentation is untouched.

The OTLP exporters read the standard ``OTEL_EXPORTER_OTLP_*`` variables themselves (endpoint,
headers, timeout, compression, certificates, metrics temporality), and the resource honours
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``; arguments given to
:func:`llmmeter.configure` take precedence over the variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.metrics._internal import _ProxyMeterProvider

from llmmeter._log import log_once, logger, strict_mode

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "OTLP_PROTOCOLS",
    "ExportOptions",
    "OtlpProtocol",
    "TelemetrySetup",
    "application_has_meter_provider",
    "application_has_tracer_provider",
    "build_telemetry",
    "resolve_otlp_protocol",
]

OtlpProtocol = Literal["http/protobuf", "grpc"]
OTLP_PROTOCOLS: Final[tuple[OtlpProtocol, ...]] = ("http/protobuf", "grpc")
DEFAULT_PROMETHEUS_HOST: Final = "127.0.0.1"
_HTTP_SIGNAL_PATHS: Final = {"traces": "v1/traces", "metrics": "v1/metrics"}
_EXTRA_HINT: Final = {"otlp": "llmmeter[otlp]", "prometheus": "llmmeter[prometheus]"}
_T = TypeVar("_T")
_PROVIDER_NAMES: Final = {"traces": "tracer provider", "metrics": "meter provider"}


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """Where llmmeter's own telemetry should go when the application has no providers."""

    otlp_endpoint: str | bool | None = None
    """A base URL (``http://collector:4318``; gRPC: ``http://collector:4317``), ``True`` for
    wherever ``OTEL_EXPORTER_OTLP_*`` says (the exporters' defaults otherwise), ``None``: no OTLP."""
    otlp_protocol: OtlpProtocol | None = None
    """``http/protobuf`` or ``grpc``; default ``$OTEL_EXPORTER_OTLP_PROTOCOL``, else http/protobuf."""
    prometheus_port: int | None = None
    """Serve metrics for scraping on this port (``0``: any free port); ``None``: no endpoint."""
    prometheus_host: str = DEFAULT_PROMETHEUS_HOST
    service_name: str | None = None
    """``service.name`` of llmmeter's resource; default ``$OTEL_SERVICE_NAME``."""

    @property
    def wants_otlp(self) -> bool:
        """OTLP export was asked for."""
        return self.otlp_endpoint is not None and self.otlp_endpoint is not False

    @property
    def wants_prometheus(self) -> bool:
        """A scrape endpoint was asked for."""
        return self.prometheus_port is not None

    @property
    def requested(self) -> bool:
        """Any export at all was asked for."""
        return self.wants_otlp or self.wants_prometheus


@dataclass(slots=True)
class TelemetrySetup:
    """The providers llmmeter built for itself (``None`` where the application's are used)."""

    options: ExportOptions
    providers_given: tuple[bool, bool] = (False, False)
    """Whether a tracer / meter provider was passed to ``configure()`` when this was built."""
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    prometheus_server: WSGIServer | None = None
    otlp_metric_reader: MetricReader | None = None
    health: ExportHealth = field(default_factory=lambda: ExportHealth())
    """Failed exports so far (a refused or silent endpoint)."""
    _closed: bool = field(default=False, repr=False)

    @property
    def prometheus_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the scrape endpoint (the real port when ``0`` was asked for)."""
        if self.prometheus_server is None:
            return None
        host, port = self.prometheus_server.server_address[:2]
        return str(host), int(port)

    @property
    def prometheus_url(self) -> str | None:
        """``http://host:port/metrics`` of the scrape endpoint, if llmmeter serves one."""
        address = self.prometheus_address
        return None if address is None else f"http://{address[0]}:{address[1]}/metrics"

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export every finished span and the current metric points now.

        ``False`` when an export failed since the previous flush (the endpoint refused, or did
        not answer within the exporter's own timeout). May take longer than ``timeout`` when an
        exporter is stuck: :func:`llmmeter.flush` bounds it on a helper thread.
        """
        millis = int(timeout * 1000)
        ok = True
        if self.tracer_provider is not None:
            ok = self.tracer_provider.force_flush(millis) and ok
        # Only the OTLP reader: flushing the Prometheus (pull) reader queues an extra collection
        # that the next scrape would serve twice.
        if self.otlp_metric_reader is not None:
            ok = self.otlp_metric_reader.force_flush(millis) and ok
        return self.health.no_new_failures() and ok

    def shutdown(self) -> None:
        """Flush, stop the exporters and close the scrape endpoint (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self.prometheus_server is not None:
            self.prometheus_server.shutdown()
            self.prometheus_server.server_close()

    # --- as a pipeline sink (llmmeter.pipeline.Sink): spans and points reach these providers
    # through OtelTelemetry; the sink's part is flushing and closing them.
    def accept(self, record: object) -> None:
        """Nothing per record: the record's span and points are already in these providers."""

    def flush(self, timeout: float) -> bool:
        """:meth:`force_flush`."""
        return self.force_flush(timeout)

    def close(self, timeout: float) -> bool:
        """:meth:`shutdown` (a dead endpoint holds only the helper thread that runs it)."""
        self.shutdown()
        return self.health.no_new_failures()


class ExportHealth:
    """Counts failed exports, so that a flush can say whether everything left the process."""

    __slots__ = ("_failures", "_seen")

    def __init__(self) -> None:
        self._failures = 0
        self._seen = 0

    def failed(self) -> None:
        """One export failed."""
        self._failures += 1

    def no_new_failures(self) -> bool:
        """True when no export failed since the previous call."""
        failures = self._failures
        new = failures != self._seen
        self._seen = failures
        return not new

    @property
    def failures(self) -> int:
        """Failed exports so far."""
        return self._failures


def application_has_tracer_provider() -> bool:
    """Has the application installed a real global TracerProvider (not the API's proxy/no-op)?"""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def application_has_meter_provider() -> bool:
    """Has the application installed a real global MeterProvider (not the API's proxy/no-op)?"""
    provider = metrics.get_meter_provider()
    return not isinstance(provider, _ProxyMeterProvider | NoOpMeterProvider)


def resolve_otlp_protocol(protocol: str | None, signal: str) -> OtlpProtocol:
    """The protocol argument, else ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`` / ``..._PROTOCOL``."""
    chosen = (
        protocol
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    for known in OTLP_PROTOCOLS:
        if chosen == known:
            return known
    raise ValueError(
        f"llmmeter: OTLP protocol {chosen!r} is not supported; use one of {', '.join(OTLP_PROTOCOLS)}"
    )


def build_telemetry(
    options: ExportOptions,
    *,
    tracer_provider_given: bool = False,
    meter_provider_given: bool = False,
) -> TelemetrySetup | None:
    """Build llmmeter's private providers for ``options``; ``None`` when nothing is to be built.

    A signal whose provider was passed to ``configure()`` (``*_given``) or installed globally by
    the application is left alone, with one log line saying the endpoint options are ignored.
    A missing exporter package or a port already in use is logged once and that exporter is
    skipped (under ``LLMMETER_STRICT=1`` it raises), so a deployment never fails to start over it.
    """
    if not options.requested:
        return None
    if options.wants_otlp:
        for signal in ("traces", "metrics"):
            resolve_otlp_protocol(options.otlp_protocol, signal)  # a bad value is a caller's bug
    setup = TelemetrySetup(options=options, providers_given=(tracer_provider_given, meter_provider_given))
    resource = _resource(options.service_name)
    app_tracer = application_has_tracer_provider
    if options.wants_otlp and _ours_to_build("traces", tracer_provider_given, app_tracer):
        setup.tracer_provider = _attempt(
            "otlp", lambda: _otlp_tracer_provider(options, resource, setup.health)
        )
    wants_metrics = options.wants_otlp or options.wants_prometheus
    if wants_metrics and _ours_to_build("metrics", meter_provider_given, application_has_meter_provider):
        setup.meter_provider = _meter_provider(options, resource, setup)
    return setup


def _ours_to_build(signal: str, given: bool, application_has: Callable[[], bool]) -> bool:
    provider = _PROVIDER_NAMES[signal]
    if given:
        reason = f"a {provider} was passed to llmmeter.configure()"
    elif application_has():
        reason = f"the application has installed its own global {provider}"
    else:
        return True
    log_once(
        f"setup:ignored:{signal}",
        "llmmeter: %s; llmmeter's %s go there and the otlp_endpoint/prometheus_port options are "
        "ignored for them (configure the exporters on that provider)",
        reason,
        signal,
    )
    return False


def _attempt(extra: str, build: Callable[[], _T]) -> _T | None:
    """Run ``build``; a missing package or an OS error (port in use) is logged, not raised."""
    try:
        return build()
    except ImportError as exc:
        if strict_mode():
            raise
        log_once(
            f"setup:import:{extra}",
            "llmmeter: cannot export (%s): install %s; continuing without this exporter",
            exc,
            _EXTRA_HINT[extra],
        )
    except OSError as exc:
        if strict_mode():
            raise
        log_once(f"setup:os:{extra}", "llmmeter: cannot start the %s exporter: %s", extra, exc)
    return None


def _resource(service_name: str | None) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    # Resource.create() merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME into the defaults.
    return Resource.create({SERVICE_NAME: service_name} if service_name else {})


def _signal_endpoint(options: ExportOptions, protocol: OtlpProtocol, signal: str) -> str | None:
    """The exporter's ``endpoint`` argument; ``None`` lets it read ``OTEL_EXPORTER_OTLP_*``."""
    base = options.otlp_endpoint
    if not isinstance(base, str):
        return None
    if protocol == "grpc":
        return base
    # Like OTEL_EXPORTER_OTLP_ENDPOINT, the option is a base URL: each signal has its own path.
    return f"{base.rstrip('/')}/{_HTTP_SIGNAL_PATHS[signal]}"


def _otlp_tracer_provider(options: ExportOptions, resource: Resource, health: ExportHealth) -> TracerProvider:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = resolve_otlp_protocol(options.otlp_protocol, "traces")
    endpoint = _signal_endpoint(options, protocol, "traces")
    exporter: SpanExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        exporter = GrpcSpans(endpoint=endpoint)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

        exporter = HttpSpans(endpoint=endpoint)
    # No atexit hook of the SDK's own: llmmeter's exit hook shuts the provider down within
    # exit_timeout, where the SDK's would wait on a dead endpoint for its full retry time.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(_tracked_span_exporter(exporter, health)))
    return provider


def _meter_provider(
    options: ExportOptions, resource: Resource, setup: TelemetrySetup
) -> MeterProvider | None:
    from opentelemetry.sdk.metrics import MeterProvider

    readers: list[MetricReader] = []
    if options.wants_otlp:
        reader = _attempt("otlp", lambda: _otlp_metric_reader(options, setup.health))
        if reader is not None:
            readers.append(reader)
            setup.otlp_metric_reader = reader
    if options.wants_prometheus:
        served = _attempt("prometheus", lambda: _prometheus_reader(options))
        if served is not None:
            readers.append(served[0])
            setup.prometheus_server = served[1]
    if not readers:
        return None
    return MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)


def _otlp_metric_reader(options: ExportOptions, health: ExportHealth) -> MetricReader:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    protocol = resolve_otlp_protocol(options.otlp_protocol, "metrics")
    endpoint = _signal_endpoint(options, protocol, "metrics")
    exporter: MetricExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetrics,
        )

        exporter = GrpcMetrics(endpoint=endpoint)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetrics,
        )

        exporter = HttpMetrics(endpoint=endpoint)
    # The export interval honours OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
    return PeriodicExportingMetricReader(_tracked_metric_exporter(exporter, health))


def _prometheus_reader(options: ExportOptions) -> tuple[MetricReader, WSGIServer]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    # A registry of llmmeter's own: the endpoint serves llmmeter's metrics (and target_info) and
    # leaves the application's prometheus_client default registry alone.
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    port = options.prometheus_port if options.prometheus_port is not None else 0
    server, _thread = start_http_server(port, addr=options.prometheus_host, registry=registry)
    host, bound = server.server_address[:2]
    logger.info("llmmeter: serving Prometheus metrics on http://%s:%s/metrics", host, bound)
    return reader, server


def _tracked_span_exporter(exporter: SpanExporter, health: ExportHealth) -> SpanExporter:
    """``exporter``, counting its failed exports in ``health``."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class TrackedSpanExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            result = SpanExportResult.FAILURE
            try:
                result = exporter.export(spans)
            finally:
                if result is not SpanExportResult.SUCCESS:
                    health.failed()
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return TrackedSpanExporter()


def _tracked_metric_exporter(exporter: MetricExporter, health: ExportHealth) -> MetricExporter:
    """``exporter``, counting its failed exports in ``health``."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class TrackedMetricExporter(MetricExporter):
        def export(
            self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            result = MetricExportResult.FAILURE
            try:
                result = exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            finally:
                if result is not MetricExportResult.SUCCESS:
                    health.failed()
            return result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return exporter.force_flush(timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            exporter.shutdown(timeout_millis=timeout_millis, **kwargs)

    return TrackedMetricExporter(
        preferred_temporality=exporter._preferred_temporality,
        preferred_aggregation=exporter._preferred_aggregation,
    )
