"""The fleet store on a real PostgreSQL server (issue 13 §3): many processes write each record
exactly once; a database that is down, killed mid-run or refusing the password loses nothing and
never holds the caller; the schema migrates idempotently; records land in monthly partitions;
``llmmeter store copy`` copies without duplicates. The server is a throwaway cluster
(``tests/postgres_cluster.py``)."""

from __future__ import annotations

import json
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

import pytest

from llmmeter.record import CallKind, CallRecord, Cost, Outcome, Timings, Usage
from llmmeter.store import SQLiteStore, read_records
from llmmeter.store.postgres import FLEET_SCHEMA_VERSION, PostgresStore, read_fleet_records
from llmmeter.store.quarantine import read_quarantine

from .postgres_cluster import PostgresCluster, postgres_cluster, postgres_url
from .report_support import assert_same_report

__all__ = ["postgres_cluster", "postgres_url"]  # the fixtures, used by name below

psycopg = pytest.importorskip("psycopg", reason='psycopg not installed (pip install "llmmeter[postgresql]")')

NOV_2026 = int(datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()) * 1_000_000_000
DEC_2026 = int(datetime(2026, 12, 3, 9, tzinfo=UTC).timestamp()) * 1_000_000_000


def record(name: str, start: int = NOV_2026, tokens: int = 10, cost: str = "0.000125") -> CallRecord:
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o-mini",
        name=name,
        timings=Timings(start_time_unix_ns=start, duration_s=0.25),
        usage=Usage(input_tokens=tokens, output_tokens=5),
        cost=Cost(amount=Decimal(cost)),
        attributes={"user_id": f"u-{name}", "team": "search"},
    )


def count(url: str) -> int:
    """Records in the fleet store now (0 before the first writer created the schema)."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('llmmeter.records')").fetchone() == (None,):
            return 0
        row = conn.execute("SELECT count(*) FROM llmmeter.records").fetchone()
    return int(row[0])


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def stopped(postgres_cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """The server, stopped; started again after the test whatever happened."""
    postgres_cluster.stop()
    try:
        yield postgres_cluster
    finally:
        postgres_cluster.start()


# -- many writers, each record once --------------------------------------------------------------


def writer_script(body: str) -> str:
    """A process configured with the fleet store (URL and record count from argv) that runs
    ``body`` with ``call(i)``, a measured call of ``i`` input tokens."""
    prelude = """
import asyncio, os, signal, sys, time
import llmmeter

url, count = sys.argv[1], int(sys.argv[2])
llmmeter.configure(store=url, pricing=None)

@llmmeter.metered(model="gpt-4o-mini", provider="openai")
def call(i):
    return {"usage": {"prompt_tokens": i, "completion_tokens": 1}}
