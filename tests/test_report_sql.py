"""The report computed by SQLite equals the truth computed here, record by record, in Python.

A seeded mix of calls (ok, failed without usage, aborted; priced, unpriced; several currencies;
costs in every decimal shape ``str(Decimal)`` produces, including ``1.5E-7``; steps with rolled-up
numbers; hostile attribute values) is written to a real store file through :class:`SQLiteStore`,
then :func:`query_report` is checked against sums, counts and percentiles computed independently
below, and against :func:`build_report` over the same records read back.
"""

from __future__ import annotations

import array
import json
import math
import random
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmmeter.record import (
    USAGE_COUNT_FIELDS,
    CallKind,
    CallRecord,
    Cost,
    CostStatus,
    Outcome,
    Timings,
    Usage,
    UsageSource,
)
from llmmeter.report import build_report, render_csv, render_json, render_table
from llmmeter.report.labels import missing_token_labels
from llmmeter.report.sql import Run, query_report, summarize, unknown_group_keys
from llmmeter.store import SQLiteStore, read_records
from llmmeter.store.read import reading_store
from llmmeter.store.report_columns import (
    RowsSummary,
    bucket_value,
    cost_units,
    latency_bucket,
    rows_summary,
    units_to_decimal,
)
from llmmeter.store.schema import (
    COLUMN_NAMES,
    COLUMNS,
    SCHEMA_VERSION,
    prepare_for_writing,
    record_to_row,
    schema_version,
)
from tests.report_support import LATENCY_BOUND, assert_same_report

NOW_NS = time.time_ns()
HOUR_NS = 3600 * 10**9
USERS = ("u-1", "u-2", "u-3", "\ud800lone", "=cmd|' /C calc'!A0", "\x1b[31mred\x1b[0m")


def random_call(rng: random.Random, i: int) -> CallRecord:
    outcome = rng.choice([Outcome.OK] * 6 + [Outcome.ERROR, Outcome.ABORTED, Outcome.ABANDONED])
    has_usage = outcome is not Outcome.ERROR or rng.random() < 0.2
    priced = has_usage and rng.random() < 0.8
    amount = Decimal(rng.randint(1, 10**9)).scaleb(-rng.randint(2, 16))  # 0.0123, 1.5E-7, ...
    streamed = rng.random() < 0.6
    usage = None
    if has_usage:
        usage = Usage(
            input_tokens=rng.randint(0, 5000),
            output_tokens=rng.choice([None, rng.randint(0, 900)]),
            cache_read_input_tokens=rng.choice([None, None, rng.randint(0, 50)]),
            source=rng.choice([UsageSource.PROVIDER] * 5 + [UsageSource.ESTIMATED]),
        )
    return CallRecord(
        operation="chat",
        provider=rng.choice(["openai", "anthropic"]),
        request_model=rng.choice(["gpt-4o", "gpt-4o-mini", "claude", None]),
        response_model="resp-model",
        streaming=streamed,
        timings=Timings(
            start_time_unix_ns=NOW_NS - rng.randint(0, 48 * HOUR_NS),
            duration_s=rng.choice([None, rng.lognormvariate(0, 0.7)]),
            ttft_s=rng.random() if streamed else None,
            tpot_s=rng.random() / 20 if streamed and rng.random() < 0.8 else None,
        ),
        usage=usage,
        cost=Cost(amount=amount, currency=rng.choice(["USD", "USD", "EUR"])) if priced else None,
        cost_status=CostStatus.PRICED
        if priced
        else CostStatus.UNPRICED
        if has_usage
        else CostStatus.NO_USAGE,
        outcome=outcome,
        attributes=random_attributes(rng),
        record_id=f"r-{i}",
    )


def random_attributes(rng: random.Random) -> dict[str, Any]:
    """Group keys as applications set them: absent, JSON null (outside the declared type, but
    any writer may store it; the ``user`` key then reads ``user.id``), numbers, booleans,
    hostile strings."""
    if rng.random() < 0.1:
        return {}
    attributes: dict[str, Any] = {
        "user_id": rng.choice([*USERS, 7, True, None]),
        "team": rng.choice(["search", "ads", None]),
    }
    if rng.random() < 0.3:
        attributes["user.id"] = rng.choice(["fallback-1", None])
    return attributes


