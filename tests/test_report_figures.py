"""Always-on figures of ``llmmeter report``: what prompt caching saved each group, and each
window's amortized share of a fine-tune's training cost (issue 14 §3, §6).

The prices come from a price file given with ``--prices`` (as a user would declare their own
models); every expected amount is worked out here from the rates in that file, call by call,
without the cost engine.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmmeter.cli import main
from llmmeter.pricing.models import ModelPrice, PromptTier, ServiceTierPrice
from llmmeter.pricing.registry import CacheTokens, PricingRegistry, cache_figures, price_usage
from llmmeter.record import CallRecord, Cost, CostStatus, Timings, Usage, UsageSource
from llmmeter.report import figures as figures_module
from llmmeter.report.figures import Figures, FiguresScan, query_figures
from llmmeter.report.sql import query_report
from llmmeter.store import SQLiteStore
from llmmeter.store.read import reading_store

from .postgres_cluster import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]  # the fixtures, used by name below

MILLION = Decimal(1_000_000)
DAY_NS = 86_400 * 10**9
DAY_1, DAY_2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
WINDOW = ("--since", "2026-11-20T00:00:00+00:00", "--until", "2026-11-27T00:00:00+00:00")

PRICES = """\
models:
  - model: acme-chat            # until day 2: cached input at a tenth, cache writes at 1.25x
    input_per_mtok: "2"
    cached_input_per_mtok: "0.2"
    cache_write_per_mtok: "2.5"
    output_per_mtok: "8"
    effective_to: 2026-11-21
  - model: acme-chat            # from day 2: cached input at half
    input_per_mtok: "2"
    cached_input_per_mtok: "1"
    cache_write_per_mtok: "2.5"
    output_per_mtok: "8"
    effective_from: 2026-11-21
  - model: acme-long            # a prompt above 3,000 tokens is billed at the long-context rates
    input_per_mtok: "1"
    cached_input_per_mtok: "0.25"
    output_per_mtok: "4"
    tiers:
      - {above_input_tokens: 3000, input_per_mtok: "2", cached_input_per_mtok: "0.5", output_per_mtok: "8"}
  - model: ft:acme-support
    input_per_mtok: "0.3"
    output_per_mtok: "1.2"
    training_cost: "300"
    amortize_days: 30
    trained_on: 2026-11-01
