"""``llmmeter.configure()``: where records go, how they are priced, what goes on metrics.

Configuration is optional: the first measured call configures llmmeter with the defaults
(local SQLite store, bundled prices, the application's global OTel providers). Calling
:func:`configure` again replaces the settings; the previous store is flushed and closed.

With ``otlp_endpoint`` / ``prometheus_port``, llmmeter exports its own telemetry when the
application has no OTel providers of its own (see :mod:`llmmeter.export.setup`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import metrics, trace

from llmmeter import pipeline
from llmmeter._log import guard, log_once
from llmmeter.export.setup import DEFAULT_PROMETHEUS_HOST, ExportOptions, OtlpProtocol, TelemetrySetup
from llmmeter.pipeline import DurableSink, PipelineStats, RecordCallback, Sink, inline

if TYPE_CHECKING:
    from llmmeter.budgets import Budget, BudgetBook, BudgetHandler
    from llmmeter.export.otel import OtelTelemetry
    from llmmeter.pricing import PricingRegistry
    from llmmeter.store import SQLiteStore


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final[Any] = _Default()
"""Marker for "use the default" (distinct from ``None``, which switches a stage off)."""

DEFAULT_METRIC_ATTRIBUTES: Final = ("team", "feature")


@dataclass(slots=True)
class Settings:
    """The settings in force. Read with :func:`get_settings`; change with :func:`configure`."""

    telemetry: OtelTelemetry
    store: SQLiteStore | None = None
    pricing: PricingRegistry | None = None
    callbacks: tuple[RecordCallback, ...] = ()
    """Every ``on_record`` callback, in the order given (inline ones included)."""
    capture_content: bool = False
    stream_usage: bool = True
    """May llmmeter add ``stream_options.include_usage`` to chat and completions streams?"""
    enabled: bool = True
    exporters: TelemetrySetup | None = None
    """Providers llmmeter built for its own telemetry (``otlp_endpoint`` / ``prometheus_port``);
    ``None`` when it uses the application's. ``exporters.prometheus_url`` is the scrape URL."""
    sinks: tuple[Sink, ...] = ()
    """Where finished records go, on the pipeline's thread, in this order: the store, the sinks
    passed to ``configure(sinks=...)``, llmmeter's own exporters, the ``on_record`` callbacks."""
    exit_timeout: float = pipeline.DEFAULT_EXIT_TIMEOUT_S
    """At most this many seconds of interpreter exit are spent delivering records."""
    inline_callbacks: tuple[RecordCallback, ...] = ()
    """The callbacks marked :func:`llmmeter.inline`: run on the caller's thread."""
    durable_sinks: tuple[DurableSink, ...] = ()
    """The sinks with a ``journal``: called on the caller's thread before a record is queued."""
    budgets: BudgetBook | None = None
    """The spend of ``configure(budgets=...)`` (:mod:`llmmeter.budgets`); ``None`` without budgets."""

    @property
    def pipeline_stats(self) -> PipelineStats:
        """What the record pipeline did so far in this process (queued, ran inline, dropped...)."""
        return pipeline.get_pipeline().stats.snapshot()


_settings: Settings | None = None
_lock = threading.Lock()


