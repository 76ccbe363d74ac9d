"""``llmmeter report --baseline-model MODEL``: every group's usage priced at MODEL beside what it
actually cost, and the savings.

Calls go through the real ``openai`` client to the local server, which reports the token counts
(cached ones too); the expected baseline is worked out by hand from those counts and gpt-4o's
bundled prices (input 2.50, cached input 1.25, output 10.00 USD per million tokens).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import llmmeter
from llmmeter.cli import main
from llmmeter.record import CallKind, CallRecord
from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

from .conftest import Telemetry

SMALL, LARGE, UNKNOWN = "gpt-4o-mini", "gpt-4o", "acme-unpriced-model"
MESSAGES = [{"role": "user", "content": "summarise the ticket history of this customer"}]
MILLION = Decimal(1_000_000)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=5)) as srv:
        yield srv


def ask(client: openai.OpenAI, model: str, **headers: Any) -> None:
    extra = pacing_headers(**headers) if headers else None
    client.chat.completions.create(model=model, messages=MESSAGES, extra_headers=extra)  # type: ignore[arg-type]


@pytest.fixture
def store(server: LocalOpenAIServer, telemetry: Telemetry) -> tuple[Path, list[CallRecord]]:
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, max_retries=0))
    with llmmeter.attributes(team="search"):
        ask(client, SMALL)
        ask(client, SMALL, cached_tokens=4, tokens=20)
        with pytest.raises(openai.InternalServerError):
            ask(client, SMALL, error_status=503)
    with llmmeter.attributes(team="support"):
        ask(client, LARGE)
        ask(client, UNKNOWN)
    assert telemetry.settings is not None and telemetry.settings.store is not None
    return telemetry.settings.store.path, telemetry.records


def report(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", "--store", str(path), "--baseline-model", LARGE, *args])
    out, err = capsys.readouterr()
    return code, out, err


def at_gpt_4o(record: CallRecord) -> Decimal:
    """One call's tokens at gpt-4o's prices: uncached input at 2.50, cached at 1.25, output at 10."""
    usage = record.usage
    assert usage is not None and usage.input_tokens is not None and usage.output_tokens is not None
    cached = usage.cache_read_input_tokens or 0
    return (
        (usage.input_tokens - cached) * Decimal("2.50") + cached * Decimal("1.25") + usage.output_tokens * 10
    ) / MILLION


def groups_of(out: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(g["key"]["model"], g["key"]["team"]): g for g in json.loads(out)["groups"]}


def test_each_group_shows_its_usage_at_the_baseline_price_and_the_savings(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, records = store
    code, out, _ = report(path, capsys, "--by", "model,team", "--format", "json")
    assert code == 0
    search = groups_of(out)[SMALL, "search"]["baseline"]
    answered = [r for r in records if r.kind is CallKind.LLM and r.request_model == SMALL and r.cost]
    assert len(answered) == 2 and any(r.usage and r.usage.cache_read_input_tokens == 4 for r in answered)
    actual = sum((r.cost.amount for r in answered if r.cost), Decimal(0))
    baseline = sum((at_gpt_4o(r) for r in answered), Decimal(0))
    # savings = baseline - actual; savings % = savings / baseline * 100 (gpt-4o-mini costs 6 %
    # of gpt-4o at every token kind: 0.15/2.50, 0.075/1.25, 0.60/10 -> 94 % saved).
    assert Decimal(search["actual_cost"]) == actual
    assert Decimal(search["baseline_cost"]) == baseline
    assert Decimal(search["savings"]) == baseline - actual
    assert search["savings_pct"] == pytest.approx(94.0)
    # The failed call reported no tokens: left out of the comparison, not priced as 0.
    assert (search["compared_calls"], search["not_compared_calls"]) == (2, 1)


def test_the_baseline_models_own_group_saves_nothing(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "model,team", "--format", "json")
    support = groups_of(out)[LARGE, "support"]["baseline"]
    assert support["baseline_cost"] == support["actual_cost"]
    assert (support["savings"], support["savings_pct"]) == ("0", 0.0)


def test_a_group_whose_usage_was_never_priced_has_no_baseline_and_no_savings(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "model,team", "--format", "json")
    unpriced = groups_of(out)[UNKNOWN, "support"]["baseline"]
    assert (unpriced["compared_calls"], unpriced["not_compared_calls"]) == (0, 1)
    assert (
        unpriced["baseline_cost"] is None and unpriced["savings"] is None and unpriced["savings_pct"] is None
    )


def test_the_total_adds_up_the_groups(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "model,team", "--format", "json")
    document = json.loads(out)
    total = document["total"]["baseline"]
    assert document["baseline"] == {"model": LARGE, "currency": "USD"}
    parts = [g["baseline"] for g in document["groups"] if g["baseline"]["baseline_cost"] is not None]
    assert Decimal(total["baseline_cost"]) == sum(Decimal(p["baseline_cost"]) for p in parts)
    assert Decimal(total["savings"]) == sum(Decimal(p["savings"]) for p in parts)
    assert (total["compared_calls"], total["not_compared_calls"]) == (3, 2)


def test_csv_gets_baseline_columns_and_the_table_a_savings_section(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    _, out, _ = report(path, capsys, "--by", "team", "--format", "csv")
    rows = {row["team"]: row for row in csv.DictReader(io.StringIO(out))}
    assert rows["search"]["baseline_compared_calls"] == "2"
    assert rows["support"]["baseline_not_compared_calls"] == "1"
    code, table, _ = report(path, capsys, "--by", "team")
    assert code == 0 and "Savings against gpt-4o" in table
    savings_section = table[table.index("Savings against gpt-4o") :]
    search = next(line for line in savings_section.splitlines() if line.startswith("search"))
    assert "94.0 %" in search


def test_a_baseline_model_without_a_price_is_a_one_line_error(
    store: tuple[Path, list[CallRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    code = main(["report", "--store", str(path), "--baseline-model", "no-such-model-xyz"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no price for 'no-such-model-xyz'" in err
