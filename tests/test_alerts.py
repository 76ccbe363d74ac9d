"""``examples/prometheus/alerts.yaml``: alerting rules over llmmeter's metrics, and the metric
behind the runaway-step alert.

* the rules pass ``promtool check rules`` and their unit tests (``alerts_test.yaml``: input series
  shaped like llmmeter's exporter output, and the alerts expected from them) pass
  ``promtool test rules``. promtool ships in Debian's ``prometheus`` package;
* every metric the rules read is one llmmeter exports, under the name Prometheus gives it;
* ``llmmeter.step.calls`` counts the LLM calls a step (or route) rolled up, sync and async;
* every rule expression is accepted by the real Prometheus that scraped the example fleet, and the
  recording rules return data from its traffic.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

import llmmeter
from llmmeter import semconv as sc
from llmmeter.report_prometheus import prometheus_metric_name
from llmmeter.testing import LocalOpenAIServer, Pacing

from .conftest import Telemetry
from .prometheus_stack import Fleet, fleet, requires_prometheus

__all__ = ["fleet"]  # the session fixture, imported for the tests below

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"
ALERTS_FILE = EXAMPLES / "alerts.yaml"
ALERTS_TEST_FILE = EXAMPLES / "alerts_test.yaml"
RULES: list[dict[str, Any]] = [
    rule for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for rule in group["rules"]
]
PROMTOOL = shutil.which("promtool")
requires_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian's prometheus package ships it; .ci/run installs it)",
)
STEP_CALLS = prometheus_metric_name(sc.STEP_CALLS_METRIC)
MESSAGES = [{"role": "user", "content": "plan the trip"}]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def exported_series_names() -> set[str]:
    """Every series name llmmeter's metrics get in Prometheus (histograms: bucket, sum, count)."""
    specs = [
        *sc.METRICS.values(),
        sc.ROUTE_REQUESTS_METRIC,
        sc.BUDGET_REFUSALS_METRIC,
        sc.FEEDBACK_METRIC,
        sc.RECORDS_DROPPED_METRIC,
        sc.STEP_CALLS_METRIC,
    ]
    names: set[str] = set()
    for spec in specs:
        name = prometheus_metric_name(spec)
        names |= (
            {f"{name}_{part}" for part in ("bucket", "sum", "count")}
            if spec.instrument == "histogram"
            else {name}
        )
    return names


# --- the rule file -------------------------------------------------------------------------------
@requires_promtool
def test_alert_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS_FILE))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


@requires_promtool
def test_alert_rules_fire_as_their_promtool_unit_tests_expect() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST_FILE))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_cover_routing_budgets_runaway_steps_errors_and_ttft() -> None:
    alerts = {rule["alert"]: rule for rule in RULES if "alert" in rule}

    assert set(alerts) == {
        "LlmmeterRouteEscalationRateHigh",
        "LlmmeterRouteEscalationRateLow",
        "LlmmeterRouteFallbackRateHigh",
        "LlmmeterTeamBudgetBurn",
        "LlmmeterBudgetRefusingCalls",
        "LlmmeterRunawayStep",
        "LlmmeterErrorRateHigh",
        "LlmmeterTimeToFirstTokenSlo",
    }
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert rule["annotations"]["summary"], name
    tested = yaml.safe_load(ALERTS_TEST_FILE.read_text())["tests"]
    fired = {
        case["alertname"] for test in tested for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tested
        for case in test.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    # Every alert has a unit test where it fires and one where it must not.
    assert fired == quiet == set(alerts), (set(alerts) - fired, set(alerts) - quiet)


def series_read_by(expr: str) -> set[str]:
    """The llmmeter series names in a PromQL expression (label lists and matchers removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(?:by|on|without|ignoring)\s*\([^)]*\)", "", expr)
    return set(re.findall(r"\b(?:gen_ai|llmmeter)[a-z0-9_:]*", expr))


def test_the_rules_read_only_series_llmmeter_exports_or_records_itself() -> None:
    recorded = {rule["record"] for rule in RULES if "record" in rule}
    read = {name for rule in RULES for name in series_read_by(str(rule["expr"]))}

    assert {
        "llmmeter_route_requests_total",
        f"{STEP_CALLS}_bucket",
        "gen_ai_client_operation_cost_sum",
    } <= read
    assert recorded <= read
    assert read <= exported_series_names() | recorded, read - exported_series_names() - recorded


# --- the runaway-step signal ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Any:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=4)) as srv:
        yield srv


def step_call_points(telemetry: Telemetry) -> dict[tuple[tuple[str, Any], ...], tuple[int, float]]:
    points: list[Any] = telemetry.metric_points(sc.STEP_CALLS_METRIC.name)
    return {tuple(sorted(p.attributes.items())): (p.count, p.sum) for p in points}


def test_a_finished_step_records_how_many_llm_calls_it_made(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0))

    @llmmeter.metered(name="plan-trip")
    def plan(calls: int) -> None:
        for _ in range(calls):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]

    with llmmeter.attributes(team="travel", user_id="u-1"):
        plan(3)
        plan(2)

    # One point per step with its call count; the LLM calls record none; user ids stay off metrics.
    assert step_call_points(telemetry) == {
        (("gen_ai.operation.name", "step"), ("llmmeter.step.name", "plan-trip"), ("team", "travel")): (2, 5.0)
    }


def test_an_async_route_records_its_attempts_as_its_calls(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, api_key="local", max_retries=0))

    async def answer() -> None:
        async with llmmeter.route("support-router") as route:
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            route.escalate("low_confidence")
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]

    asyncio.run(answer())

    assert step_call_points(telemetry) == {
        (("gen_ai.operation.name", "route"), ("llmmeter.step.name", "support-router")): (1, 2.0)
    }


# --- against the real Prometheus -----------------------------------------------------------------
@pytest.mark.prometheus
@requires_prometheus
@pytest.mark.parametrize("rule", RULES, ids=[str(rule.get("alert", rule.get("record"))) for rule in RULES])
def test_every_rule_expression_is_accepted_by_prometheus(fleet: Fleet, rule: dict[str, Any]) -> None:
    expr = str(rule["expr"]).replace("[1h]", f"[{fleet.window}]").replace("[10m]", f"[{fleet.window}]")

    result = fleet.prometheus.query(expr, fleet.at)  # raises on a parse or evaluation error

    if "record" in rule and "budget_usd" not in rule["record"]:
        assert result, f"{rule['record']}: no data from the fleet's traffic"


@pytest.mark.prometheus
@requires_prometheus
def test_the_fleet_routes_are_counted_by_the_route_counter_and_the_step_calls(fleet: Fleet) -> None:
    # examples/prometheus/app.py, per team: seven routes, six of one call and one of two (a failed
    # call and its fallback); three escalated.
    by_team = fleet.prometheus.by_labels(f"sum by (team) ({STEP_CALLS}_count)", ("team",), fleet.at)
    calls = fleet.prometheus.by_labels(f"sum by (team) ({STEP_CALLS}_sum)", ("team",), fleet.at)
    escalated = fleet.prometheus.by_labels(
        'sum by (team) (llmmeter_route_requests_total{llmmeter_route_escalated="true"})', ("team",), fleet.at
    )

    assert by_team == {("search",): 7.0, ("support",): 7.0}
    assert calls == {("search",): 8.0, ("support",): 8.0}
    assert escalated == {("search",): 3.0, ("support",): 3.0}
