"""Any record, however hostile its values, goes through the store and back unchanged or with a
documented, visible transformation, and never raises (issue 12 §5):

* a lone surrogate in a text column comes back as its escape (``"\\ud800"`` -> ``"\\\\ud800"``);
  inside a JSON column (attributes, request parameters, content, finish reasons...) unchanged;
* NaN in a timing comes back as ``None`` (SQLite has no NaN: it is not a measurement);
* everything else, including integers far beyond 64 bits, NUL bytes and ``None`` anywhere,
  comes back exactly — whether the record was written by the writer or replayed from the journal
  of a process that died.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmmeter.cli import main
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
from llmmeter.store import SQLiteStore, read_records

SURROGATE = st.characters(categories=["Cs"])
HOSTILE_CHAR = st.characters(exclude_categories=[]) | SURROGATE | st.sampled_from(["\x00", "\n", '"', "\\"])
TEXT = st.text(HOSTILE_CHAR, max_size=12) | st.sampled_from(["", "\ud800", "a\x00b", "é" * 3000])
MAYBE_TEXT = st.none() | TEXT
HUGE_INT = st.sampled_from([2**63, -(2**63) - 1, 2**64 + 1, 10**40, -(10**40)])
INT = st.integers() | HUGE_INT
MAYBE_INT = st.none() | INT
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
MAYBE_FLOAT = st.none() | ANY_FLOAT
JSON_SCALAR = st.none() | st.booleans() | INT | ANY_FLOAT | TEXT
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
ATTRIBUTE = st.booleans() | INT | ANY_FLOAT | TEXT
DECIMAL = st.decimals(allow_nan=False, allow_infinity=False)


def usages() -> st.SearchStrategy[Usage | None]:
    counts = {name: MAYBE_INT for name in ("input_tokens", "output_tokens", "cache_read_input_tokens")}
    return st.none() | st.builds(
        Usage,
        **counts,
        reasoning_output_tokens=MAYBE_INT,
        audio_output_tokens=MAYBE_INT,
        rejected_prediction_tokens=MAYBE_INT,
        source=st.sampled_from(UsageSource),
        estimate_method=MAYBE_TEXT,
    )


RECORD = st.builds(
    CallRecord,
    operation=TEXT,
    provider=TEXT,
    request_model=MAYBE_TEXT,
    response_model=MAYBE_TEXT,
    kind=st.sampled_from(CallKind),
    name=MAYBE_TEXT,
    server_address=MAYBE_TEXT,
    server_port=MAYBE_INT,
    streaming=st.booleans(),
    timings=st.builds(
        Timings,
        start_time_unix_ns=INT,
        duration_s=MAYBE_FLOAT,
        ttfc_s=MAYBE_FLOAT,
        ttft_s=MAYBE_FLOAT,
        tpot_s=MAYBE_FLOAT,
        chunks=MAYBE_INT,
        server=st.none()
        | st.builds(ServerTimings, ttft_s=MAYBE_FLOAT, queue_s=MAYBE_FLOAT, load_s=MAYBE_FLOAT),
    ),
    usage=usages(),
    media=st.none()
    | st.builds(
        MediaUnits, images=MAYBE_INT, image_size=MAYBE_TEXT, audio_seconds=MAYBE_FLOAT, characters=MAYBE_INT
    ),
    cost=st.none()
    | st.builds(
        Cost,
        amount=DECIMAL,
        currency=st.sampled_from(["USD", "EUR"]),
        components=st.dictionaries(TEXT, DECIMAL, max_size=3),
        source=st.sampled_from(["registry", "provider"]),
        price_ref=MAYBE_TEXT,
    ),
    # PENDING is transient: a record the store reads back in it gets priced (tests/test_store_durability.py).
    cost_status=st.sampled_from([status for status in CostStatus if status is not CostStatus.PENDING]),
    outcome=st.sampled_from(Outcome),
    error_type=MAYBE_TEXT,
    response_id=MAYBE_TEXT,
    finish_reasons=st.none() | st.lists(TEXT, max_size=3).map(tuple),
    service_tier=MAYBE_TEXT,
    request_params=st.dictionaries(TEXT, JSON_VALUE, max_size=3),
    attributes=st.dictionaries(TEXT, ATTRIBUTE, max_size=4),
    trace_id=MAYBE_TEXT,
    span_id=MAYBE_TEXT,
    rollup_usage=usages(),
    rollup_cost=st.none() | DECIMAL,
    rollup_calls=INT,
    rollup_unpriced_calls=INT,
    content=st.none() | st.dictionaries(TEXT, JSON_VALUE, max_size=2),
)

_TOP_TEXT = ("operation", "provider", "request_model", "response_model", "name", "server_address")
_MORE_TEXT = ("error_type", "response_id", "service_tier", "trace_id", "span_id")
_TIMING_FLOATS = ("duration_s", "ttfc_s", "ttft_s", "tpot_s")


def escaped(text: str | None) -> str | None:
    """How a text column stores a string with lone surrogates: their visible escape."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def as_stored(record: CallRecord) -> dict[str, Any]:
    """What reading ``record`` back must give: the documented transformations applied, as a plain
    structure in which NaN is a comparable marker."""
    expected = dataclasses.replace(record, timings=dataclasses.replace(record.timings))
    for name in (*_TOP_TEXT, *_MORE_TEXT):
        setattr(expected, name, escaped(getattr(expected, name)))
    for usage_name in ("usage", "rollup_usage"):
        usage = getattr(expected, usage_name)
        if usage is not None:
            setattr(
                expected,
                usage_name,
                dataclasses.replace(usage, estimate_method=escaped(usage.estimate_method)),
            )
    if expected.cost is not None:
        expected.cost = dataclasses.replace(expected.cost, price_ref=escaped(expected.cost.price_ref))
    for name in _TIMING_FLOATS:
        value = getattr(expected.timings, name)
        if value is not None and math.isnan(value):
            setattr(expected.timings, name, None)
    return comparable(expected)


def comparable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: comparable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(comparable(item) for item in value)
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    return value


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(written=st.lists(RECORD, min_size=1, max_size=6), journaled_only=st.lists(RECORD, max_size=6))
def test_any_record_round_trips_through_the_writer_and_the_journal_of_a_dead_process(
    written: list[CallRecord], journaled_only: list[CallRecord]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.sqlite3"
        store = SQLiteStore(path)
        for record in journaled_only:
            store.journal(record)  # then the process "dies": its journal is all that is left
        store._journal.release()
        for record in written:
            store.write(record)
        assert store.close(10)

        back = {record.record_id: record for record in read_records(path)}

        originals = {record.record_id: record for record in [*written, *journaled_only]}
        assert set(back) == set(originals)
        for record_id, original in originals.items():
            got = comparable(back[record_id])
            got.pop("record_id")
            wanted = as_stored(original)
            wanted.pop("record_id")
            assert got == wanted
        assert store.stats.quarantined == 0 and store.stats.lost == 0


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(records=st.lists(RECORD, min_size=1, max_size=5))
def test_the_json_report_of_any_stored_records_is_valid_json(records: list[CallRecord]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.sqlite3"
        store = SQLiteStore(path)
        for record in records:
            store.write(record)
        assert store.close(10)
        output = Path(directory) / "report.json"

        code = main(
            [
                "report",
                "--store",
                str(path),
                "--format",
                "json",
                "--kind",
                "all",
                "--since",
                "1970-01-01",
                "-o",
                str(output),
            ]
        )

        assert code == 0
        json.loads(output.read_text(encoding="utf-8"))
