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

With a fleet (PostgreSQL) store, the call is looked up on the server (each statement limited to
:data:`FLEET_TIMEOUT_S`) and the judgement goes to the fleet's ``feedback`` table: first into a
small local outbox beside the store's spool (``feedback.sqlite3``, so that it survives a server
that is down, and the process), then to the server: by ``feedback()`` itself when the server
answered the lookup (each wait and statement limited to :data:`FLEET_TIMEOUT_S`), else by a
thread of its own, never waited for. A judgement the server did not take (logged once) waits in the
outbox and goes with the next ``feedback()`` of a process using the same spool; each has a
unique id, so none is stored twice. The route report links a fleet judgement to its call by
record id, or by response id when the call was not found when it was given.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from llmmeter import semconv as sc
from llmmeter._log import guard, log_once
from llmmeter.budgets import first_line, is_fleet_failure
from llmmeter.config import Settings, flush, get_settings
from llmmeter.context import TRUNCATED
from llmmeter.record import AttributeValue

if TYPE_CHECKING:
    from llmmeter.store import SQLiteStore
    from llmmeter.store.postgres import PostgresStore

__all__ = ["Feedback", "feedback", "read_feedback"]

LOOKBACK_DAYS: Final = 7
FLUSH_WAIT_S: Final = 1.0
FLEET_TIMEOUT_S: Final = 2.0
OUTBOX_NAME: Final = "feedback.sqlite3"
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
_OUTBOX_COLUMNS = ("feedback_id", *_COLUMNS)
_CREATE_OUTBOX = (
    "CREATE TABLE IF NOT EXISTS outbox (feedback_id TEXT PRIMARY KEY, time_unix_ns INTEGER NOT NULL, "
    "response_id TEXT NOT NULL, score REAL, label TEXT, comment TEXT, record_id TEXT, trace_id TEXT, "
    "span_id TEXT)"
)
_DELIVERY_BATCH = 500


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
    """Whether it was stored: in the local store, or, with a fleet store, at least in the local
    outbox on its way to the server (``False`` without a store, or when writing failed)."""


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
    target = _target_of(settings.store)
    call = target.find(response_id, now) if target is not None else None
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
    if target is not None:
        with guard("storing feedback"):
            target.keep(result)
            result = _stored(result)
    else:
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


def _target_of(store: SQLiteStore | None) -> _LocalStore | _FleetStore | None:
    """Where judgements go: the local store's file, the fleet store, or nowhere without a store."""
    if store is None:
        return None
    from llmmeter.store.postgres import PostgresStore

    return _FleetStore(store) if isinstance(store, PostgresStore) else _LocalStore(store.path)


def _call_of(row: Sequence[Any] | None) -> _Call | None:
    """The judged call, from a row of :data:`_FIND_CALL`'s columns."""
    if row is None:
        return None
    record_id, trace_id, span_id, request_model, response_model, attributes = row
    route = json.loads(attributes).get(sc.ROUTE_NAME) if attributes else None
    return _Call(record_id, trace_id, span_id, response_model or request_model, route)


def _insert(conn: sqlite3.Connection, table: str, columns: Sequence[str], values: Sequence[Any]) -> None:
    conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", values
    )


@dataclass(frozen=True, slots=True)
class _LocalStore:
    """The local (SQLite) store: the ``feedback`` table beside ``records``."""

    path: Path

    def find(self, response_id: str, now: int) -> _Call | None:
        """The judged call; waits once for this process's records still on their way."""
        call = None
        with guard("finding the judged call"):
            call = self._query(response_id, now)
            if call is None:
                flush(FLUSH_WAIT_S)
                call = self._query(response_id, now)
        return call

    def _query(self, response_id: str, now: int) -> _Call | None:
        if not self.path.exists():
            return None
        conn = _connect(self.path, read_only=True)
        try:
            return _call_of(conn.execute(_FIND_CALL, (response_id, _since(now))).fetchone())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        finally:
            conn.close()

    def keep(self, item: Feedback) -> None:
        """Write ``item`` to the store's ``feedback`` table."""
        conn = _connect(self.path)
        try:
            for statement in _CREATE:
                conn.execute(statement)
            _insert(conn, "feedback", _COLUMNS, [getattr(item, name) for name in _COLUMNS])
        finally:
            conn.close()