def configure(
    *,
    store: str | os.PathLike[str] | None = DEFAULT,
    pricing: PricingRegistry | None = DEFAULT,
    on_record: RecordCallback | Sequence[RecordCallback] | None = None,
    metric_attributes: Iterable[str] = DEFAULT_METRIC_ATTRIBUTES,
    capture_content: bool = False,
    stream_usage: bool = True,
    stream_usage_hosts: Iterable[str] | None = None,
    per_chunk_metrics: bool = False,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    enabled: bool = True,
    otlp_endpoint: str | bool | None = None,
    otlp_protocol: OtlpProtocol | None = None,
    prometheus_port: int | None = None,
    prometheus_host: str = DEFAULT_PROMETHEUS_HOST,
    service_name: str | None = None,
    sinks: Sequence[Sink] = (),
    exit_timeout: float | None = None,
    budgets: Sequence[Budget] | None = None,
    on_budget: BudgetHandler | None = None,
) -> Settings:
    """Configure llmmeter. Every argument is optional; ``configure()`` alone gives the defaults.

    Args:
        store: path of the local SQLite store, or a ``postgresql://user:password@host/db`` URL
            for a fleet store shared by many processes and hosts (needs ``llmmeter[postgresql]``;
            records wait in a local spool while the database is away); default
            ``$LLMMETER_STORE`` or ``~/.local/share/llmmeter/records.sqlite3``; ``None`` disables
            the store.
        pricing: a :class:`~llmmeter.PricingRegistry`; default: bundled prices;
            ``None`` disables pricing (cost status ``disabled``).
        on_record: callable(s) handed every finished :class:`~llmmeter.CallRecord`. They run on
            llmmeter's pipeline thread, after the call returned, so a slow callback never slows
            the application; wrap one in :func:`llmmeter.inline` to run it on the caller's thread
            before the call returns (a budget check). Their exceptions are logged, never raised
            into the call. Calls they make are measured but not handed to them again.
        metric_attributes: attribution keys allowed on metrics (others go on spans and the store
            only, keeping metric cardinality bounded). Default ``("team", "feature")``.
        capture_content: record prompts and completions on spans (off by default).
        stream_usage: let llmmeter ask every chat and completions stream for its usage chunk
            (``stream_options.include_usage``), and hide that extra chunk from the caller; a
            server that refuses the field gets the caller's request again, unchanged.
        stream_usage_hosts: no longer needed (every stream is asked); accepted and ignored, with
            a warning, so configurations written for earlier versions keep working.
        per_chunk_metrics: also record ``gen_ai.client.operation.time_per_output_chunk`` (one
            histogram point per streamed chunk; off by default for its hot-path cost).
        tracer_provider, meter_provider: use these instead of the global providers.
        enabled: ``False`` turns measurement off (instrumented calls pass straight through).
        otlp_endpoint: export llmmeter's spans and metrics over OTLP when the application has
            no providers of its own: a base URL (``"http://127.0.0.1:4318"``, like
            ``OTEL_EXPORTER_OTLP_ENDPOINT``), or ``True`` to take the endpoint from the standard
            ``OTEL_EXPORTER_OTLP_*`` variables. Needs ``llmmeter[otlp]``.
        otlp_protocol: ``"http/protobuf"`` or ``"grpc"``; default
            ``$OTEL_EXPORTER_OTLP_PROTOCOL``, else ``"http/protobuf"``.
        prometheus_port: serve llmmeter's metrics for Prometheus to scrape at
            ``http://{prometheus_host}:{port}/metrics`` (``0``: any free port, see
            ``Settings.exporters.prometheus_url``). Needs ``llmmeter[prometheus]``.
        prometheus_host: the address the scrape endpoint binds (default loopback only).
        service_name: ``service.name`` of llmmeter's own resource; default ``$OTEL_SERVICE_NAME``.
        sinks: further :class:`~llmmeter.Sink` objects handed every finished record on the
            pipeline's thread (an exporter of your own: see ``docs/architecture.md``).
        exit_timeout: at most this many seconds of interpreter exit are spent delivering records
            and closing exporters (default ``$LLMMETER_EXIT_TIMEOUT``, else 2 s); a dead OTLP
            endpoint never holds the exit longer.
        budgets: :class:`~llmmeter.Budget` limits acting before the bill: a ``raise`` budget
            refuses calls (:class:`~llmmeter.BudgetExceeded`) once its period's spend reached the
            limit (see :mod:`llmmeter.budgets` for when spend is counted and the overshoot).
        on_budget: called with a :class:`~llmmeter.BudgetEvent` once per budget, key and period
            at 80 % and at 100 % of the limit (default: a logged warning).

    llmmeter never replaces the application's providers: with a global SDK provider installed
    (or one passed here) for a signal, llmmeter uses it and logs that the endpoint options are
    ignored for that signal. The providers it builds serve llmmeter's telemetry only.
    """
    global _settings
    exporters = _exporters(
        ExportOptions(
            otlp_endpoint=otlp_endpoint,
            otlp_protocol=otlp_protocol,
            prometheus_port=prometheus_port,
            prometheus_host=prometheus_host,
            service_name=service_name,
        ),
        providers_given=(tracer_provider is not None, meter_provider is not None),
    )
    from llmmeter.export.otel import OtelTelemetry

    if stream_usage_hosts is not None:
        log_once(
            "config:stream_usage_hosts",
            "llmmeter: configure(stream_usage_hosts=...) is no longer needed and is ignored: every "
            "chat and completions stream is asked for its usage",
        )
    store_object = _make_store(store)
    callbacks = _callbacks(on_record)
    from llmmeter.budgets import budget_book

    book = budget_book(budgets, on_budget, store_object)
    all_sinks = _sinks(store_object, sinks, exporters, callbacks)
    new = Settings(
        telemetry=OtelTelemetry(
            tracer_provider=tracer_provider or (exporters.tracer_provider if exporters else None),
            meter_provider=meter_provider or (exporters.meter_provider if exporters else None),
            metric_attribute_keys=metric_attributes,
            per_chunk_metrics=per_chunk_metrics,
        ),
        store=store_object,
        pricing=_make_pricing(pricing),
        callbacks=callbacks,
        capture_content=capture_content,
        stream_usage=stream_usage,
        enabled=enabled,
        exporters=exporters,
        sinks=all_sinks,
        exit_timeout=pipeline.exit_timeout_from_env() if exit_timeout is None else max(0.0, exit_timeout),
        inline_callbacks=tuple(callback for callback in callbacks if isinstance(callback, inline)),
        durable_sinks=tuple(sink for sink in all_sinks if callable(getattr(sink, "journal", None))),  # type: ignore[misc]
        budgets=book,
    )
    with _lock:
        old, _settings = _settings, new
    pipeline.register_exit(lambda: _settings)
    if old is not None:
        _retire(old, new)
    return new


