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
from llmmeter.record import CallKind, CallRecord, Cost, CostStatus, Outcome, Timings, Usage
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
    assert groups[("gpt-4o", "search")]["latency_s"]["ttft"]["p50"] == pytest.approx(0.3, rel=0.0005)
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
    assert "cost (USD)" in result.stdout and "10.0200" in result.stdout
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


# -- a report a user can trust -----------------------------------------------------------------


def test_an_unknown_group_key_is_a_one_line_error_listing_the_valid_keys(store_path: Path) -> None:
    result = report(store_path, "--by", "model,teem")

    assert_one_line_error(result, "--by: no record has 'teem'", "valid keys are model,", "team", "user_id")


def test_an_attribute_key_some_record_has_is_a_valid_group_key(store_path: Path) -> None:
    result = report(store_path, "--by", "user_id", "--format", "json")

    assert result.returncode == 0, result.stderr
    assert [g["key"] for g in json.loads(result.stdout)["groups"]] == [{"user_id": "u-17"}]


def test_top_n_shows_the_first_groups_and_adds_the_rest_up_as_other(store_path: Path) -> None:
    table = report(store_path, "--by", "model", "--since", "24h", "--top", "1")
    as_json = report(store_path, "--by", "model", "--since", "24h", "--top", "1", "--format", "json")

    assert table.returncode == 0, table.stderr
    assert "\n(other) " in table.stdout
    assert "The top 1 of 3 groups by cost" in " ".join(table.stdout.split())
    document = json.loads(as_json.stdout)
    assert [g["key"] for g in document["groups"]] == [{"model": "gpt-4o"}]
    assert document["other"]["groups"] == 2 and document["other"]["calls"] == 2
    assert document["total"]["calls"] == 4


def test_sort_by_calls_orders_the_groups(store_path: Path) -> None:
    result = report(store_path, "--by", "team", "--since", "24h", "--sort", "key", "--format", "json")

    assert [g["key"]["team"] for g in json.loads(result.stdout)["groups"]] == ["ads", "search"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--since", "99999999999w"), "reaches back before the year 1"),
        (("--since", "1e400d"), "not a time"),
        (("--top", "0"), "must be 1 or more"),
        (("--top", "many"), "not a whole number"),
        (("--sort", "price"), "invalid choice: 'price'"),
        (("--by", "a\x1b[2Jb"), "not a valid key"),
        (("--by", 'a"b'), "not a valid key"),
    ],
)
def test_absurd_arguments_are_one_line_errors(store_path: Path, args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(report(store_path, *args), fragment)


def test_percentiles_are_over_successful_calls_unless_asked_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite3"
    store = SQLiteStore(path)
    for duration, outcome in ((1.0, Outcome.OK), (2.0, Outcome.OK), (30.0, Outcome.ERROR)):
        rec = record("gpt-4o", "search", "0.01", hours_ago=1)
        rec.timings.duration_s, rec.outcome = duration, outcome
        store.write(rec)
    assert store.flush()
    store.close()

    ok = json.loads(report(path, "--format", "json").stdout)["total"]["latency_s"]["duration"]
    every = json.loads(report(path, "--format", "json", "--outcome", "all").stdout)["total"]["latency_s"]

    assert ok["count"] == 2 and ok["p50"] == pytest.approx(1.5, rel=0.0005)
    assert every["duration"]["count"] == 3 and every["duration"]["p50"] == pytest.approx(2.0, rel=0.0005)
    assert "over successful calls only" in " ".join(report(path).stdout.split())


# -- hostile values ----------------------------------------------------------------------------


@pytest.fixture
def hostile_store(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.sqlite3"
    store = SQLiteStore(path)
    values = (
        "\ud800",
        "\x00nul",
        "\x1b]0;pwned\x07",
        '=HYPERLINK("http://x")',
        "-2+3",
        "@SUM(A1)",
        "x" * 5000,
    )
    for value in values:
        rec = record("gpt-4o", value, "0.01", hours_ago=1)
        rec.attributes["feature"] = value
        rec.usage = Usage(
            input_tokens=10**12,
            output_tokens=10**11,
            cache_read_input_tokens=10**10,
            reasoning_output_tokens=5,
            audio_input_tokens=7,
            text_input_tokens=9,
        )
        store.write(rec)
    assert store.flush()
    store.close()
    return path


@pytest.mark.parametrize("output_format", ["table", "json", "csv", "html"])
def test_hostile_attribute_values_never_crash_any_format(
    hostile_store: Path, tmp_path: Path, output_format: str
) -> None:
    out = tmp_path / f"report.{output_format}"

    result = report(hostile_store, "--by", "team,feature", "--format", output_format, "-o", str(out))

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out.read_text(encoding="utf-8")


def test_the_table_escapes_control_characters_cuts_long_values_and_fits_100_columns(
    hostile_store: Path,
) -> None:
    result = report(hostile_store, "--by", "team,feature")

    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert not any(ch in text for ch in "\x00\x07\x1b")
    assert "\\x1b]0;pw" in text and "\\x00nul" in text and "\\ud800" in text
    assert "x" * 100 not in text and "…" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "Not shown to fit 100 columns" in " ".join(text.split())


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(hostile_store: Path) -> None:
    result = report(hostile_store, "--by", "team", "--format", "csv")

    teams = {row["team"] for row in csv.DictReader(io.StringIO(result.stdout))}
    assert {'\'=HYPERLINK("http://x")', "'-2+3", "'@SUM(A1)", "x" * 5000, "\\ud800"} <= teams


# -- the progress line -------------------------------------------------------------------------


def test_a_slow_report_shows_a_progress_line_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmmeter import cli

    monkeypatch.setattr(cli, "_PROGRESS_AFTER_S", 0.05)
    with cli._progress_line() as step:  # stderr is not a terminal under pytest
        step("percentiles per group")
        time.sleep(0.4)
    assert capsys.readouterr().err == ""

    monkeypatch.setattr(cli, "_stderr_is_a_terminal", lambda: True)
    with cli._progress_line() as step:
        step("percentiles per group")
        time.sleep(0.5)
    err = capsys.readouterr().err
    assert "\rllmmeter report: percentiles per group… 0 s" in err
    assert err.endswith("\r\x1b[K")  # the line is cleared before the report is printed


def test_the_report_command_parses_its_arguments_without_loading_the_price_table() -> None:
    # The price table (pydantic models, the bundled prices) loads on a thread of its own while the
    # database scans: importing it up front put ≈ 0.2 s before every report's first query.
    code = (
        "import sys, llmmeter.cli; llmmeter.cli._parser('report'); "
        "print(sorted(m for m in sys.modules if 'llmmeter.pricing' in m))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"