def _since(now: int) -> int:
    return now - LOOKBACK_DAYS * 86400 * 1_000_000_000


class _FleetStore:
    """The fleet (PostgreSQL) store: judgements go through a local outbox to its ``feedback`` table."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.outbox = store.spool_path / OUTBOX_NAME
        self.answered = True

    def find(self, response_id: str, now: int) -> _Call | None:
        """The judged call, from the server; waits once for this process's records on their way,
        unless the server did not answer (then the call is not looked up: logged once)."""
        with guard("finding the judged call"):
            try:
                call = self._query(response_id, now)
                if call is None:
                    flush(FLUSH_WAIT_S)
                    call = self._query(response_id, now)
                return call
            except Exception as exc:
                if not is_fleet_failure(exc):
                    raise
                self.answered = False
                self._unreachable(exc, "the judged call is not looked up (the report links it later)")
        return None

    def _query(self, response_id: str, now: int) -> _Call | None:
        from llmmeter.store.postgres import SCHEMA

        sql = _FIND_CALL.replace("?", "%s").replace("FROM records", f"FROM {SCHEMA}.records")
        row = self.store.run_on_fleet(
            lambda conn: conn.execute(sql, (response_id, _since(now))).fetchone(), timeout_s=FLEET_TIMEOUT_S
        )
        return _call_of(row)

    def keep(self, item: Feedback) -> None:
        """Put ``item`` in the outbox, then deliver the outbox: on this thread when the server
        answered the lookup a moment ago, else on a thread of its own (no waiting for it)."""
        conn = _connect(self.outbox)
        try:
            conn.execute(_CREATE_OUTBOX)
            values = [uuid.uuid4().hex, *(getattr(item, name) for name in _COLUMNS)]
            _insert(conn, "outbox", _OUTBOX_COLUMNS, values)
        finally:
            conn.close()
        if self.answered:
            self.deliver()
        else:
            threading.Thread(target=self.deliver, name="llmmeter-feedback", daemon=True).start()

    def deliver(self) -> None:
        """Send what the outbox holds to the server, removing what it took (never raises). Waits
        at most :data:`FLEET_TIMEOUT_S` for a delivery in progress (which then sends it too)."""
        if not _delivering.acquire(timeout=FLEET_TIMEOUT_S):
            return
        try:
            self._deliver_logged()
        finally:
            _delivering.release()

    def _deliver_logged(self) -> None:
        with guard("delivering feedback to the fleet store"):
            try:
                self._deliver()
            except Exception as exc:
                if not is_fleet_failure(exc):
                    raise
                self._unreachable(
                    exc,
                    f"feedback waits in {self.outbox} and goes with the next llmmeter.feedback() "
                    "of a process using this spool",
                )

    def _deliver(self) -> None:
        from llmmeter.store.postgres import SCHEMA

        insert = (
            f"INSERT INTO {SCHEMA}.feedback ({', '.join(_OUTBOX_COLUMNS)}) VALUES "
            f"({', '.join('%s' for _ in _OUTBOX_COLUMNS)}) ON CONFLICT (feedback_id) DO NOTHING"
        )
        oldest = (
            f"SELECT {', '.join(_OUTBOX_COLUMNS)} FROM outbox ORDER BY time_unix_ns LIMIT {_DELIVERY_BATCH}"
        )
        conn = _connect(self.outbox)
        try:
            while rows := conn.execute(oldest).fetchall():
                self._send(insert, [tuple(_without_nul(value) for value in row) for row in rows])
                conn.executemany("DELETE FROM outbox WHERE feedback_id = ?", [(row[0],) for row in rows])
        finally:
            conn.close()

    def _send(self, insert: str, rows: list[tuple[Any, ...]]) -> None:
        self.store.run_on_fleet(
            lambda fleet: fleet.cursor().executemany(insert, rows), timeout_s=FLEET_TIMEOUT_S
        )

    def _unreachable(self, exc: BaseException, meaning: str) -> None:
        log_once(
            f"feedback:fleet:{self.store.url}:{type(exc).__name__}",
            "llmmeter: feedback: the fleet store %s did not answer (%s): %s",
            self.store.url,
            first_line(exc),
            meaning,
        )


_delivering = threading.Lock()
"""One delivery at a time in a process (another process's, at the same time, is harmless)."""


def _without_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold a NUL character: it is stored as its visible escape."""
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value


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
