"""``llmmeter report --kind route``: a router's escalation and fallback rates, cost per request and
latency, from the route records in the store.

Routes are driven through the real ``openai`` client (sync and async) against the local server;
the expected numbers are counted by hand from what each test's routes did.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import llmmeter
from llmmeter import semconv as sc
from llmmeter.cli import main
from llmmeter.record import CallKind, CallRecord
from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

from .conftest import Telemetry

SMALL, LARGE = "gpt-4o-mini", "gpt-4o"
MESSAGES = [{"role": "user", "content": "where is my parcel"}]
FAIL = pacing_headers(error_status=503)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=4)) as srv:
        yield srv


def ask(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)  # type: ignore[arg-type]


def run_support_routes(client: openai.OpenAI) -> list[Any]:
    """Four runs of "support": answered small (1 call); escalated twice (2 calls each); a failed
    large call that fell back to small (2 calls). Returns the final replies."""
    replies = []
    with llmmeter.route("support"):
        replies.append(ask(client, SMALL))
    for _ in range(2):
        with llmmeter.route("support") as route:
            ask(client, SMALL)
            route.escalate("low_confidence")
            replies.append(ask(client, LARGE))
    with llmmeter.route("support"):
        try:
            ask(client, LARGE, extra_headers=FAIL)
        except openai.InternalServerError:
            replies.append(ask(client, SMALL))
    return replies


async def run_billing_route(server: LocalOpenAIServer) -> Any:
    """One async run of "billing": answered small."""
    client = llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, max_retries=0))
    async with llmmeter.route("billing"):
        return await client.chat.completions.create(model=SMALL, messages=MESSAGES)  # type: ignore[arg-type]


@pytest.fixture
def store(server: LocalOpenAIServer, telemetry: Telemetry) -> tuple[Path, list[CallRecord]]:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0))
    _unjudged, escalated, escalated_again, fell_back = run_support_routes(client)
    billed = asyncio.run(run_billing_route(server))
    # Users judge three support answers (scores 1, 0, 1) and one billing answer (a label only).
    llmmeter.feedback(escalated.id, score=1.0, label="correct")
    llmmeter.feedback(escalated_again.id, score=0.0, label="wrong")
    llmmeter.feedback(fell_back.id, score=1.0, label="correct")
    llmmeter.feedback(billed.id, label="unclear")
    records = telemetry.records
    assert telemetry.settings is not None and telemetry.settings.store is not None
    return telemetry.settings.store.path, records


def report(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", "--store", str(path), "--kind", "route", *args])
    out, err = capsys.readouterr()
    return code, out, err


def route_records(records: list[CallRecord], name: str) -> list[CallRecord]:
    return [
        r for r in records if r.kind is CallKind.STEP and r.operation == sc.ROUTE_OPERATION and r.name == name
    ]


def test_the_route_report_gives_escalation_and_fallback_rates_per_route(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    code, out, _ = report(path, capsys, "--by", "name", "--format", "json")
    assert code == 0
    document = json.loads(out)
    support, billing = document["groups"]
    assert support["key"] == {"name": "support"} and billing["key"] == {"name": "billing"}
    # support: 4 routes, 2 escalated -> 2/4 = 0.5; 1 fell back -> 1/4 = 0.25; calls 1+2+2+2 = 7.
    assert support["requests"] == 4
    assert (support["escalations"], support["escalation_rate"]) == (2, 0.5)
    assert (support["fallbacks"], support["fallback_rate"]) == (1, 0.25)
    assert (support["attempts"], support["attempts_per_request"]) == (7, 1.75)
    # billing: one async route, one call, neither escalated nor fallen back.
    assert (billing["requests"], billing["escalation_rate"], billing["fallback_rate"]) == (1, 0.0, 0.0)
    assert document["total"]["requests"] == 5 and document["total"]["escalation_rate"] == 2 / 5


def test_cost_per_request_is_the_rolled_up_cost_of_the_routes_divided_by_their_number(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, records = store
    # The failed call cost nothing (no usage): every support route is fully priced, so the cost per
    # request is the sum of the priced calls made inside "support" over its 4 routes.
    support_calls = [
        r for r in records if r.kind is CallKind.LLM and r.attributes.get(sc.ROUTE_NAME) == "support"
    ]
    spent = sum((r.cost.amount for r in support_calls if r.cost is not None), Decimal(0))
    _, out, _ = report(path, capsys, "--format", "json")
    (support,) = [g for g in json.loads(out)["groups"] if g["key"] == {"name": "support"}]
    assert support["priced_requests"] == 4 and support["unpriced_requests"] == 0
    assert Decimal(support["cost_usd"]) == spent
    assert Decimal(support["cost_per_request_usd"]) == spent / 4


def test_duration_percentiles_are_over_the_whole_routes(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, records = store
    x = sorted(r.timings.duration_s or 0.0 for r in route_records(records, "support"))
    _, out, _ = report(path, capsys, "--format", "json")
    (support,) = [g for g in json.loads(out)["groups"] if g["key"] == {"name": "support"}]
    # 4 values: p50 at rank 1.5 is halfway between x[1] and x[2]; p95 at rank 2.85.
    assert support["duration_s"]["count"] == 4
    assert support["duration_s"]["p50"] == pytest.approx(x[1] + 0.5 * (x[2] - x[1]))
    assert support["duration_s"]["p95"] == pytest.approx(x[2] + 0.85 * (x[3] - x[2]))


def test_by_name_and_final_model_shows_the_routers_mix(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    code, out, _ = report(path, capsys, "--by", "name,final_model", "--format", "csv")
    assert code == 0
    rows = {(row["name"], row["final_model"]): row for row in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {("support", LARGE), ("support", SMALL), ("billing", SMALL)}
    # The two escalated routes ended on the large model; the plain and the fallback on the small.
    assert (rows["support", LARGE]["requests"], rows["support", LARGE]["escalations"]) == ("2", "2")
    assert (rows["support", SMALL]["requests"], rows["support", SMALL]["fallbacks"]) == ("2", "1")
    assert rows["support", SMALL]["escalation_rate"] == "0.0"


def test_feedback_on_a_routes_calls_is_counted_and_averaged_per_group(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "name,final_model", "--format", "json")
    groups = {(g["key"]["name"], g["key"]["final_model"]): g for g in json.loads(out)["groups"]}
    # support on gpt-4o: the two escalated answers, scored 1 and 0 -> mean 0.5.
    assert (groups["support", LARGE]["feedback_count"], groups["support", LARGE]["feedback_mean"]) == (2, 0.5)
    # support on gpt-4o-mini: the fallback's answer scored 1; the plain answer was not judged.
    assert (groups["support", SMALL]["feedback_count"], groups["support", SMALL]["feedback_mean"]) == (1, 1.0)
    # billing: judged with a label only -> counted, but no mean (absent, not 0).
    assert (groups["billing", SMALL]["feedback_count"], groups["billing", SMALL]["feedback_mean"]) == (
        1,
        None,
    )
    total = json.loads(out)["total"]
    assert (total["feedback_count"], total["feedback_mean"]) == (4, 2 / 3)


def test_the_table_shows_rates_and_a_total_row(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    code, out, _ = report(path, capsys)
    assert code == 0
    assert out.startswith("llmmeter route report: 5 routes")
    support = next(line for line in out.splitlines() if line.startswith("support"))
    assert "50.0%" in support and "25.0%" in support and "1.75" in support
    assert any(line.startswith("total") for line in out.splitlines())


def test_an_unknown_key_is_one_line_naming_the_valid_keys(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    code, out, err = report(path, capsys, "--by", "name,colour")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "no route record has 'colour'" in err and "final_model" in err


def test_a_store_with_calls_but_no_routes_says_so(
    server: LocalOpenAIServer, telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    ask(llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0)), SMALL)
    assert telemetry.records and telemetry.settings is not None and telemetry.settings.store is not None
    code, out, _ = report(telemetry.settings.store.path, capsys, "--by", "name,colour")
    assert code == 0 and "No route records in this window." in out


def test_route_and_baseline_model_together_are_refused(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    code, _, err = report(path, capsys, "--baseline-model", LARGE)
    assert code == 2 and "leave out --kind route" in err


def test_the_html_report_has_a_routing_section_when_the_store_has_routes(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, _ = store
    page_path = tmp_path / "report.html"
    assert main(["report", "--store", str(path), "--format", "html", "-o", str(page_path)]) == 0
    page = page_path.read_text(encoding="utf-8")
    section = page[page.index("<h2>Routing: escalation") : page.index("<h2>Notes</h2>")]
    support_row = section[section.index('<td class="text">support</td>') :].split("</tr>")[0]
    assert '<td class="num">4</td>' in support_row and '<td class="num">50.0%</td>' in support_row
    assert "<h2>Routing: the model each route ended on</h2>" in section and f">{LARGE}</td>" in section


def test_the_html_report_of_a_store_without_routes_has_no_routing_section(
    server: LocalOpenAIServer, telemetry: Telemetry, tmp_path: Path
) -> None:
    ask(llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0)), SMALL)
    assert telemetry.records and telemetry.settings is not None and telemetry.settings.store is not None
    page_path = tmp_path / "report.html"
    assert (
        main(
            [
                "report",
                "--store",
                str(telemetry.settings.store.path),
                "--format",
                "html",
                "-o",
                str(page_path),
            ]
        )
        == 0
    )
    assert "Routing" not in page_path.read_text(encoding="utf-8")


def test_hostile_route_names_are_escaped_in_the_table_and_neutralised_in_csv(
    server: LocalOpenAIServer, telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0))
    hostile = '=HYPERLINK("x")\x1b[31m'
    with llmmeter.route(hostile):
        ask(client, SMALL)
    assert telemetry.records and telemetry.settings is not None and telemetry.settings.store is not None
    path = telemetry.settings.store.path
    _, table, _ = report(path, capsys)
    assert "\x1b" not in table and "\\x1b[31m" in table
    _, out, _ = report(path, capsys, "--format", "csv")
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["name"] == "'" + hostile
    _, out, _ = report(path, capsys, "--format", "json")
    assert json.loads(out)["groups"][0]["key"]["name"] == hostile


def test_top_is_refused_for_the_route_report(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    code, out, err = report(path, capsys, "--top", "1")
    assert code == 2 and out == "" and "--top does not apply" in err and err.count("\n") == 1


def test_the_time_window_bounds_the_routes(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, before, _ = report(path, capsys, "--until", "2000-01-01")
    assert "llmmeter route report: 0 routes" in before and "No route records in this window." in before
    _, recent, _ = report(path, capsys, "--since", "1h", "--format", "json")
    assert json.loads(recent)["total"]["requests"] == 5
