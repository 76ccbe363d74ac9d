"""Comparing a report computed by a database with the in-memory one of the same records."""

from __future__ import annotations

import json

import pytest

from llmmeter.report import render_json
from llmmeter.report.build import Report
from llmmeter.report.sql import BUCKETED_PERCENTILE_METHOD
from llmmeter.store.report_columns import RELATIVE_ACCURACY

LATENCY_BOUND = RELATIVE_ACCURACY * (1 + 1e-9)  # a value on a bucket edge: α plus float rounding
"""The database report's percentiles are within 0.05 % of the exact ones (log-spaced buckets)."""


def assert_same_report(in_database: Report, in_memory: Report) -> None:
    """The two reports say the same: every count, token and cost equal, percentiles within
    :data:`LATENCY_BOUND` of the exact ones, the method named."""
    assert in_database.percentile_method == BUCKETED_PERCENTILE_METHOD
    expected = _comparable(json.loads(render_json(in_memory)))
    assert _comparable(json.loads(render_json(in_database))) == expected


def _comparable(document: object) -> object:
    if isinstance(document, dict):
        return {
            key: _near(value) if key in ("p50", "p95", "p99") else _comparable(value)
            for key, value in document.items()
            if key != "percentile_method"
        }
    if isinstance(document, list):
        return [_comparable(item) for item in document]
    return document


def _near(value: float | None) -> object:
    return None if value is None else pytest.approx(value, rel=LATENCY_BOUND, abs=1e-12)
