"""Export a :class:`~llmmeter.record.CallRecord` as an OpenTelemetry span and metric points.

llmmeter always uses the application's providers: the global TracerProvider/MeterProvider (the
API's proxies until the application installs real ones) or the ones passed to
:func:`llmmeter.configure`. It never installs or replaces a global provider.

The span is started on the caller's thread when the call starts (so spans the call creates become
its children) and ended here, on the pipeline's thread (:mod:`llmmeter.pipeline`), from the
finished record, with every attribute at once and the call's own end time (its start plus the
measured duration), not the moment the pipeline got to it. Metric points are recorded in the
span's context, passed explicitly, so an SDK with exemplars enabled links a histogram bucket to the
call's trace although the pipeline's thread has no current span.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from llmmeter import semconv as sc
from llmmeter._log import guard
from llmmeter.pricing.sources import is_inferred_price
from llmmeter.record import AttributeValue, CallKind, CallRecord, CostStatus, Usage

_INSTRUMENTATION_NAME = "llmmeter"

AttributePair = tuple[str, AttributeValue]
Series = tuple[AttributePair, ...]
"""A metric series as attribute pairs, in a fixed order."""


def _version() -> str:
    from llmmeter._version import __version__

    return __version__


class OtelTelemetry:
    """Spans and metrics for records, following the GenAI semantic conventions."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        metric_attribute_keys: Iterable[str] = ("team", "feature"),
        per_chunk_metrics: bool = False,
    ) -> None:
        version = _version()
        self.tracer = trace.get_tracer(_INSTRUMENTATION_NAME, version, tracer_provider=tracer_provider)
        self._checked_processors: object = _NOT_CHECKED
        self._reads_at_start = True
        meter = metrics.get_meter(_INSTRUMENTATION_NAME, version, meter_provider=meter_provider)
        # For counters outside METRICS (routes, feedback, budgets: llmmeter.routing and friends).
        self.meter, self.meter_provider = meter, meter_provider or metrics.get_meter_provider()
        self.metric_attribute_keys = frozenset(metric_attribute_keys)
        self.per_chunk_metrics = per_chunk_metrics
        self._histograms: dict[str, metrics.Histogram] = {}
        self._counters: dict[str, SummedCounter] = {}
        for key, spec in sc.METRICS.items():
            if spec.instrument == "histogram":
                self._histograms[key] = meter.create_histogram(
                    spec.name,
                    unit=spec.unit,
                    description=spec.description,
                    explicit_bucket_boundaries_advisory=spec.buckets,
                )
            else:
                provider = meter_provider or metrics.get_meter_provider()
                self._counters[key] = SummedCounter.of(provider, meter, spec)
        _observe_dropped_records(meter_provider or metrics.get_meter_provider(), meter)
        step_calls = sc.STEP_CALLS_METRIC
        self._step_calls = meter.create_histogram(
            step_calls.name,
            unit=step_calls.unit,
            description=step_calls.description,
            explicit_bucket_boundaries_advisory=step_calls.buckets,
        )

    # --- spans ----------------------------------------------------------------------------------
    def start_span(self, record: CallRecord) -> Span:
        """Start the span of a call that is about to be made (sampling-relevant attributes set)."""
        if record.kind is CallKind.STEP:
            return self.tracer.start_span(
                record.name or record.operation,
                kind=SpanKind.INTERNAL,
                attributes={sc.OPERATION_NAME: record.operation, sc.CALL_KIND: "step"},
            )
        name = f"{record.operation} {record.request_model}" if record.request_model else record.operation
        if not self._start_reads_attributes():
            # Nothing at span start looks at attributes (the SDK's own samplers decide on the
            # trace id and the parent; its export processors do nothing on start): they are set
            # with the rest at the span's end, on the pipeline's thread, not the caller's
            # (≈ 40 k instructions per call, benchmarks/caller_thread.py).
            return self.tracer.start_span(name, kind=self.span_kind(record))
        attributes = call_identity(record)
        if record.streaming:
            attributes[sc.REQUEST_STREAM] = True
        return self.tracer.start_span(name, kind=self.span_kind(record), attributes=attributes)

    def _start_reads_attributes(self) -> bool:
        """Whether a sampler or span processor may read a span's attributes when it starts (the
        semantic conventions' sampling-relevant attributes must be there then). Anything llmmeter
        does not know to be blind to them -- a sampler of your own, a processor with an
        ``on_start``, a tracer that is not the SDK's -- counts as reading them."""
        tracer = self.tracer
        processors = getattr(getattr(tracer, "span_processor", None), "_span_processors", None)
        if processors is self._checked_processors:
            return self._reads_at_start
        reads = not (
            isinstance(processors, tuple)
            and all(type(processor) in _START_BLIND_PROCESSORS for processor in processors)
            and _sampler_ignores_attributes(getattr(tracer, "sampler", None))
        )
        self._checked_processors, self._reads_at_start = processors, reads
        return reads

    @staticmethod
    def span_kind(record: CallRecord) -> SpanKind:
        """CLIENT for a call that crosses a process boundary, INTERNAL for in-process engines."""
        return (
            SpanKind.INTERNAL
            if record.server_address is None and record.provider == "vllm"
            else (SpanKind.CLIENT)
        )

    def finish(self, record: CallRecord, span: Span | None) -> None:
        """End ``span`` with the record's attributes and record the call's metric points."""
        context: Context | None = None
        if span is not None:
            with guard("ending the OpenTelemetry span"):
                self._end_span(record, span)
            context = trace.set_span_in_context(span)
        if record.kind is CallKind.LLM:
            self._record_metrics(record, context)
        elif record.kind is CallKind.STEP:
            self._record_step_calls(record, context)

    def _end_span(self, record: CallRecord, span: Span) -> None:
        end_ns = None
        if span.is_recording():
            # A span started without attributes (see start_span) gets its identity now.
            started_with_identity = sc.OPERATION_NAME in (getattr(span, "attributes", None) or ())
            span.set_attributes(span_attributes(record, set_at_start=started_with_identity))
            if record.error_type is not None:
                span.set_status(Status(StatusCode.ERROR, record.error_type))
            start_ns = getattr(span, "start_time", None)
            if record.timings.duration_s is not None and isinstance(start_ns, int):
                end_ns = start_ns + int(record.timings.duration_s * 1e9)
        span.end(end_time=end_ns)

    def record_chunk_gap(self, record: CallRecord, gap_s: float) -> None:
        """Opt-in per-chunk histogram (``gen_ai.client.operation.time_per_output_chunk``)."""
        self._histograms["time_per_output_chunk"].record(gap_s, self.metric_attributes(record))

    # --- metrics --------------------------------------------------------------------------------
    def metric_attributes(self, record: CallRecord) -> dict[str, AttributeValue]:
        """Low-cardinality attributes: model, provider, operation, error, allow-listed keys."""
        attributes = call_identity(record)
        if record.response_model:
            attributes[sc.RESPONSE_MODEL] = record.response_model
        if record.error_type is not None:
            attributes[sc.ERROR_TYPE] = record.error_type
        for key in self.metric_attribute_keys:
            value = record.attributes.get(key)
            if value is not None:
                attributes[key] = value
        return attributes

    def _record_metrics(self, record: CallRecord, context: Context | None) -> None:
        attributes = self.metric_attributes(record)
        timings = record.timings
        hist = self._histograms
        if timings.duration_s is not None:
            hist["duration"].record(timings.duration_s, attributes, context=context)
        if timings.ttfc_s is not None:
            hist["time_to_first_chunk"].record(timings.ttfc_s, attributes, context=context)
        if timings.ttft_s is not None:
            hist["time_to_first_token"].record(timings.ttft_s, attributes, context=context)
        if timings.tpot_s is not None:
            hist["time_per_output_token"].record(timings.tpot_s, attributes, context=context)
        usage = record.usage
        if usage is not None:
            self._record_usage(usage, attributes, context, outputs=record.operation != "embeddings")
            if record.cost_status is CostStatus.UNPRICED:
                unpriced = usage.total_tokens
                if unpriced:
                    self._counters["unpriced_tokens"].add(unpriced, attributes)
        cost = record.cost
        if cost is not None:
            cost_attributes = {**attributes, sc.COST_CURRENCY: cost.currency}
            if is_inferred_price(cost.price_ref):
                cost_attributes[sc.COST_INFERRED] = True
            hist["cost"].record(float(cost.amount), cost_attributes, context=context)

    def _record_step_calls(self, record: CallRecord, context: Context | None) -> None:
        """``llmmeter.step.calls``: the step's rolled-up LLM calls, by operation (``step``,
        ``route``...), step name and the allow-listed attribution keys."""
        attributes: dict[str, AttributeValue] = {sc.OPERATION_NAME: record.operation}
        if record.name:
            attributes[sc.STEP_NAME] = record.name
        for key in self.metric_attribute_keys:
            value = record.attributes.get(key)
            if value is not None:
                attributes[key] = value
        self._step_calls.record(record.rollup_calls, attributes, context=context)

    def _record_usage(
        self,
        usage: Usage,
        attributes: Mapping[str, AttributeValue],
        context: Context | None,
        *,
        outputs: bool = True,
    ) -> None:
        """``outputs=False`` for embeddings: semconv records their input tokens only (vLLM sends
        ``completion_tokens: 0``, which stays on the record and span but is no output point)."""
        token_usage = self._histograms["token_usage"]
        if usage.input_tokens is not None:
            token_usage.record(usage.input_tokens, {**attributes, sc.TOKEN_TYPE: "input"}, context=context)
        if outputs and usage.output_tokens is not None:
            token_usage.record(usage.output_tokens, {**attributes, sc.TOKEN_TYPE: "output"}, context=context)
        parts = self._counters["token_parts"]
        series: Series | None = None
        for field_name, kind in _TOKEN_KIND_PAIRS:
            value = getattr(usage, field_name)
            if value:
                if series is None:
                    series = tuple(attributes.items())
                parts.add_to(value, series, (sc.TOKEN_KIND, kind))


