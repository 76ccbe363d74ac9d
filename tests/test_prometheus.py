"""Prometheus for real: llmmeter's scrape endpoint, a real Prometheus scraping a small fleet, PromQL
over what it stored, and ``llmmeter report --prometheus`` against it.

The fleet (``tests/prometheus_stack.py``): two processes of ``examples/prometheus/app.py``
(teams ``search`` and ``support``) each make, through the real ``openai`` client against the
paced local server, two streamed and one non-streamed call per model (``gpt-4o-mini``: TTFT
150 ms, 30 ms per token; ``gpt-4.1``: TTFT 400 ms, 60 ms per token), one failing call and one
call to a model with no price. Their local stores hold the ground truth.
"""

from __future__ import annotations

import bisect
import io
import json
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

import llmmeter
from llmmeter import semconv as sc
from llmmeter.cli import main as llmmeter_cli
from llmmeter.export.otel import OtelTelemetry
from llmmeter.export.setup import ExportOptions, build_telemetry
from llmmeter.record import CallRecord, Outcome
from llmmeter.report import PERCENTILES, build_report, render_json
from llmmeter.report_prometheus import (
    PROMETHEUS_PERCENTILE_METHOD,
    group_label,
    prometheus_metric_name,
    prometheus_report,
    window_increase,
)

from .prometheus_stack import Fleet, fleet, free_port, requires_prometheus

__all__ = ["fleet"]  # the session fixture, imported for the tests below

PACED_TTFT_S = {"gpt-4o-mini": 0.150, "gpt-4.1": 0.400}
PACED_TPOT_S = {"gpt-4o-mini": 0.030, "gpt-4.1": 0.060}
TEAM_MODEL = ("team", "gen_ai_request_model")


def bucket_bounds(value: float, boundaries: tuple[float, ...]) -> tuple[float, float]:
    """The histogram bucket ``(lower, upper]`` holding ``value``."""
    index = bisect.bisect_left(boundaries, value)
    lower = boundaries[index - 1] if index > 0 else 0.0
    upper = boundaries[index] if index < len(boundaries) else float("inf")
    return lower, upper


def records_by(fleet: Fleet, *, model: str | None = None) -> list[CallRecord]:
    return [r for r in fleet.records if model is None or r.request_model == model]


# --- the scrape endpoint (no Prometheus server needed) -------------------------------------------
def exposed_names(telemetry_for: MeterProvider, registry: CollectorRegistry) -> set[str]:
    telemetry = OtelTelemetry(meter_provider=telemetry_for, per_chunk_metrics=True)
    for histogram in telemetry._histograms.values():
        histogram.record(0.5, {"team": "search"})
    for counter in telemetry._counters.values():
        counter.add(3, {"team": "search"})
    text = generate_latest(registry).decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}


def test_prometheus_metric_names_are_the_ones_the_otel_exporter_exposes() -> None:
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        names = exposed_names(provider, registry)
    finally:
        provider.shutdown()

    assert {prometheus_metric_name(spec) for spec in sc.METRICS.values()} | {"target_info"} == names
    assert prometheus_metric_name(sc.METRICS["duration"]) == "gen_ai_client_operation_duration_seconds"
    assert prometheus_metric_name(sc.METRICS["token_parts"]) == "llmmeter_client_token_usage_total"
    assert prometheus_metric_name(sc.METRICS["cost"]) == "gen_ai_client_operation_cost"


@pytest.fixture
def scrape_endpoint() -> Iterator[llmmeter.Settings]:
    """llmmeter configured with its own scrape endpoint on a free loopback port."""
    settings = llmmeter.configure(store=None, prometheus_port=0, service_name="checkout-api")
    yield settings
    llmmeter.configure(store=None, pricing=None)