"""
    return prelude + textwrap.dedent(body)


WRITER = writer_script(
    """
    @llmmeter.metered(model="gpt-4o-mini", provider="openai")
    async def acall(i):
        return {"usage": {"prompt_tokens": i, "completion_tokens": 1}}

    async def main():
        for i in range(count // 2, count):
            await acall(i)

    for i in range(count // 2):
        call(i)
    asyncio.run(main())
    print("returned", flush=True)
    """
)


def start_writer(url: str, count: int, spool: Path, script: str = WRITER) -> subprocess.Popen[str]:
    env = {**os.environ, "XDG_DATA_HOME": str(spool), "LLMMETER_EXIT_TIMEOUT": "30"}
    env.pop("LLMMETER_STRICT", None)
    return subprocess.Popen(
        [sys.executable, "-c", script, url, str(count)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 90) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    assert out.strip() == "returned", err
    return err


def test_records_from_four_processes_sync_and_async_land_exactly_once(postgres_url: str, spool: Path) -> None:
    writers = [start_writer(postgres_url, 500, spool) for _ in range(4)]
    for writer in writers:
        finish(writer)

    with psycopg.connect(postgres_url) as conn:
        rows, ids, input_tokens = conn.execute(
            "SELECT count(*), count(DISTINCT record_id), sum(input_tokens) FROM llmmeter.records"
        ).fetchone()
    assert (rows, ids) == (2_000, 2_000)
    assert input_tokens == 4 * sum(range(500)), "every token count arrived, none twice"


def test_a_batch_written_twice_or_replayed_is_stored_once(postgres_url: str, spool: Path) -> None:
    batch = [record(f"r{i}") for i in range(50)]
    for attempt in range(2):
        store = PostgresStore(postgres_url, spool_dir=spool / str(attempt))
        for item in batch:
            store.write(item)
        assert store.flush(20)
        assert store.stats.written == (50 if attempt == 0 else 0)
        store.close()

    back = read_fleet_records(postgres_url)
    assert sorted(r.record_id for r in back) == sorted(r.record_id for r in batch)
    assert sum((r.cost.amount for r in back if r.cost), Decimal(0)) == Decimal("0.000125") * 50


# -- the database away: nothing lost, the caller never waits ------------------------------------


def test_records_written_while_the_database_is_down_are_delivered_when_it_is_back(
    postgres_url: str, stopped: PostgresCluster, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(postgres_url, spool_dir=spool, max_queue=100)
    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        began = time.monotonic()
        for i in range(1_000):
            store.write(record(f"down-{i}"))
        caller_seconds = time.monotonic() - began
        assert not store.flush(0.5), "nothing can be delivered yet"
        assert list(spool.glob("*.seg")), "the records wait in the local spool"

        stopped.start()
        assert store.flush(30)

    assert caller_seconds < 5, "the caller's thread never waited for the database"
    assert count(postgres_url) == 1_000
    assert store.stats.lost == 0 and store.stats.busy_retries > 0 and store.stats.spilled > 0
    waits = [r for r in caplog.records if "cannot take records" in r.getMessage()]
    assert len(waits) == 1, "logged once"
    assert "throwaway-test-password" not in caplog.text, "the password never appears in a log"
    store.close()
    assert not list(spool.glob("*.seg")), "a delivered spool is deleted"


KILL_ME = writer_script(
    """
    for i in range(count):
        call(i)
    print("returned", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_process_killed_while_the_database_was_down_leaves_its_records_for_the_next_one(
    postgres_url: str, stopped: PostgresCluster, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = start_writer(postgres_url, 300, spool, KILL_ME)
    out, err = killed.communicate(timeout=60)
    assert out.strip() == "returned", err
    stopped.start()

    monkeypatch.setenv("XDG_DATA_HOME", str(spool))  # the same machine, the same spool
    next_process = PostgresStore(postgres_url)
    next_process.write(record("next"))
    assert next_process.flush(30)

    assert count(postgres_url) == 301
    assert next_process.stats.replayed_segments >= 1
    next_process.close()


KEEPS_WRITING = writer_script(
    """
    for i in range(count):
        call(i)
        if i % 50 == 0:
            time.sleep(0.02)
    assert llmmeter.flush(60)
    print("returned", flush=True)
    """
)


def test_a_server_killed_and_restarted_mid_run_loses_nothing(
    postgres_url: str, postgres_cluster: PostgresCluster, spool: Path
) -> None:
    writers = [start_writer(postgres_url, 3_000, spool, KEEPS_WRITING) for _ in range(2)]
    deadline = time.monotonic() + 30
    while count(postgres_url) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    postgres_cluster.stop("immediate")  # a crash, as far as the writers can tell
    time.sleep(0.5)
    postgres_cluster.start()
    for writer in writers:
        finish(writer)

    assert count(postgres_url) == 6_000
    with psycopg.connect(postgres_url) as conn:
        (distinct,) = conn.execute("SELECT count(DISTINCT record_id) FROM llmmeter.records").fetchone()
    assert distinct == 6_000


def test_a_wrong_password_is_waited_out_until_it_is_fixed(
    postgres_cluster: PostgresCluster, spool: Path
) -> None:
    with psycopg.connect(postgres_cluster.url(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS late_db")
        admin.execute("DROP ROLE IF EXISTS late_user")
        admin.execute("CREATE ROLE late_user LOGIN PASSWORD 'not-yet'")
        admin.execute("CREATE DATABASE late_db OWNER late_user")
    url = f"postgresql://late_user:the-right-one@127.0.0.1:{postgres_cluster.port}/late_db"
    store = PostgresStore(url, spool_dir=spool)
    for i in range(20):
        store.write(record(f"auth-{i}"))
    assert not store.flush(0.5)

    with psycopg.connect(postgres_cluster.url(), autocommit=True) as admin:
        admin.execute("ALTER ROLE late_user PASSWORD 'the-right-one'")
    assert store.flush(30)
    assert count(url) == 20
    store.close()


# -- schema: migrations and partitions ------------------------------------------------------------


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM llmmeter.schema_version ORDER BY 1")]


def test_configuring_twice_migrates_once(postgres_url: str, spool: Path) -> None:
    import llmmeter

    for attempt in range(2):
        settings = llmmeter.configure(store=postgres_url, pricing=None)
        assert isinstance(settings.store, PostgresStore)
        settings.store.write(record(f"configured-{attempt}"))
        assert llmmeter.flush(20)
    llmmeter.configure(store=None, pricing=None)

    assert versions(postgres_url) == list(range(1, FLEET_SCHEMA_VERSION + 1))
    assert count(postgres_url) == 2


def test_a_database_left_by_an_older_llmmeter_is_upgraded_and_keeps_its_rows(
    postgres_url: str, spool: Path
) -> None:
    first = PostgresStore(postgres_url, spool_dir=spool)
    first.write(record("old"))
    assert first.flush(20)
    first.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as an older llmmeter left it
        conn.execute("ALTER TABLE llmmeter.records DROP COLUMN media")
        conn.execute("DELETE FROM llmmeter.schema_version")

    upgraded = PostgresStore(postgres_url, spool_dir=spool)
    upgraded.write(record("new"))
    assert upgraded.flush(20)
    upgraded.close()

    assert versions(postgres_url) == list(range(1, FLEET_SCHEMA_VERSION + 1))
    assert sorted(r.name or "" for r in read_fleet_records(postgres_url)) == ["new", "old"]


def test_a_schema_from_a_newer_llmmeter_is_refused_and_the_records_stay_in_the_spool(
    postgres_url: str, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(postgres_url, spool_dir=spool)
    store.write(record("first"))
    assert store.flush(20)
    store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO llmmeter.schema_version (version) VALUES (%s)", (FLEET_SCHEMA_VERSION + 1,))

    newer = PostgresStore(postgres_url, spool_dir=spool)
    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        newer.write(record("kept"))
        assert not newer.flush(0.5)
        assert not newer.close(0.5)
    assert "is newer than this llmmeter" in caplog.text
    assert count(postgres_url) == 1
    assert list(spool.glob("*.seg")), "the refused record waits in the spool, not lost"


def test_records_of_two_months_go_to_their_monthly_partitions(postgres_url: str, spool: Path) -> None:
    store = PostgresStore(postgres_url, spool_dir=spool)
    for i in range(30):
        store.write(record(f"n{i}", start=NOV_2026 + i))
    for i in range(20):
        store.write(record(f"d{i}", start=DEC_2026 + i))
    store.write(record("before 1970", start=-5))
    assert store.flush(20)
    store.close()

    with psycopg.connect(postgres_url) as conn:
        placed = dict(
            conn.execute(
                "SELECT c.relname, count(*) FROM llmmeter.records r JOIN pg_class c ON c.oid = r.tableoid "
                "GROUP BY 1"
            ).fetchall()
        )
    assert placed == {
        "records_2026_11": 30,
        "records_2026_12": 20,
        "records_other": 1,
    }


def test_a_role_that_may_not_create_partitions_still_stores_every_record(
    postgres_url: str, postgres_cluster: PostgresCluster, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    owner = PostgresStore(postgres_url, spool_dir=spool / "owner")
    owner.write(record("by the owner"))
    assert owner.flush(20)
    owner.close()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS app_writer")
        admin.execute("CREATE ROLE app_writer LOGIN PASSWORD 'app'")
        admin.execute("GRANT USAGE ON SCHEMA llmmeter TO app_writer")
        admin.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA llmmeter TO app_writer")
    writer_url = postgres_url.replace(postgres_url.split("//")[1].split("@")[0], "app_writer:app")
    january = int(datetime(2027, 1, 5, tzinfo=UTC).timestamp()) * 1_000_000_000

    writer = PostgresStore(writer_url, spool_dir=spool / "writer")
    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        for i in range(10):
            writer.write(record(f"january-{i}", start=january + i))
        assert writer.flush(20)
    writer.close()

    assert count(postgres_url) == 11
    assert "cannot create the partition records_2027_01" in caplog.text
    with psycopg.connect(postgres_url) as conn:
        (in_default,) = conn.execute("SELECT count(*) FROM llmmeter.records_other").fetchone()
    assert in_default == 10, "a month without a partition lands in the default one"


def test_odd_values_are_stored_with_their_batch_and_an_impossible_one_is_quarantined(
    postgres_url: str, spool: Path
) -> None:
    batch = [record(f"r{i}", start=NOV_2026 + i) for i in range(100)]
    batch[10].response_id = "chatcmpl-\x00-nul"
    batch[20].request_model = "gpt-\ud800-mini"
    batch[30].attributes = {"note": "\udfff lone \x00", "big": 2**100}
    batch[40].usage = Usage(input_tokens=2**64 + 1)
    store = PostgresStore(postgres_url, spool_dir=spool)
    for item in batch:
        store.write(item)
    assert store.flush(20)
    store.close()

    back = {r.name: r for r in read_fleet_records(postgres_url)}
    assert len(back) == 99
    assert back["r10"].response_id == "chatcmpl-\\x00-nul", "a NUL is stored as its visible escape"
    assert back["r20"].request_model == "gpt-\\ud800-mini"
    assert back["r30"].attributes == {"note": "\udfff lone \x00", "big": 2**100}, "JSON keeps it exactly"
    with psycopg.connect(postgres_url) as conn:
        [(record_id, reason)] = conn.execute("SELECT record_id, reason FROM llmmeter.quarantine").fetchall()
    assert record_id == batch[40].record_id and "bigint" in reason
    assert store.stats.quarantined == 1

    count, listed = read_quarantine(postgres_url)
    assert count == 1 and [q.record_id for q in listed] == [batch[40].record_id]
    assert "bigint" in listed[0].reason and json.loads(listed[0].record_json)["name"] == "r40"


def test_llmmeter_store_env_var_selects_the_fleet_store(
    postgres_url: str, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmmeter

    monkeypatch.setenv("LLMMETER_STORE", postgres_url)
    monkeypatch.setenv("XDG_DATA_HOME", str(spool))
    settings = llmmeter.configure(pricing=None)
    try:
        assert isinstance(settings.store, PostgresStore)
        assert settings.store.spool_path.is_relative_to(spool)
        assert "throwaway-test-password" not in settings.store.url
    finally:
        llmmeter.configure(store=None, pricing=None)


# -- llmmeter store copy -----------------------------------------------------------------------------


def llmmeter_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmmeter", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_store_copy_moves_a_local_store_into_the_fleet_once(postgres_url: str, tmp_path: Path) -> None:
    local = tmp_path / "host-a.sqlite3"
    store = SQLiteStore(local)
    written = [record(f"r{i}", start=NOV_2026 + i, tokens=i) for i in range(1_200)]
    for item in written:
        store.write(item)
    assert store.close()

    first = llmmeter_cli("store", "copy", str(local), postgres_url)
    again = llmmeter_cli("store", "copy", str(local), postgres_url)

    assert first.returncode == 0, first.stderr
    assert "copied 1200 new records" in first.stdout
    assert (
        again.returncode == 0
        and "copied 0 new records" in again.stdout
        and "1200 already there" in again.stdout
    )
    assert "throwaway-test-password" not in first.stdout + again.stdout
    fleet = {r.record_id: r for r in read_fleet_records(postgres_url)}
    assert fleet == {r.record_id: r for r in read_records(local)}, "every field arrives unchanged"


def test_store_copy_back_from_the_fleet_into_a_new_local_store(postgres_url: str, tmp_path: Path) -> None:
    store = PostgresStore(postgres_url, spool_dir=tmp_path / "spool")
    for i in range(40):
        store.write(record(f"r{i}", start=DEC_2026 + i))
    assert store.flush(20)
    store.close()
    local = tmp_path / "copy.sqlite3"

    done = llmmeter_cli("store", "copy", postgres_url, str(local))

    assert done.returncode == 0, done.stderr
    assert {r.record_id for r in read_records(local)} == {
        r.record_id for r in read_fleet_records(postgres_url)
    }


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        ("{tmp}/missing.sqlite3", "{url}", "no llmmeter store at"),
        ("{tmp}/not-a-store.txt", "{url}", "not a database"),
        ("{local}", "postgresql://nobody@127.0.0.1:1/none", "failed"),
        ("{local}", "postgresql://u@h:5432/db?sslmode=nonsense", "failed"),
        ("{local}", "{tmp}/no/such/dir/x.sqlite3", "no such directory"),
        ("{local}", "{local}", "the same store"),
    ],
)
def test_store_copy_with_a_bad_path_or_url_is_one_line_and_exit_code_2(
    postgres_url: str, tmp_path: Path, source: str, destination: str, message: str
) -> None:
    local = tmp_path / "ok.sqlite3"
    store = SQLiteStore(local)
    store.write(record("one"))
    assert store.close()
    (tmp_path / "not-a-store.txt").write_text("hello\n")
    values = {"tmp": str(tmp_path), "url": postgres_url, "local": str(local)}

    done = llmmeter_cli("store", "copy", source.format(**values), destination.format(**values))

    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr


# -- the report, computed by the server --------------------------------------------------------------


@pytest.fixture
def fleet_of_records(postgres_url: str, tmp_path: Path) -> list[CallRecord]:
    """300 calls of 12 users on two models over two months, some failed, some unpriced, a few with
    attribute values PostgreSQL's JSON refuses (a lone surrogate, a NUL, NaN); in the fleet store."""
    made = []
    for i in range(300):
        item = record(
            f"r{i}", start=(NOV_2026 if i % 2 else DEC_2026) + i, tokens=i % 37, cost=f"0.000{i:03d}7"
        )
        item.request_model = "gpt-4o-mini" if i % 3 else "gpt-4o"
        item.attributes = {"user_id": f"u{i % 12}", "team": "search" if i % 4 else "ads"}
        item.timings = Timings(start_time_unix_ns=item.timings.start_time_unix_ns, duration_s=(i % 17) / 10)
        if i % 11 == 0:
            item.outcome, item.error_type, item.cost = Outcome.ERROR, "RateLimitError", None
        if i % 29 == 0:
            item.attributes.update(note="\ud800 \x00", score=float("nan"))
        made.append(item)
    store = PostgresStore(postgres_url, spool_dir=tmp_path / "report-spool")
    for item in made:
        store.write(item)
    assert store.flush(20)
    store.close()
    return made


def test_the_fleet_report_equals_the_report_of_the_records_for_every_grouping(
    postgres_url: str, fleet_of_records: list[CallRecord]
) -> None:
    from llmmeter.report import build_report
    from llmmeter.report.sql import query_report
    from llmmeter.store.postgres_report import POSTGRESQL_DIALECT, reading_fleet_store

    records = read_fleet_records(postgres_url)
    for by in (None, "user", "model,team", "outcome", "streaming"):
        for top in (None, 3):
            with reading_fleet_store(postgres_url) as run:
                computed_by_the_server = query_report(run, dialect=POSTGRESQL_DIALECT, by=by, top=top)
            in_memory = build_report(records, by=by, top=top)
            assert_same_report(computed_by_the_server, in_memory)


def test_the_fleet_report_of_steps_and_of_everything_equals_the_report_of_the_records(
    postgres_url: str, tmp_path: Path
) -> None:
    from llmmeter.report import build_report
    from llmmeter.report.sql import query_report
    from llmmeter.store.postgres_report import POSTGRESQL_DIALECT, reading_fleet_store

    made = []
    for i in range(40):
        call = record(f"call{i}", start=DEC_2026 + i)
        step = record(f"step{i % 4}", start=DEC_2026 + 1_000 + i)
        step.kind, step.operation, step.usage, step.cost = CallKind.STEP, "agent", None, None
        step.rollup_usage = Usage(input_tokens=30 + i, output_tokens=15)
        step.rollup_cost = Decimal("0.0003") if i % 5 else None
        # a step may count more unpriced calls than it made (a nested step's): priced is never < 0
        step.rollup_calls, step.rollup_unpriced_calls = 3, (0 if i % 5 else 4)
        made += [call, step]
    store = PostgresStore(postgres_url, spool_dir=tmp_path / "steps-spool")
    for item in made:
        store.write(item)
    assert store.flush(20)
    store.close()

    records = read_fleet_records(postgres_url)
    assert len(records) == 80, "each test has an emptied database"
    for kind in ("step", "all"):
        with reading_fleet_store(postgres_url) as run:
            computed_by_the_server = query_report(run, dialect=POSTGRESQL_DIALECT, by="name", kind=kind)
        assert_same_report(computed_by_the_server, build_report(records, by="name", kind=kind))


def test_the_fleet_report_command_gives_each_users_exact_tokens_and_cost(
    postgres_url: str, fleet_of_records: list[CallRecord]
) -> None:
    truth: dict[str, tuple[int, Decimal]] = {}
    for item in fleet_of_records:
        tokens, cost = truth.get(item.attributes["user_id"], (0, Decimal(0)))
        assert item.usage is not None and item.usage.input_tokens is not None
        truth[item.attributes["user_id"]] = (
            tokens + item.usage.input_tokens,
            cost + (item.cost.amount if item.cost else Decimal(0)),
        )

    done = llmmeter_cli("report", "--store", postgres_url, "--by", "user", "--format", "json")

    assert done.returncode == 0, done.stderr
    groups = json.loads(done.stdout)["groups"]
    reported = {g["key"]["user"]: (g["tokens"]["input_tokens"], Decimal(g["cost"]["USD"])) for g in groups}
    assert reported == truth


def test_an_attribute_value_postgresql_json_refuses_never_breaks_the_report(
    postgres_url: str, fleet_of_records: list[CallRecord]
) -> None:
    from llmmeter.report.sql import query_report
    from llmmeter.store.postgres_report import POSTGRESQL_DIALECT, reading_fleet_store

    with reading_fleet_store(postgres_url) as run:
        report = query_report(run, dialect=POSTGRESQL_DIALECT, by="note")

    odd = [group for group in report.groups if group.key != (None,)]
    assert [group.key for group in odd] == [("\ufffd \ufffd",)], "the odd value reads as U+FFFD"
    assert odd[0].calls == sum(1 for item in fleet_of_records if "note" in item.attributes)


def test_the_html_report_of_the_fleet_store_shows_every_users_calls_and_the_exact_total(
    postgres_url: str, fleet_of_records: list[CallRecord]
) -> None:
    from llmmeter.report.text import format_money

    total = sum((item.cost.amount for item in fleet_of_records if item.cost), Decimal(0))

    done = llmmeter_cli("report", "--store", postgres_url, "--by", "user", "--format", "html")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    page = done.stdout
    assert page.lstrip().lower().startswith("<!doctype html")
    assert all(f"u{i}" in page for i in range(12))
    assert format_money(total) in page, "the window's exact cost, summed from the fleet's records"
    assert ">300<" in page.replace(",", ""), "every call of the fleet is counted"
