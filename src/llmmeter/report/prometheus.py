"""``llmmeter report --prometheus URL``: the report of a whole fleet, computed by Prometheus.

Every instrumented process exports llmmeter's metrics (``configure(prometheus_port=...)``, or
OTLP through a collector into Prometheus); this module asks Prometheus's HTTP API for the same
numbers the local store's report gives and returns them as a :class:`~llmmeter.report.Report`,
so the table, JSON and CSV renderers work unchanged.

How each number is computed, per group (``sum by`` the group's labels):

* calls: the increase of ``gen_ai_client_operation_duration_seconds_count`` over the window;
  errors: the same with ``error_type != ""``;
* tokens by kind: the increase of ``llmmeter_client_token_usage_total`` by
  ``llmmeter_token_kind`` (kinds with a zero count are never recorded, so never listed);
* cost: the increase of ``gen_ai_client_operation_cost_sum`` by currency (a float sum, not the
  local store's exact ``Decimal``); priced calls: of ``..._cost_count``; unpriced = calls with
  an input token count - priced;
* latency: ``histogram_quantile`` over the window's bucket increases of the TTFT, TPOT and
  duration histograms. These percentiles are **interpolated within a bucket** (the bucket that
  holds the rank is known exactly, the position inside it is assumed linear), unlike the local
  store's exact percentiles over the recorded values.

"The increase over the window" of one series is Prometheus's ``increase()`` for a series that
already existed when the window began; for a series born inside the window (a new process, a
new model or team) it is its latest value: OTel counters start at zero, and ``increase()``
would miss everything counted before the series' first scrape. A process restarted inside the
window under the same labels counts from its restart only.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from llmmeter import semconv as sc
from llmmeter.report.build import (
    LATENCY_METRICS,
    PERCENTILES,
    GroupStats,
    LatencySummary,
    Report,
    group_order,
    parse_group_keys,
)
from llmmeter.report.text import json_text, render_csv, render_json, render_table

__all__ = [
    "DEFAULT_MATCHERS",
    "DEFAULT_WINDOW",
    "PROMETHEUS_PERCENTILE_METHOD",
    "PrometheusClient",
    "PrometheusQueryError",
    "group_label",
    "prometheus_label",
    "prometheus_metric_name",
    "prometheus_report",
    "render_prometheus_report",
    "window_increase",
]

PROMETHEUS_PERCENTILE_METHOD: Final = (
    "Prometheus histogram_quantile over the window's bucket increases: linear interpolation "
    "inside the bucket holding the rank, so a value is known to its bucket's bounds "
    "(the local store's percentiles are exact)"
)
DEFAULT_WINDOW: Final = timedelta(hours=24)
DEFAULT_MATCHERS: Final = 'otel_scope_name="llmmeter"'
"""Only llmmeter's own series: other GenAI instrumentations may emit the same metric names."""

_UNIT_SUFFIXES: Final = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}
_UNAVAILABLE_KEYS: Final = frozenset(
    {"outcome", "kind", "name", "service_tier", "streaming", "usage_source", "cost_status", "user"}
)
_BUILTIN_LABELS: Final = {
    "model": sc.REQUEST_MODEL,
    "request_model": sc.REQUEST_MODEL,
    "response_model": sc.RESPONSE_MODEL,
    "provider": sc.PROVIDER_NAME,
    "operation": sc.OPERATION_NAME,
    "error_type": sc.ERROR_TYPE,
    "server_address": sc.SERVER_ADDRESS,
}
_ATTRIBUTE_PREFIX: Final = "attr:"
_LATENCY_SPECS: Final = {
    "ttft": "time_to_first_token",
    "tpot": "time_per_output_token",
    "duration": "duration",
}
_FIELD_OF_TOKEN_KIND: Final = {kind: field_name for field_name, kind in sc.TOKEN_KINDS.items()}


class PrometheusQueryError(RuntimeError):
    """Prometheus could not be reached or rejected a query."""


# ---------------------------------------------------------------------------------------------
# Names: what the OTel Prometheus exporter (and the collector's) turn llmmeter's names into


