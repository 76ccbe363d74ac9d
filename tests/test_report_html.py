"""``llmmeter report --format html``: one self-contained file whose charts show the right data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from llmmeter.record import CallRecord, Cost, CostStatus, Timings, Usage
from llmmeter.report import build_report
from llmmeter.report_html import render_html
from llmmeter.store import SQLiteStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def call(model: str, team: str, hours_ago: float, cost: str | None, ttft: float | None) -> CallRecord:
    start = NOW - timedelta(hours=hours_ago)
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model=model,
        streaming=ttft is not None,
        timings=Timings(
            start_time_unix_ns=int(start.timestamp()) * 10**9,
            duration_s=1.5,
            ttft_s=ttft,
            tpot_s=None if ttft is None else ttft / 20,
        ),
        usage=Usage(
            input_tokens=1000, output_tokens=200, audio_input_tokens=40 if model == "gpt-4o" else None
        ),
        cost=None if cost is None else Cost(amount=Decimal(cost)),
        cost_status=CostStatus.UNPRICED if cost is None else CostStatus.PRICED,
        attributes={"team": team, "feature": "summaries"},
    )


def sample_records() -> list[CallRecord]:
    records = []
    for hour in range(12):
        records.append(call("gpt-4o", "search", hour + 0.5, "0.02", 0.2 + hour / 100))
        records.append(call("gpt-4o-mini", "ads", hour + 0.25, "0.001", 0.1 + hour / 100))
        records.append(call("llama-local", "ads", hour + 0.75, None, None))
    return records


def render(records: list[CallRecord]) -> str:
    report = build_report(records, by="model", since=NOW - timedelta(hours=12), until=NOW)
    return render_html(report, records)


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", page, flags=re.S)]


def titles(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter("title")]


def test_page_is_self_contained_and_may_load_nothing() -> None:
    page = render(sample_records())

    assert page.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in page  # a Content-Security-Policy: nothing can be fetched
    for forbidden in ("http://", "https://", "<script", "<link", "src=", "@import", "url("):
        assert forbidden not in page


def test_every_chart_is_well_formed_svg() -> None:
    charts = svgs(render(sample_records()))

    labels = [svg.get("aria-label") for svg in charts]
    assert labels == [
        "cost per 15 minutes stacked by model",  # 12 hours in at most 48 columns
        "cost by team",
        "cost by feature",
        "ttft distribution per model",
        "tpot distribution per model",
        "duration distribution per model",
        "tokens by kind, stacked by model",
    ]


def test_cost_over_time_stacks_priced_models_per_hour_and_leaves_unpriced_out() -> None:
    cost_chart = svgs(render(sample_records()))[0]

    bar_titles = titles(cost_chart)
    assert len([t for t in bar_titles if t.startswith("gpt-4o ·")]) == 12
    assert len([t for t in bar_titles if t.startswith("gpt-4o-mini ·")]) == 12
    assert not any("llama-local" in t for t in bar_titles)
    assert all(t.endswith(": 0.02 USD") for t in bar_titles if t.startswith("gpt-4o ·"))


def test_cost_over_time_sums_the_calls_of_one_bucket() -> None:
    records = [call("gpt-4o", "search", h, "0.02", None) for h in (30.2, 30.4, 1.5)]
    report = build_report(records, since=NOW - timedelta(hours=48), until=NOW)

    cost_chart = svgs(render_html(report, records))[0]

    assert cost_chart.get("aria-label") == "cost per hour stacked by model"
    assert sorted(t.split(": ")[1] for t in titles(cost_chart)) == ["0.02 USD", "0.04 USD"]


def test_cost_by_team_shows_exact_sums_and_unpriced_counts() -> None:
    team_chart = svgs(render(sample_records()))[1]

    notes = [t.text for t in team_chart.iter("text") if t.get("class") == "note"]
    assert notes == ["0.240000 USD", "0.012000 USD · 12 unpriced"]


def test_latency_boxes_cover_only_models_with_observed_values() -> None:
    ttft_chart = svgs(render(sample_records()))[3]

    box_titles = titles(ttft_chart)
    assert [t.split(":")[0] for t in box_titles] == ["gpt-4o", "gpt-4o-mini"]
    assert "n=12" in box_titles[0] and "p50 255 ms" in box_titles[0]  # 0.2..0.31 -> median 0.255


def test_tokens_chart_shows_every_reported_kind_and_modality() -> None:
    token_chart = svgs(render(sample_records()))[6]

    labels = [t.text for t in token_chart.iter("text") if t.get("class") == "label"]
    assert labels == ["input", "output", "audio input"]  # the one label table (labels.py)
    notes = [t.text for t in token_chart.iter("text") if t.get("class") == "note"]
    assert notes == ["36,000 tokens", "7,200 tokens", "480 tokens"]


def test_an_empty_window_renders_a_page_that_says_so() -> None:
    page = render([])

    assert "No priced calls in this window." in page
    assert "No records in this window." in page
    assert svgs(page) == []


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_headless_chromium_renders_the_charts_without_console_errors(tmp_path: Path) -> None:
    store_path = tmp_path / "records.sqlite3"
    store = SQLiteStore(store_path)
    for record in sample_records():
        store.write(record)
    store.close()
    page = tmp_path / "report.html"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmmeter",
            "report",
            "--store",
            str(store_path),
            "--by",
            "model,team",
            "--format",
            "html",
            "-o",
            str(page),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    artifacts = Path(os.environ.get("LLMMETER_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "report.png"
    chromium = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu"]
    chromium += ["--enable-logging=stderr", "--v=0"]  # console messages go to stderr as ":CONSOLE"

    shot = subprocess.run(
        [*chromium, "--window-size=1050,3400", f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    dom = subprocess.run(
        [*chromium, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )

    assert shot.returncode == 0 and dom.returncode == 0
    assert [line for line in shot.stderr.splitlines() + dom.stderr.splitlines() if ":CONSOLE" in line] == []
    assert screenshot.stat().st_size > 50_000  # a blank page of this size compresses to a few kB
    assert len(re.findall(r"<svg ", dom.stdout)) == 7
    assert len(re.findall(r'<rect class="bar"', dom.stdout)) > 24