def random_step(rng: random.Random, i: int) -> CallRecord:
    step = random_call(rng, i)
    step.kind, step.name, step.cost, step.usage = CallKind.STEP, "agent.run", None, None
    step.cost_status = CostStatus.NO_USAGE
    step.rollup_calls = rng.randint(1, 4)
    step.rollup_unpriced_calls = rng.randint(0, step.rollup_calls)
    step.rollup_cost = Decimal(rng.randint(1, 10**6)).scaleb(-7)
    step.rollup_usage = Usage(input_tokens=rng.randint(1, 900), output_tokens=rng.randint(1, 90))
    return step


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report-sql") / "records.sqlite3"
    rng = random.Random(13)
    writer = SQLiteStore(path)
    for i in range(1500):
        writer.write(random_step(rng, i) if rng.random() < 0.05 else random_call(rng, i))
    assert writer.flush()
    writer.close()
    return path


@pytest.fixture
def run(store: Path) -> Iterator[Run]:
    with reading_store(store) as runner:
        yield runner


def exact_percentile(values: list[float], q: int) -> float:
    """Hyndman & Fan type 7, written out again here as the truth."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * q / 100
    below = ordered[math.floor(h)]
    above = ordered[min(math.floor(h) + 1, len(ordered) - 1)]
    return below + (h - math.floor(h)) * (above - below)


def test_counts_tokens_exact_costs_and_percentiles_equal_an_independent_truth(store: Path, run: Run) -> None:
    records = [r for r in read_records(store) if r.kind is CallKind.LLM]
    truth: dict[str, dict[str, object]] = defaultdict(lambda: defaultdict(int))
    cost: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    durations: dict[str, list[float]] = defaultdict(list)
    for record in records:
        model = record.request_model or record.response_model or ""
        counts = truth[model]
        counts["calls"] += 1  # type: ignore[operator]
        counts["errors"] += record.outcome is Outcome.ERROR  # type: ignore[operator]
        reported = record.usage is not None
        if record.usage is not None:
            for kind, n in record.usage.counts().items():
                counts[kind] += n  # type: ignore[operator]
        counts["unpriced"] += record.cost is None and reported  # type: ignore[operator]
        if record.cost is not None:
            cost[(model, record.cost.currency)] += record.cost.amount
        if record.outcome is Outcome.OK and record.timings.duration_s is not None:
            durations[model].append(record.timings.duration_s)

    report = query_report(run, by="model")

    assert {g.key[0] for g in report.groups} == set(truth)
    for group in report.groups:
        model = group.key[0]
        assert model is not None
        expected = truth[model]
        assert group.calls == expected["calls"] and group.errors == expected["errors"]
        assert group.unpriced_calls == expected["unpriced"]
        for kind in USAGE_COUNT_FIELDS:
            assert group.token(kind) == expected.get(kind)
        assert group.cost == {c: a for (m, c), a in cost.items() if m == model}  # exact Decimal
        summary = group.latency["duration"]
        assert summary.count == len(durations[model])
        for p in (50, 95, 99):
            exact = exact_percentile(durations[model], p)
            assert summary.percentiles[p] == pytest.approx(exact, rel=LATENCY_BOUND)


@pytest.mark.parametrize("kind", ["llm", "step", "all"])
@pytest.mark.parametrize("by", ["", "model", "user_id,team", "user", "outcome,cost_status,streaming,kind"])
def test_the_database_report_equals_the_in_memory_one(store: Path, run: Run, kind: str, by: str) -> None:
    records = read_records(store)

    in_sql = query_report(run, by=by, kind=kind)  # type: ignore[arg-type]
    in_memory = build_report(records, by=by, kind=kind)  # type: ignore[arg-type]

    assert_same_report(in_sql, in_memory)


@pytest.mark.parametrize("outcome", ["ok", "error", "aborted", "all"])
def test_top_n_folds_the_rest_into_other_with_its_own_percentiles(
    store: Path, run: Run, outcome: str
) -> None:
    records = read_records(store)

    in_sql = query_report(run, by="user_id,team", top=3, sort="calls", latency_outcome=outcome)  # type: ignore[arg-type]
    in_memory = build_report(records, by="user_id,team", top=3, sort="calls", latency_outcome=outcome)  # type: ignore[arg-type]

    assert len(in_sql.groups) == 3 and in_sql.other is not None
    assert in_sql.other.folded_groups == in_memory.other.folded_groups > 0  # type: ignore[union-attr]
    assert [g.calls for g in in_sql.groups] == sorted((g.calls for g in in_sql.groups), reverse=True)
    assert sum(g.calls for g in in_sql.groups) + in_sql.other.calls == in_sql.total.calls
    assert_same_report(in_sql, in_memory)


def test_time_window_bounds_the_records(store: Path, run: Run) -> None:
    from datetime import UTC, datetime, timedelta

    since = datetime.now(UTC) - timedelta(hours=24)
    records = read_records(store, since=since)

    assert_same_report(
        query_report(run, since=since, by="team"), build_report(records, since=since, by="team")
    )


def test_every_json_group_has_the_same_token_and_cost_keys(run: Run) -> None:
    document = json.loads(render_json(query_report(run, by="user_id,team", top=4)))

    groups = [*document["groups"], document["other"], document["total"]]
    assert len({tuple(g["tokens"]) for g in groups}) == 1
    assert len({tuple(g["cost"]) for g in groups}) == 1
    assert set(document["total"]["cost"]) == {"EUR", "USD"}


def test_hostile_attribute_values_never_break_a_format(run: Run) -> None:
    report = query_report(run, by="user_id")

    table, as_json, as_csv = render_table(report), render_json(report), render_csv(report)

    for text in (table, as_json, as_csv):
        text.encode("utf-8")  # a lone surrogate would raise here
    assert "\x1b" not in table and "\\x1b[31m" in table
    assert "\\ud800lone" in table
    keys = {g["key"]["user_id"] for g in json.loads(as_json)["groups"]}
    assert "\ud800lone" in keys and "\x1b[31mred\x1b[0m" in keys  # JSON keeps values whole
    assert "\n'=cmd|' /C calc'!A0," in as_csv  # neutralised: a spreadsheet shows text
    assert "\n=cmd" not in as_csv


def test_an_attribute_no_record_has_is_unknown_and_builtins_never_are(run: Run) -> None:
    assert unknown_group_keys(run, "model,team,teem,attr:anything,user_id") == ("teem",)


def test_every_token_kind_has_one_label() -> None:
    assert missing_token_labels() == ()


def test_the_scale_benchmark_runs_and_prints_its_table() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "report_scale.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--timeline"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert "| records | wall s (best) | wall s (median) | CPU s (median) | peak RSS MB (max) |" in done.stdout
    assert "| 20,000 |" in done.stdout
    phases = ("imports", "the report's SQL (both parts)", "rows into groups", "the figures", "JSON", "exit")
    assert all(f"| {phase}" in done.stdout for phase in phases)


# -- stores written by an older llmmeter ------------------------------------------------------


def version_2_store(path: Path, records: list[CallRecord]) -> Path:
    """A store file as llmmeter wrote it before the report's columns (schema version 2)."""
    conn = sqlite3.connect(path, isolation_level=None)
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type in COLUMNS)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(f"CREATE TABLE records (id INTEGER PRIMARY KEY, {columns})")
    conn.execute("CREATE UNIQUE INDEX records_by_record_id ON records (record_id)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    placeholders = ", ".join("?" for _ in COLUMN_NAMES)
    conn.executemany(
        f"INSERT INTO records ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})",
        [record_to_row(record) for record in records],
    )
    conn.close()
    return path


@pytest.mark.parametrize("by", ["user_id,team", "model", "user"])
def test_a_version_2_store_reports_the_same_without_being_migrated(
    store: Path, tmp_path: Path, by: str
) -> None:
    records = read_records(store)
    old = version_2_store(tmp_path / "v2.sqlite3", records)

    with reading_store(old) as runner:  # read-only: the report's columns read as NULL
        in_sql = query_report(runner, by=by, kind="all", top=3)

    assert_same_report(in_sql, build_report(records, by=by, kind="all", top=3))
    assert schema_version(sqlite3.connect(old)) == 2


def test_a_migrated_store_reports_its_old_and_new_rows_alike(store: Path, tmp_path: Path) -> None:
    records = read_records(store)
    old = version_2_store(tmp_path / "v2.sqlite3", records[:700])
    writer = SQLiteStore(old)  # migrates: new columns, NULL on the 700 old rows
    for record in records[700:]:
        writer.write(record)
    assert writer.flush()
    writer.close()
    conn = sqlite3.connect(old)
    forms = dict(conn.execute("SELECT report_form IS NULL, COUNT(*) FROM records GROUP BY 1").fetchall())
    prepare_for_writing(conn)  # idempotent: a second migration changes nothing

    assert schema_version(conn) == SCHEMA_VERSION == 4
    assert forms == {1: 700, 0: len(records) - 700}
    known = summary_of(conn)  # what the rows hold is known from the first row written after it
    assert known is not None and known.from_id == 701 and known.report_form
    with reading_store(old) as runner:
        for kind in ("llm", "all"):
            in_sql = query_report(runner, by="user_id,team", kind=kind)  # type: ignore[arg-type]
            assert_same_report(in_sql, build_report(records, by="user_id,team", kind=kind))  # type: ignore[arg-type]


def summary_of(conn: sqlite3.Connection) -> RowsSummary | None:
    return rows_summary({key: value for key, value in conn.execute("SELECT key, value FROM meta")})


def version_3_store(path: Path, records: list[CallRecord]) -> Path:
    """A store as llmmeter wrote it with the report's columns, before the rows summary (schema 3)."""
    writer = SQLiteStore(path)
    for record in records:
        writer.write(record)
    assert writer.flush()
    writer.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER llmmeter_report_rows")
    conn.execute("DELETE FROM meta WHERE key LIKE 'report_rows%'")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.close()
    return path


def test_a_version_3_store_reports_the_same_before_and_after_its_migration(
    store: Path, tmp_path: Path
) -> None:
    records = read_records(store)
    old = version_3_store(tmp_path / "v3.sqlite3", records[:900])
    expected = {kind: build_report(records[:900], by="user_id,team", kind=kind) for kind in ("llm", "all")}
    with reading_store(old) as runner:  # nothing known of its rows: every token kind summed
        for kind in ("llm", "all"):
            assert_same_report(query_report(runner, by="user_id,team", kind=kind), expected[kind])  # type: ignore[arg-type]

    writer = SQLiteStore(old)  # migrates to version 4: the summary starts after the 900 rows
    for record in records[900:]:
        writer.write(record)
    assert writer.flush()
    writer.close()

    conn = sqlite3.connect(old)
    known = summary_of(conn)
    assert schema_version(conn) == 4 and known is not None and known.from_id == 901
    with reading_store(old) as runner:
        for kind in ("llm", "all"):
            in_sql = query_report(runner, by="user_id,team", kind=kind)  # type: ignore[arg-type]
            assert_same_report(in_sql, build_report(records, by="user_id,team", kind=kind))  # type: ignore[arg-type]


def call_with_tokens(i: int, usage: Usage | None = None) -> CallRecord:
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o",
        timings=Timings(start_time_unix_ns=NOW_NS - i * 10**9, duration_s=0.5),
        usage=usage or Usage(input_tokens=100, output_tokens=10),
        attributes={"user_id": f"u-{i % 3}"},
        record_id=f"tokens-{i}",
    )


