"""The local store loses no record that reached it: not to an odd value, a locked file, a burst,
a killed process or a fork (issue 12 §2). Sizes are small here; `benchmarks/durability.py` runs
the full-size figures."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from enum import IntEnum, StrEnum
from pathlib import Path

import pytest

import llmmeter
from llmmeter.cli import main as cli_main
from llmmeter.record import CallRecord, CostStatus, Timings, Usage
from llmmeter.store import SQLiteStore, read_records


def record(name: str, start: int = 1_000, **changes: object) -> CallRecord:
    made = CallRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o-mini",
        name=name,
        timings=Timings(start_time_unix_ns=start, duration_s=0.25),
        usage=Usage(input_tokens=10, output_tokens=5),
    )
    for key, value in changes.items():
        setattr(made, key, value)
    return made


def rows_in(path: Path) -> int:
    """Rows in SQLite right now, without replaying any journal (read_records would)."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])


def journal_files(path: Path) -> list[str]:
    directory = path.with_name(path.name + ".journal")
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- one odd record never sinks its batch ------------------------------------------------------


def test_huge_counts_lone_surrogates_nul_bytes_and_huge_strings_are_stored_with_their_batch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "odd.sqlite3"
    store = SQLiteStore(path)
    batch = [record(f"r{i}", start=i) for i in range(300)]
    batch[10].usage = Usage(input_tokens=2**64 + 1, output_tokens=-(2**70))
    batch[20].request_model = "gpt-\ud800-mini"
    batch[30].response_id = "chatcmpl-\x00-nul"
    batch[40].error_type = "x" * 200_000
    batch[50].attributes = {"note": "\udfff lone", "big": 2**100}

    for item in batch:
        store.write(item)
    assert store.flush(10)

    back = {r.name: r for r in read_records(path)}
    assert len(back) == 300
    usage = back["r10"].usage
    assert usage is not None and usage.input_tokens == 2**64 + 1 and usage.output_tokens == -(2**70)
    assert back["r20"].request_model == "gpt-\\ud800-mini", "a lone surrogate is stored as its visible escape"
    assert back["r30"].response_id == "chatcmpl-\x00-nul"
    assert back["r40"].error_type == "x" * 200_000
    assert back["r50"].attributes == {"note": "\udfff lone", "big": 2**100}, "JSON columns keep it exactly"
    assert store.stats.quarantined == 0
    store.close()


def test_a_record_the_database_refuses_goes_alone_to_quarantine_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "refused.sqlite3"
    store = SQLiteStore(path)
    batch = [record(f"r{i}") for i in range(300)]
    batch[7].timings = Timings(start_time_unix_ns=None)  # type: ignore[arg-type]  # NOT NULL column

    with caplog.at_level(logging.WARNING, logger="llmmeter"):
        for item in batch:
            store.write(item)
        assert store.flush(10)

    assert len(read_records(path)) == 299
    with sqlite3.connect(path) as conn:
        [(record_id, reason, record_json)] = conn.execute(
            "SELECT record_id, reason, record_json FROM quarantine"
        )
    assert record_id == batch[7].record_id
    assert "NOT NULL" in reason
    assert json.loads(record_json)["name"] == "r7"
    assert store.stats.quarantined == 1
    assert len([r for r in caplog.records if "quarantine" in r.getMessage()]) == 1
    store.close()


