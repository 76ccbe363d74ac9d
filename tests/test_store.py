"""The local SQLite store keeps every record exactly, never blocks or breaks the caller, and is
safe with several writing processes."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from llmmeter.record import (
    CallKind,
    CallRecord,
    Cost,
    CostStatus,
    MediaUnits,
    Outcome,
    ServerTimings,
    Timings,
    Usage,
    UsageSource,
)
from llmmeter.store import (
    SCHEMA_VERSION,
    SQLiteStore,
    StoreError,
    default_store_path,
    read_records,
    resolve_store_path,
)

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def unix_ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def full_usage(base: int) -> Usage:
    return Usage(
        input_tokens=base + 1000,
        output_tokens=base + 500,
        cache_read_input_tokens=base + 300,
        cache_write_input_tokens=base + 200,
        cache_write_1h_input_tokens=base + 50,
        reasoning_output_tokens=base + 128,
        text_input_tokens=base + 600,
        image_input_tokens=base + 255,
        audio_input_tokens=base + 145,
        text_output_tokens=base + 400,
        image_output_tokens=base + 60,
        audio_output_tokens=base + 40,
        audio_cache_read_input_tokens=base + 20,
        accepted_prediction_tokens=base + 7,
        rejected_prediction_tokens=base + 3,
        source=UsageSource.ESTIMATED,
        estimate_method="tiktoken:o200k_base",
    )


def fully_populated_record() -> CallRecord:
    """A record with every field set to a distinctive, non-default value."""
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        kind=CallKind.STEP,
        name="agent.plan",
        server_address="api.openai.com",
        server_port=443,
        streaming=True,
        timings=Timings(
            start_time_unix_ns=unix_ns(T0) + 123_456_789,
            duration_s=2.718281828,
            ttfc_s=0.101,
            ttft_s=0.2345,
            tpot_s=0.0123456789,
            chunks=42,
            server=ServerTimings(
                ttft_s=0.05, tpot_s=0.011, queue_s=0.002, prefill_s=0.04, decode_s=1.9, e2e_s=2.5, load_s=0.3
            ),
        ),
        usage=full_usage(0),
        media=MediaUnits(
            images=2, image_size="1024x1024", image_quality="hd", audio_seconds=61.5, characters=12
        ),
        cost=Cost(
            amount=Decimal("0.000123456789012345678901"),
            currency="EUR",
            components={
                "input": Decimal("0.000100000000000000000000"),
                "output": Decimal("0.000023456789012345678901"),
            },
            source="provider",
            price_ref="openai/gpt-4o-mini@2024-07-18",
        ),
        cost_status=CostStatus.PRICED,
        outcome=Outcome.ERROR,
        error_type="openai.RateLimitError",
        response_id="chatcmpl-abc123",
        finish_reasons=("stop", "length"),
        service_tier="flex",
        request_params={"gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 256},
        attributes={"user_id": "u-17", "team": "search", "priority": 3, "ratio": 0.5, "beta": True},
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        rollup_usage=full_usage(10_000),
        rollup_cost=Decimal("1.000000000000000000000001"),
        rollup_calls=5,
        rollup_unpriced_calls=2,
        content={"input": [{"role": "user", "content": "hi"}], "output": ["hello"]},
    )


def unset_fields(value: object, path: str = "record") -> list[str]:
    """Dotted paths of the fields left ``None`` in a (nested) dataclass."""
    missing: list[str] = []
    for f in dataclasses.fields(value):  # type: ignore[arg-type]
        inner = getattr(value, f.name)
        if inner is None:
            missing.append(f"{path}.{f.name}")
        elif dataclasses.is_dataclass(inner):
            missing += unset_fields(inner, f"{path}.{f.name}")
    return missing


def simple_record(start: datetime = T0, **changes: object) -> CallRecord:
    record = CallRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o-mini",
        timings=Timings(start_time_unix_ns=unix_ns(start), duration_s=0.5),
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def stored(path: Path, *records: CallRecord) -> Path:
    store = SQLiteStore(path)
    for record in records:
        store.write(record)
    assert store.flush()
    store.close()
    return path


# -- round trip --------------------------------------------------------------------------------


def test_round_trip_keeps_every_field_of_a_fully_populated_record(tmp_path: Path) -> None:
    record = fully_populated_record()
    assert unset_fields(record) == [], "the fixture must set every field, including new ones"

    [back] = read_records(stored(tmp_path / "r.sqlite3", record))

    assert back == record
    assert back.record_id == record.record_id


def test_round_trip_keeps_unobserved_values_as_none(tmp_path: Path) -> None:
    record = CallRecord(operation="embeddings", provider="openai")
    record.usage = Usage(input_tokens=8)  # output and every part unreported

    [back] = read_records(stored(tmp_path / "r.sqlite3", record))

    assert back == record
    assert back.usage is not None and back.usage.output_tokens is None
    assert back.usage.cache_read_input_tokens is None
    assert back.cost is None and back.rollup_usage is None and back.rollup_cost is None
    assert back.timings.ttft_s is None and back.timings.server is None
    assert back.finish_reasons is None and back.content is None


def test_costs_come_back_as_the_exact_same_decimal(tmp_path: Path) -> None:
    amounts = [Decimal("0.1"), Decimal("0.2"), Decimal("0.00000015"), Decimal("123.000000000001")]
    records = [simple_record(cost=Cost(amount=a, components={"input": a})) for a in amounts]

    back = read_records(stored(tmp_path / "r.sqlite3", *records))

    assert [r.cost.amount for r in back if r.cost] == amounts
    assert [str(r.cost.amount) for r in back if r.cost] == ["0.1", "0.2", "1.5E-7", "123.000000000001"]
    assert sum((r.cost.amount for r in back if r.cost), Decimal(0)) == Decimal("123.300000150001")


def test_usage_none_and_usage_with_nothing_reported_are_kept_apart(tmp_path: Path) -> None:
    no_usage = simple_record(usage=None)
    missing_usage = simple_record(usage=Usage(source=UsageSource.MISSING))

    back = read_records(stored(tmp_path / "r.sqlite3", no_usage, missing_usage))

    assert back[0].usage is None
    assert back[1].usage == Usage(source=UsageSource.MISSING)


# -- schema ------------------------------------------------------------------------------------


def test_store_file_is_versioned_in_wal_mode_and_indexed_by_time_and_model(tmp_path: Path) -> None:
    path = stored(tmp_path / "r.sqlite3", simple_record())

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        indexes = {row[1]: row for row in conn.execute("PRAGMA index_list(records)")}
        indexed = {name: [col[2] for col in conn.execute(f"PRAGMA index_info({name})")] for name in indexes}
    assert version == str(SCHEMA_VERSION)
    assert ["start_time_unix_ns"] in indexed.values()
    assert ["request_model", "start_time_unix_ns"] in indexed.values()


def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = stored(tmp_path / "deep" / "er" / "r.sqlite3", simple_record())

    assert len(read_records(path)) == 1


def test_a_file_from_a_newer_llmmeter_is_left_alone_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = stored(tmp_path / "r.sqlite3", simple_record())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    store = SQLiteStore(path)

    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        store.write(simple_record())
        assert store.flush() is False
        store.write(simple_record())
        store.flush()

    assert store.stats.failed == 2
    assert store.stats.lost == 0, "both wait in the journal for an llmmeter that can write this file"
    assert len([r for r in caplog.records if "newer" in r.getMessage()]) == 1
    assert len(read_records(path)) == 1
    store.close(1.0)
    assert len(list((tmp_path / "r.sqlite3.journal").iterdir())) == 1


# -- reading -----------------------------------------------------------------------------------


def test_read_records_keeps_the_half_open_time_window_oldest_first(tmp_path: Path) -> None:
    starts = [T0 + timedelta(hours=h) for h in (3, 0, 1, 2)]
    path = stored(tmp_path / "r.sqlite3", *(simple_record(start=s, name=f"h{s.hour}") for s in starts))

    window = read_records(path, since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))

    assert [r.name for r in window] == ["h10", "h11"]
    assert [r.name for r in read_records(path, since=T0 + timedelta(hours=2))] == ["h11", "h12"]
    assert [r.name for r in read_records(path, until=T0 + timedelta(hours=1))] == ["h9"]


def test_read_records_takes_a_naive_datetime_as_local_time(tmp_path: Path) -> None:
    path = stored(tmp_path / "r.sqlite3", simple_record(start=T0))
    local_naive = T0.astimezone().replace(tzinfo=None)

    assert len(read_records(path, since=local_naive)) == 1
    assert read_records(path, since=local_naive + timedelta(microseconds=1)) == []


def test_read_records_filters_by_kind(tmp_path: Path) -> None:
    path = stored(tmp_path / "r.sqlite3", simple_record(), simple_record(kind=CallKind.STEP, name="agent"))

    assert [r.kind for r in read_records(path, kind=CallKind.STEP)] == [CallKind.STEP]
    assert [r.kind for r in read_records(path, kind=CallKind.LLM)] == [CallKind.LLM]


def test_reading_a_missing_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no llmmeter store at"):
        read_records(tmp_path / "absent.sqlite3")


def test_reading_a_file_that_is_not_a_store_says_so(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("definitely not sqlite\n" * 100)
    other_db = tmp_path / "other.sqlite3"
    with sqlite3.connect(other_db) as conn:
        conn.execute("CREATE TABLE things (x)")

    with pytest.raises(StoreError, match="not an llmmeter store"):
        read_records(text_file)
    with pytest.raises(StoreError, match="not an llmmeter store"):
        read_records(other_db)
    with pytest.raises(StoreError, match="is a directory"):
        read_records(tmp_path)


# -- never block, never raise ------------------------------------------------------------------


def test_write_never_raises_for_an_unwritable_path_and_counts_the_records_as_lost_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    store = SQLiteStore(a_file / "r.sqlite3")  # its parent is a file: neither store nor journal can exist

    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        for _ in range(3):
            store.write(simple_record())
            assert store.flush() is False

    assert store.stats.failed == 3
    assert store.stats.lost == 3
    assert len([r for r in caplog.records if "could not write" in r.getMessage()]) == 1
    assert len([r for r in caplog.records if "cannot create a journal" in r.getMessage()]) == 1
    store.close()


def test_a_full_queue_spills_to_the_journal_instead_of_blocking_or_dropping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = stored(tmp_path / "r.sqlite3", simple_record())
    store = SQLiteStore(path, max_queue=5)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file: our writer must wait

    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        started = time.perf_counter()
        for i in range(30):
            store.write(simple_record(name=f"r{i}"))
        elapsed = time.perf_counter() - started

    assert elapsed < 0.5
    assert store.stats.spilled >= 20
    assert len([r for r in caplog.records if "behind" in r.getMessage()]) == 1
    assert store.flush(0.2) is False, "nothing can be written while the file is locked"
    blocker.execute("ROLLBACK")
    blocker.close()
    assert store.flush(10)
    names = [r.name for r in read_records(path)]
    assert sorted(names[1:]) == sorted(f"r{i}" for i in range(30))
    assert store.stats.lost == 0
    store.close()


def test_a_record_written_after_close_is_still_stored(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.sqlite3")
    store.write(simple_record())
    assert store.close()
    assert store.close()  # closing twice is harmless

    store.write(simple_record())

    assert store.close()
    assert len(read_records(tmp_path / "r.sqlite3")) == 2


def test_flush_with_nothing_written_returns_true_and_creates_no_file(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.sqlite3")

    assert store.flush()
    store.close()
    assert not (tmp_path / "r.sqlite3").exists()


# -- processes ---------------------------------------------------------------------------------

WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from llmmeter.store import SQLiteStore
    from llmmeter.record import CallRecord, Timings

    path, writer, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = SQLiteStore(path, batch_size=7)
    for i in range(count):
        store.write(CallRecord(operation="chat", provider="openai", name=f"{writer}-{i}",
                               timings=Timings(start_time_unix_ns=i)))
    if mode == "close":
        store.close()
    # mode "exit": no flush, no close -- the interpreter exits normally with records queued
    """
)