def test_only_the_token_kinds_rows_have_are_summed_and_a_kind_first_seen_late_is_in_the_report(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kinds.sqlite3"
    writer = SQLiteStore(path)
    for i in range(50):
        writer.write(call_with_tokens(i))
    assert writer.flush()
    conn = sqlite3.connect(path)
    first = summary_of(conn)
    assert first is not None and first.token_kinds == {"input_tokens", "output_tokens"} and first.report_form
    with reading_store(path) as runner:
        assert "audio_input_tokens" not in query_report(runner, by="user_id").total.tokens  # absent, not 0

    writer.write(call_with_tokens(50, Usage(input_tokens=1, audio_input_tokens=7, reasoning_output_tokens=0)))
    assert writer.flush()
    writer.close()
    later = summary_of(conn)
    assert later is not None and {"audio_input_tokens", "reasoning_output_tokens"} <= later.token_kinds

    with reading_store(path) as runner:
        report = query_report(runner, by="user_id")
    assert (
        report.total.tokens["audio_input_tokens"] == 7 and report.total.tokens["reasoning_output_tokens"] == 0
    )
    assert_same_report(report, build_report(read_records(path), by="user_id"))


def test_a_row_an_older_writer_inserts_after_the_migration_is_still_read_in_full(tmp_path: Path) -> None:
    path = tmp_path / "mixed.sqlite3"
    writer = SQLiteStore(path)
    for i in range(20):
        writer.write(call_with_tokens(i))
    assert writer.flush()
    writer.close()
    conn = sqlite3.connect(path, isolation_level=None)
    # A writer of schema 3 that opened the file before the migration: no report columns, its own
    # INSERT. The store's trigger sees the row all the same.
    row = record_to_row(call_with_tokens(20, Usage(input_tokens=3, accepted_prediction_tokens=5)))
    placeholders = ", ".join("?" for _ in COLUMN_NAMES)
    conn.execute(f"INSERT INTO records ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})", row)

    known = summary_of(conn)
    assert known is not None and not known.report_form and "accepted_prediction_tokens" in known.token_kinds
    with reading_store(path) as runner:
        report = query_report(runner, by="user_id")
    assert report.total.tokens["accepted_prediction_tokens"] == 5
    assert_same_report(report, build_report(read_records(path), by="user_id"))


# -- the report's columns ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "units"),
    [
        ("0.0045", 4_500_000_000),
        ("1.5E-7", 150_000),
        ("12", 12 * 10**12),
        ("-0.25", -250_000_000_000),
        ("0.000000000001", 1),
        ("0.0000000000015", None),  # finer than 10^-12: summed as a decimal
        ("1E+10", None),  # beyond 64 bits of 10^-12
        ("NaN", None),
        (None, None),
    ],
)
def test_a_cost_is_stored_as_integer_units_only_when_exact(amount: str | None, units: int | None) -> None:
    assert cost_units(amount) == units
    if units is not None:
        assert units_to_decimal(units) == Decimal(amount or 0)


