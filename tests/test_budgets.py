"""Budgets act before the bill: a spent ``raise`` budget refuses the next call before it is sent.

Prices here are made for hand arithmetic: ``acme-chat`` costs 1 USD per input token and nothing
per output token, and the local server counts ``3 + words`` input tokens per message, so every call
with :data:`MESSAGES` costs exactly 7 USD.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import llmmeter
from llmmeter import semconv as sc
from llmmeter.pricing import ModelPrice, PricingRegistry
from llmmeter.record import CallRecord, Cost, Timings
from llmmeter.store import SQLiteStore
from llmmeter.testing import LocalOpenAIServer, Pacing

from .conftest import Telemetry

MODEL = "acme-chat"
MESSAGES = [{"role": "user", "content": "where is my parcel"}]
CALL_COST = Decimal(7)  # 3 + 4 words input tokens at 1 USD each


def registry() -> PricingRegistry:
    prices = PricingRegistry()
    prices.register("acme-*", ModelPrice(input_per_mtok=Decimal(1_000_000), output_per_mtok=Decimal(0)))
    return prices


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=2)) as srv:
        yield srv


@pytest.fixture
def client(server: LocalOpenAIServer) -> openai.OpenAI:
    return llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0))


def ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, **kwargs)  # type: ignore[arg-type]


def test_a_spent_raise_budget_refuses_the_call_before_it_reaches_the_server(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    budget = llmmeter.Budget(limit_usd="14", per="day", match={"team": "search"}, action="raise")
    telemetry.reconfigure(pricing=registry(), budgets=[budget])
    sent = len(server.requests)
    with llmmeter.attributes(team="search"):
        ask(client)
        ask(client)  # 14 USD: the limit is reached by this call, which was allowed to start
        with pytest.raises(llmmeter.BudgetExceeded) as refused:
            ask(client)
        with pytest.raises(llmmeter.BudgetExceeded):
            ask(client, stream=True)
    assert len(server.requests) - sent == 2

    error = refused.value
    assert error.key == {"team": "search"}
    assert error.spent == 2 * CALL_COST == error.limit
    assert error.budget is budget
    assert error.period_start == datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert "not sent" in str(error) and "\n" not in str(error)
    assert [r.cost.amount for r in telemetry.records if r.cost] == [CALL_COST, CALL_COST]
    refusals = telemetry.metric_points(sc.BUDGET_REFUSALS_METRIC.name)
    assert [p.value for p in refusals] == [2]  # type: ignore[attr-defined]

    with llmmeter.attributes(team="ads"):
        ask(client)  # another team: not covered
    assert len(server.requests) - sent == 3


async def test_an_async_client_is_refused_the_same_way(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.AsyncOpenAI(base_url=server.base_url, max_retries=0))
    telemetry.reconfigure(pricing=registry(), budgets=[llmmeter.Budget(limit_usd=7, action="raise")])
    sent = len(server.requests)
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(llmmeter.BudgetExceeded) as refused:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert len(server.requests) - sent == 1
    assert refused.value.key == {} and refused.value.spent == CALL_COST


def test_any_measured_llm_call_is_refused_before_its_code_runs(telemetry: Telemetry) -> None:
    ran: list[str] = []

    @llmmeter.metered(model=MODEL, provider="acme")
    def my_llm_call(prompt: str) -> dict[str, Any]:
        ran.append(prompt)
        return {"id": prompt, "model": MODEL, "usage": {"prompt_tokens": 7, "completion_tokens": 1}}

    telemetry.reconfigure(pricing=registry(), budgets=[llmmeter.Budget(limit_usd="7", action="raise")])
    my_llm_call("first")
    with pytest.raises(llmmeter.BudgetExceeded):
        my_llm_call("second")
    assert ran == ["first"]


def test_a_streamed_call_counts_when_its_stream_ends(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    telemetry.reconfigure(pricing=registry(), budgets=[llmmeter.Budget(limit_usd="7", action="raise")])
    stream = ask(client, stream=True)
    ask(client)  # the stream has not ended: its cost is not counted yet
    for _ in stream:
        pass
    with pytest.raises(llmmeter.BudgetExceeded) as refused:
        ask(client)
    assert refused.value.spent == 2 * CALL_COST  # the overshoot of a call in flight


def test_warn_calls_on_budget_once_at_80_and_once_at_100_percent_per_user(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    events: list[llmmeter.BudgetEvent] = []
    budget = llmmeter.Budget(limit_usd="16", per="hour", match={"user_id": "*"}, action="warn")
    telemetry.reconfigure(pricing=registry(), budgets=[budget], on_budget=events.append)
    sent = len(server.requests)
    with llmmeter.attributes(user_id="u-1"):
        for _ in range(4):  # 7, 14 (87.5 %), 21 (131 %), 28 USD
            ask(client)
    with llmmeter.attributes(user_id="u-2"):
        ask(client)
        ask(client)  # 14 USD: u-2's own 80 %
    assert len(server.requests) - sent == 6  # warn never refuses

    assert [(e.key, e.threshold, e.spent) for e in events] == [
        ({"user_id": "u-1"}, Decimal("0.8"), 2 * CALL_COST),
        ({"user_id": "u-1"}, Decimal(1), 3 * CALL_COST),
        ({"user_id": "u-2"}, Decimal("0.8"), 2 * CALL_COST),
    ]
    assert all(e.budget is budget and e.limit == 16 for e in events)
    now = datetime.now(UTC)
    assert events[0].period_start == now.replace(minute=0, second=0, microsecond=0)
    assert (events[0].period_end - events[0].period_start).total_seconds() == 3600


def test_without_on_budget_a_reached_threshold_is_logged(
    client: openai.OpenAI, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry.reconfigure(pricing=registry(), budgets=[llmmeter.Budget(limit_usd="7", name="tiny")])
    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        ask(client)
    assert "budget 'tiny' reached 100" in caplog.text


def test_a_failing_on_budget_is_logged_and_the_call_returns(
    client: openai.OpenAI,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("LLMMETER_STRICT")

    def broken(event: llmmeter.BudgetEvent) -> None:
        raise RuntimeError("pager down")

    telemetry.reconfigure(pricing=registry(), budgets=[llmmeter.Budget(limit_usd="7")], on_budget=broken)
    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        assert ask(client).choices
    assert "on_budget callback 'test_a_failing_on_budget" in caplog.text


def test_a_route_can_have_a_budget_of_its_own(client: openai.OpenAI, telemetry: Telemetry) -> None:
    budget = llmmeter.Budget(limit_usd="7", match={sc.ROUTE_NAME: "support-router"}, action="raise")
    telemetry.reconfigure(pricing=registry(), budgets=[budget])
    with llmmeter.route("support-router"):
        ask(client)
        with pytest.raises(llmmeter.BudgetExceeded):
            ask(client)
    ask(client)  # outside the route: not covered

    (route,) = [r for r in telemetry.records if r.operation == sc.ROUTE_OPERATION]
    assert route.attributes[sc.ROUTE_ATTEMPTS] == 1  # a refused call is no attempt


def test_spend_of_other_processes_sharing_the_store_counts(
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    telemetry: Telemetry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "shared.sqlite3"
    other_process = textwrap.dedent(
        f"""
        import sys, openai, llmmeter
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tests.test_budgets import registry
        llmmeter.configure(store={str(store)!r}, pricing=registry())
        client = llmmeter.instrument(openai.OpenAI(base_url={server.base_url!r}, max_retries=0))
        with llmmeter.attributes(team="search"):
            for _ in range(2):
                client.chat.completions.create(model="acme-chat", messages={MESSAGES!r})
        assert llmmeter.flush(10)
        """
    )
    done = subprocess.run([sys.executable, "-c", other_process], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    monkeypatch.setenv("LLMMETER_BUDGET_REFRESH_S", "0")
    budget = llmmeter.Budget(limit_usd="21", match={"team": "search"}, action="raise")
    telemetry.reconfigure(store=store, pricing=registry(), budgets=[budget])
    sent = len(server.requests)
    with llmmeter.attributes(team="search"):
        ask(client)  # 14 USD from the other process + 7 here
        with pytest.raises(llmmeter.BudgetExceeded) as refused:
            ask(client)
    assert refused.value.spent == 3 * CALL_COST
    assert len(server.requests) - sent == 1
    assert telemetry.settings is not None and telemetry.settings.budgets is not None
    assert telemetry.settings.budgets.spent(budget, {"team": "search"}) == 3 * CALL_COST


def test_unpriced_calls_add_nothing(client: openai.OpenAI, telemetry: Telemetry) -> None:
    telemetry.reconfigure(
        pricing=PricingRegistry(), budgets=[llmmeter.Budget(limit_usd="0.01", action="raise")]
    )
    for _ in range(3):
        ask(client)
    assert all(r.cost is None for r in telemetry.records)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"limit_usd": "-1"}, ValueError, "positive amount"),
        ({"limit_usd": "NaN"}, ValueError, "positive amount"),
        ({"limit_usd": "fifty"}, ValueError, "not a number"),
        ({"limit_usd": True}, TypeError, "limit_usd"),
        ({"limit_usd": "5", "per": "week"}, ValueError, "hour, day, month"),
        ({"limit_usd": "5", "action": "block"}, ValueError, "'raise' or 'warn'"),
        ({"limit_usd": "5", "match": ["team"]}, TypeError, "match must be a dict"),
        ({"limit_usd": "5", "match": {"team": ["a"]}}, TypeError, "match['team']"),
    ],
)
def test_a_bad_budget_is_refused_with_a_one_line_message(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        llmmeter.Budget(**kwargs)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_configure_refuses_what_is_not_a_budget() -> None:
    with pytest.raises(TypeError, match=r"llmmeter\.Budget objects"):
        llmmeter.configure(store=None, budgets=[{"limit_usd": 5}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not callable"):
        llmmeter.configure(store=None, budgets=[llmmeter.Budget(limit_usd=5)], on_budget="alert")  # type: ignore[arg-type]
    llmmeter.configure(store=None, pricing=None)


@pytest.mark.parametrize(
    ("per", "at", "start", "end"),
    [
        ("hour", "2026-12-31T23:59:59", "2026-12-31T23:00:00", "2027-01-01T00:00:00"),
        ("day", "2026-12-31T23:59:59", "2026-12-31T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
    ],
)
def test_periods_are_utc_calendar_hours_days_and_months(per: Any, at: str, start: str, end: str) -> None:
    def seconds(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())

    budget = llmmeter.Budget(limit_usd="1", per=per)
    assert budget.period_of(seconds(at) * 1_000_000_000) == (seconds(start), seconds(end))


def test_the_default_name_says_what_the_budget_covers() -> None:
    assert llmmeter.Budget(limit_usd="50", match={"team": "search"}).name == "50 USD/day team=search"
    assert llmmeter.Budget(limit_usd="5", per="month").name == "5 USD/month all calls"


def test_the_refresh_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmmeter import budgets

    monkeypatch.setenv(budgets.REFRESH_ENV_VAR, "2.5")
    assert budgets._refresh_interval() == 2.5
    monkeypatch.setenv(budgets.REFRESH_ENV_VAR, "soon")
    assert budgets._refresh_interval() == budgets.REFRESH_S
    assert os.environ[budgets.REFRESH_ENV_VAR] == "soon"


def test_a_warn_budget_hears_of_other_processes_spend_too(
    client: openai.OpenAI, telemetry: Telemetry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "shared.sqlite3"
    another_process = SQLiteStore(store)
    another_process.write(
        CallRecord(
            operation="chat",
            provider="acme",
            request_model=MODEL,
            timings=Timings(start_time_unix_ns=time.time_ns(), duration_s=0.1),
            cost=Cost(amount=CALL_COST),
            attributes={"team": "search"},
            record_id="another-process.1",
        )
    )
    assert another_process.close()
    monkeypatch.setenv("LLMMETER_BUDGET_REFRESH_S", "0")
    events: list[llmmeter.BudgetEvent] = []
    budget = llmmeter.Budget(limit_usd="16", match={"team": "search"}, action="warn")
    telemetry.reconfigure(store=store, pricing=registry(), budgets=[budget], on_budget=events.append)
    with llmmeter.attributes(team="search"):
        ask(client)  # 7 here + 7 read from the store: 87.5 %
    assert [(e.threshold, e.spent) for e in events] == [(Decimal("0.8"), 2 * CALL_COST)]