@llmmeter.metered(model="gpt-4o-mini", provider="openai")
def priced_chat() -> dict[str, object]:
    return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_configure_prometheus_port_serves_llmmeter_metrics_on_loopback(
    scrape_endpoint: llmmeter.Settings,
) -> None:
    exporters = scrape_endpoint.exporters
    assert exporters is not None and exporters.prometheus_address is not None
    host, port = exporters.prometheus_address
    assert host == "127.0.0.1" and port > 0

    with llmmeter.attributes(team="search"):
        priced_chat()
    llmmeter.flush()  # must not make the next scrape serve the points twice
    text = scrape(f"http://127.0.0.1:{port}/metrics")

    cost_line = next(
        line for line in text.splitlines() if line.startswith("gen_ai_client_operation_cost_sum{")
    )
    assert 'gen_ai_request_model="gpt-4o-mini"' in cost_line and 'team="search"' in cost_line
    # 1000 input at $0.15/M + 100 output at $0.60/M
    assert float(cost_line.rsplit(" ", 1)[1]) == pytest.approx(0.00021)
    assert text.count("# TYPE gen_ai_client_operation_duration_seconds histogram") == 1
    assert 'service_name="checkout-api"' in text  # target_info carries the resource


def test_the_scrape_endpoint_leaves_the_global_providers_and_registry_alone(
    scrape_endpoint: llmmeter.Settings,
) -> None:
    priced_chat()

    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    assert type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
    assert b"gen_ai_client_operation_duration" not in generate_latest(REGISTRY)


def test_reconfiguring_keeps_an_unchanged_endpoint_and_closes_a_dropped_one(
    scrape_endpoint: llmmeter.Settings,
) -> None:
    first = scrape_endpoint.exporters
    assert first is not None and first.prometheus_url is not None

    again = llmmeter.configure(store=None, prometheus_port=0, service_name="checkout-api")
    assert again.exporters is first
    llmmeter.configure(store=None)

    with pytest.raises(OSError):
        scrape(first.prometheus_url)