def prometheus_label(attribute: str) -> str:
    """An OTel attribute key as a Prometheus label: ``gen_ai.request.model`` -> ``gen_ai_request_model``."""
    label = re.sub(r"[^a-zA-Z0-9_]", "_", attribute)
    return f"_{label}" if label[:1].isdigit() else label


def prometheus_metric_name(spec: sc.MetricSpec) -> str:
    """The exposed name of a metric: dots to underscores, the unit as a suffix (``s`` ->
    ``_seconds``; annotations such as ``{token}`` are dropped), ``_total`` on counters.
    Histograms are then ``<name>_bucket``, ``<name>_sum`` and ``<name>_count``."""
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", spec.name)
    unit = re.sub(r"\{[^}]*\}", "", spec.unit)
    if unit:
        if unit not in _UNIT_SUFFIXES:
            raise ValueError(f"no Prometheus suffix known for unit {spec.unit!r} of {spec.name}")
        suffix = _UNIT_SUFFIXES[unit]
        if suffix and not name.endswith(f"_{suffix}"):
            name = f"{name}_{suffix}"
    if spec.instrument == "counter":
        name = f"{name}_total"
    return name


def _metric(key: str) -> str:
    return prometheus_metric_name(sc.METRICS[key])


def group_label(key: str) -> str:
    """The Prometheus label a ``--by`` key reads; ``ValueError`` for keys not on the metrics.

    ``model`` is the requested model. Any other key names an attribute allowed on metrics
    (``configure(metric_attributes=...)``, default ``team`` and ``feature``) or a label
    Prometheus adds (``instance``, ``job``).
    """
    if key.startswith(_ATTRIBUTE_PREFIX):
        return prometheus_label(key[len(_ATTRIBUTE_PREFIX) :])
    if key in _BUILTIN_LABELS:
        return prometheus_label(_BUILTIN_LABELS[key])
    if key in _UNAVAILABLE_KEYS:
        raise ValueError(
            f"'{key}' is not recorded on llmmeter's metrics (it keeps their cardinality bounded); "
            "use the local store's report for it"
        )
    return prometheus_label(key)


# ---------------------------------------------------------------------------------------------
# PromQL


def _range(window: timedelta) -> str:
    return f"{max(math.ceil(window.total_seconds()), 1)}s"


def window_increase(metric: str, matchers: str, window: timedelta) -> str:
    """PromQL for each series' increase over ``window`` (see the module docstring)."""
    selector = f"{metric}{{{matchers}}}"
    span = _range(window)
    return (
        f"(increase({selector}[{span}]) and {selector} offset {span})"
        f" or (last_over_time({selector}[{span}]) unless {selector} offset {span})"
    )


def _sum_by(labels: Sequence[str], expr: str) -> str:
    return f"sum by ({', '.join(labels)}) ({expr})"


def _matchers(base: str, extra: str = "") -> str:
    return ", ".join(part for part in (base, extra) if part)


# ---------------------------------------------------------------------------------------------
# The HTTP API


