"""``examples/grafana/llmmeter.json`` is a valid Grafana dashboard whose every query works.

Every PromQL expression in the dashboard (panel targets and template variables) is run against
the real Prometheus of ``tests/prometheus_stack.py`` after the fleet's traffic, with Grafana's
variables replaced the way Grafana would ("All" selected): each must parse and return data.
The vLLM panels read a replay of a real vLLM ``/metrics`` page scraped by the same Prometheus;
the routing panels read the example app's routes (``llmmeter.route``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmmeter import semconv as sc
from llmmeter.report_prometheus import prometheus_metric_name

from .prometheus_stack import VLLM_METRICS, Fleet, fleet, requires_prometheus

__all__ = ["fleet"]  # the session fixture, imported for the tests below

DASHBOARD_FILE = Path(__file__).resolve().parents[1] / "examples" / "grafana" / "llmmeter.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
LABEL_VALUES = re.compile(r"^label_values\((?P<metric>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_expressions() -> list[tuple[str, str]]:
    """``(panel title / refId, expr)`` of every target of every panel."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in panels(DASHBOARD)
        for target in panel.get("targets", [])
    ]


def variables() -> list[dict[str, Any]]:
    variable_list: list[dict[str, Any]] = DASHBOARD["templating"]["list"]
    return variable_list


def as_grafana_would_send(expr: str, window: str) -> str:
    """Replace the dashboard's variables: "All" for the multi-value ones, ``window`` for ranges."""
    for variable in variables():
        if variable["type"] == "query":
            expr = expr.replace(f"${variable['name']}", variable["allValue"])
        elif variable["type"] == "textbox":
            expr = expr.replace(f"${variable['name']}", variable["query"])
    expr = expr.replace("$__rate_interval", window).replace("$__range", window)
    assert "$" not in expr, f"unreplaced variable in {expr}"
    return expr


# --- the JSON itself ----------------------------------------------------------------------------
def test_dashboard_is_grafana_dashboard_json_with_a_datasource_variable() -> None:
    assert DASHBOARD["title"] and DASHBOARD["uid"] == "llmmeter-overview"
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 36
    (datasource,) = [v for v in variables() if v["type"] == "datasource"]
    assert datasource["name"] == "datasource" and datasource["query"] == "prometheus"

    ids = [panel["id"] for panel in panels(DASHBOARD)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for panel in panels(DASHBOARD):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "bargauge"}
        # No data source uid baked in: the dashboard imports into any Grafana.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["refId"] and target["expr"]
    for variable in variables():
        assert variable["type"] in {"datasource", "query", "textbox"}, variable["name"]
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"
            assert variable["includeAll"] and variable["allValue"] == ".*"
        if variable["type"] == "textbox":  # a number the queries divide by
            assert float(variable["query"]) > 0 and variable["current"]["value"] == variable["query"]