"""


def rates_of(model: str, day: dt.date, input_tokens: int) -> tuple[Decimal, Decimal, Decimal]:
    """(input, cached input, cache write) per million tokens, read off PRICES by hand."""
    if model == "acme-chat":
        return Decimal(2), Decimal("0.2") if day < DAY_2 else Decimal(1), Decimal("2.5")
    assert model == "acme-long"
    if input_tokens > 3000:
        return Decimal(2), Decimal("0.5"), Decimal(2)
    return Decimal(1), Decimal("0.25"), Decimal(1)


def saved_by(call: CallRecord) -> tuple[Decimal, Decimal]:
    """(cache read savings, cache write premium) of one call, by hand."""
    usage = call.usage
    assert usage is not None and usage.input_tokens is not None and call.request_model is not None
    day = dt.datetime.fromtimestamp(call.timings.start_time_unix_ns // 10**9, dt.UTC).date()
    full, cached, write = rates_of(call.request_model, day, usage.input_tokens)
    reads, writes = usage.cache_read_input_tokens or 0, usage.cache_write_input_tokens or 0
    return reads * (full - cached) / MILLION, writes * (write - full) / MILLION


def at(day: dt.date, rng: random.Random) -> int:
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 10**9
    return start + rng.randint(0, DAY_NS - 1)


def call(i: int, model: str, team: str, usage: Usage, start_ns: int) -> CallRecord:
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model=model,
        timings=Timings(start_time_unix_ns=start_ns, duration_s=0.1),
        usage=usage,
        cost=Cost(amount=Decimal("0.001")),  # what the call was billed: the figures re-price its tokens
        cost_status=CostStatus.PRICED,
        attributes={"team": team},
        record_id=f"call-{i}",
    )


def cached_usage(rng: random.Random, *, writes: bool, long_prompts: bool) -> Usage:
    input_tokens = rng.randint(100, 6000 if long_prompts else 2900)
    reads = rng.randint(0, input_tokens // 2)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=rng.randint(1, 500),
        cache_read_input_tokens=reads,
        cache_write_input_tokens=rng.randint(0, input_tokens - reads) if writes else None,
        source=UsageSource.PROVIDER,
    )


def make_calls() -> list[CallRecord]:
    """Teams calling acme-chat (reads and writes, over a price change), acme-long (short and long
    prompts), a model without a price, and the fine-tune; "plain" never hits the cache."""
    rng = random.Random(14)
    calls: list[CallRecord] = []

    def add(model: str, team: str, usage: Usage, day: dt.date) -> None:
        calls.append(call(len(calls), model, team, usage, at(day, rng)))

    for _ in range(120):
        day = rng.choice([DAY_1, DAY_2])
        add("acme-chat", "search", cached_usage(rng, writes=True, long_prompts=False), day)
        add(
            "acme-long",
            rng.choice(["search", "ads"]),
            cached_usage(rng, writes=False, long_prompts=True),
            day,
        )
    for _ in range(5):
        add("acme-chat", "plain", Usage(input_tokens=900, output_tokens=40, cache_read_input_tokens=0), DAY_1)
        add("acme-unpriced", "unpriced", cached_usage(rng, writes=False, long_prompts=False), DAY_1)
    # The fine-tune: "search" used 3 tokens for every 1 "ads" used.
    add("ft:acme-support", "search", Usage(input_tokens=200, output_tokens=100), DAY_1)
    add("ft:acme-support", "ads", Usage(input_tokens=60, output_tokens=40), DAY_2)
    return calls


def expected_cache(calls: list[CallRecord], team: str) -> tuple[Decimal, Decimal]:
    read = write = Decimal(0)
    for item in calls:
        if item.attributes["team"] == team and item.request_model in ("acme-chat", "acme-long"):
            saved, premium = saved_by(item)
            read, write = read + saved, write + premium
    return read, write


@pytest.fixture(scope="module")
def prices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prices") / "prices.yaml"
    path.write_text(PRICES, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def calls() -> list[CallRecord]:
    return make_calls()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, calls: list[CallRecord]) -> Path:
    path = tmp_path_factory.mktemp("figures") / "records.sqlite3"
    writer = SQLiteStore(path)
    for item in calls:
        writer.write(item)
    assert writer.flush()
    writer.close()
    return path


Report = Callable[..., tuple[int, str, str]]


@pytest.fixture
def report(store: Path, prices: Path, capsys: pytest.CaptureFixture[str]) -> Report:
    def run(*args: str, at_store: str | None = None) -> tuple[int, str, str]:
        code = main(["report", "--store", at_store or str(store), "--prices", str(prices), *WINDOW, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def by_team(out: str) -> dict[str, dict[str, Any]]:
    return {group["key"]["team"]: group for group in json.loads(out)["groups"]}


def amount(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


# -- cache savings ------------------------------------------------------------------------------


def test_cache_savings_of_each_group_equal_every_cached_token_priced_by_hand(
    report: Report, calls: list[CallRecord]
) -> None:
    code, out, err = report("--by", "team", "--format", "json")
    assert (code, err) == (0, "")
    groups = by_team(out)
    for team in ("search", "ads"):
        read, write = expected_cache(calls, team)
        figures = groups[team]
        assert amount(figures["cache_read_savings"]["USD"]) == read
        assert amount(figures["cache_write_premium"]["USD"]) == (write if team == "search" else None)
        assert amount(figures["cache_savings"]["USD"]) == read - write
    # Writes at 1.25x input cost more than input: the premium is a cost, taken off the savings.
    assert expected_cache(calls, "search")[1] > 0


def test_a_group_without_cached_tokens_or_without_a_price_has_no_cache_savings_not_zero(
    report: Report,
) -> None:
    _, out, _ = report("--by", "team", "--format", "json")
    groups = by_team(out)
    for team in ("plain", "unpriced"):
        assert groups[team]["cache_savings"] == {"USD": None}
        assert groups[team]["cache_read_savings"] == {"USD": None}


def test_every_json_group_the_other_row_and_the_total_have_the_same_keys(report: Report) -> None:
    _, out, _ = report("--by", "team", "--top", "2", "--format", "json")
    document = json.loads(out)
    rows = [*document["groups"], document["other"], document["total"]]
    shapes = {
        tuple(
            (name, tuple(row[name]))
            for name in ("cache_savings", "cache_write_premium", "training_cost_share")
        )
        for row in rows
    }
    assert len(shapes) == 1
    assert set(document["groups"][0]) - {"key"} <= set(document["other"]) | {"groups"}


def test_the_total_and_the_other_row_add_up_the_groups(report: Report, calls: list[CallRecord]) -> None:
    _, out, _ = report("--by", "team", "--top", "1", "--format", "json")
    document = json.loads(out)
    read = sum((expected_cache(calls, team)[0] for team in ("search", "ads")), Decimal(0))
    assert amount(document["total"]["cache_read_savings"]["USD"]) == read
    shown = [amount(g["cache_savings"]["USD"]) or Decimal(0) for g in document["groups"]]
    folded = amount(document["other"]["cache_savings"]["USD"]) or Decimal(0)
    assert sum(shown, Decimal(0)) + folded == amount(document["total"]["cache_savings"]["USD"])


def test_the_table_shows_cache_saved_and_training_within_100_columns(report: Report) -> None:
    code, out, _ = report("--by", "team")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("team"))
    assert "cache saved" in header and "training" in header
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "'cache saved'" in out and "ft:acme-support: training cost 300 USD over 30 days" in out


def test_csv_has_the_figures_as_columns_and_html_in_its_table(report: Report, tmp_path: Path) -> None:
    _, out, _ = report("--by", "team", "--format", "csv")
    rows = {row["team"]: row for row in csv.DictReader(io.StringIO(out))}
    assert rows["plain"]["cache_savings_USD"] == ""  # absent, not 0
    assert Decimal(rows["search"]["cache_savings_USD"]) == Decimal(
        rows["search"]["cache_read_savings_USD"]
    ) - (Decimal(rows["search"]["cache_write_premium_USD"]))
    assert Decimal(rows["ads"]["training_cost_share_USD"]) == Decimal("17.5")
    page = tmp_path / "report.html"
    code, _, _ = report("--by", "team", "--format", "html", "-o", str(page))
    assert code == 0
    html = page.read_text(encoding="utf-8")
    assert '<th class="num">cache saved</th>' in html and '<th class="num">training</th>' in html
    assert 'training (USD)</div><div class="big">70.0000</div>' in html  # the window's card


@pytest.mark.parametrize("seed", range(3))
def test_cache_figures_equal_the_cost_engine_billing_the_usage_with_and_without_its_cache_parts(
    seed: int,
) -> None:
    rng = random.Random(seed)
    price = ModelPrice(
        input_per_mtok="3",
        cached_input_per_mtok="0.3",
        cache_write_per_mtok="3.75",
        cache_write_1h_per_mtok="6",
        audio_input_per_mtok="40",
        cached_audio_input_per_mtok="2.5",
        output_per_mtok="15",
        tiers=[PromptTier(above_input_tokens=200_000, input_per_mtok="6", cached_input_per_mtok="0.6")],
        service_tiers={"batch": ServiceTierPrice(factor="0.5")},
    )
    registry = PricingRegistry()
    registry.register("acme-claude", price)
    resolved = registry.lookup("acme-claude")
    assert resolved is not None
    for _ in range(200):
        input_tokens = rng.randint(1, 400_000)
        reads = rng.randint(0, input_tokens // 2)
        writes = rng.randint(0, input_tokens - reads)
        cached_audio = rng.randint(0, reads // 3)
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=rng.randint(0, 900),
            audio_input_tokens=cached_audio + rng.randint(0, input_tokens - reads - writes),
            cache_read_input_tokens=reads,
            audio_cache_read_input_tokens=cached_audio,
            cache_write_input_tokens=writes,
            cache_write_1h_input_tokens=rng.randint(0, writes),
        )
        tier = rng.choice([None, "batch"])
        tokens = CacheTokens(
            input_tokens,
            reads,
            usage.audio_cache_read_input_tokens or 0,
            writes,
            usage.cache_write_1h_input_tokens or 0,
        )
        found = cache_figures(resolved, tokens, service_tier=tier, prompt_tokens=input_tokens)
        no_reads = dataclasses.replace(usage, cache_read_input_tokens=0, audio_cache_read_input_tokens=0)
        uncached = dataclasses.replace(no_reads, cache_write_input_tokens=0, cache_write_1h_input_tokens=0)
        billed = [price_usage(resolved, u, service_tier=tier) for u in (usage, no_reads, uncached)]
        actual, without_reads, without_cache = (cost.amount for cost in billed if cost is not None)
        assert found == (without_reads - actual, without_reads - without_cache)


def test_a_report_of_a_window_without_cached_tokens_runs_no_second_query(store: Path) -> None:
    statements: list[str] = []
    with reading_store(store) as run:
        report = query_report(run, by="team", until=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        run.connection.set_trace_callback(statements.append)
        figures = query_figures(run, report, registry=PricingRegistry.default())
    assert figures == Figures() and statements == []


def test_figures_scanned_beside_the_report_equal_figures_computed_after_it(store: Path, prices: Path) -> None:
    registry = PricingRegistry.default()
    registry.load(str(prices))
    since = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with reading_store(store) as run:
        beside = FiguresScan.of(run, by="team", kind="llm", since=since, until=None, registry=registry)
        report = query_report(run, by="team", since=since, scanned=beside.start)
        after = query_figures(run, report, registry=registry)
        # A scan started for another window is not used for this report: its figures are its own.
        other = FiguresScan.of(run, by="model", kind="llm", since=None, until=None, registry=registry)
        other.start()
        assert beside.result(report) == after == other.result(report)
    assert after.groups  # the window has cached tokens: there is something to compare


# -- training cost -------------------------------------------------------------------------------


def test_a_7_day_window_takes_70_of_a_300_training_cost_over_30_days_split_by_tokens(report: Report) -> None:
    _, out, _ = report("--by", "team", "--format", "json")
    document = json.loads(out)
    groups = by_team(out)
    # 300 / 30 days * 7 days = 70; "search" used 300 tokens of the fine-tune, "ads" 100.
    assert amount(groups["search"]["training_cost_share"]["USD"]) == Decimal("52.5")
    assert amount(groups["ads"]["training_cost_share"]["USD"]) == Decimal("17.5")
    assert groups["plain"]["training_cost_share"] == {"USD": None}
    assert amount(document["total"]["training_cost_share"]["USD"]) == Decimal(70)
    (declared,) = document["training_costs"]
    assert declared == {
        "model": "ft:acme-support",
        "provider": None,
        "currency": "USD",
        "training_cost": "300",
        "amortize_days": 30,
        "trained_on": "2026-11-01",
        "window_share": "70",
        "allocated": True,
    }


def fine_tune(training_cost: str, amortize_days: int, trained_on: dt.date) -> PricingRegistry:
    """A registry that knows only the fine-tune, declared with ``register()``."""
    registry = PricingRegistry()
    registry.register(
        "ft:acme-support",
        ModelPrice(input_per_mtok="0.3", output_per_mtok="1.2"),
        training_cost=training_cost,
        amortize_days=amortize_days,
        trained_on=trained_on,
    )
    return registry


def figures_of(store: Path, registry: PricingRegistry, by: str, **window: dt.datetime) -> Figures:
    with reading_store(store) as run:
        report = query_report(run, by=by, **window)  # type: ignore[arg-type]
        return query_figures(run, report, registry=registry, now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))


def test_a_window_reaching_past_the_amortization_takes_only_the_days_inside_it(store: Path) -> None:
    registry = fine_tune("300", 30, dt.date(2026, 11, 1))
    figures = figures_of(store, registry, "model", since=dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC))
    # From Nov 20 noon to the end of the amortization (Dec 1): 10.5 days of 10 a day.
    assert figures.groups[("ft:acme-support",)].training_cost_share == {"USD": Decimal(105)}
    assert figures.amortizations[0].window_share == Decimal(105)


def test_shares_that_do_not_divide_evenly_still_add_up_to_the_windows_share(store: Path) -> None:
    registry = fine_tune("100", 7, dt.date(2026, 11, 20))
    figures = figures_of(store, registry, "team", until=dt.datetime(2026, 11, 23, tzinfo=dt.UTC))
    # 3 of 7 days: 300/7 = 42.857142857142..., to 10 places; split 3:1, the odd unit going to the
    # share with the larger remainder (10.71428571428|57 -> ...43).
    shares = [figures.groups[(team,)].training_cost_share["USD"] for team in ("search", "ads")]
    assert shares == [Decimal("32.1428571428"), Decimal("10.7142857143")]
    assert sum(shares) == figures.amortizations[0].window_share == Decimal("42.8571428571")


def test_a_fine_tune_without_calls_in_the_window_is_named_but_charged_to_no_group(
    report: Report,
) -> None:
    _, out, _ = report("--by", "team", "--since", "2026-11-25", "--until", "2026-11-26", "--format", "json")
    document = json.loads(out)
    assert document["groups"] == []
    (declared,) = document["training_costs"]
    assert (declared["window_share"], declared["allocated"]) == ("10", False)


def test_models_without_a_training_cost_have_no_share(report: Report) -> None:
    _, out, _ = report("--by", "model", "--format", "json")
    groups = {g["key"]["model"]: g for g in json.loads(out)["groups"]}
    assert groups["acme-chat"]["training_cost_share"] == {"USD": None}
    assert amount(groups["ft:acme-support"]["training_cost_share"]["USD"]) == Decimal(70)


# -- declaring a training cost --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("training_cost: '300'", "training_cost needs amortize_days"),
        ("training_cost: '300'\n    amortize_days: 30", "needs trained_on (or effective_from)"),
        (
            "training_cost: '-5'\n    amortize_days: 30\n    trained_on: 2026-11-01",
            "greater than or equal to 0",
        ),
        ("training_cost: '300'\n    amortize_days: 0\n    trained_on: 2026-11-01", "greater than 0"),
        ("training_cost: '300'\n    amortize_days: yes\n    trained_on: 2026-11-01", "not a boolean"),
        ("amortize_days: 30", "need a training_cost"),
    ],
)
def test_a_bad_training_cost_in_a_price_file_is_a_one_line_error(
    tmp_path: Path, store: Path, capsys: pytest.CaptureFixture[str], fields: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"models:\n  - model: ft:x\n    input_per_mtok: '1'\n    output_per_mtok: '2'\n    {fields}\n",
        encoding="utf-8",
    )
    assert main(["prices", "check", str(bad)]) == 1
    checked = capsys.readouterr().out.splitlines()
    assert len(checked) == 2 and message in checked[0]
    assert re.match(rf"{re.escape(str(bad))}:\d+: models\[0\] \(model 'ft:x'\)", checked[0])
    assert main(["report", "--store", str(store), "--prices", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_register_declares_a_training_cost_and_refuses_bad_values_in_one_line() -> None:
    registry = PricingRegistry()
    price = ModelPrice(input_per_mtok="0.3", output_per_mtok="1.2", effective_from=dt.date(2026, 11, 1))
    registry.register("ft:a", price, training_cost="300", amortize_days=30)
    (entry,) = registry.training_costs()
    assert (entry.price.training_cost, entry.price.amortization_start) == (Decimal(300), dt.date(2026, 11, 1))
    with pytest.raises(ValueError, match=r"^amortize_days: Input should be greater than 0$"):
        registry.register("ft:b", price, training_cost="300", amortize_days=0)


def test_prices_show_and_list_name_the_training_cost(
    prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prices", "show", "ft:acme-support", "--file", str(prices)]) == 0
    shown = capsys.readouterr().out
    assert "training:   300 USD over 30 days from 2026-11-01 (10 USD a day)" in shown
    assert main(["prices", "list", "--file", str(prices), "--match", "ft:acme*", "--format", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert main(["prices", "list", "--file", str(prices), "--match", "ft:acme*"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.endswith("training") and row.endswith("300 USD/30d from 2026-11-01")
    assert (listed["training_cost"], listed["amortize_days"], listed["trained_on"]) == (
        "300",
        30,
        "2026-11-01",
    )


# -- the fleet store ------------------------------------------------------------------------------


@pytest.fixture
def fleet(postgres_url: str, tmp_path: Path, calls: list[CallRecord]) -> Iterator[str]:
    from llmmeter.store.postgres import PostgresStore

    writer = PostgresStore(postgres_url, spool_dir=tmp_path / "spool")
    for item in calls:
        writer.write(item)
    assert writer.flush(20)
    writer.close()
    yield postgres_url


def test_the_fleet_store_gives_the_same_figures_as_the_local_store(
    fleet: str, report: Report, calls: list[CallRecord]
) -> None:
    code, out, err = report("--by", "team", "--format", "json", at_store=fleet)
    assert (code, err) == (0, "")
    groups = by_team(out)
    for team in ("search", "ads"):
        read, write = expected_cache(calls, team)
        assert amount(groups[team]["cache_savings"]["USD"]) == read - write
    assert amount(groups["search"]["training_cost_share"]["USD"]) == Decimal("52.5")
    _, local, _ = report("--by", "team", "--format", "json")
    assert [json.loads(out)[name] for name in ("groups", "total")] == [
        json.loads(local)[name] for name in ("groups", "total")
    ]


def test_the_figures_benchmark_runs_and_prints_its_table() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "benchmarks" / "report_figures.py"),
            "--quick",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| --by | report s | figures s | figures / report | figure groups |" in done.stdout
    assert all(f"| {by} |" in done.stdout for by in ("model", "team", "user_id"))


@pytest.mark.parametrize("lookup_days", [None, 3], ids=["days-looked-up", "too-many-days-grouped-by-day"])
def test_a_price_changing_twice_in_the_window_prices_each_days_cache_reads_at_that_days_price(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lookup_days: int | None
) -> None:
    if lookup_days is not None:  # as when records are years apart: no day-by-day price lookup
        monkeypatch.setattr(figures_module, "_MAX_LOOKUP_DAYS", lookup_days)
    # acme-chat: days 0-1 at one cached rate, 2-3 at another, 4-5 at a third; acme-steady: one rate.
    first = dt.date(2026, 11, 20)
    chat_cached = {0: Decimal("0.2"), 2: Decimal(1), 4: Decimal("0.5")}
    registry = PricingRegistry()
    for start, rate in chat_cached.items():
        registry.register(
            "acme-chat",
            ModelPrice(
                input_per_mtok="2",
                cached_input_per_mtok=rate,
                output_per_mtok="8",
                effective_from=first + dt.timedelta(days=start),
                effective_to=first + dt.timedelta(days=start + 2),
            ),
        )
    registry.register(
        "acme-steady", ModelPrice(input_per_mtok="1", cached_input_per_mtok="0.1", output_per_mtok="4")
    )
    rng = random.Random(7)
    calls: list[CallRecord] = []
    expected = Decimal(0)
    for offset in range(6):
        for model, full, cached in (
            ("acme-chat", Decimal(2), chat_cached[offset - offset % 2]),
            ("acme-steady", Decimal(1), Decimal("0.1")),
        ):
            usage = cached_usage(rng, writes=False, long_prompts=False)
            calls.append(call(len(calls), model, "search", usage, at(first + dt.timedelta(days=offset), rng)))
            expected += (usage.cache_read_input_tokens or 0) * (full - cached) / MILLION
    path = tmp_path / "records.sqlite3"
    writer = SQLiteStore(path)
    for item in calls:
        writer.write(item)
    assert writer.flush()
    writer.close()
    with reading_store(path) as run:
        report = query_report(run, by="team")
        figures = query_figures(run, report, registry=registry)
    assert figures.groups[("search",)].cache_read_savings == {"USD": expected}
