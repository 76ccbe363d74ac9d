"""``llmmeter prices list``, ``prices diff`` and the staleness warning of ``prices show``: what a
user reads to see and trust the table, and one error line for any bad input."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from llmmeter.pricing.cli import staleness_warning

from .test_pricing_files import run_cli, write

OVERRIDES = """\
models:
  - {model: gpt-4o-mini, provider: openai, input_per_mtok: "0.10", output_per_mtok: "0.60",
     cached_input_per_mtok: "0.075"}
  - {model: acme-llama, input_per_mtok: "0.60", output_per_mtok: "0.80"}
aliases:
  prod-chat: acme-llama
"""


def test_list_filters_by_provider_and_glob_and_shows_kind_rates_and_origin() -> None:
    status, output = run_cli("prices", "list", "--provider", "anthropic", "--match", "claude-opus-4-7*")
    assert status == 0
    lines = output.splitlines()
    assert lines[0].split() == ["provider", "model", "kind", "input", "cached", "output", "checked", "from"]
    assert lines[1].split() == [
        "anthropic", "claude-opus-4-7", "chat", "5", "0.5", "25", "2026-11-27", "reference-anthropic.json",
    ]  # fmt: skip
    assert all(line.startswith("anthropic ") for line in lines[1:-1])
    assert lines[-1].endswith("entries (rates in USD per million tokens unless a fee is shown)")


def test_list_takes_a_calls_provider_name_and_shows_fees_of_media_models() -> None:
    status, output = run_cli("prices", "list", "--provider", "azure.ai.openai", "--match", "tts-1*")
    assert status == 0
    rows = [line.split() for line in output.splitlines()[1:-1]]
    assert ["openai", "tts-1", "speech", "15/1M", "chars", "2026-12-04", "openai.yaml"] in rows
    status, output = run_cli("prices", "list", "--match", "whisper-1")
    assert output.splitlines()[1].split()[:4] == ["openai", "whisper-1", "transcription", "0.006/min"]


def test_list_as_json_gives_every_rate_and_the_provenance() -> None:
    status, output = run_cli(
        "prices", "list", "--match", "gpt-5.5", "--provider", "openai", "--format", "json"
    )
    assert status == 0
    (entry,) = json.loads(output)
    assert entry["model"] == "gpt-5.5" and entry["kind"] == "chat"
    assert (entry["input_per_mtok"], entry["cached_input_per_mtok"], entry["output_per_mtok"]) == (
        "5",
        "0.5",
        "30",
    )
    assert entry["tiers"] == [
        {
            "above_input_tokens": 272000,
            "input_per_mtok": "10",
            "cached_input_per_mtok": "1",
            "output_per_mtok": "45",
        }
    ]
    assert entry["source_url"].startswith("https://") and entry["checked_on"] == "2026-11-27"
    assert entry["from"] == "bundled/reference-openai.json"


def test_list_with_a_file_lists_its_entries_too(tmp_path: Path) -> None:
    status, output = run_cli(
        "prices", "list", "--match", "acme-*", "--file", str(write(tmp_path, "p.yaml", OVERRIDES))
    )
    assert status == 0 and "acme-llama" in output and "p.yaml" in output


def test_list_says_when_nothing_matches() -> None:
    assert run_cli("prices", "list", "--match", "no-such-*") == (1, "no priced model matches\n")


def test_diff_names_what_a_file_adds_changes_and_aliases(tmp_path: Path) -> None:
    status, output = run_cli("prices", "diff", str(write(tmp_path, "p.yaml", OVERRIDES)))
    assert status == 1
    lines = output.splitlines()
    assert lines[0].startswith(
        "changed  openai/gpt-4o-mini (was bundled:openai/gpt-4o-mini): input_per_mtok 0.15 -> 0.1"
    )
    assert "added    acme-llama" in lines
    assert "alias    prod-chat -> acme-llama (was unpriced)" in lines
    assert lines[-1].endswith("p.yaml: 3 change(s), 2 entries")


def test_diff_of_a_file_that_changes_nothing_exits_zero(tmp_path: Path) -> None:
    same = """\
models:
  - model: gpt-4o-mini
    provider: openai
    input_per_mtok: "0.15"
    cached_input_per_mtok: "0.075"
    output_per_mtok: "0.60"
    service_tiers:
      batch: {factor: "0.5"}
      priority: {input_per_mtok: "0.25", cached_input_per_mtok: "0.125", output_per_mtok: "1.00"}
    notes: the bundled price, as a company file might restate it
"""
    status, output = run_cli("prices", "diff", str(write(tmp_path, "same.yaml", same)))
    assert (status, output.splitlines()[-1].endswith("0 change(s), 1 entries")) == (0, True), output


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000),
        ("deep.yaml", "[" * 100_000 + "]" * 100_000),
        ("nested.yaml", "models:\n  - " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"),
        ("binary.yaml", "\x00\xff models"),
        ("list.json", "[1, 2, 3]"),
    ],
)
@pytest.mark.parametrize("command", ["diff", "check", "list", "show"])
def test_a_malformed_or_deeply_nested_file_is_one_error_line(
    tmp_path: Path, name: str, text: str, command: str
) -> None:
    path = write(tmp_path, name, text)
    argv = {
        "list": ["prices", "list", "--file", str(path)],
        "show": ["prices", "show", "gpt-4o", "--file", str(path)],
    }.get(command, ["prices", command, str(path)])
    status, output = run_cli(*argv)
    assert status in (1, 2)
    problems = [line for line in output.splitlines() if not line.endswith("problem(s)")]
    assert len(problems) == 1, output
    assert "Traceback" not in output


def test_a_missing_file_is_one_error_line(tmp_path: Path) -> None:
    status, output = run_cli("prices", "diff", str(tmp_path / "nowhere.yaml"))
    assert status == 2 and output.count("\n") == 1 and output.startswith("error: ")


def test_show_warns_when_the_bundled_table_is_older_than_ninety_days() -> None:
    checked = dt.date(2026, 12, 4)
    assert staleness_warning(checked + dt.timedelta(days=90), checked) is None
    warning = staleness_warning(checked + dt.timedelta(days=91), checked)
    assert warning is not None and "last checked on 2026-12-04 (91 days ago)" in warning
    assert "\n" not in warning


@pytest.mark.parametrize(("age_days", "warned"), [(10, False), (91, True)])
def test_show_says_when_the_bundled_table_is_stale(
    monkeypatch: pytest.MonkeyPatch, age_days: int, warned: bool
) -> None:
    checked = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=age_days)
    monkeypatch.setattr("llmmeter.pricing.cli.bundled_table_date", lambda: checked)
    status, output = run_cli("prices", "show", "gpt-5.5")
    assert status == 0 and "priced as:  bundled:openai/gpt-5.5" in output
    assert output.startswith("warning: the bundled price table was last checked") is warned