def test_a_busy_port_is_logged_and_the_application_keeps_running(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("LLMMETER_STRICT")
    first = llmmeter.configure(store=None, prometheus_port=0)
    assert first.exporters is not None and first.exporters.prometheus_address is not None
    busy = first.exporters.prometheus_address[1]
    # The first endpoint holds the port, as another process would.
    second = build_telemetry(ExportOptions(prometheus_port=busy))
    try:
        assert second is not None and second.meter_provider is None
        assert "cannot start the prometheus exporter" in caplog.text
        assert priced_chat()["model"] == "gpt-4o-mini"
    finally:
        llmmeter.configure(store=None, pricing=None)


# --- PromQL against the real Prometheus ----------------------------------------------------------
@pytest.mark.prometheus
@requires_prometheus
def test_prometheus_stores_every_llmmeter_metric_under_the_exporter_names(fleet: Fleet) -> None:
    names = {
        sample["metric"]["__name__"]
        for sample in fleet.prometheus.query('count by (__name__) ({otel_scope_name="llmmeter"})', fleet.at)
    }

    expected = set()
    for key, spec in sc.METRICS.items():
        if key == "time_per_output_chunk":  # opt-in, off in the example app
            continue
        name = prometheus_metric_name(spec)
        expected |= (
            {f"{name}_{part}" for part in ("bucket", "sum", "count")}
            if spec.instrument == "histogram"
            else {name}
        )
    # The example app routes some of its calls: the route counter and the step-calls histogram.
    step_calls = prometheus_metric_name(sc.STEP_CALLS_METRIC)
    expected |= {prometheus_metric_name(sc.ROUTE_REQUESTS_METRIC)}
    expected |= {f"{step_calls}_{part}" for part in ("bucket", "sum", "count")}
    assert names == expected


@pytest.mark.prometheus
@requires_prometheus
def test_request_counts_by_team_and_model_are_the_calls_made(fleet: Fleet) -> None:
    counts = fleet.prometheus.by_labels(
        "sum by (team, gen_ai_request_model) (gen_ai_client_operation_duration_seconds_count)",
        TEAM_MODEL,
        fleet.at,
    )

    made = Counter((str(r.attributes["team"]), r.request_model or "") for r in fleet.records)
    assert counts == {key: float(n) for key, n in made.items()}
    assert made[("search", "gpt-4o-mini")] == 4  # 2 streamed + 1 non-streamed + 1 failed
    assert [r.outcome for r in fleet.records].count(Outcome.ERROR) == 2


@pytest.mark.prometheus
@requires_prometheus
def test_request_rate_over_the_traffic_accounts_for_the_calls_made(fleet: Fleet) -> None:
    window_s = int(fleet.window[:-1])
    rate = fleet.prometheus.value(
        f"sum(rate(gen_ai_client_operation_duration_seconds_count[{fleet.window}]))", fleet.at
    )
    samples = fleet.prometheus.query(
        f"gen_ai_client_operation_duration_seconds_count[{fleet.window}]", fleet.at
    )
    seen_increasing = sum(float(s["values"][-1][1]) - float(s["values"][0][1]) for s in samples)

    # rate() sees the increase after each series' first scrape, extrapolated at most to zero.
    assert seen_increasing > 0
    assert seen_increasing <= rate * window_s <= len(fleet.records) + 1e-9


@pytest.mark.prometheus
@requires_prometheus
@pytest.mark.parametrize(
    ("metric", "attribute", "boundaries", "paced"),
    [
        ("llmmeter_client_operation_time_to_first_token_seconds", "ttft_s", sc.TTFT_BUCKETS, PACED_TTFT_S),
        ("llmmeter_client_operation_time_per_output_token_seconds", "tpot_s", sc.TPOT_BUCKETS, PACED_TPOT_S),
    ],
    ids=["ttft", "tpot"],
)
def test_histogram_quantiles_land_in_the_bucket_of_the_measured_latency(
    fleet: Fleet, metric: str, attribute: str, boundaries: tuple[float, ...], paced: dict[str, float]
) -> None:
    for model, paced_s in paced.items():
        measured = [getattr(r.timings, attribute) for r in records_by(fleet, model=model)]
        measured = [value for value in measured if value is not None]
        assert len(measured) == 4  # two streamed calls per team
        # The server never sends early; but a first token held back by a loaded machine shortens
        # the mean gap after it (TPOT), so TPOT may come out a little under the pacing.
        assert min(measured) >= paced_s * (0.95 if attribute == "tpot_s" else 1.0)
        lowest, _ = bucket_bounds(min(measured), boundaries)
        _, highest = bucket_bounds(max(measured), boundaries)
        for q in (0.5, 0.95, 0.99):
            value = fleet.prometheus.value(
                f'histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{gen_ai_request_model="{model}"}}'
                f"[{fleet.window}])))",
                fleet.at,
            )
            # Normally one bucket: the paced value's (unless the machine stalled a call).
            assert lowest <= value <= highest, (model, q, value, measured)
        # Never below the paced value's bucket (a stalled, loaded machine can only add latency).
        assert bucket_bounds(paced_s, boundaries)[0] <= lowest


@pytest.mark.prometheus
@requires_prometheus
def test_tokens_by_type_and_by_kind_equal_the_records(fleet: Fleet) -> None:
    by_type = fleet.prometheus.by_labels(
        "sum by (gen_ai_token_type) (gen_ai_client_token_usage_sum)", ("gen_ai_token_type",), fleet.at
    )
    by_kind = fleet.prometheus.by_labels(
        "sum by (llmmeter_token_kind) (llmmeter_client_token_usage_total)", ("llmmeter_token_kind",), fleet.at
    )

    usages = [r.usage for r in fleet.records if r.usage is not None]
    expected_kinds: dict[tuple[str], float] = defaultdict(float)
    for usage in usages:
        for field_name, kind in sc.TOKEN_KINDS.items():
            expected_kinds[(kind,)] += getattr(usage, field_name) or 0
    assert by_type == {
        ("input",): sum(u.input_tokens or 0 for u in usages),
        ("output",): sum(u.output_tokens or 0 for u in usages),
    }
    assert by_kind == {kind: n for kind, n in expected_kinds.items() if n}
    assert by_type[("input",)] == 154 and by_type[("output",)] == 100


@pytest.mark.prometheus
@requires_prometheus
def test_cost_summed_by_model_and_team_equals_the_sum_of_record_costs(fleet: Fleet) -> None:
    cost = fleet.prometheus.by_labels(
        "sum by (team, gen_ai_request_model) (gen_ai_client_operation_cost_sum)", TEAM_MODEL, fleet.at
    )

    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for record in fleet.records:
        if record.cost is not None:
            expected[(str(record.attributes["team"]), record.request_model or "")] += record.cost.amount
    assert set(cost) == set(expected)
    for key, amount in expected.items():
        assert cost[key] == pytest.approx(float(amount), rel=1e-12, abs=1e-15)
    assert ("search", "acme-private-7b") not in cost  # unpriced: no cost point, never a 0


@pytest.mark.prometheus
@requires_prometheus
def test_unpriced_tokens_are_counted_for_the_model_without_a_price(fleet: Fleet) -> None:
    unpriced = fleet.prometheus.by_labels(
        "sum by (gen_ai_request_model) (llmmeter_client_token_unpriced_total)",
        ("gen_ai_request_model",),
        fleet.at,
    )

    expected = sum(
        r.usage.total_tokens or 0 for r in records_by(fleet, model="acme-private-7b") if r.usage is not None
    )
    assert unpriced == {("acme-private-7b",): float(expected)}


# --- llmmeter report --prometheus ----------------------------------------------------------------
def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = llmmeter_cli(list(argv))
    return code, out.getvalue(), err.getvalue()


def window_args(fleet: Fleet) -> list[str]:
    until = datetime.fromtimestamp(fleet.at).astimezone()
    return ["--since", (until - timedelta(minutes=10)).isoformat(), "--until", until.isoformat()]


@pytest.mark.prometheus
@requires_prometheus
def test_fleet_report_from_prometheus_has_the_local_reports_counts_tokens_and_cost(fleet: Fleet) -> None:
    code, out, _ = run_cli(
        "report",
        "--prometheus",
        fleet.prometheus.url,
        "--by",
        "model,team",
        "--format",
        "json",
        *window_args(fleet),
    )
    assert code == 0
    document = json.loads(out)
    # Prometheus's histograms hold calls of every outcome.
    local = json.loads(render_json(build_report(fleet.records, by="model,team", latency_outcome="all")))

    def comparable(group: dict[str, Any]) -> dict[str, Any]:
        """What metrics can know exactly: everything but the percentiles and zero token counts."""
        return {
            "key": group["key"],
            "calls": group["calls"],
            "errors": group["errors"],
            "tokens": {kind: n for kind, n in group["tokens"].items() if n},
            "usage_missing_calls": group["usage_missing_calls"],
            "priced_calls": group["priced_calls"],
            "unpriced_calls": group["unpriced_calls"],
            "counts": {metric: latency["count"] for metric, latency in group["latency_s"].items()},
        }

    assert sorted(map(comparable, document["groups"]), key=str) == sorted(
        map(comparable, local["groups"]), key=str
    )
    assert comparable(document["total"]) == comparable(local["total"])
    for group in local["groups"]:
        remote = next(g for g in document["groups"] if g["key"] == group["key"])
        for currency, amount in group["cost"].items():
            if amount is None:  # every group lists every currency, null where it had no cost
                assert remote["cost"][currency] is None
            else:
                assert float(remote["cost"][currency]) == pytest.approx(float(amount), rel=1e-12)
    assert document["percentile_method"] == PROMETHEUS_PERCENTILE_METHOD
    assert document["source"]["prometheus"] == fleet.prometheus.url


@pytest.mark.prometheus
@requires_prometheus
def test_fleet_report_percentiles_fall_in_the_buckets_of_the_recorded_values(fleet: Fleet) -> None:
    until = datetime.fromtimestamp(fleet.at).astimezone()
    report = prometheus_report(
        fleet.prometheus.url, by="model", since=until - timedelta(minutes=10), until=until
    )

    boundaries = {"ttft": sc.TTFT_BUCKETS, "tpot": sc.TPOT_BUCKETS, "duration": sc.DURATION_BUCKETS}
    attributes = {"ttft": "ttft_s", "tpot": "tpot_s", "duration": "duration_s"}
    for group in report.groups:
        (model,) = group.key
        for metric, bucket_edges in boundaries.items():
            values = [getattr(r.timings, attributes[metric]) for r in records_by(fleet, model=model)]
            values = [v for v in values if v is not None]
            summary = group.latency[metric]
            assert summary.count == len(values)
            lowest, _ = bucket_bounds(min(values), bucket_edges)
            _, highest = bucket_bounds(max(values), bucket_edges)
            for p in PERCENTILES:
                value = summary.percentiles[p]
                assert value is not None and lowest <= value <= highest, (model, metric, p, value)


@pytest.mark.prometheus
@requires_prometheus
def test_fleet_report_table_says_its_percentiles_are_bucket_interpolated(fleet: Fleet) -> None:
    code, out, _ = run_cli(
        "report", "--prometheus", fleet.prometheus.url, "--by", "team", *window_args(fleet)
    )

    assert code == 0
    assert "llmmeter report: 16 LLM calls" in out
    assert "histogram_quantile" in out and "inside the bucket holding the rank" in out
    assert f"Source: Prometheus at {fleet.prometheus.url}." in out
    assert "numpy.percentile" not in out


@pytest.mark.prometheus
@requires_prometheus
def test_fleet_report_of_a_window_before_the_traffic_is_empty(fleet: Fleet) -> None:
    before = datetime.fromtimestamp(fleet.started_at).astimezone() - timedelta(minutes=1)
    report = prometheus_report(
        fleet.prometheus.url, by="model", since=before - timedelta(hours=1), until=before
    )

    assert report.groups == [] and report.total.calls == 0


@pytest.mark.prometheus
@requires_prometheus
def test_the_window_increase_counts_series_born_inside_the_window(fleet: Fleet) -> None:
    window = timedelta(seconds=int(fleet.window[:-1]))
    exact = fleet.prometheus.value(
        f"sum({window_increase('gen_ai_client_operation_duration_seconds_count', '', window)})", fleet.at
    )
    plain = fleet.prometheus.value(
        f"sum(increase(gen_ai_client_operation_duration_seconds_count[{fleet.window}]))", fleet.at
    )

    assert exact == len(fleet.records)
    assert plain < exact  # increase() alone misses what each new series had at its first scrape


def test_report_from_an_unreachable_prometheus_fails_with_one_line() -> None:
    code, out, err = run_cli("report", "--prometheus", f"http://127.0.0.1:{free_port()}")

    assert code == 2 and out == ""
    assert err.startswith("llmmeter: cannot query Prometheus at http://127.0.0.1:") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "outcome"], "'outcome' is not recorded on llmmeter's metrics"),
        (["--format", "html"], "--format html charts per-call records"),
        (["--kind", "step"], "--kind and --store do not apply"),
    ],
)
def test_report_from_prometheus_refuses_what_metrics_cannot_answer(args: list[str], message: str) -> None:
    code, _, err = run_cli("report", "--prometheus", f"http://127.0.0.1:{free_port()}", *args)

    assert code == 2 and message in err


def test_group_keys_read_the_exporters_labels() -> None:
    assert [group_label(k) for k in ("model", "provider", "team", "attr:user_id", "instance")] == [
        "gen_ai_request_model",
        "gen_ai_provider_name",
        "team",
        "user_id",
        "instance",
    ]
