"""Moved to :mod:`llmmeter.report.prometheus`; this name stays importable for existing code."""

from llmmeter.report.prometheus import (
    DEFAULT_MATCHERS,
    DEFAULT_WINDOW,
    PROMETHEUS_PERCENTILE_METHOD,
    PrometheusClient,
    PrometheusQueryError,
    group_label,
    prometheus_label,
    prometheus_metric_name,
    prometheus_report,
    render_prometheus_report,
    window_increase,
)

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