def test_costs_past_what_64_bits_of_units_hold_still_add_up_exactly(tmp_path: Path) -> None:
    # 5 million USD is 5 * 10^18 units, which fits; two of them overflow SQLite's integer SUM,
    # and that group's part of the scan is run again with sums that cannot overflow.
    path = tmp_path / "records.sqlite3"
    writer = SQLiteStore(path)
    for i, (team, amount) in enumerate([("big", "5000000"), ("big", "5000000.000001"), ("small", "0.25")]):
        writer.write(
            CallRecord(
                operation="chat",
                provider="openai",
                request_model="gpt-4o",
                usage=Usage(input_tokens=10),
                cost=Cost(amount=Decimal(amount)),
                cost_status=CostStatus.PRICED,
                timings=Timings(start_time_unix_ns=NOW_NS, duration_s=1.0),
                attributes={"team": team},
                record_id=f"r-{i}",
            )
        )
    assert writer.flush()
    writer.close()

    with reading_store(path) as run:
        report = query_report(run, by="team")

    assert {group.key[0]: group.cost for group in report.groups} == {
        "big": {"USD": Decimal("10000000.000001")},
        "small": {"USD": Decimal("0.25")},
    }
    assert report.total.cost == {"USD": Decimal("10000000.250001")}


def test_a_bucket_no_llmmeter_writes_reads_as_an_infinite_latency_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite3"
    writer = SQLiteStore(path)
    writer.write(
        CallRecord(operation="chat", provider="openai", timings=Timings(duration_s=1.0), record_id="r-1")
    )
    assert writer.flush()
    writer.close()
    with sqlite3.connect(path) as conn:  # another tool's hands: a bucket past the largest float
        conn.execute("UPDATE records SET duration_bucket = 10000000000")
    conn.close()

    with reading_store(path) as run:
        report = query_report(run)

    assert report.total.latency["duration"].percentiles[50] == math.inf


def test_every_latency_reads_back_within_the_stated_bound() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(-3, 3) for _ in range(20_000)] + [1e-9, 0.3, 1.0, 3600.0, 1e-300, 1.7e308]

    for value in values:
        assert bucket_value(latency_bucket(value)) == pytest.approx(value, rel=LATENCY_BOUND)
        assert bucket_value(latency_bucket(-value)) == pytest.approx(-value, rel=LATENCY_BOUND)
    assert [bucket_value(latency_bucket(v)) for v in (0.0, math.inf, -math.inf)] == [0.0, math.inf, -math.inf]
    assert math.isnan(bucket_value(latency_bucket(math.nan)))


def test_percentiles_of_zero_negative_and_infinite_latencies_keep_their_order() -> None:
    values = [-2.0, 0.0, 0.0, 0.5, math.inf]

    summary = summarize(array.array("i", [latency_bucket(v) for v in reversed(values)]))

    assert summary.count == 5
    assert summary.percentiles[50] == 0.0
    assert summary.percentiles[99] == math.inf