class SummedCounter:
    """A monotonic counter summed by llmmeter and read by the SDK when it collects.

    An SDK ``Counter.add`` costs a measurement object plus attribute validation and hashing, and
    these counters take several points per call (one per token kind). Summing in a dict under an
    uncontended lock is a fraction of that; an ``ObservableCounter`` callback then reports the
    cumulative totals (no exemplars: they are meant for the histograms anyway). Memory is bounded
    by the metric attributes, which are low-cardinality by design.
    """

    _registry: ClassVar[weakref.WeakKeyDictionary[Any, dict[str, SummedCounter]]] = (
        weakref.WeakKeyDictionary()
    )
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, meter: metrics.Meter, spec: sc.MetricSpec) -> None:
        self._totals: dict[tuple[Series, AttributePair], int] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(
            spec.name, callbacks=[self._observe], unit=spec.unit, description=spec.description
        )

    @classmethod
    def of(cls, provider: object, meter: metrics.Meter, spec: sc.MetricSpec) -> SummedCounter:
        """The one counter of this name for ``provider``: an SDK meter keeps the first
        observable instrument of a name (and its callback), so configuring llmmeter again must
        reuse it rather than register a second one whose totals nobody would read."""
        with cls._registry_lock:
            counters = cls._registry.setdefault(provider, {})
            counter = counters.get(spec.name)
            if counter is None:
                counter = counters[spec.name] = cls(meter, spec)
            return counter

    def add(self, amount: int, attributes: Mapping[str, AttributeValue]) -> None:
        """Add ``amount`` to the series ``attributes``."""
        self.add_to(amount, tuple(attributes.items()))

    def add_to(self, amount: int, series: Series, extra: AttributePair = ("", "")) -> None:
        """:meth:`add` for a series given as attribute pairs (plus one ``extra`` pair): callers
        adding several parts of one call build the pairs once. Pairs are kept in the order given;
        the same attributes in another order are merged when observed."""
        key = (series, extra)
        with self._lock:
            self._totals[key] = self._totals.get(key, 0) + amount

    def _observe(self, options: metrics.CallbackOptions) -> list[metrics.Observation]:
        with self._lock:
            totals = list(self._totals.items())
        merged: dict[frozenset[tuple[str, AttributeValue]], int] = {}
        for (series, extra), total in totals:
            attributes = frozenset((*series, extra) if extra[0] else series)
            merged[attributes] = merged.get(attributes, 0) + total
        return [metrics.Observation(total, dict(attributes)) for attributes, total in merged.items()]


