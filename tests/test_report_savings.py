"""``llmmeter report --baseline-model MODEL``: every group's usage priced at MODEL beside what it
actually cost, and the savings.

Calls go through the real ``openai`` client to the local server, which reports the token counts
(cached ones too); the expected baseline is worked out by hand from those counts and gpt-4o's
bundled prices (input 2.50, cached input 1.25, output 10.00 USD per million tokens).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import llmmeter
from llmmeter.cli import main
from llmmeter.pricing.models import ModelPrice, PromptTier
from llmmeter.pricing.registry import PricingRegistry
from llmmeter.record import CallKind, CallRecord, Cost, CostStatus, Timings, Usage, UsageSource
from llmmeter.report.savings import query_savings
from llmmeter.store import SQLiteStore
from llmmeter.store.read import reading_store
from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

from .conftest import Telemetry

SMALL, LARGE, UNKNOWN = "gpt-4o-mini", "gpt-4o", "acme-unpriced-model"
MESSAGES = [{"role": "user", "content": "summarise the ticket history of this customer"}]
MILLION = Decimal(1_000_000)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=5)) as srv:
        yield srv


def ask(client: openai.OpenAI, model: str, **headers: Any) -> None:
    extra = pacing_headers(**headers) if headers else None
    client.chat.completions.create(model=model, messages=MESSAGES, extra_headers=extra)  # type: ignore[arg-type]


@pytest.fixture
def store(server: LocalOpenAIServer, telemetry: Telemetry) -> tuple[Path, list[CallRecord]]:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0))
    with llmmeter.attributes(team="search"):
        ask(client, SMALL)
        ask(client, SMALL, cached_tokens=4, tokens=20)
        with pytest.raises(openai.InternalServerError):
            ask(client, SMALL, error_status=503)
    with llmmeter.attributes(team="support"):
        ask(client, LARGE)
        ask(client, UNKNOWN)
    assert telemetry.settings is not None and telemetry.settings.store is not None
    return telemetry.settings.store.path, telemetry.records


def report(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", "--store", str(path), "--baseline-model", LARGE, *args])
    out, err = capsys.readouterr()
    return code, out, err


def at_gpt_4o(record: CallRecord) -> Decimal:
    """One call's tokens at gpt-4o's prices: uncached input at 2.50, cached at 1.25, output at 10."""
    usage = record.usage
    assert usage is not None and usage.input_tokens is not None and usage.output_tokens is not None
    cached = usage.cache_read_input_tokens or 0
    return (
        (usage.input_tokens - cached) * Decimal("2.50") + cached * Decimal("1.25") + usage.output_tokens * 10
    ) / MILLION


def groups_of(out: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(g["key"]["model"], g["key"]["team"]): g for g in json.loads(out)["groups"]}


def test_each_group_shows_its_usage_at_the_baseline_price_and_the_savings(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, records = store
    code, out, _ = report(path, capsys, "--by", "model,team", "--format", "json")
    assert code == 0
    search = groups_of(out)[SMALL, "search"]["baseline"]
    answered = [r for r in records if r.kind is CallKind.LLM and r.request_model == SMALL and r.cost]
    assert len(answered) == 2 and any(r.usage and r.usage.cache_read_input_tokens == 4 for r in answered)
    actual = sum((r.cost.amount for r in answered if r.cost), Decimal(0))
    baseline = sum((at_gpt_4o(r) for r in answered), Decimal(0))
    # savings = baseline - actual; savings % = savings / baseline * 100 (gpt-4o-mini costs 6 %
    # of gpt-4o at every token kind: 0.15/2.50, 0.075/1.25, 0.60/10 -> 94 % saved).
    assert Decimal(search["actual_cost"]) == actual
    assert Decimal(search["baseline_cost"]) == baseline
    assert Decimal(search["savings"]) == baseline - actual
    assert search["savings_pct"] == pytest.approx(94.0)
    # The failed call reported no tokens: left out of the comparison, not priced as 0.
    assert (search["compared_calls"], search["not_compared_calls"]) == (2, 1)


def test_the_baseline_models_own_group_saves_nothing(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "model,team", "--format", "json")
    support = groups_of(out)[LARGE, "support"]["baseline"]
    assert support["baseline_cost"] == support["actual_cost"]
    assert (support["savings"], support["savings_pct"]) == ("0", 0.0)


def test_a_group_whose_usage_was_never_priced_has_no_baseline_and_no_savings(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "model,team", "--format", "json")
    unpriced = groups_of(out)[UNKNOWN, "support"]["baseline"]
    assert (unpriced["compared_calls"], unpriced["not_compared_calls"]) == (0, 1)
    assert (
        unpriced["baseline_cost"] is None and unpriced["savings"] is None and unpriced["savings_pct"] is None
    )


def test_the_total_adds_up_the_groups(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "model,team", "--format", "json")
    document = json.loads(out)
    total = document["total"]["baseline"]
    assert document["baseline"] == {"model": LARGE, "currency": "USD"}
    parts = [g["baseline"] for g in document["groups"] if g["baseline"]["baseline_cost"] is not None]
    assert Decimal(total["baseline_cost"]) == sum(Decimal(p["baseline_cost"]) for p in parts)
    assert Decimal(total["savings"]) == sum(Decimal(p["savings"]) for p in parts)
    assert (total["compared_calls"], total["not_compared_calls"]) == (3, 2)


def test_cache_savings_of_calls_through_the_real_client_equal_their_cached_tokens_priced_by_hand(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, records = store
    for args in ([], ["--baseline-model", LARGE]):  # always on, with or without a baseline
        assert main(["report", "--store", str(path), "--by", "model,team", "--format", "json", *args]) == 0
        groups = groups_of(capsys.readouterr().out)
        cached = sum(
            r.usage.cache_read_input_tokens or 0 for r in records if r.usage and r.request_model == SMALL
        )
        # The server reported 4 cached tokens: gpt-4o-mini bills them 0.075 instead of 0.15 per million.
        assert cached == 4
        search = groups[SMALL, "search"]
        assert (
            Decimal(search["cache_savings"]["USD"]) == cached * (Decimal("0.15") - Decimal("0.075")) / MILLION
        )
        assert search["cache_write_premium"] == {"USD": None}  # OpenAI bills no cache writes
        assert groups[LARGE, "support"]["cache_savings"] == {"USD": None}  # nothing cached: absent, not 0


def test_csv_gets_baseline_columns_and_the_table_a_savings_section(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "team", "--format", "csv")
    rows = {row["team"]: row for row in csv.DictReader(io.StringIO(out))}
    assert rows["search"]["baseline_compared_calls"] == "2"
    assert rows["support"]["baseline_not_compared_calls"] == "1"
    code, table, _ = report(path, capsys, "--by", "team")
    assert code == 0 and "Savings against gpt-4o" in table
    savings_section = table[table.index("Savings against gpt-4o") :]
    search = next(line for line in savings_section.splitlines() if line.startswith("search"))
    assert "94.0 %" in search


def test_a_baseline_model_without_a_price_is_a_one_line_error(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    code = main(["report", "--store", str(path), "--baseline-model", "no-such-model-xyz"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no price for 'no-such-model-xyz'" in err


# --- over many stored calls: the sums priced equal every call priced one by one ---------------
DAY_NS = 86_400 * 10**9
FIRST_DAY = dt.date(2026, 11, 20)


def day_ns(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 10**9


def stored_call(rng: random.Random, i: int, day: dt.date, team: str) -> CallRecord:
    """A priced call on ``day``: random input (some cached), output and reasoning tokens."""
    input_tokens = rng.randint(1, 4000)
    output_tokens = rng.randint(0, 600)
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o-mini",
        timings=Timings(start_time_unix_ns=day_ns(day) + rng.randint(0, DAY_NS - 1), duration_s=0.1),
        usage=Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_input_tokens=rng.choice([None, rng.randint(0, input_tokens)]),
            reasoning_output_tokens=rng.choice([None, rng.randint(0, output_tokens)]),
            source=UsageSource.PROVIDER,
        ),
        cost=Cost(amount=Decimal(rng.randint(1, 10**6)).scaleb(-9), currency="USD"),
        cost_status=CostStatus.PRICED,
        attributes={"team": team},
        record_id=f"c-{i}",
    )


def baseline_registry(*, tiered: bool) -> PricingRegistry:
    """ "acme-big": no price before day 1, one on day 1, another from day 2 (with a long-prompt
    tier when ``tiered``)."""
    day1, day2 = FIRST_DAY + dt.timedelta(days=1), FIRST_DAY + dt.timedelta(days=2)
    tiers = [PromptTier(above_input_tokens=2000, input_per_mtok="7", output_per_mtok="21")] if tiered else []
    registry = PricingRegistry()
    registry.register(
        "acme-big",
        ModelPrice(
            input_per_mtok="3",
            cached_input_per_mtok="0.3",
            output_per_mtok="15",
            effective_from=day1,
            effective_to=day2,
        ),
    )
    registry.register(
        "acme-big",
        ModelPrice(
            input_per_mtok="2.5",
            cached_input_per_mtok="1.25",
            output_per_mtok="10",
            effective_from=day2,
            tiers=tiers,
        ),
    )
    return registry


@pytest.fixture(scope="module")
def many_calls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[CallRecord]]:
    """ "old" called only on day 0 (no baseline price then); "search" and "ads" on days 1 and 2."""
    path = tmp_path_factory.mktemp("savings") / "records.sqlite3"
    rng = random.Random(14)
    calls = [stored_call(rng, i, FIRST_DAY, "old") for i in range(20)]
    for i in range(20, 600):
        calls.append(
            stored_call(
                rng, i, FIRST_DAY + dt.timedelta(days=rng.randint(1, 2)), rng.choice(["search", "ads"])
            )
        )
    writer = SQLiteStore(path)
    for call in calls:
        writer.write(call)
    assert writer.flush()
    writer.close()
    return path, calls


@pytest.mark.parametrize("tiered", [False, True], ids=["flat", "prompt-size tiers"])
def test_the_baseline_equals_every_call_priced_at_the_price_of_its_day(
    many_calls: tuple[Path, list[CallRecord]], tiered: bool
) -> None:
    path, calls = many_calls
    registry = baseline_registry(tiered=tiered)
    with reading_store(path) as run:
        savings = query_savings(run, "acme-big", by="team", registry=registry)
    for team in ("search", "ads"):
        mine = [c for c in calls if c.attributes["team"] == team]
        expected = Decimal(0)
        for call in mine:
            assert call.usage is not None
            at = dt.datetime.fromtimestamp(call.timings.start_time_unix_ns / 1e9, dt.UTC)
            cost = registry.cost(call.usage, model="acme-big", at=at)
            assert cost is not None
            expected += cost.amount
        group = savings.groups[(team,)]
        assert group.compared_calls == len(mine)
        assert group.baseline == expected
        assert group.actual == sum((c.cost.amount for c in mine if c.cost), Decimal(0))
        assert group.savings == expected - group.actual


def test_calls_on_a_day_without_a_baseline_price_leave_the_baseline_absent(
    many_calls: tuple[Path, list[CallRecord]],
) -> None:
    path, _ = many_calls
    with reading_store(path) as run:
        savings = query_savings(run, "acme-big", by="team", registry=baseline_registry(tiered=False))
    old = savings.groups[("old",)]
    assert (old.compared_calls, old.baseline_unpriced_calls) == (20, 20)
    assert old.baseline is None and old.savings is None and old.savings_pct is None
    # The total cannot claim a saving it could not compute either.
    assert savings.total().savings is None


def test_with_top_the_other_row_adds_up_the_savings_of_the_folded_groups(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "model,team", "--top", "1", "--format", "json")
    document = json.loads(out)
    (shown,) = document["groups"]
    folded, total = document["other"]["baseline"], document["total"]["baseline"]
    # shown + other = total, call for call and cent for cent.
    assert shown["baseline"]["compared_calls"] + folded["compared_calls"] == total["compared_calls"]
    assert Decimal(shown["baseline"]["actual_cost"]) + Decimal(folded["actual_cost"]) == Decimal(
        total["actual_cost"]
    )
