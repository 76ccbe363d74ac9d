"""The ``llmmeter`` command line: ``llmmeter report`` over the local store."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from llmmeter.cli import main, parse_time
from llmmeter.record import CallKind, CallRecord, Cost, CostStatus, Timings, Usage
from llmmeter.store import SQLiteStore

HOUR_NS = 3600 * 10**9


def record(
    model: str, team: str, cost: str | None, hours_ago: float, ttft: float | None = None
) -> CallRecord:
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model=model,
        streaming=ttft is not None,
        timings=Timings(
            start_time_unix_ns=time.time_ns() - int(hours_ago * HOUR_NS), duration_s=1.25, ttft_s=ttft
        ),
        usage=Usage(input_tokens=1000, output_tokens=100),
        cost=None if cost is None else Cost(amount=Decimal(cost)),
        cost_status=CostStatus.UNPRICED if cost is None else CostStatus.PRICED,
        attributes={"team": team, "user_id": "u-17"},
    )


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "records.sqlite3"
    store = SQLiteStore(path)
    for rec in (
        record("gpt-4o", "search", "0.0125", hours_ago=1, ttft=0.2),
        record("gpt-4o", "search", "0.0175", hours_ago=2, ttft=0.4),
        record("gpt-4o-mini", "ads", "0.0005", hours_ago=3),
        record("llama-local", "ads", None, hours_ago=5),
        record("gpt-4o", "search", "9.99", hours_ago=24 * 3),  # outside --since 24h
    ):
        store.write(rec)
    step = record("", "search", None, hours_ago=1)
    step.kind, step.name, step.request_model = CallKind.STEP, "agent.run", None
    step.rollup_calls, step.rollup_cost = 2, Decimal("0.03")
    store.write(step)
    assert store.flush()
    store.close()
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmmeter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def report(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("report", "--store", str(store), *args)


# -- python -m llmmeter report -----------------------------------------------------------------


def test_report_as_json_by_model_and_team_over_the_last_day(store_path: Path) -> None:
    result = report(store_path, "--by", "model,team", "--since", "24h", "--format", "json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    groups = {(g["key"]["model"], g["key"]["team"]): g for g in document["groups"]}
    assert set(groups) == {("gpt-4o", "search"), ("gpt-4o-mini", "ads"), ("llama-local", "ads")}
    assert groups[("gpt-4o", "search")]["calls"] == 2
    assert Decimal(groups[("gpt-4o", "search")]["cost"]["USD"]) == Decimal("0.0300")
    assert groups[("gpt-4o", "search")]["latency_s"]["ttft"]["p50"] == pytest.approx(0.3)
    assert groups[("llama-local", "ads")]["unpriced_calls"] == 1
    assert document["total"]["calls"] == 4  # the step and the 3-day-old call are left out
    assert Decimal(document["total"]["cost"]["USD"]) == Decimal("0.0305")


def test_report_as_csv_parses_back(store_path: Path) -> None:
    result = report(store_path, "--by", "team", "--since", "24h", "--format", "csv")

    assert result.returncode == 0, result.stderr
    rows = {row["team"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["search"]["calls"] == "2" and Decimal(rows["search"]["cost_USD"]) == Decimal("0.03")
    assert rows["ads"]["unpriced_calls"] == "1" and rows["ads"]["input_tokens"] == "2000"


def test_report_as_a_table_by_default(store_path: Path) -> None:
    result = report(store_path, "--by", "model", "--since", "7d")

    assert result.returncode == 0, result.stderr
    assert "llmmeter report: 5 LLM calls" in result.stdout
    assert "cost (USD)" in result.stdout and "10.020000" in result.stdout
    assert "TTFT" in result.stdout and "300 ms" in result.stdout


def test_until_and_iso_times_bound_the_window(store_path: Path) -> None:
    until = (datetime.now(UTC) - timedelta(hours=2, minutes=30)).isoformat()

    result = report(store_path, "--since", "4d", "--until", until, "--format", "json")

    assert json.loads(result.stdout)["total"]["calls"] == 3  # 3h, 5h and 3 days ago


def test_kind_step_reports_steps_with_their_rolled_up_cost(store_path: Path) -> None:
    result = report(store_path, "--kind", "step", "--by", "name", "--format", "json")

    [group] = json.loads(result.stdout)["groups"]
    assert group["key"] == {"name": "agent.run"}
    assert group["llm_calls"] == 2 and group["cost"] == {"USD": "0.03"}


def test_store_comes_from_the_environment_when_not_given(store_path: Path) -> None:
    result = run_cli("report", "--format", "json", env={"LLMMETER_STORE": str(store_path)})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"]["calls"] == 5


def test_default_store_lives_in_the_xdg_data_dir(store_path: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "llmmeter").mkdir(parents=True)
    store_path.rename(xdg / "llmmeter" / "records.sqlite3")
    env = {k: v for k, v in os.environ.items() if k != "LLMMETER_STORE"}
    env["XDG_DATA_HOME"] = str(xdg)

    result = subprocess.run(
        [sys.executable, "-m", "llmmeter", "report", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"]["calls"] == 5


def test_output_option_writes_the_report_to_a_file(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"

    result = report(store_path, "--format", "json", "-o", str(out))

    assert result.returncode == 0 and result.stdout == ""
    assert json.loads(out.read_text())["total"]["calls"] == 5


# -- clear messages, never a traceback ---------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message


def test_a_missing_store_gives_a_one_line_message_and_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.sqlite3"

    assert_one_line_error(run_cli("report", "--store", str(missing)), "no llmmeter store at", str(missing))


def test_an_unreadable_or_foreign_file_gives_a_one_line_message(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"\x00\x01not a database" * 200)

    assert_one_line_error(run_cli("report", "--store", str(garbage)), "not an llmmeter store")
    assert_one_line_error(run_cli("report", "--store", str(tmp_path)), "is a directory")


def test_a_bad_time_is_a_usage_error(store_path: Path) -> None:
    result = report(store_path, "--since", "yesterday-ish")

    assert result.returncode == 2
    assert "not a time: 'yesterday-ish'" in result.stderr and "Traceback" not in result.stderr


def test_since_after_until_is_refused(store_path: Path) -> None:
    result = report(store_path, "--since", "1h", "--until", "2d")

    assert_one_line_error(result, "--since must be before --until")


def test_main_returns_exit_codes_instead_of_exiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--store", str(tmp_path / "absent.sqlite3")]) == 2
    assert main(["report", "--format", "yaml"]) == 2
    assert main([]) == 2
    assert main(["report", "--help"]) == 0
    assert "--by KEYS" in capsys.readouterr().out


# -- time parsing ------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("30m", NOW - timedelta(minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2026-11-01T08:30:00+01:00", datetime(2026, 11, 1, 7, 30, tzinfo=UTC)),
        ("2026-11-01T08:30:00Z", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
    ],
)
def test_parse_time_understands_relative_and_iso_times(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


def test_parse_time_takes_a_bare_date_as_local_midnight() -> None:
    parsed = parse_time("2026-11-01", now=NOW)

    assert parsed == datetime(2026, 11, 1).astimezone()
    assert parsed.tzinfo is not None


def test_parse_time_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_time("soon", now=NOW)


def test_html_format_writes_one_self_contained_page(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"

    result = report(store_path, "--by", "model", "--format", "html", "-o", str(out))

    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # 7 charts but two have no data here: no 'feature' attribute, no TPOT (no output token timing)
    assert page.count("<svg ") == 5
    assert "No record has a &#x27;feature&#x27; attribute." in page
    assert "No call in this window has a TPOT" in page
    assert "http://" not in page and "https://" not in page