_dropped_observed: weakref.WeakSet[Any] = weakref.WeakSet()
_dropped_lock = threading.Lock()


def _observe_dropped_records(provider: object, meter: metrics.Meter) -> None:
    """Register ``llmmeter.records.dropped`` once per meter provider (see :class:`SummedCounter`
    for why once): the records the pipeline could not deliver since then."""
    with _dropped_lock:
        try:
            if provider in _dropped_observed:
                return
            _dropped_observed.add(provider)
        except TypeError:  # a provider that cannot be weakly referenced: register every time
            pass
    from llmmeter.pipeline import get_pipeline

    stats = get_pipeline().stats
    baseline = stats.dropped

    def observe(options: metrics.CallbackOptions) -> list[metrics.Observation]:
        # No series until something was dropped: a healthy process exports no extra point.
        dropped = stats.dropped - baseline
        return [metrics.Observation(dropped)] if dropped > 0 else []

    spec = sc.RECORDS_DROPPED_METRIC
    meter.create_observable_counter(
        spec.name, callbacks=[observe], unit=spec.unit, description=spec.description
    )


_USAGE_ATTRIBUTE_PAIRS: tuple[tuple[str, str], ...] = tuple(sc.USAGE_ATTRIBUTES.items())
_TOKEN_KIND_PAIRS: tuple[tuple[str, str], ...] = tuple(sc.TOKEN_KINDS.items())