@dataclass(frozen=True, slots=True)
class PrometheusClient:
    """Instant queries against a Prometheus server's HTTP API (``GET /api/v1/query``)."""

    url: str
    timeout_s: float = 30.0

    def query(self, expr: str, at: datetime | None = None) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` evaluated at ``at`` (default: now)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        endpoint = f"{self.url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(endpoint, timeout=self.timeout_s) as response:
                document = json.load(response)
        except urllib.error.HTTPError as exc:
            document = _error_document(exc)
        except (OSError, ValueError) as exc:
            raise PrometheusQueryError(f"cannot query Prometheus at {self.url}: {exc}") from None
        if document.get("status") != "success":
            raise PrometheusQueryError(
                f"Prometheus rejected a query ({document.get('errorType')}): {document.get('error')}"
            )
        result: list[dict[str, Any]] = document.get("data", {}).get("result", [])
        return result


def _error_document(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.load(exc)
    except ValueError:
        return {"status": "error", "errorType": f"HTTP {exc.code}", "error": exc.reason}
    return document


Key = tuple[str | None, ...]


def _by_key(
    result: list[dict[str, Any]], labels: Sequence[str], extra: str | None = None
) -> dict[Any, float]:
    """Sample values keyed by the group labels' values (``None`` for an empty or absent label),
    and by ``extra``'s value too when given."""
    out: dict[Any, float] = {}
    for sample in result:
        metric: Mapping[str, str] = sample.get("metric", {})
        key: Key = tuple(metric.get(label) or None for label in labels)
        value = float(sample["value"][1])
        if extra is not None:
            out[(key, metric.get(extra, ""))] = value
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True, slots=True)
class _Query:
    client: PrometheusClient
    labels: tuple[str, ...]
    matchers: str
    window: timedelta
    at: datetime

    def increase(self, metric: str, extra_matchers: str = "", by: Sequence[str] = ()) -> list[dict[str, Any]]:
        expr = window_increase(metric, _matchers(self.matchers, extra_matchers), self.window)
        return self.client.query(_sum_by([*self.labels, *by], expr), self.at)

    def quantile(self, metric: str, q: float) -> list[dict[str, Any]]:
        buckets = _sum_by(
            [*self.labels, "le"], window_increase(f"{metric}_bucket", self.matchers, self.window)
        )
        return self.client.query(f"histogram_quantile({q:g}, {buckets})", self.at)


def prometheus_report(
    url: str,
    *,
    by: str | Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    matchers: str = DEFAULT_MATCHERS,
    now: datetime | None = None,
) -> Report:
    """The report of every process whose llmmeter metrics Prometheus at ``url`` scraped.

    The window is ``since`` .. ``until`` (default: the last 24 hours up to now); ``matchers``
    (PromQL label matchers, e.g. ``'otel_scope_name="llmmeter", job="api"'``) selects the series.
    Raises :class:`PrometheusQueryError` (unreachable server, rejected query) and ``ValueError``
    (a group key that is not on the metrics, an empty window).
    """
    group_by = parse_group_keys(by)
    labels = tuple(group_label(key) for key in group_by)
    end = until or now or datetime.now().astimezone()
    start = since or end - DEFAULT_WINDOW
    if start >= end:
        raise ValueError("the window is empty: since must be before until")
    query = _Query(PrometheusClient(url), labels, matchers, end - start, end)
    groups = _collect(query)
    total = _collect(_Query(query.client, (), matchers, end - start, end)).get(()) or _no_calls()
    finished = sorted(groups.values(), key=group_order)
    unmatched = tuple(
        key for i, key in enumerate(group_by) if finished and all(g.key[i] is None for g in finished)
    )
    return Report(
        group_by=group_by,
        kind="llm",
        groups=finished,
        total=total,
        since=start,
        until=end,
        unmatched_keys=unmatched,
        latency_outcome="all",
        percentile_method=PROMETHEUS_PERCENTILE_METHOD,
    )


def _collect(query: _Query) -> dict[Key, GroupStats]:
    labels = query.labels
    calls = _by_key(query.increase(f"{_metric('duration')}_count"), labels)
    groups = {key: GroupStats(key=key, calls=_count(n), llm_calls=_count(n)) for key, n in calls.items()}
    if not groups:
        return {}
    errors = _by_key(query.increase(f"{_metric('duration')}_count", 'error_type!=""'), labels)
    for key, n in errors.items():
        _group(groups, key).errors = _count(n)
    _add_tokens(query, groups)
    _add_cost(query, groups)
    _add_latency(query, groups)
    return groups


def _no_calls() -> GroupStats:
    unobserved = LatencySummary(count=0, percentiles=dict.fromkeys(PERCENTILES))
    return GroupStats(key=(), latency=dict.fromkeys(LATENCY_METRICS, unobserved))


def _group(groups: dict[Key, GroupStats], key: Key) -> GroupStats:
    stats = groups.get(key)
    if stats is None:  # a series without a duration (cannot happen for llmmeter's own records)
        stats = groups[key] = GroupStats(key=key)
    return stats


def _count(value: float) -> int:
    """A counter's increase as a count: ``increase()`` extrapolates, so it can be fractional."""
    return round(value)


def _add_tokens(query: _Query, groups: dict[Key, GroupStats]) -> None:
    kind_label = prometheus_label(sc.TOKEN_KIND)
    parts = _by_key(query.increase(_metric("token_parts"), by=[kind_label]), query.labels, kind_label)
    for (key, kind), n in parts.items():
        field_name = _FIELD_OF_TOKEN_KIND.get(kind)
        if field_name is not None:
            _group(groups, key).tokens[field_name] = _count(n)
    type_label = prometheus_label(sc.TOKEN_TYPE)
    totals = _by_key(
        query.increase(f"{_metric('token_usage')}_sum", by=[type_label]), query.labels, type_label
    )
    for (key, token_type), n in totals.items():
        if token_type in ("input", "output"):
            _group(groups, key).tokens[f"{token_type}_tokens"] = _count(n)
    # Calls with an input count reported; the rest reported no usage (errors, cut streams...).
    type_matcher = f'{type_label}="input"'
    reported = _by_key(query.increase(f"{_metric('token_usage')}_count", type_matcher), query.labels)
    for key, stats in groups.items():
        stats.usage_missing_calls = max(stats.calls - _count(reported.get(key, 0.0)), 0)


def _add_cost(query: _Query, groups: dict[Key, GroupStats]) -> None:
    currency_label = prometheus_label(sc.COST_CURRENCY)
    amounts = _by_key(
        query.increase(f"{_metric('cost')}_sum", by=[currency_label]), query.labels, currency_label
    )
    for (key, currency), amount in amounts.items():
        _group(groups, key).cost[currency or "USD"] = Decimal(repr(amount))
    priced = _by_key(query.increase(f"{_metric('cost')}_count"), query.labels)
    for key, stats in groups.items():
        stats.priced_calls = _count(priced.get(key, 0.0))
        # Like the local store: unpriced = calls with token counts and no cost.
        stats.unpriced_calls = max(stats.calls - stats.usage_missing_calls - stats.priced_calls, 0)


def _add_latency(query: _Query, groups: dict[Key, GroupStats]) -> None:
    for metric, spec_key in _LATENCY_SPECS.items():
        name = _metric(spec_key)
        counts = _by_key(query.increase(f"{name}_count"), query.labels)
        quantiles = {p: _by_key(query.quantile(name, p / 100), query.labels) for p in PERCENTILES}
        for key, stats in groups.items():
            count = _count(counts.get(key, 0.0))
            stats.latency[metric] = LatencySummary(
                count=count,
                percentiles={p: _seconds(quantiles[p].get(key)) if count else None for p in PERCENTILES},
            )


def _seconds(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


# ---------------------------------------------------------------------------------------------
# Rendering: the standard renderers, with the method of these numbers stated

_PROMETHEUS_NOTES: Final = (
    "Computed from Prometheus metrics over the window (increase per series); cost is a float sum.",
    "Token kinds with a zero count are not on the metrics; 'no usage' = calls without an input count.",
    "Not on the metrics, so not shown: aborted calls, estimated usage, per-call cost status.",
)


def render_prometheus_report(report: Report, output_format: str, url: str) -> str:
    """The report as ``table``, ``json`` or ``csv``, saying it comes from Prometheus at ``url``."""
    if output_format == "table":
        text = render_table(report)
        if not report.groups:
            return text
        notes = "".join(f"  {note}\n" for note in (f"Source: Prometheus at {url}.", *_PROMETHEUS_NOTES))
        return text + notes
    if output_format == "json":
        document = json.loads(render_json(report))
        document["source"] = {"prometheus": url, "notes": list(_PROMETHEUS_NOTES)}
        return json_text(json.dumps(document, indent=2, ensure_ascii=False)) + "\n"
    if output_format == "csv":
        return render_csv(report)
    raise ValueError(f"a Prometheus report cannot be rendered as {output_format!r} (table, json or csv)")
