"""The report's cache figures are each group's token counts summed, times the rates, in exact
integers: they must equal every call priced alone by
:func:`~llmmeter.pricing.registry.cache_figures` and added up, to the last digit, whatever the
prices' decimal places, service tiers, prompt-size tiers and cache parts, on a local store (also
one an older llmmeter started) and on the fleet store.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from llmmeter.pricing.models import ModelPrice, PromptTier, ServiceTierPrice
from llmmeter.pricing.registry import CacheTokens, PricingRegistry, cache_figures
from llmmeter.record import CallRecord, Timings, Usage, UsageSource
from llmmeter.report.figures import Figures, _read, query_figures
from llmmeter.report.sql import SQLITE, query_report
from llmmeter.store import SQLiteStore
from llmmeter.store.read import reading_store
from llmmeter.store.schema import COLUMN_NAMES, record_to_row
from tests.test_report_sql import version_2_store

from .postgres_cluster import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]  # the fixtures, used by name below

DAY = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
TEAMS = ("search", "ads", "support", "billing")
SERVICE_TIERS = (None, "batch", "flex")  # "flex": a tier name the prices do not list


def registry() -> PricingRegistry:
    """Prices with odd decimal places, audio and one-hour cache rates, a batch tier, and prompt
    tiers at three thresholds (a call's tier differs from price to price)."""
    prices = PricingRegistry()
    prices.register(
        "acme-pi",
        ModelPrice(
            input_per_mtok="3.14159",
            cached_input_per_mtok="0.314159",
            cache_write_per_mtok="3.9269875",
            cache_write_1h_per_mtok="6.28318",
            audio_input_per_mtok="41.7",
            cached_audio_input_per_mtok="2.61",
            output_per_mtok="15",
            service_tiers={"batch": ServiceTierPrice(factor="0.5")},
        ),
    )
    prices.register(  # more decimal places than the sums' common unit
        "acme-fine",
        ModelPrice(
            input_per_mtok="0.123456789012345678901",
            cached_input_per_mtok="0.000000000000000000007",
            output_per_mtok="1",
        ),
    )
    prices.register(
        "acme-long",
        ModelPrice(
            input_per_mtok="1.25",
            cached_input_per_mtok="0.125",
            cache_write_per_mtok="1.5625",
            output_per_mtok="5",
            tiers=[
                PromptTier(above_input_tokens=3000, input_per_mtok="2.5", cached_input_per_mtok="0.25"),
                PromptTier(above_input_tokens=5000, input_per_mtok="5", cached_input_per_mtok="0.5"),
            ],
        ),
    )
    prices.register(
        "acme-mid",
        ModelPrice(
            input_per_mtok="0.7",
            cached_input_per_mtok="0.07",
            cache_write_per_mtok="0.875",
            output_per_mtok="2.1",
            tiers=[PromptTier(above_input_tokens=4000, input_per_mtok="1.4", cached_input_per_mtok="0.35")],
        ),
    )
    return prices


def cached_usage(rng: random.Random) -> Usage:
    input_tokens = rng.randint(50, 7000)
    reads = rng.choice([0, rng.randint(0, input_tokens // 2)])
    writes = rng.choice([None, 0, rng.randint(0, input_tokens - reads)])
    return Usage(
        input_tokens=input_tokens,
        output_tokens=rng.randint(1, 400),
        cache_read_input_tokens=reads,
        audio_cache_read_input_tokens=rng.choice([None, rng.randint(0, reads)]),
        cache_write_input_tokens=writes,
        cache_write_1h_input_tokens=None if not writes else rng.choice([None, rng.randint(0, writes)]),
        source=UsageSource.PROVIDER,
    )


def make_calls(count: int = 600) -> list[CallRecord]:
    """Calls of every team to every model (and one without a price), plus one whose cache reads
    exceed its input: what caching changed in it is unknown, and it is left out."""
    rng = random.Random(15)
    models = ("acme-pi", "acme-fine", "acme-long", "acme-mid", "acme-unpriced")
    calls = [
        call(i, rng.choice(models), rng.choice(TEAMS), rng.choice(SERVICE_TIERS), cached_usage(rng), rng)
        for i in range(count)
    ]
    too_many_reads = Usage(input_tokens=10, output_tokens=1, cache_read_input_tokens=50)
    calls.append(call(count, "acme-pi", "search", None, too_many_reads, rng))
    return calls


def call(i: int, model: str, team: str, tier: str | None, usage: Usage, rng: random.Random) -> CallRecord:
    start_ns = int(DAY.timestamp()) * 10**9 + rng.randint(0, 86_400 * 10**9 - 1)
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model=model,
        timings=Timings(start_time_unix_ns=start_ns, duration_s=0.2),
        usage=usage,
        service_tier=tier,
        attributes={"team": team},
        record_id=f"sum-{i}",
    )


def each_call_priced(
    calls: list[CallRecord], prices: PricingRegistry
) -> dict[str, tuple[Decimal | None, Decimal | None]]:
    """Per team, (cache read savings, cache write premium) of every call priced alone; a figure
    no call had is absent."""
    reads: dict[str, Decimal] = {}
    writes: dict[str, Decimal] = {}
    for item in calls:
        usage, resolved = item.usage, prices.lookup(item.request_model or "", provider=item.provider)
        assert usage is not None and usage.input_tokens is not None
        if resolved is None:
            continue
        tokens = CacheTokens(
            usage.input_tokens,
            usage.cache_read_input_tokens or 0,
            usage.audio_cache_read_input_tokens or 0,
            usage.cache_write_input_tokens or 0,
            usage.cache_write_1h_input_tokens or 0,
        )
        found = cache_figures(
            resolved, tokens, service_tier=item.service_tier, prompt_tokens=usage.input_tokens
        )
        if found is None:
            continue
        team = str(item.attributes["team"])
        if tokens.cache_read:
            reads[team] = reads.get(team, Decimal(0)) + found[0]
        if tokens.cache_write:
            writes[team] = writes.get(team, Decimal(0)) + found[1]
    return {team: (reads.get(team), writes.get(team)) for team in TEAMS}


def by_team(figures: Figures) -> dict[str, tuple[Decimal | None, Decimal | None]]:
    groups = {key[0]: group for key, group in figures.groups.items()}
    return {
        team: (groups[team].cache_read_savings.get("USD"), groups[team].cache_write_premium.get("USD"))
        for team in TEAMS
    }


def figures_of(path: Path, prices: PricingRegistry) -> Figures:
    with reading_store(path) as run:
        report = query_report(run, by="team")
        return query_figures(run, report, registry=prices)


def written(path: Path, calls: list[CallRecord]) -> Path:
    writer = SQLiteStore(path)
    for item in calls:
        writer.write(item)
    assert writer.flush()
    writer.close()
    return path


@pytest.fixture(scope="module")
def calls() -> list[CallRecord]:
    return make_calls()


def test_each_groups_summed_cache_figures_equal_every_call_priced_alone_to_the_last_digit(
    calls: list[CallRecord], tmp_path: Path
) -> None:
    prices = registry()
    expected = each_call_priced(calls, prices)

    figures = figures_of(written(tmp_path / "records.sqlite3", calls), prices)

    assert by_team(figures) == expected
    # The prices made it hard: amounts finer than the sums' common unit, and every figure present.
    amounts = [amount for pair in expected.values() for amount in pair]
    assert all(amount is not None for amount in amounts)
    assert min(int(amount.as_tuple().exponent) for amount in amounts if amount is not None) < -21


def test_the_call_whose_cache_reads_exceed_its_input_is_left_out_not_counted(
    calls: list[CallRecord], tmp_path: Path
) -> None:
    prices = registry()
    with_it = figures_of(written(tmp_path / "with.sqlite3", calls), prices)
    without_it = figures_of(written(tmp_path / "without.sqlite3", calls[:-1]), prices)

    assert with_it == without_it


def test_a_store_an_older_llmmeter_started_gives_its_old_and_new_rows_the_same_figures(
    calls: list[CallRecord], tmp_path: Path
) -> None:
    prices = registry()
    old = version_2_store(tmp_path / "v2.sqlite3", calls[:250])  # rows without report columns
    written(old, calls[250:-1])  # migrates: the store's summary covers the rows from here on
    connection = sqlite3.connect(old, isolation_level=None)
    placeholders = ", ".join("?" for _ in COLUMN_NAMES)  # an older writer still running: its own INSERT
    connection.execute(
        f"INSERT INTO records ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})", record_to_row(calls[-1])
    )
    connection.close()

    assert by_team(figures_of(old, prices)) == each_call_priced(calls, prices)


def test_the_fleet_store_sums_the_same_figures(
    calls: list[CallRecord], postgres_url: str, tmp_path: Path
) -> None:
    from llmmeter.store.postgres import PostgresStore
    from llmmeter.store.postgres_report import POSTGRESQL_DIALECT, reading_fleet_store

    prices = registry()
    writer = PostgresStore(postgres_url, spool_dir=tmp_path / "spool")
    for item in calls:
        writer.write(item)
    assert writer.flush(20)
    writer.close()

    with reading_fleet_store(postgres_url) as run:
        report = query_report(run, by="team", dialect=POSTGRESQL_DIALECT)
        figures = query_figures(run, report, dialect=POSTGRESQL_DIALECT, registry=prices)

    assert by_team(figures) == each_call_priced(calls, prices)


def test_the_figures_rows_come_back_as_one_text_equal_to_the_rows_and_a_blob_is_read_row_by_row(
    calls: list[CallRecord], tmp_path: Path
) -> None:
    # One text: the figures' thread reads its rows without waiting for the GIL row by row.
    path = written(tmp_path / "records.sqlite3", calls[:80])
    grouped = "SELECT request_model, service_tier, COUNT(*), SUM(input_tokens) FROM records GROUP BY 1, 2"
    blob = "SELECT CAST(request_model AS BLOB), COUNT(*) FROM records GROUP BY 1"
    with reading_store(path) as run:
        assert _read(run, grouped, [], 4, SQLITE) == [tuple(row) for row in run(grouped, [])]
        assert _read(run, blob, [], 2, SQLITE) == [tuple(row) for row in run(blob, [])]
