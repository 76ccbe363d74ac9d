"""``llmmeter.feedback(response_id, score=, label=, comment=)``: a judgement linked to a recorded call.

::

    reply = client.chat.completions.create(...)
    ...
    llmmeter.feedback(reply.id, score=1.0, label="correct")   # later, from anywhere in the process

The judgement is written to the ``feedback`` table of the local store (beside ``records``, linked
by the response id, so that a report can join them), and emitted as a ``feedback`` span carrying a
``llmmeter.feedback`` event: in the judged call's trace when the call is found in the store (its
span and record ids are then on the returned :class:`Feedback`), and counted by the
``llmmeter.feedback`` counter by label, judged model and route name.

Finding the call reads the store: calls started in the last :data:`LOOKBACK_DAYS` days. A call
this process made so recently that its record is still on its way to the store is waited for once
(``llmmeter.flush``, at most :data:`FLUSH_WAIT_S` seconds). A judgement whose call is not found is
stored all the same, linked by its response id.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from llmmeter import semconv as sc
from llmmeter._log import guard, log_once
from llmmeter.budgets import local_store_file
from llmmeter.config import Settings, flush, get_settings
from llmmeter.context import TRUNCATED
from llmmeter.record import AttributeValue

__all__ = ["Feedback", "feedback", "read_feedback"]

LOOKBACK_DAYS: Final = 7
FLUSH_WAIT_S: Final = 1.0
MAX_LABEL_LENGTH: Final = 256
MAX_COMMENT_LENGTH: Final = 4096

_CREATE = (
    "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY, time_unix_ns INTEGER NOT NULL, "
    "response_id TEXT NOT NULL, score REAL, label TEXT, comment TEXT, record_id TEXT, trace_id TEXT, "
    "span_id TEXT)",
    "CREATE INDEX IF NOT EXISTS feedback_by_response_id ON feedback (response_id)",
)
_INSERT = (
    "INSERT INTO feedback (time_unix_ns, response_id, score, label, comment, record_id, trace_id, span_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_FIND_CALL = (
    "SELECT record_id, trace_id, span_id, request_model, response_model, attributes FROM records "
    "WHERE response_id = ? AND kind = 'llm' AND start_time_unix_ns >= ? "
    "ORDER BY start_time_unix_ns DESC LIMIT 1"
)
_COLUMNS = ("response_id", "score", "label", "comment", "time_unix_ns", "record_id", "trace_id", "span_id")


@dataclass(frozen=True, slots=True)
class Feedback:
    """One judgement of a call, as stored: what was said, and which call it was linked to."""

    response_id: str
    score: float | None
    label: str | None
    comment: str | None
    time_unix_ns: int
    record_id: str | None = None
    """The judged call's record, when it was found in the store (else ``None``)."""
    trace_id: str | None = None
    span_id: str | None = None
    stored: bool = True
    """Whether it was written to the local store (``False`` without a store, or when writing failed)."""


@dataclass(frozen=True, slots=True)
class _Call:
    record_id: str | None
    trace_id: str | None
    span_id: str | None
    model: str | None
    route: AttributeValue | None


def feedback(
    response_id: Any, *, score: float | None = None, label: str | None = None, comment: str | None = None
) -> Feedback:
    """Attach a judgement to a recorded call: ``llmmeter.feedback(reply.id, score=1.0, label="correct")``.

    ``response_id`` is the response's id (``reply.id``, ``gen_ai.response.id``) or the response
    itself; ``score`` a finite number (your scale: 0..1, -1/+1...), ``label`` a short category
    (``"correct"``, ``"escalate_needed"``: it is a metric attribute, keep the set small),
    ``comment`` free text (stored, not on metrics). At least one of the three. Bad arguments raise
    ``TypeError``/``ValueError``; llmmeter's own failures (a locked store...) are logged, never
    raised. Returns what was stored (see :mod:`llmmeter.feedback`).
    """
    response_id = _response_id(response_id)
    score, label, comment = _checked(score, label, comment)
    now = time.time_ns()
    settings = get_settings()
    if not settings.enabled:
        return Feedback(response_id, score, label, comment, now, stored=False)
    path = local_store_file(settings.store, "feedback is not stored (it is exported to OpenTelemetry)")
    call = _find(path, response_id, now)
    result = Feedback(
        response_id,
        score,
        label,
        comment,
        now,
        record_id=call.record_id if call else None,
        trace_id=call.trace_id if call else None,
        span_id=call.span_id if call else None,
        stored=False,
    )
    if path is not None:
        with guard("storing feedback"):
            _store(path, result)
            result = _stored(result)
    elif settings.store is None:
        log_once(
            "feedback:no-store",
            "llmmeter: feedback is not stored: the local store is off (configure(store=None))",
        )
    with guard("exporting feedback"):
        _export(settings, result, call)
    return result


def _stored(result: Feedback) -> Feedback:
    from dataclasses import replace

    return replace(result, stored=True)


