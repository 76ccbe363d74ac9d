"""The JSON and CSV of ``llmmeter report`` are a format other programs read: every group on one
line of compact JSON, the same keys in every group, numbers written as ``json.dumps`` writes
them, exact decimal costs, and any string (a lone surrogate, a line break, ``%s``, ``", "``)
written whole and read back the same."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal, localcontext
from typing import Any

import pytest

from llmmeter.record import CallRecord, Cost, CostStatus, Outcome, Timings, Usage
from llmmeter.report import GroupStats, LatencySummary, Report, build_report, render_csv, render_json
from llmmeter.report.figures import Amortization, Figures, GroupFigures
from llmmeter.report.text import decimal_text, json_text

HOSTILE_TEAMS = (
    "lone \ud800 surrogate",
    "comma, space",
    "100% %s %d",
    "two\nlines",
    'say "hi"',
    "nul\x00byte",
    "line\u2028separator",
    "=HYPERLINK()",
)


def call(
    team: str | None,
    *,
    cost: str | None = "0.0125",
    cached: int | None = None,
    duration: float = 0.25,
    ttft: float | None = None,
    outcome: Outcome = Outcome.OK,
    currency: str = "USD",
) -> CallRecord:
    failed = outcome is Outcome.ERROR
    usage = None if failed else Usage(input_tokens=120, output_tokens=30, cache_read_input_tokens=cached)
    status = CostStatus.NO_USAGE if failed else CostStatus.UNPRICED if cost is None else CostStatus.PRICED
    return CallRecord(
        operation="chat",
        provider="openai",
        request_model="gpt-4o",
        streaming=ttft is not None,
        timings=Timings(duration_s=duration, ttft_s=ttft, tpot_s=None if ttft is None else 0.01),
        usage=usage,
        cost=None if cost is None or failed else Cost(amount=Decimal(cost), currency=currency),
        cost_status=status,
        outcome=outcome,
        attributes={} if team is None else {"team": team},
    )


def varied_calls() -> list[CallRecord]:
    """Groups that differ in every way a row can: cost statuses, currencies, streamed or not,
    cached tokens or not, failed calls, a group without the key."""
    return [
        call("search", cached=40, ttft=0.1, duration=1 / 3),
        call("search", cost="0.0100", cached=10, ttft=0.2, duration=0.7),
        call("ads", cost=None, duration=2.5),
        call("ads", outcome=Outcome.ERROR),
        call("billing", cost="3.5", currency="EUR", duration=1e-5),
        call(None, cost="0.000000015", duration=123.456),
        *(call(team, duration=0.1 * i) for i, team in enumerate(HOSTILE_TEAMS, start=1)),
    ]


def varied_figures(report: Report) -> Figures:
    """Cache figures in two currencies (with and without cache writes) and a training share."""
    amounts: dict[tuple[str | None, ...], GroupFigures] = {
        ("search",): GroupFigures(
            cache_read_savings={"USD": Decimal("0.0040")},
            cache_write_premium={"USD": Decimal("0.0015")},
            training_cost_share={"USD": Decimal("1.2500000000")},
        ),
        ("billing",): GroupFigures(cache_read_savings={"EUR": Decimal("2E-7")}),
        (HOSTILE_TEAMS[0],): GroupFigures(cache_read_savings={"USD": Decimal("0.5")}),
    }
    assert set(amounts) <= {stats.key for stats in report.groups}
    amortization = Amortization(
        model="ft:gpt-4o:acme",
        provider="openai",
        currency="USD",
        training_cost=Decimal("300"),
        amortize_days=30,
        trained_on=dt.date(2026, 11, 1),
        window_share=Decimal("1.2500000000"),
        allocated=True,
    )
    return Figures(groups=amounts, amortizations=[amortization])


def compact(document: object) -> str:
    """What ``json.dumps`` writes for ``document`` in the report's compact style."""
    return json_text(json.dumps(document, ensure_ascii=False, separators=(", ", ": ")))


def row_lines(text: str) -> list[str]:
    """The lines of the groups, ``other`` and total, each without its indent and comma."""
    lines = text.split("\n")  # not splitlines(): a value may hold U+2028, which it splits at
    groups = [line.strip().removesuffix(",") for line in lines if line.startswith("    {")]
    singles = [line for line in lines if line.startswith(('  "other": {', '  "total": {'))]
    return groups + [line.split(": ", 1)[1].removesuffix(",") for line in singles]


@pytest.fixture(params=["with figures", "without figures"])
def rendered(request: pytest.FixtureRequest) -> tuple[Report, Figures | None, str]:
    report = build_report(varied_calls(), by="team", top=7)
    figures = varied_figures(report) if request.param == "with figures" else None
    return report, figures, render_json(report, figures)