_NOT_CHECKED = object()


def _start_blind_processors() -> frozenset[type]:
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:  # the API alone: no SDK processor to know
        return frozenset()
    return frozenset({BatchSpanProcessor, SimpleSpanProcessor})


_START_BLIND_PROCESSORS = _start_blind_processors()
"""The SDK's export processors: their ``on_start`` does nothing."""


def _sampler_ignores_attributes(sampler: object) -> bool:
    """Whether ``sampler`` is one of the SDK's own, which decide on the trace id and the parent
    (``ParentBased`` when all its delegates are); anything else may read attributes."""
    try:
        from opentelemetry.sdk.trace import sampling
    except ImportError:
        return False
    if type(sampler) in (sampling.StaticSampler, sampling.TraceIdRatioBased):
        return True
    if (
        isinstance(sampler, sampling.ParentBased)
        and type(sampler).should_sample is sampling.ParentBased.should_sample
    ):
        delegates = [value for name, value in vars(sampler).items() if name.startswith("_")]
        return len(delegates) == 5 and all(_sampler_ignores_attributes(delegate) for delegate in delegates)
    return False


def call_identity(record: CallRecord) -> dict[str, AttributeValue]:
    """What a call is, in the attributes spans and metrics share: operation, provider, requested
    model, server address and port (semconv: the port only with the address)."""
    attributes: dict[str, AttributeValue] = {
        sc.OPERATION_NAME: record.operation,
        sc.PROVIDER_NAME: record.provider,
    }
    if record.request_model:
        attributes[sc.REQUEST_MODEL] = record.request_model
    if record.server_address:
        attributes[sc.SERVER_ADDRESS] = record.server_address
        if record.server_port is not None:
            attributes[sc.SERVER_PORT] = record.server_port
    return attributes