def _response_id(value: Any) -> str:
    if not isinstance(value, str):
        value = getattr(value, "id", None) if not isinstance(value, dict) else value.get("id")
    if not isinstance(value, str) or not value:
        raise TypeError("llmmeter.feedback: response_id must be a response id (str) or a response with an id")
    return value


def _checked(score: object, label: object, comment: object) -> tuple[float | None, str | None, str | None]:
    """The arguments, checked: a finite score, text cut to size and made valid UTF-8."""
    if score is None and label is None and comment is None:
        raise ValueError("llmmeter.feedback: give a score, a label or a comment")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise ValueError(f"llmmeter.feedback: score must be a finite number, got {score!r}")
        score = float(score)
    return score, _text("label", label, MAX_LABEL_LENGTH), _text("comment", comment, MAX_COMMENT_LENGTH)


def _text(name: str, value: object, limit: int) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"llmmeter.feedback: {name} must be a str, got {type(value).__name__}")
    return _cut(value, limit)


def _cut(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


# --- the store ------------------------------------------------------------------------------------------
def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(path, timeout=1.0, isolation_level=None)


def _find(path: Path | None, response_id: str, now: int) -> _Call | None:
    """The judged call in the store; waits once for this process's records still on their way."""
    if path is None:
        return None
    call = None
    with guard("finding the judged call"):
        call = _query_call(path, response_id, now)
        if call is None:
            flush(FLUSH_WAIT_S)
            call = _query_call(path, response_id, now)
    return call


def _query_call(path: Path, response_id: str, now: int) -> _Call | None:
    if not path.exists():
        return None
    since = now - LOOKBACK_DAYS * 86400 * 1_000_000_000
    conn = _connect(path, read_only=True)
    try:
        row = conn.execute(_FIND_CALL, (response_id, since)).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    finally:
        conn.close()
    if row is None:
        return None
    record_id, trace_id, span_id, request_model, response_model, attributes = row
    route = json.loads(attributes).get(sc.ROUTE_NAME) if attributes else None
    return _Call(record_id, trace_id, span_id, response_model or request_model, route)


def _store(path: Path, item: Feedback) -> None:
    conn = _connect(path)
    try:
        for statement in _CREATE:
            conn.execute(statement)
        conn.execute(
            _INSERT,
            (
                item.time_unix_ns,
                item.response_id,
                item.score,
                item.label,
                item.comment,
                item.record_id,
                item.trace_id,
                item.span_id,
            ),
        )
    finally:
        conn.close()


def read_feedback(path: str | Path, response_id: str | None = None) -> list[Feedback]:
    """Every judgement stored in the store at ``path`` (of one response, if given), oldest first."""
    path = Path(path).expanduser()
    if not path.exists():
        return []
    conn = _connect(path, read_only=True)
    try:
        query = f"SELECT {', '.join(_COLUMNS)} FROM feedback"
        args: tuple[str, ...] = ()
        if response_id is not None:
            query, args = query + " WHERE response_id = ?", (response_id,)
        rows = conn.execute(query + " ORDER BY time_unix_ns, id", args).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()
    return [Feedback(*row) for row in rows]


# --- OpenTelemetry -------------------------------------------------------------------------------------
def _export(settings: Settings, item: Feedback, call: _Call | None) -> None:
    attributes: dict[str, AttributeValue] = {
        sc.RESPONSE_ID: item.response_id,
        sc.FEEDBACK_FOUND: call is not None,
    }
    if item.score is not None:
        attributes[sc.FEEDBACK_SCORE] = item.score
    if item.label is not None:
        attributes[sc.FEEDBACK_LABEL] = item.label
    if call is not None and call.model:
        attributes[sc.REQUEST_MODEL] = call.model
    if call is not None and call.route is not None:
        attributes[sc.ROUTE_NAME] = call.route
    span = settings.telemetry.tracer.start_span(
        "feedback", context=_call_context(item), kind=SpanKind.INTERNAL, attributes=attributes
    )
    event = {k: v for k, v in attributes.items() if k in (sc.FEEDBACK_SCORE, sc.FEEDBACK_LABEL)}
    if item.comment is not None:
        event[sc.FEEDBACK_COMMENT] = item.comment
    span.add_event(sc.FEEDBACK_EVENT, event)
    span.end()
    from llmmeter.routing import own_counter

    metric = {
        k: v for k, v in attributes.items() if k in (sc.FEEDBACK_LABEL, sc.REQUEST_MODEL, sc.ROUTE_NAME)
    }
    own_counter(settings.telemetry, sc.FEEDBACK_METRIC).add(1, metric)


def _call_context(item: Feedback) -> Any:
    """The judged call's span as the parent (its trace), or ``None`` (a trace of its own)."""
    if not item.trace_id or not item.span_id:
        return None
    parent = SpanContext(
        int(item.trace_id, 16),
        int(item.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))
