"""Every example in examples/ runs offline, and says what the README says it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from llmmeter.store import read_records

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_demo_meters_real_openai_traffic_and_prints_the_report(tmp_path: Path) -> None:
    store = tmp_path / "demo.sqlite3"
    result = _run("demo.py", "--store", str(store))
    assert result.returncode == 0, result.stderr
    assert "llmmeter report: 11 LLM calls" in result.stdout
    assert "Tokens and cost" in result.stdout and "cost (USD)" in result.stdout
    assert "TTFT" in result.stdout and "TPOT" in result.stdout

    records = read_records(store)
    llm_calls = [r for r in records if r.kind == "llm"]
    assert len(llm_calls) == 11
    assert all(r.cost is not None for r in llm_calls), "every demo model has a bundled price"
    assert {r.attributes.get("team") for r in llm_calls} == {"search", "support", "research"}
    streamed = [r for r in llm_calls if r.streaming]
    assert streamed and all(r.usage and r.usage.source == "provider" for r in streamed)
    (agent,) = [r for r in records if r.kind == "step"]
    assert agent.name == "triage-agent" and agent.rollup_calls == 2 and agent.rollup_cost


def test_demo_report_as_json_agrees_with_the_store(tmp_path: Path) -> None:
    store = tmp_path / "demo.sqlite3"
    assert _run("demo.py", "--store", str(store)).returncode == 0
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmmeter",
            "report",
            "--store",
            str(store),
            "--by",
            "team",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    groups = {g["key"]["team"]: g for g in json.loads(report.stdout)["groups"]}
    assert groups["search"]["calls"] == 3 and groups["research"]["calls"] == 4


def test_routing_example_escalates_falls_back_refuses_over_budget_and_prints_the_route_report(
    tmp_path: Path,
) -> None:
    from llmmeter import semconv as sc
    from llmmeter.feedback import read_feedback

    store = tmp_path / "routing.sqlite3"
    result = _run("routing.py", "--store", str(store))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("refused before sending: llmmeter: budget") == 1
    assert "80% reached" in result.stdout and "100% reached" in result.stdout
    # It ends with `llmmeter report --kind route --by name,final_model`: the mix, then the total.
    report = result.stdout[result.stdout.index("$ llmmeter report") :]
    routes = [line.split() for line in report.splitlines() if line.startswith("support-router")]
    rows = {cells[1]: cells for cells in routes}
    # requests, escalated, escalation rate, fallbacks, fallback rate
    assert rows["gpt-4o"][2:7] == ["3", "2", "66.7%", "1", "33.3%"]
    assert rows["gpt-4o-mini"][2:4] == ["2", "0"]
    total = next(line.split() for line in report.splitlines() if line.startswith("total"))
    assert total[1:6] == ["6", "2", "33.3%", "1", "16.7%"]
    assert total[8:10] == ["5", "0.80"], "5 judgements, mean score 0.80"

    records = read_records(store)
    routes = [r for r in records if r.operation == sc.ROUTE_OPERATION]
    assert len(routes) == 6
    assert sum(bool(r.attributes[sc.ROUTE_ESCALATED]) for r in routes) == 2
    assert sum(bool(r.attributes[sc.ROUTE_FALLBACK]) for r in routes) == 1
    (refused,) = [r for r in routes if r.outcome == "error"]
    assert refused.error_type == "llmmeter.BudgetExceeded" and refused.attributes[sc.ROUTE_ATTEMPTS] == 0
    assert len(read_feedback(store)) == 5