def test_every_row_is_one_line_of_exactly_the_compact_json_of_its_values(
    rendered: tuple[Report, Figures | None, str],
) -> None:
    report, _, text = rendered
    rows = row_lines(text)

    assert len(rows) == len(report.groups) + 2  # the groups, other, total
    for row in rows:
        assert row == compact(json.loads(row))
    assert text == compact_document(json.loads(text))


def compact_document(document: dict[str, Any]) -> str:
    """The whole document as the report lays it out: a key per line, a group per line."""
    lines = [f"  {compact(name)}: {compact(value)}" for name, value in document.items() if name != "groups"]
    groups = ",\n".join(f"    {compact(group)}" for group in document["groups"])
    lines.insert(list(document).index("groups"), f'  "groups": [\n{groups}\n  ]')
    return "{\n" + ",\n".join(lines) + "\n}\n"


def test_every_group_other_and_total_have_the_same_keys_in_the_same_order(
    rendered: tuple[Report, Figures | None, str],
) -> None:
    _, figures, text = rendered
    document = json.loads(text)
    rows = [*document["groups"], document["other"], document["total"]]

    def keys(row: dict[str, Any]) -> list[object]:
        nested = {
            name: list(value)
            for name, value in row.items()
            if isinstance(value, dict) and name not in ("key", "cost_status")
        }
        return [name for name in row if name not in ("key", "groups")] + [nested]

    assert all(keys(row) == keys(rows[0]) for row in rows)
    tokens = {"input_tokens", "output_tokens", "cache_read_input_tokens"}
    assert set(rows[0]["tokens"]) == tokens
    assert list(rows[0]["cost"]) == ["EUR", "USD"]
    assert list(rows[0]["latency_s"]) == ["ttft", "tpot", "duration"]
    assert list(rows[0]["latency_s"]["ttft"]) == ["count", "p50", "p95", "p99"]
    if figures is None:
        assert "cache_savings" not in rows[0]
    else:
        assert list(rows[0]["cache_savings"]) == ["EUR", "USD"]
        assert list(rows[0]["training_cost_share"]) == ["USD"]
        assert document["training_costs"][0]["window_share"] == "1.25"


def test_values_read_back_exactly_unobserved_ones_as_null(
    rendered: tuple[Report, Figures | None, str],
) -> None:
    report, figures, text = rendered
    document = json.loads(text)

    for stats, row in zip(report.groups, document["groups"], strict=True):
        assert tuple(row["key"].values()) == stats.key
        assert row["calls"] == stats.calls and row["errors"] == stats.errors
        assert row["tokens"] == {kind: stats.tokens.get(kind) for kind in row["tokens"]}
        assert row["cost"] == {
            c: None if c not in stats.cost else decimal_text(stats.cost[c]) for c in row["cost"]
        }
        assert row["cost_status"] == dict(sorted(stats.cost_status.items()))
        for metric, summary in stats.latency.items():
            assert row["latency_s"][metric] == {
                "count": summary.count,
                **{f"p{p}": v for p, v in summary.percentiles.items()},
            }
    assert report.other is not None and document["other"]["groups"] == report.other.folded_groups == 5
    if figures is not None:
        search = next(row for row in document["groups"] if row["key"] == {"team": "search"})
        assert search["cache_savings"] == {"EUR": None, "USD": "0.0025"}  # reads less writes
        assert search["cache_write_premium"] == {"EUR": None, "USD": "0.0015"}
        billing = next(row for row in document["groups"] if row["key"] == {"team": "billing"})
        assert billing["cache_savings"] == {"EUR": "0.0000002", "USD": None}
        assert billing["training_cost_share"] == {"USD": None}
        assert document["total"]["cache_read_savings"] == {"EUR": "0.0000002", "USD": "0.504"}


def test_hostile_strings_are_written_whole_as_valid_utf8_and_read_back_the_same() -> None:
    report = build_report(varied_calls(), by="team")
    for figures in (None, varied_figures(report)):
        text = render_json(report, figures)
        text.encode("utf-8")  # a raw lone surrogate would raise here

        teams = {row["key"]["team"] for row in json.loads(text)["groups"]}

        assert set(HOSTILE_TEAMS) <= teams
        assert "\\ud800" in text and "\\n" in text and "\\u0000" in text