def test_the_report_says_how_many_records_were_refused_and_store_quarantine_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "refused.sqlite3"
    store = SQLiteStore(path)
    batch = [record(f"r{i}") for i in range(20)]
    batch[3].timings = Timings(start_time_unix_ns=None)  # type: ignore[arg-type]  # NOT NULL column
    for item in batch:
        store.write(item)
    assert store.flush(10)
    store.close()

    assert cli_main(["report", "--store", str(path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["total"]["calls"] == 19
    assert "1 records the store refused are not in this report" in captured.err
    assert "llmmeter store quarantine" in captured.err

    assert cli_main(["store", "quarantine", str(path), "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["count"] == 1
    [entry] = listed["records"]
    assert entry["record_id"] == batch[3].record_id and "NOT NULL" in entry["reason"]
    assert json.loads(entry["record"])["name"] == "r3"

    assert cli_main(["store", "quarantine", str(path)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("1 records in the quarantine of") and batch[3].record_id in table


def test_a_store_with_nothing_refused_reports_without_a_quarantine_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clean.sqlite3"
    store = SQLiteStore(path)
    store.write(record("only"))
    assert store.flush(10)
    store.close()
    assert cli_main(["report", "--store", str(path)]) == 0
    assert "refused" not in capsys.readouterr().err
    assert cli_main(["store", "quarantine", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"0 records in the quarantine of {path}"
    assert cli_main(["store", "quarantine", str(tmp_path / "missing.sqlite3")]) == 2
    assert capsys.readouterr().err.startswith("llmmeter: no llmmeter store at")


# -- a locked file is waited for, never dropped -----------------------------------------------

LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    """
)


@pytest.fixture
def existing_store(tmp_path: Path) -> Path:
    path = tmp_path / "locked.sqlite3"
    first = SQLiteStore(path)
    first.write(record("before"))
    assert first.close()
    return path


def test_a_store_locked_by_another_process_is_retried_with_backoff_and_loses_nothing(
    existing_store: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(existing_store), "2.0"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    store = SQLiteStore(existing_store, max_queue=200)

    for i in range(2_000):
        store.write(record(f"r{i}"))
    assert store.flush(0.3) is False, "nothing can be written while the other process holds the lock"
    assert holder.wait(30) == 0

    assert store.flush(20)
    assert store.stats.busy_retries > 0 and store.stats.spilled > 0
    assert len(read_records(existing_store)) == 2_001
    assert store.stats.lost == store.stats.failed == 0
    store.close()


# -- bursts spill to the journal, then catch up ------------------------------------------------


def test_a_burst_beyond_the_queue_is_spilled_to_the_journal_and_written_from_there(tmp_path: Path) -> None:
    path = tmp_path / "burst.sqlite3"
    store = SQLiteStore(path, max_queue=500)

    for i in range(5_000):
        store.write(record(f"r{i}"))
    queued_at_most = len(store._queue)
    assert store.flush(30)

    names = [r.name for r in read_records(path)]
    assert len(names) == 5_000 and len(set(names)) == 5_000
    assert queued_at_most <= 500 and store.stats.spilled > 0
    store.close()


def test_a_long_running_process_keeps_about_one_journal_segment(tmp_path: Path) -> None:
    path = tmp_path / "rotating.sqlite3"
    store = SQLiteStore(path, segment_records=100)

    for round_ in range(5):
        for i in range(250):
            store.write(record(f"r{round_}-{i}"))
        assert store.flush(10)
        assert len(journal_files(path)) <= 1, "committed segments are deleted"

    assert store.close()
    assert journal_files(path) == []
    assert rows_in(path) == 1_250


# -- killed processes: the next reader replays their journals ---------------------------------

KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import llmmeter

    path, count, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    llmmeter.configure(store=path)

    @llmmeter.metered(name="job", provider="openai", model="gpt-4o-mini")
    def job(i):
        if os.environ.get("JOB_USAGE"):
            return {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}
        return i

    for i in range(count):
        job(i)
    print("returned", flush=True)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    elif how == "os_exit":
        os._exit(0)
    """
)


def run_writer(path: Path, count: int, how: str, *, usage: bool = False) -> int:
    process = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), str(count), how],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "JOB_USAGE": "1" if usage else ""},
    )
    assert process.stdout.strip() == "returned", process.stderr
    return process.returncode


@pytest.mark.parametrize(
    ("how", "exit_code"), [("sigkill", -signal.SIGKILL), ("sigterm", -signal.SIGTERM), ("os_exit", 0)]
)
def test_records_that_returned_survive_the_process_being_killed(
    tmp_path: Path, how: str, exit_code: int
) -> None:
    path = tmp_path / f"{how}.sqlite3"

    assert run_writer(path, 1_000, how) == exit_code

    back = read_records(path)
    assert len(back) == 1_000
    assert len({r.record_id for r in back}) == 1_000
    assert journal_files(path) == [], "a replayed journal is deleted"


def test_a_killed_processs_records_are_priced_when_replayed_though_it_died_before_pricing_them(
    tmp_path: Path,
) -> None:
    # Pricing runs on the pipeline's thread, after the caller's thread journaled the record: a
    # record whose process was killed in between is journaled "pending" and priced on replay.
    path = tmp_path / "priced.sqlite3"
    run_writer(path, 500, "sigkill", usage=True)

    llmmeter.configure(store=None)  # the reading process's prices: here the bundled table
    try:
        back = read_records(path)
    finally:
        llmmeter.configure(store=None, pricing=None)
    assert len(back) == 500
    # gpt-4o-mini: 10 x 0.15 + 5 x 0.60 = 4.5 USD per million calls' worth of these tokens.
    assert {(r.cost_status, r.cost.amount if r.cost else None) for r in back} == {
        (CostStatus.PRICED, Decimal("0.0000045"))
    }


def test_the_next_process_that_opens_the_store_replays_a_dead_processs_journal(tmp_path: Path) -> None:
    path = tmp_path / "next.sqlite3"
    run_writer(path, 1_000, "sigkill")

    store = SQLiteStore(path)
    store.write(record("next process"))
    assert store.flush(10)

    assert rows_in(path) == 1_001
    assert store.stats.replayed_segments >= 1
    store.close()


def test_a_normal_exit_writes_everything_and_removes_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "exit.sqlite3"

    assert run_writer(path, 3_000, "exit") == 0

    assert rows_in(path) == 3_000
    assert journal_files(path) == []
    assert not path.with_name(path.name + ".journal").exists()


def test_replaying_twice_writes_each_record_once(tmp_path: Path) -> None:
    path = tmp_path / "twice.sqlite3"
    run_writer(path, 500, "os_exit")
    [segment] = path.with_name(path.name + ".journal").iterdir()
    saved = segment.read_bytes()

    assert len(read_records(path)) == 500
    segment.write_bytes(saved)  # as if a replay had been cut short before deleting the segment

    assert len(read_records(path)) == 500


def test_a_line_cut_short_by_a_kill_is_quarantined_and_the_rest_replayed(tmp_path: Path) -> None:
    path = tmp_path / "cut.sqlite3"
    run_writer(path, 100, "sigkill")
    [segment] = path.with_name(path.name + ".journal").iterdir()
    with segment.open("ab") as file:
        file.write(b'["half a rec')

    assert len(read_records(path)) == 100
    with sqlite3.connect(path) as conn:
        [(reason,)] = conn.execute("SELECT reason FROM quarantine")
    assert "cut short" in reason


# -- fork ----------------------------------------------------------------------------------------


FORKING_WRITER = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from llmmeter.record import CallRecord, Timings
    from llmmeter.store import SQLiteStore

    path = sys.argv[1]
    store = SQLiteStore(path, max_queue=1_000)

    def burst(prefix, count):
        for i in range(count):
            store.write(CallRecord(operation="chat", provider="openai", name=f"{prefix}-{i}",
                                   timings=Timings(start_time_unix_ns=i)))

    burst("parent-before", 200)
    store.flush(10)
    busy = threading.Thread(target=burst, args=("parent-busy", 5_000))
    busy.start()
    time.sleep(0.05)  # the parent's writer is in the middle of its batches
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        burst("child", 500)
        sys.exit(0)  # a normal exit: the store's exit hook writes and closes, within 2 s
    _, status = os.waitpid(pid, 0)
    child_seconds = time.monotonic() - started
    busy.join()
    print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status), "child_seconds": child_seconds,
                      "parent_flushed": store.flush(30)}), flush=True)
    """
)


def test_a_child_forked_while_the_parent_writes_gets_its_own_writer_and_exits_promptly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fork.sqlite3"

    process = subprocess.run(
        [sys.executable, "-c", FORKING_WRITER, str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert process.returncode == 0, process.stderr
    outcome = json.loads(process.stdout)
    assert outcome["child_exit"] == 0 and outcome["parent_flushed"] is True
    assert outcome["child_seconds"] < 5, "the child never waits on the parent's locks (it used to hang 10 s)"
    names = [r.name or "" for r in read_records(path)]
    assert len(names) == len(set(names)) == 200 + 5_000 + 500
    assert sum(name.startswith("child-") for name in names) == 500


def test_a_value_the_journal_cannot_serialize_is_journaled_as_text_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "objects.sqlite3"
    store = SQLiteStore(path)
    odd = record("odd", request_params={"gen_ai.request.stop": Decimal("1.5"), "tags": ["a"]})

    store.journal(odd)  # then the process dies before its writer ran
    store._journal.release()

    [back] = read_records(path)
    assert back.record_id == odd.record_id
    assert back.request_params == {"gen_ai.request.stop": "1.5", "tags": ["a"]}


def test_values_of_enum_and_other_subclass_types_are_journaled_as_their_plain_values(tmp_path: Path) -> None:
    class Model(StrEnum):
        MINI = "gpt-4o-mini"

    class Port(IntEnum):
        HTTPS = 443

    path = tmp_path / "subclasses.sqlite3"
    store = SQLiteStore(path)
    odd = record("odd", response_model=Model.MINI, server_port=Port.HTTPS, attributes={"tier": Model.MINI})

    store.journal(odd)  # then the process dies before its writer ran
    store._journal.release()

    [back] = read_records(path)
    assert (back.response_model, back.server_port, back.attributes) == (
        "gpt-4o-mini",
        443,
        {"tier": "gpt-4o-mini"},
    )
    assert type(back.response_model) is str and type(back.server_port) is int