def span_attributes(
    record: CallRecord, *, set_at_start: bool = False
) -> dict[str, AttributeValue | tuple[str, ...]]:
    """Every span attribute of a finished record.

    ``set_at_start``: leave out what :meth:`OtelTelemetry.start_span` already set and cannot have
    changed (request model, server, stream flag): the SDK validates every attribute it is given.
    """
    out: dict[str, Any]
    if record.kind is CallKind.STEP:
        out = {}
        _step_attributes(record, out)
    else:
        # Operation and provider are always (re)set: a bare @metered step can turn out to be an
        # LLM call, and an OpenAI-compatible server can turn out to be vLLM.
        out = {sc.OPERATION_NAME: record.operation, sc.PROVIDER_NAME: record.provider}
        if not set_at_start:
            out.update(call_identity(record))
            if record.streaming:
                out[sc.REQUEST_STREAM] = True
        _llm_attributes(record, out)
    out[sc.OUTCOME] = str(record.outcome)  # StrEnum: str() is the value, without enum.property
    if record.error_type is not None:
        out[sc.ERROR_TYPE] = record.error_type
    for key, value in record.attributes.items():
        out[key] = value
    return out


def _llm_attributes(record: CallRecord, out: dict[str, Any]) -> None:
    if record.response_model:
        out[sc.RESPONSE_MODEL] = record.response_model
    if record.response_id:
        out[sc.RESPONSE_ID] = record.response_id
    if record.finish_reasons:
        out[sc.RESPONSE_FINISH_REASONS] = record.finish_reasons
    if record.service_tier:
        out[sc.OPENAI_RESPONSE_SERVICE_TIER] = record.service_tier
    out.update(record.request_params)
    timings = record.timings
    if timings.ttfc_s is not None:
        out[sc.RESPONSE_TIME_TO_FIRST_CHUNK] = timings.ttfc_s
    if timings.ttft_s is not None:
        out[sc.TTFT] = timings.ttft_s
    if timings.tpot_s is not None:
        out[sc.TPOT] = timings.tpot_s
    if timings.chunks is not None:
        out[sc.CHUNKS] = timings.chunks
    if timings.server is not None:
        for name in ("ttft_s", "tpot_s", "queue_s", "prefill_s", "decode_s", "e2e_s", "load_s"):
            value = getattr(timings.server, name)
            if value is not None:
                out[sc.SERVER_TIMING_PREFIX + name[:-2]] = value
    usage = record.usage
    if usage is not None:
        for field_name, attribute in _USAGE_ATTRIBUTE_PAIRS:
            value = getattr(usage, field_name)
            if value is not None:
                out[attribute] = value
        out[sc.USAGE_SOURCE] = str(usage.source)
        if usage.estimate_method:
            out[sc.USAGE_ESTIMATE_METHOD] = usage.estimate_method
    else:
        out[sc.USAGE_SOURCE] = "missing"
    _cost_attributes(record, out)
    if record.content:
        import json

        for key, value in record.content.items():
            out[key] = value if isinstance(value, str) else json.dumps(value, default=str)


def _cost_attributes(record: CallRecord, out: dict[str, Any]) -> None:
    out[sc.COST_STATUS] = str(record.cost_status)
    cost = record.cost
    if cost is None:
        return
    out[sc.COST_AMOUNT] = float(cost.amount)
    out[sc.COST_CURRENCY] = cost.currency
    out[sc.COST_SOURCE] = "provider" if cost.source == "provider" else "local"
    if cost.price_ref:
        out[sc.COST_PRICE_REF] = cost.price_ref
        if is_inferred_price(cost.price_ref):
            out[sc.COST_INFERRED] = True
    # The per-component breakdown stays on the record (store, callbacks): every span attribute
    # costs the SDK a validation per call, and the amount plus price_ref make the span auditable.


def _step_attributes(record: CallRecord, out: dict[str, Any]) -> None:
    out[sc.OPERATION_NAME] = record.operation
    out[sc.CALL_KIND] = str(record.kind)
    if record.name:
        out[sc.STEP_NAME] = record.name
    out[sc.ROLLUP_CALLS] = record.rollup_calls
    out[sc.ROLLUP_UNPRICED_CALLS] = record.rollup_unpriced_calls
    if record.rollup_cost is not None:
        out[sc.ROLLUP_COST] = float(record.rollup_cost)
    if record.rollup_usage is not None:
        for field_name, value in record.rollup_usage.counts().items():
            # e.g. llmmeter.rollup.gen_ai.usage.input_tokens
            out[sc.ROLLUP_USAGE_PREFIX + sc.USAGE_ATTRIBUTES[field_name]] = value