def test_thousands_of_groups_of_mixed_shapes_each_render_exactly() -> None:
    report = mixed_report(3_000)

    text = render_json(report)
    document = json.loads(text)

    assert [tuple(row["key"].values()) for row in document["groups"]] == [g.key for g in report.groups]
    assert all(row == compact(json.loads(row)) for row in row_lines(text))
    shapes = {tuple(row["cost_status"]) for row in document["groups"]}
    assert len(shapes) == 4  # each row has its own statuses, not the previous row's
    assert document["groups"][3]["latency_s"] == {}
    assert document["groups"][5]["latency_s"]["ttft"] == {"count": 0, "p50": None, "p95": None, "p99": None}


def mixed_report(count: int) -> Report:
    """``count`` hand-made groups whose statuses, latency shapes and values vary from row to row."""
    statuses = [{"priced": 3}, {"priced": 1, "unpriced": 2}, {"no_usage": 3}, {"unpriced": 1, "error": 2}]
    groups = []
    for i in range(count):
        observed = i % 5 != 0
        summary = LatencySummary(
            count=3 if observed else 0,
            percentiles={p: (i / 7 + p / 1e3 if observed else None) for p in (50, 95, 99)},
        )
        latency = {} if i % 6 == 3 else {metric: summary for metric in ("ttft", "tpot", "duration")}
        groups.append(
            GroupStats(
                key=(f"user-{i}", None if i % 4 == 0 else f"team, {i % 9}"),
                calls=3,
                tokens={"input_tokens": i} if i % 3 else {},
                cost={"USD": Decimal(i) / 1000} if i % 2 else {},
                cost_status=statuses[i % 4],
                latency=latency,
            )
        )
    total = GroupStats(key=(), calls=3 * count, tokens={"input_tokens": 1}, cost={"USD": Decimal(1)})
    return Report(group_by=("user", "team"), kind="llm", groups=groups, total=total)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0.030"), "0.03"),
        (Decimal("1.25"), "1.25"),
        (Decimal("12"), "12"),
        (Decimal("1E+2"), "100"),
        (Decimal("120"), "120"),
        (Decimal("1.5E-7"), "0.00000015"),
        (Decimal("-0.0"), "0"),
        (Decimal("0E-10"), "0"),
        (Decimal("-2.50"), "-2.5"),
        (Decimal("6303.672500525"), "6303.672500525"),
    ],
)
def test_decimal_text_is_plain_exact_text_without_trailing_zeros_or_exponent(
    amount: Decimal, text: str
) -> None:
    assert decimal_text(amount) == text


def test_decimal_text_of_more_digits_than_the_context_holds_is_rounded_as_normalize_rounds() -> None:
    long = Decimal("1.2345678901234567890123456789012")  # 32 digits

    with localcontext() as context:
        context.prec = 10
        assert decimal_text(long) == "1.23456789"  # ...8901 rounds to ...890, then no trailing zero
        assert decimal_text(Decimal("1.25")) == "1.25"
    assert decimal_text(long) == "1.234567890123456789012345679"  # the default 28 digits


@pytest.mark.parametrize("precision", [28, 10])
def test_decimal_text_is_the_normalized_amount_in_plain_notation_whatever_its_form(precision: int) -> None:
    amounts = [
        Decimal(f"{sign}{digits}").scaleb(exponent)
        for sign in ("", "-")
        for digits in (
            "0",
            "7",
            "120",
            "1050",
            "123456789",
            "9" * 27,
            "1" + "0" * 30,
            "31415926535897932384626433832795",
        )
        for exponent in range(-36, 6, 3)
    ]

    with localcontext() as context:
        context.prec = precision
        for amount in amounts:
            normalized = amount.normalize()
            assert decimal_text(amount) == (f"{normalized:f}" if normalized else "0"), amount


def test_csv_has_a_row_per_group_with_exact_cells_and_empty_ones_for_unobserved_values() -> None:
    report = build_report(varied_calls(), by="team", top=7)
    figures = varied_figures(report)

    rows = list(csv.DictReader(io.StringIO(render_csv(report, figures))))

    assert len(rows) == len(report.groups) + 1  # and the "other" row; no total
    assert rows[-1]["team"] == "(other: 5 groups)"
    by_team = {row["team"]: row for row in rows}
    search = by_team["search"]
    stats = next(g for g in report.groups if g.key == ("search",))
    assert search["cost_USD"] == decimal_text(stats.cost["USD"]) and search["cost_EUR"] == ""
    assert search["cache_savings_USD"] == "0.0025" and search["cache_savings_EUR"] == ""
    assert search["training_cost_share_USD"] == "1.25"
    assert search["reasoning_output_tokens"] == ""
    assert float(search["duration_p50_s"]) == stats.latency["duration"].percentiles[50]  # repr: exact
    assert search["ttft_count"] == "2"
    assert by_team["'=HYPERLINK()"]["calls"] == "1"  # a formula is neutralised, not run
    assert "lone \\ud800 surrogate" in by_team
