"""``llmmeter report`` aggregation: groups, exact costs, honest token sums, correct percentiles."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest

from llmmeter.record import (
    CallKind,
    CallRecord,
    Cost,
    CostStatus,
    Outcome,
    Timings,
    Usage,
    UsageSource,
)
from llmmeter.report import (
    GroupStats,
    Report,
    build_report,
    parse_group_keys,
    percentile,
    render_csv,
    render_json,
    render_table,
)


def call(
    model: str = "gpt-4o-mini",
    *,
    cost: str | None = "0.001",
    input_tokens: int | None = 100,
    output_tokens: int | None = 20,
    duration: float | None = 1.0,
    ttft: float | None = None,
    tpot: float | None = None,
    outcome: Outcome = Outcome.OK,
    provider: str = "openai",
    kind: CallKind = CallKind.LLM,
    **attributes: str | bool | int | float,
) -> CallRecord:
    usage = None
    if input_tokens is not None or output_tokens is not None:
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return CallRecord(
        operation="chat",
        provider=provider,
        request_model=model,
        kind=kind,
        streaming=ttft is not None,
        timings=Timings(duration_s=duration, ttft_s=ttft, tpot_s=tpot),
        usage=usage,
        cost=None if cost is None else Cost(amount=Decimal(cost)),
        cost_status=CostStatus.UNPRICED if cost is None else CostStatus.PRICED,
        outcome=outcome,
        attributes=dict(attributes),
    )


def group(report: Report, *key: str | None) -> GroupStats:
    [found] = [g for g in report.groups if g.key == key]
    return found


# -- percentiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        # numpy.percentile's docstring example: np.percentile([[10, 7, 4], [3, 2, 1]], 50) == 3.5
        ([10, 7, 4, 3, 2, 1], 50, 3.5),
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 95, 3.85),  # rank 3 * 0.95 = 2.85 -> 3 + 0.85 * (4 - 3)
        ([1, 2, 3, 4], 99, 3.97),
        ([15, 20, 35, 40, 50], 40, 29.0),  # rank 1.6 -> 20 + 0.6 * 15
        ([15, 20, 35, 40, 50], 95, 48.0),  # rank 3.8 -> 40 + 0.8 * 10
        (list(range(1, 101)), 95, 95.05),  # rank 94.05
        (list(range(1, 101)), 99, 99.01),  # rank 98.01
        ([0.2, 0.1, 0.4, 0.3], 0, 0.1),
        ([0.2, 0.1, 0.4, 0.3], 100, 0.4),
        ([7.5], 99, 7.5),
    ],
)
def test_percentile_interpolates_linearly_like_numpy(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected, rel=1e-12)


def test_percentile_of_nothing_is_none_and_q_must_be_a_percentage() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_latency_percentiles_use_only_the_calls_where_the_value_was_observed() -> None:
    streamed = [call(ttft=t, tpot=t / 10, duration=2.0) for t in (0.1, 0.2, 0.3, 0.4)]
    not_streamed = [call(duration=9.0) for _ in range(4)]

    report = build_report([*streamed, *not_streamed])

    ttft = report.total.latency["ttft"]
    assert ttft.count == 4
    assert ttft.percentiles == {50: pytest.approx(0.25), 95: pytest.approx(0.385), 99: pytest.approx(0.397)}
    assert report.total.latency["tpot"].percentiles[50] == pytest.approx(0.025)
    assert report.total.latency["duration"].count == 8
    assert report.total.latency["duration"].percentiles[50] == pytest.approx(5.5)


def test_a_group_with_no_observed_latency_has_no_percentiles() -> None:
    report = build_report([call(duration=None)])

    assert report.total.latency["duration"].count == 0
    assert report.total.latency["duration"].percentiles == {50: None, 95: None, 99: None}


# -- grouping ----------------------------------------------------------------------------------


def test_groups_by_model_and_team_with_exact_decimal_costs() -> None:
    records = [
        call("gpt-4o", cost="0.1", team="search"),
        call("gpt-4o", cost="0.2", team="search"),
        call("gpt-4o", cost="0.05", team="ads"),
        call("gpt-4o-mini", cost="0.0000015", team="search"),
    ]

    report = build_report(records, by="model,team")

    assert report.group_by == ("model", "team")
    assert [g.key for g in report.groups] == [
        ("gpt-4o", "search"),
        ("gpt-4o", "ads"),
        ("gpt-4o-mini", "search"),
    ]  # most expensive first
    assert group(report, "gpt-4o", "search").cost == {"USD": Decimal("0.3")}
    assert group(report, "gpt-4o", "search").calls == 2
    assert report.total.cost == {"USD": Decimal("0.3500015")}
    assert report.total.calls == 4


def test_groups_by_any_attribute_key_and_by_user() -> None:
    records = [
        call(region="eu", user_id="u-1", beta=True),
        call(region="eu", user_id="u-2", beta=False),
        call(region="us", user_id="u-1"),
        call(),  # no attributes at all
    ]

    by_region = build_report(records, by=["region"])
    by_user = build_report(records, by="user")
    by_flag = build_report(records, by="beta")

    assert {g.key: g.calls for g in by_region.groups} == {("eu",): 2, ("us",): 1, (None,): 1}
    assert {g.key: g.calls for g in by_user.groups} == {("u-1",): 2, ("u-2",): 1, (None,): 1}
    assert {g.key: g.calls for g in by_flag.groups} == {("true",): 1, ("false",): 1, (None,): 2}


def test_attr_prefix_reaches_an_attribute_named_like_a_builtin_key() -> None:
    record = call("gpt-4o")
    record.attributes["model"] = "my-alias"
    records = [record]

    assert build_report(records, by="model").groups[0].key == ("gpt-4o",)
    assert build_report(records, by="attr:model").groups[0].key == ("my-alias",)


def test_model_falls_back_to_the_response_model_and_other_builtin_keys_work() -> None:
    record = call(provider="vllm", outcome=Outcome.ERROR)
    record.request_model = None
    record.response_model = "meta-llama/Llama-3.1-8B"
    record.error_type = "TimeoutError"

    report = build_report([record], by="model,provider,operation,outcome,error_type")

    assert report.groups[0].key == ("meta-llama/Llama-3.1-8B", "vllm", "chat", "error", "TimeoutError")
    assert report.groups[0].errors == 1


def test_a_key_no_record_has_is_reported_as_unmatched() -> None:
    report = build_report([call(team="a")], by="team,teem")

    assert report.unmatched_keys == ("teem",)
    assert "No record has a value for 'teem'." in render_table(report)


def test_parse_group_keys_trims_and_drops_empties_and_repeats() -> None:
    assert parse_group_keys(" model , team,,model ") == ("model", "team")
    assert parse_group_keys(None) == ()


# -- honest totals -----------------------------------------------------------------------------


def test_unpriced_calls_are_counted_apart_never_as_zero_cost() -> None:
    records = [call("local-llama", cost=None), call("local-llama", cost=None), call("gpt-4o", cost="0.01")]

    report = build_report(records, by="model")

    llama = group(report, "local-llama")
    assert llama.cost == {}
    assert llama.unpriced_calls == 2 and llama.priced_calls == 0
    assert llama.cost_status == {"unpriced": 2}
    assert report.total.cost == {"USD": Decimal("0.01")}
    assert report.total.unpriced_calls == 2


def test_costs_in_different_currencies_are_never_added_together() -> None:
    eur = call(cost="2")
    assert eur.cost is not None
    eur.cost.currency = "EUR"

    report = build_report([call(cost="1"), eur])

    assert report.total.cost == {"USD": Decimal("1"), "EUR": Decimal("2")}
    assert report.currencies == ("EUR", "USD")


def test_tokens_are_summed_by_kind_and_unreported_kinds_stay_unknown() -> None:
    first = call(input_tokens=1000, output_tokens=300)
    assert first.usage is not None
    first.usage.cache_read_input_tokens = 400
    first.usage.reasoning_output_tokens = 128
    first.usage.audio_input_tokens = 50
    second = call(input_tokens=500, output_tokens=None)
    assert second.usage is not None
    second.usage.cache_read_input_tokens = 0

    report = build_report([first, second])

    assert report.total.tokens == {
        "input_tokens": 1500,
        "output_tokens": 300,
        "cache_read_input_tokens": 400,
        "reasoning_output_tokens": 128,
        "audio_input_tokens": 50,
    }
    assert report.total.token("cache_write_input_tokens") is None
    assert report.token_kinds == (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "reasoning_output_tokens",
        "audio_input_tokens",
    )


def test_calls_without_usage_and_with_estimated_usage_are_counted() -> None:
    estimated = call(input_tokens=10, output_tokens=5)
    assert estimated.usage is not None
    estimated.usage.source = UsageSource.ESTIMATED
    missing = call(input_tokens=None, output_tokens=None)
    cut_stream = call(input_tokens=None, output_tokens=None)
    cut_stream.usage = Usage(source=UsageSource.MISSING)

    report = build_report([estimated, missing, cut_stream, call()])

    assert report.total.usage_missing_calls == 2
    assert report.total.usage_estimated_calls == 1
    assert report.total.tokens["input_tokens"] == 110


def test_errors_and_aborted_calls_are_counted() -> None:
    outcomes = (Outcome.OK, Outcome.ERROR, Outcome.ERROR, Outcome.ABORTED, Outcome.ABANDONED)
    records = [call(outcome=o) for o in outcomes]

    report = build_report(records)

    assert (report.total.calls, report.total.errors, report.total.aborted) == (5, 2, 2)


# -- steps -------------------------------------------------------------------------------------


def agent_step(rollup_cost: str, rollup_calls: int, unpriced: int) -> CallRecord:
    step = call("", kind=CallKind.STEP, cost=None, input_tokens=None, output_tokens=None, duration=3.0)
    step.request_model = None
    step.name = "agent.run"
    step.rollup_usage = Usage(input_tokens=900, output_tokens=90)
    step.rollup_cost = Decimal(rollup_cost)
    step.rollup_calls = rollup_calls
    step.rollup_unpriced_calls = unpriced
    return step


def test_by_default_only_llm_calls_count_so_steps_do_not_double_count() -> None:
    records = [call(cost="0.25", input_tokens=900, output_tokens=90), agent_step("0.25", 1, 0)]

    report = build_report(records)

    assert report.total.calls == 1
    assert report.total.cost == {"USD": Decimal("0.25")}
    assert report.total.tokens == {"input_tokens": 900, "output_tokens": 90}


def test_step_reports_use_the_rolled_up_numbers() -> None:
    records = [call(cost="0.25"), agent_step("0.75", 3, 1), agent_step("0.25", 2, 0)]

    report = build_report(records, kind="step", by="name")

    steps = group(report, "agent.run")
    assert steps.calls == 2
    assert steps.llm_calls == 5
    assert steps.cost == {"USD": Decimal("1.00")}
    assert steps.unpriced_calls == 1 and steps.priced_calls == 4
    assert steps.tokens == {"input_tokens": 1800, "output_tokens": 180}
    assert steps.latency["duration"].percentiles[50] == 3.0


def test_all_kinds_can_be_grouped_by_kind() -> None:
    report = build_report([call(), call(), agent_step("0.1", 2, 0)], kind="all", by="kind")

    assert {g.key: g.calls for g in report.groups} == {("llm",): 2, ("step",): 1}
    assert "Steps repeat the tokens and cost of the LLM calls inside them" in render_table(report)


# -- output formats ----------------------------------------------------------------------------


def sample_report() -> Report:
    records = [
        call("gpt-4o", cost="0.012", ttft=0.2, tpot=0.01, duration=1.5, team="search"),
        call("gpt-4o", cost="0.018", ttft=0.4, tpot=0.03, duration=2.5, team="search"),
        call("llama-local", cost=None, duration=0.05, team="ads"),
    ]
    return build_report(records, by="model,team")


def test_json_output_parses_back_with_exact_costs_and_seconds() -> None:
    document = json.loads(render_json(sample_report()))

    assert document["group_by"] == ["model", "team"]
    assert "linear" in document["percentile_method"]
    first, second = document["groups"]
    assert first["key"] == {"model": "gpt-4o", "team": "search"}
    assert first["cost"] == {"USD": "0.03"}  # exact, without trailing zeros
    assert Decimal(first["cost"]["USD"]) == Decimal("0.03")
    assert first["tokens"] == {"input_tokens": 200, "output_tokens": 40}
    assert first["latency_s"]["ttft"] == {
        "count": 2,
        "p50": pytest.approx(0.3),
        "p95": pytest.approx(0.39),
        "p99": pytest.approx(0.398),
    }
    assert second["cost"] == {"USD": None} and second["unpriced_calls"] == 1
    assert second["latency_s"]["ttft"] == {"count": 0, "p50": None, "p95": None, "p99": None}
    assert document["total"]["calls"] == 3


def test_csv_output_parses_back_with_empty_cells_for_unobserved_values() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(sample_report()))))

    assert [(r["model"], r["team"]) for r in rows] == [("gpt-4o", "search"), ("llama-local", "ads")]
    gpt, llama = rows
    assert Decimal(gpt["cost_USD"]) == Decimal("0.030")
    assert int(gpt["input_tokens"]) == 200
    assert gpt["reasoning_output_tokens"] == ""
    assert float(gpt["ttft_p50_s"]) == pytest.approx(0.3)
    assert float(gpt["duration_p99_s"]) == pytest.approx(2.49)
    assert llama["cost_USD"] == "" and llama["unpriced_calls"] == "1"
    assert llama["ttft_count"] == "0" and llama["ttft_p50_s"] == ""


def test_table_is_aligned_with_units_and_marks_unobserved_values() -> None:
    text = render_table(sample_report())
    lines = text.splitlines()

    header = next(line for line in lines if line.startswith("model") and "calls" in line)
    rule = lines[lines.index(header) + 1]
    gpt_row = lines[lines.index(header) + 2]
    assert gpt_row.startswith("gpt-4o ")
    # right-aligned numeric columns end exactly where their header ends
    calls_end = header.index("calls") + len("calls")
    assert gpt_row[calls_end - 1] == "2" and gpt_row[calls_end] == " "
    assert len(rule) >= len(header.rstrip())
    assert "cost (USD)" in header
    assert "0.030000" in gpt_row
    assert "TOTAL" in text
    assert "300 ms" in text and "2.00 s" in text and "20.0 ms" in text  # TTFT p50, duration p50, TPOT p50
    llama_ttft = next(line for line in lines if line.startswith("llama-local") and "TTFT" in line)
    assert llama_ttft.split()[-3:] == ["–", "–", "–"]
    assert "never added as 0" in " ".join(text.split())  # notes wrap at the table width


def test_an_empty_window_says_so() -> None:
    assert "No records in this window." in render_table(build_report([]))
    assert json.loads(render_json(build_report([])))["groups"] == []