def run_writers(path: Path, writers: list[str], count: int, mode: str) -> None:
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path), name, str(count), mode])
        for name in writers
    ]
    for process in processes:
        assert process.wait(timeout=60) == 0


def test_several_processes_write_the_same_file_without_losing_a_record(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"

    run_writers(path, ["a", "b", "c", "d"], 400, mode="close")

    names = [r.name for r in read_records(path)]
    assert len(names) == 1600
    assert set(names) == {f"{w}-{i}" for w in "abcd" for i in range(400)}


def test_records_queued_at_normal_interpreter_exit_are_written(tmp_path: Path) -> None:
    path = tmp_path / "exit.sqlite3"

    run_writers(path, ["solo"], 3000, mode="exit")

    assert len(read_records(path)) == 3000


def _write_in_forked_child(path: str) -> None:
    from llmmeter.store import writer as store_module

    [store] = [s for s in store_module._live_stores if str(s.path) == path]
    for i in range(10):
        store.write(simple_record(name=f"child-{i}"))
    assert store.flush()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_writes_through_its_own_writer(tmp_path: Path) -> None:
    path = tmp_path / "fork.sqlite3"
    store = SQLiteStore(path)
    store.write(simple_record(name="parent"))
    assert store.flush()

    child = multiprocessing.get_context("fork").Process(target=_write_in_forked_child, args=(str(path),))
    child.start()
    child.join(30)

    assert child.exitcode == 0
    store.write(simple_record(name="parent-after"))
    assert store.flush()
    names = sorted(r.name or "" for r in read_records(path))
    assert names == sorted(["parent", "parent-after", *(f"child-{i}" for i in range(10))])
    store.close()


# -- where the store lives ---------------------------------------------------------------------


def test_default_path_follows_xdg_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_store_path() == tmp_path / "llmmeter" / "records.sqlite3"

    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # the XDG spec says: ignore it
    assert default_store_path() == Path.home() / ".local" / "share" / "llmmeter" / "records.sqlite3"

    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_store_path() == Path.home() / ".local" / "share" / "llmmeter" / "records.sqlite3"


def test_explicit_path_beats_the_environment_which_beats_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LLMMETER_STORE", raising=False)
    assert resolve_store_path() == tmp_path / "xdg" / "llmmeter" / "records.sqlite3"

    monkeypatch.setenv("LLMMETER_STORE", str(tmp_path / "env.sqlite3"))
    assert resolve_store_path() == tmp_path / "env.sqlite3"
    assert resolve_store_path(tmp_path / "explicit.sqlite3") == tmp_path / "explicit.sqlite3"
