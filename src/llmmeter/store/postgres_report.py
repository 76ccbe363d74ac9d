"""``llmmeter report --store postgresql://...``: the report computed by the fleet's PostgreSQL server.

The report's SQL is shared (:mod:`llmmeter.report.sql`); this is what PostgreSQL does differently
(:class:`PostgresDialect`), and :func:`reading_fleet_store`, which gives the report a way to run
its statements on the fleet store.

* Attributes are JSON text (kept byte for byte, see :mod:`llmmeter.store.postgres`), read with
  ``attributes::json -> key`` as the value's JSON text and labelled in Python like the local
  store's. PostgreSQL's JSON refuses three things Python's JSON writes: a lone surrogate escape
  (``"\\ud800"``), a NUL escape (``"\\u0000"``) and ``NaN``/``Infinity``. A row holding one (found
  by a cheap regular expression) is read with those replaced by ``"\\ufffd"`` and ``null``: its
  other attributes group as usual, and only the odd value itself reads differently from the local
  store. The report never fails on such a row.
* Costs are ``NUMERIC``: ``sum()`` is exact, no amount needs adding in Python.
* Latency values: each group's, per metric, as one JSON array (``array_agg``); Python counts them
  in the same log-spaced buckets as the local store's (:mod:`llmmeter.store.report_columns`),
  so both stores give the same percentiles for the same records.
"""

from __future__ import annotations

import array
import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from llmmeter.report.build import LATENCY_METRICS, label
from llmmeter.report.sql import LatencyValues, Part, Run
from llmmeter.semconv import ROUTE_NAME
from llmmeter.store.postgres import SCHEMA, _first_line, connect, fleet_schema_version, redacted
from llmmeter.store.report_columns import latency_bucket
from llmmeter.store.schema import StoreError

if TYPE_CHECKING:
    from llmmeter.report.routes import FeedbackLink

__all__ = ["POSTGRESQL_DIALECT", "PostgresDialect", "reading_fleet_store"]