def test_dashboard_shows_cost_tokens_latency_errors_unpriced_and_vllm_beside_the_client() -> None:
    by_title = {
        panel["title"]: " ".join(t["expr"] for t in panel.get("targets", [])) for panel in panels(DASHBOARD)
    }
    everything = " ".join(by_title.values())
    cost_per_hour = by_title["Cost per hour by model and team (USD/h)"]
    assert "gen_ai_client_operation_cost_sum" in cost_per_hour and "* 3600" in cost_per_hour
    assert "sum by (gen_ai_request_model, team)" in cost_per_hour
    assert "sum by (llmmeter_token_kind)" in by_title["Tokens per second by kind and modality"]
    for metric in ("time_to_first_token", "time_per_output_token", "duration"):
        name = prometheus_metric_name(sc.METRICS[metric])
        for q in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({q}, sum by (le) (rate({name}_bucket" in everything, (metric, q)
    assert 'error_type!=""' in by_title["Error rate by model"]
    assert "llmmeter_client_token_unpriced_total" in everything
    vllm_vs_client = by_title["Time to first token p95: vLLM server vs llmmeter client"]
    assert "vllm:time_to_first_token_seconds_bucket" in vllm_vs_client
    assert "llmmeter_client_operation_time_to_first_token_seconds_bucket" in vllm_vs_client


def test_dashboard_shows_routing_savings_cache_and_budgets() -> None:
    by_title = {
        panel["title"]: " ".join(t["expr"] for t in panel.get("targets", [])) for panel in panels(DASHBOARD)
    }
    routes = prometheus_metric_name(sc.ROUTE_REQUESTS_METRIC)
    escalation = by_title["Escalation rate by route"]
    assert (
        f'{routes}{{otel_scope_name="llmmeter", team=~"$team", llmmeter_route_escalated="true"}}'
        in escalation
    )
    assert escalation.count("sum by (llmmeter_route_name)") == 3  # escalated (or 0) / all
    assert 'llmmeter_route_fallback="true"' in by_title["Fallback rate by route"]
    assert "llmmeter_route_final_model" in by_title["Final model mix in range"]
    assert (
        f"{prometheus_metric_name(sc.STEP_CALLS_METRIC)}_bucket"
        in by_title["LLM calls per step p95 / max bucket"]
    )
    assert 'llmmeter_token_kind="cache_read_input"' in by_title["Cached share of input tokens by model"]
    assert "gen_ai_client_operation_cost_count" in by_title["Average cost per call by model in range (USD)"]
    pace = by_title["Daily spend pace by team vs budget"]
    assert "* 86400 / $daily_budget_usd" in pace and "sum by (team)" in pace
    assert "/ $daily_budget_usd" in by_title["Spend in range by team vs budget"]


def test_dashboard_reads_only_metric_names_llmmeter_or_vllm_expose() -> None:
    exposed = set()
    for spec in [*sc.METRICS.values(), sc.ROUTE_REQUESTS_METRIC, sc.STEP_CALLS_METRIC]:
        name = prometheus_metric_name(spec)
        exposed |= (
            {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if spec.instrument == "histogram" else {name}
        )
    expressions = [expr for _, expr in panel_expressions()] + [
        v["definition"] for v in variables() if "definition" in v
    ]
    used = {
        name
        for expr in expressions
        for name in re.findall(r"\b((?:gen_ai|llmmeter)_[a-z0-9_]+|vllm:[a-z0-9_]+)\{", expr)
    }
    assert {"gen_ai_client_operation_cost_sum", "vllm:time_to_first_token_seconds_bucket"} <= used
    llmmeter_names = {name for name in used if not name.startswith("vllm:")}
    assert llmmeter_names <= exposed, llmmeter_names - exposed
    vllm_capture = VLLM_METRICS.read_text()
    for name in used - llmmeter_names:
        assert re.search(rf"^{re.escape(name)}[{{ ]", vllm_capture, re.MULTILINE), name


# --- every query against the real Prometheus ----------------------------------------------------
@pytest.mark.prometheus
@requires_prometheus
@pytest.mark.parametrize(
    ("where", "expr"), panel_expressions(), ids=[where for where, _ in panel_expressions()]
)
def test_every_panel_query_parses_and_returns_data(fleet: Fleet, where: str, expr: str) -> None:
    result = fleet.prometheus.query(as_grafana_would_send(expr, fleet.window), fleet.at)

    values = [float(sample["value"][1]) for sample in result]
    assert values, f"{where}: no data for {expr}"
    assert any(math.isfinite(v) for v in values), f"{where}: only NaN/Inf for {expr}: {values}"


@pytest.mark.prometheus
@requires_prometheus
@pytest.mark.parametrize(
    "variable", [v for v in variables() if v["type"] == "query"], ids=lambda v: str(v["name"])
)
def test_every_template_variable_query_finds_values(fleet: Fleet, variable: dict[str, Any]) -> None:
    match = LABEL_VALUES.match(variable["query"]["query"])
    assert match, variable["query"]
    values = fleet.prometheus.query(f"group by ({match['label']}) ({match['metric']})", fleet.at)

    assert {sample["metric"].get(match["label"]) for sample in values} - {None}