def _retire(old: Settings, new: Settings) -> None:
    """Deliver what the previous settings' pipeline still holds, then close their sinks that the
    new settings do not reuse (bounded by the exit timeout)."""
    kept = {id(sink) for sink in new.sinks}
    retired = [sink for sink in old.sinks if id(sink) not in kept]
    if not retired:
        return
    pipeline.get_pipeline().drain(old.exit_timeout)
    pipeline.close_sinks(retired, old.exit_timeout)


def current_settings() -> Settings | None:
    """The settings of the last ``configure()``; ``None`` before any (never configures)."""
    return _settings


def get_settings() -> Settings:
    """The settings in force, configuring the defaults on first use."""
    settings = _settings
    if settings is not None:
        return settings
    with _lock:
        if _settings is not None:
            return _settings
    return configure()


def flush(timeout: float = 5.0) -> bool:
    """Deliver every record finished so far: through the pipeline, into the local store, and out
    of the exporters llmmeter built (``otlp_endpoint``).

    Returns within ``timeout`` seconds (plus a few milliseconds), ``True`` only when everything
    was delivered: ``False`` when time ran out or an exporter failed (an OTLP endpoint refusing or
    not answering). Safe from any thread, including inside an ``on_record`` callback (where it
    does not wait for the pipeline it runs on).
    """
    settings = _settings
    if settings is None:
        return True
    return pipeline.flush(settings, timeout)


def _exporters(options: ExportOptions, providers_given: tuple[bool, bool]) -> TelemetrySetup | None:
    """The same providers as before when nothing changed; else the old ones closed, new ones built.

    Closing first frees the scrape port for a new endpoint on the same port.
    """
    from llmmeter.export.setup import build_telemetry

    previous = _settings.exporters if _settings is not None else None
    if previous is not None:
        if previous.options == options and previous.providers_given == providers_given:
            return previous
        with guard("closing llmmeter's previous exporters"):
            previous.shutdown()
    tracer_given, meter_given = providers_given
    return build_telemetry(options, tracer_provider_given=tracer_given, meter_provider_given=meter_given)


def _make_store(store: str | os.PathLike[str] | None) -> SQLiteStore | None:
    if store is None:
        return None
    from llmmeter.store import STORE_ENV_VAR, SQLiteStore, resolve_store_path
    from llmmeter.store.postgres import is_postgres_url

    chosen = os.environ.get(STORE_ENV_VAR) if store is DEFAULT else store
    if is_postgres_url(chosen):
        return _make_fleet_store(str(chosen))
    path = resolve_store_path(None if store is DEFAULT else store)
    try:
        return SQLiteStore(path)
    except Exception:
        log_once(
            f"store:{path}",
            "llmmeter: cannot open the local store at %s; records will not be stored locally",
            path,
            exc_info=True,
        )
        return None


def _make_fleet_store(url: str) -> SQLiteStore | None:
    from llmmeter.store.postgres import PostgresStore, redacted

    try:
        return PostgresStore(url)
    except Exception as exc:
        log_once(
            f"store:{redacted(url)}",
            "llmmeter: cannot use the fleet store %s (%s); records will not be stored",
            redacted(url),
            exc,
        )
        return None


def _make_pricing(pricing: PricingRegistry | None) -> PricingRegistry | None:
    if pricing is not DEFAULT:
        return pricing
    try:
        from llmmeter.pricing import PricingRegistry

        return PricingRegistry.default()
    except Exception:
        log_once(
            "pricing:default",
            "llmmeter: the bundled price table could not be loaded; calls will not be priced",
            exc_info=True,
        )
        return None


def _callbacks(on_record: RecordCallback | Sequence[RecordCallback] | None) -> tuple[RecordCallback, ...]:
    if on_record is None:
        return ()
    if callable(on_record):
        return (on_record,)
    callbacks = tuple(on_record)
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"llmmeter.configure: on_record item {callback!r} is not callable")
    return callbacks


def _sinks(
    store: SQLiteStore | None,
    extra: Sequence[Sink],
    exporters: TelemetrySetup | None,
    callbacks: tuple[RecordCallback, ...],
) -> tuple[Sink, ...]:
    """The sinks in delivery order: the store, the user's, llmmeter's exporters, the callbacks."""
    out: list[Sink] = []
    if store is not None:
        out.append(store)
    for sink in extra:
        if not isinstance(sink, Sink):
            raise TypeError(f"llmmeter.configure: {sink!r} is not a sink (accept, flush, close)")
        out.append(sink)
    if exporters is not None:
        out.append(exporters)
    background = tuple(callback for callback in callbacks if not isinstance(callback, inline))
    if background:
        out.append(pipeline.CallbackSink(background))
    return tuple(out)