_ODD_JSON: Final = r"\\u0000|\\u[dD][89a-fA-F]|NaN|Infinity"
"""Cheap test: could this attributes text be one PostgreSQL's JSON refuses? (Also true for valid
surrogate pairs, which the exact replacement below leaves alone.)"""
_BAD_ESCAPE: Final = (
    r"\\u0000"
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
"""A NUL escape, a high surrogate escape without its low half, a low one without its high half."""
_NON_NUMBER: Final = r"([:,\[]\s*)-?(NaN|Infinity)"


def _safe_json(column: str) -> str:
    """SQL of the JSON text ``column`` as JSON PostgreSQL accepts, for every row."""
    return (
        f"(CASE WHEN {column} ~ '{_ODD_JSON}' THEN regexp_replace(regexp_replace({column}, "
        f"'{_BAD_ESCAPE}', '\\\\ufffd', 'g'), '{_NON_NUMBER}', '\\1null', 'g')::json "
        f"ELSE {column}::json END)"
    )


_SAFE_ATTRIBUTES: Final = _safe_json("attributes")
"""The ``attributes`` column as JSON PostgreSQL accepts, for every row."""


@dataclass(frozen=True)
class PostgresDialect:
    """PostgreSQL 12+ (psycopg 3 placeholders) over the fleet store's ``records``."""

    param: str = "%s"

    def prepare(self, run: Run) -> None:
        """Nothing to register: the aggregates are PostgreSQL's own."""

    def attribute(self, key: str) -> tuple[str, list[object]]:
        """The attribute's JSON text (NULL when absent); the key is a parameter, so any key is safe."""
        return f"(({_SAFE_ATTRIBUTES} -> {self.param}::text)::text)", [key]

    def attribute_label(self, value: Any) -> str | None:
        """``None`` for JSON null or absent, else the in-memory report's label of the value."""
        if value is None:
            return None
        decoded = json.loads(value)
        return None if decoded is None else label(decoded)

    def cost_and_latency(self, amount: str, metrics: Sequence[str], latency_rows: str) -> tuple[str, ...]:
        """``SUM`` of the ``NUMERIC`` amount (exact), and each metric's values on the rows where
        ``latency_rows`` holds, as one JSON array per group (``array_agg``)."""
        arrays = ", ".join(
            f"array_agg({metric}) FILTER (WHERE ({latency_rows}) AND {metric} IS NOT NULL)"
            for metric in metrics
        )
        return f"SUM({amount})", f"json_build_array({arrays})::text"

    def decode(self, values: Sequence[Any]) -> tuple[Decimal | None, LatencyValues]:
        """The cost sum (``None``: no amount in the group) and the latency values by metric (a
        NaN comes back from JSON as the string ``"NaN"``, hence ``float()``)."""
        total, latencies = values
        per_metric = json.loads(latencies) if latencies is not None else [None] * len(LATENCY_METRICS)
        return None if total is None else Decimal(total), {
            metric: array.array("d", (float(x) for x in observed or ()))
            for metric, observed in zip(LATENCY_METRICS, per_metric, strict=True)
        }

    def parts(self, run: Run) -> list[Part]:
        """One part: PostgreSQL runs a statement in parallel on its own."""
        return [Part(run)]

    def exact_cost(self, amount: str, units: str) -> tuple[str, ...]:
        """``SUM`` of the ``NUMERIC`` amount (exact); no row left for :meth:`decimal_sum`."""
        return (f"SUM({amount})",)

    def read_exact_cost(self, values: Sequence[Any]) -> tuple[Decimal | None, int]:
        """The exact sum (``None``: no amount), no row left."""
        (total,) = values
        return (None if total is None else Decimal(total)), 0

    def widened(self, error: Exception) -> None:
        """``NUMERIC`` sums do not overflow: nothing to widen."""
        return None

    def decimal_sum(self, amount: str) -> str:
        """``SUM`` of the ``NUMERIC`` amount."""
        return f"SUM({amount})"

    def latency_buckets(self, metrics: Sequence[str], latency_rows: str) -> tuple[str, ...]:
        """Each metric's values on the rows where ``latency_rows`` holds, one JSON array per group."""
        return self.cost_and_latency("NULL", [f"{metric}_s" for metric in metrics], latency_rows)[1:]

    def read_latency_buckets(self, values: Sequence[Any]) -> Sequence[Sequence[int]]:
        """The buckets of the values of :meth:`latency_buckets` (counted here, not by the server)."""
        _, latencies = self.decode([None, *values])
        return [array.array("i", map(latency_bucket, latencies[metric])) for metric in LATENCY_METRICS]

    def attribute_keys(self, limit: int) -> str:
        """The attribute keys of the last 10,000 records."""
        return (
            f"SELECT DISTINCT k FROM (SELECT {_SAFE_ATTRIBUTES} AS a FROM records "
            "ORDER BY start_time_unix_ns DESC LIMIT 10000) r, json_object_keys(r.a) k "
            f"ORDER BY 1 LIMIT {int(limit)}"
        )

    def feedback_link(self, run: Run) -> FeedbackLink | None:
        """How ``--kind route`` links the fleet's judgements (``llmmeter.feedback``) to route
        records: through the judged call's record id, or its response id when the call was not
        found as the judgement was given. ``None`` for a store without a feedback table."""
        from llmmeter.report.routes import FeedbackLink

        if not any(row[0] is not None for row in run("SELECT to_regclass('feedback')", [])):
            return None
        return FeedbackLink(
            route_key="record_id",
            judged_calls=(
                "SELECT f.score, c.* FROM feedback f JOIN records c ON c.record_id = f.record_id "
                "UNION ALL SELECT f.score, c.* FROM feedback f JOIN records c "
                "ON c.response_id = f.response_id AND c.kind = 'llm' WHERE f.record_id IS NULL"
            ),
            route_name_of_call=f"({_safe_json('c.attributes')} ->> {self.param})",
            params=[ROUTE_NAME],
        )


POSTGRESQL_DIALECT: Final = PostgresDialect()
"""The fleet store's dialect."""


@contextlib.contextmanager
def reading_fleet_store(url: str) -> Iterator[Run]:
    """A ``run`` for :func:`~llmmeter.report.sql.query_report` on the fleet store at ``url``
    (its ``records`` table first on the search path). Raises :class:`StoreError` with a one-line
    message when the database cannot be reached, holds no llmmeter store, or a statement fails."""
    try:
        conn = connect(url)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot read the fleet store {redacted(url)}: {_first_line(exc)}") from None
    try:
        if fleet_schema_version(conn) is None:
            raise StoreError(f"no llmmeter store in {redacted(url)}")
        conn.execute(f"SET search_path TO {SCHEMA}")

        def run(sql: str, params: Sequence[object]) -> Iterable[Sequence[Any]]:
            try:
                return conn.execute(sql, params).fetchall()
            except Exception as exc:
                raise StoreError(
                    f"the fleet store {redacted(url)} failed a report query: {_first_line(exc)}"
                ) from None

        yield run
    finally:
        conn.close()
