"""Budgets that act before the bill: ``configure(budgets=[llmmeter.Budget(...)], on_budget=alert)``.

When spend is counted
    A call's cost is added to every budget it matches when the call finishes, on the caller's
    thread, right after it was priced and before the instrumented call returns (a stream: when it
    ends), calls made inside ``on_record`` callbacks included. Only priced calls in USD count; an
    unpriced call adds nothing (its ``cost_status`` says so). A call belongs to the budget period
    (hour, day, month, UTC) in which it *started*.

When a ``raise`` budget refuses
    As a call starts, before its request is built or sent: once the period's spend for the call's
    key has reached the limit (``spent >= limit``), the instrumented client raises
    :class:`BudgetExceeded` and nothing goes out. No record is made of a refused call; the
    ``llmmeter.budget.refusals`` counter counts it.

Other processes' spend
    With a shared store, what *other* processes spent is read from it every :data:`REFRESH_S`
    seconds (``$LLMMETER_BUDGET_REFRESH_S``), triggered by the first call a budget covers after
    that interval; this process's own records are told apart by their record-id prefix, so
    nothing is counted twice. A local (SQLite) store is read on that call's thread (a read-only
    query with a 0.1 s busy timeout). A fleet (PostgreSQL) store is read on a thread of its own,
    started at ``configure()`` (the first read) and then woken by such a call, which never waits
    for it: each read asks the server only for the rows inserted since the previous one
    (``records.inserted_at``), summed per attribute set and hour, over this process's session
    with the server, each statement limited to :data:`FLEET_READ_TIMEOUT_S`
    (:data:`FLEET_FIRST_READ_TIMEOUT_S` for the first). A read that fails (server down, slow,
    refusing) is logged once and tried again an interval later; meanwhile the budgets go on with
    what they know.

How far a budget can overshoot
    Calls in flight are not counted until they finish: ``N`` calls started concurrently while the
    spend is just under the limit all go out, so the overshoot is at most the cost of the calls in
    flight when the limit is reached (one call, for sequential code). On a shared store add what
    the other processes spend in one refresh interval (their spend is seen at most one interval,
    plus one read, late), plus what their store writers have not written yet: normally well under
    a second, but with a fleet store that is down, everything spent while it is down (their
    records wait in their hosts' spools and count once delivered). A fleet process also counts
    nothing of the others' until its first read has answered, which sums the whole period
    (``benchmarks/fleet_budget_read.py``: 2.2 s for 200,000 rows of the month).

``on_budget(event)``
    Called once per budget, key and period when the spend reaches 80 % and again at 100 % of the
    limit (both ``warn`` and ``raise`` budgets), on the thread whose call crossed the threshold
    (or that read another process's spend crossing it): keep it quick (hand slow work, like a
    webhook, to a thread of your own). Its exceptions are logged, never raised into the call.
    Without ``on_budget``, a warning is logged instead.
"""

from __future__ import annotations

import calendar
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from llmmeter import record as record_module
from llmmeter import semconv as sc
from llmmeter._log import RaisedOnPurpose, guard, internal_error, log_once, strict_mode
from llmmeter.record import AttributeValue, CallRecord

if TYPE_CHECKING:
    from llmmeter.export.otel import OtelTelemetry
    from llmmeter.store import SQLiteStore
    from llmmeter.store.postgres import PostgresStore

__all__ = ["Budget", "BudgetEvent", "BudgetExceeded", "BudgetHandler"]

PERIODS: Final = ("hour", "day", "month")
ACTIONS: Final = ("raise", "warn")
ANY: Final = "*"
"""A match value meaning "any value, each value its own budget" (``{"user_id": "*"}``: per user)."""
THRESHOLDS: Final = (Decimal("0.8"), Decimal(1))
REFRESH_ENV_VAR: Final = "LLMMETER_BUDGET_REFRESH_S"
REFRESH_S: Final = 10.0
"""Default seconds between two reads of other processes' spend from a shared store."""
FLEET_READ_TIMEOUT_S: Final = 5.0
"""How long one read of the fleet store may take (connecting, then each statement)."""
FLEET_FIRST_READ_TIMEOUT_S: Final = 60.0
"""The same for a process's first read, which sums every row of the budgets' current periods."""
SETTLE_S: Final = 60.0
"""A fleet row is read again until it was inserted this long before a read: a writer's transaction
commits well within it, so a row committed late is never missed (the rows in this margin are
summed again at each read, replacing their previous sum)."""


# --- the user's declarations -------------------------------------------------------------------------
Period = Literal["hour", "day", "month"]
Action = Literal["raise", "warn"]


@dataclass(frozen=True, slots=True, eq=False, init=False)
class Budget:
    """A spending limit in USD per hour, day or month (UTC), over the calls whose attribution
    matches ``match``.

    ``match={"team": "search"}`` covers the calls made with ``team="search"``;
    ``match={"user_id": "*"}`` gives every user a budget of their own; ``match={}`` (the default)
    covers every call. Keys are attribution keys (``llmmeter.attributes``), and
    ``"llmmeter.route.name"`` for the calls of a route. ``action="raise"`` refuses calls once the
    period's spend reached the limit (:class:`BudgetExceeded`); ``"warn"`` (the default) only
    calls ``on_budget`` at 80 % and 100 %. Give ``limit_usd`` as a ``str`` or ``Decimal`` for an
    exact amount. ``name`` names it in events, errors and the refusals counter (default e.g.
    ``"50 USD/day team=search"``).
    """

    limit_usd: Decimal
    per: Period
    match: Mapping[str, AttributeValue]
    action: Action
    name: str

    def __init__(
        self,
        limit_usd: Decimal | str | int | float,
        per: Period = "day",
        match: Mapping[str, AttributeValue] | None = None,
        action: Action = "warn",
        name: str | None = None,
    ) -> None:
        if per not in PERIODS:
            raise ValueError(f"llmmeter.Budget: per must be one of {', '.join(PERIODS)}, got {per!r}")
        if action not in ACTIONS:
            raise ValueError(f"llmmeter.Budget: action must be 'raise' or 'warn', got {action!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"llmmeter.Budget: name must be a non-empty str, got {name!r}")
        set_field = object.__setattr__
        set_field(self, "limit_usd", _amount(limit_usd))
        set_field(self, "per", per)
        set_field(self, "match", dict(_checked_match({} if match is None else match)))
        set_field(self, "action", action)
        set_field(self, "name", name or _default_name(self))

    def key_of(
        self, attributes: Mapping[str, AttributeValue]
    ) -> tuple[tuple[str, AttributeValue], ...] | None:
        """The budget key of a call with these attributes (the matched values), ``None`` if the
        budget does not cover it."""
        match = self.match
        for name, wanted in match.items():
            value = attributes.get(name)
            if value is None or (wanted != ANY and value != wanted):
                return None
        return tuple((name, attributes[name]) for name in match)

    def period_of(self, unix_ns: int) -> tuple[int, int]:
        """(start, end) in unix seconds of the period containing ``unix_ns``."""
        seconds = unix_ns // 1_000_000_000
        if self.per == "hour":
            start = seconds - seconds % 3600
            return start, start + 3600
        if self.per == "day":
            start = seconds - seconds % 86400
            return start, start + 86400
        day = datetime.fromtimestamp(seconds, UTC)
        start = calendar.timegm((day.year, day.month, 1, 0, 0, 0))
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return start, calendar.timegm((year, month, 1, 0, 0, 0))


def _amount(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise TypeError(f"llmmeter.Budget: limit_usd must be a str, int or Decimal, got {value!r}")
    try:
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"llmmeter.Budget: limit_usd {value!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"llmmeter.Budget: limit_usd must be a positive amount, got {value!r}")
    return amount


def _checked_match(match: object) -> Iterable[tuple[str, AttributeValue]]:
    """The match's pairs, each checked: a non-empty str key, a str, bool, int or float value."""
    if not isinstance(match, Mapping):
        raise TypeError(f"llmmeter.Budget: match must be a dict of attribute values, got {match!r}")
    for key, value in match.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"llmmeter.Budget: match keys must be attribute names (str), got {key!r}")
        if not isinstance(value, str | bool | int | float) or (
            isinstance(value, float) and math.isnan(value)
        ):
            raise TypeError(
                f"llmmeter.Budget: match[{key!r}] must be a str, bool, int or float, got {value!r}"
            )
        yield key, value


def _default_name(budget: Budget) -> str:
    scope = " ".join(f"{key}={value}" for key, value in budget.match.items()) or "all calls"
    return f"{budget.limit_usd} USD/{budget.per} {scope}"


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """What ``on_budget`` is handed: a budget's spend reached ``threshold`` of its limit."""

    budget: Budget
    key: Mapping[str, AttributeValue]
    """The matched attribute values, e.g. ``{"user_id": "u-17"}``."""
    spent: Decimal
    """Spend of this key in this period so far (this process plus what the store said of others)."""
    threshold: Decimal
    """``Decimal("0.8")`` or ``Decimal("1")``."""
    period_start: datetime
    period_end: datetime

    @property
    def limit(self) -> Decimal:
        """The budget's limit in USD."""
        return self.budget.limit_usd


BudgetHandler = Callable[[BudgetEvent], None]


class BudgetExceeded(RaisedOnPurpose):
    """Raised by an instrumented client, before the request is sent, when a ``raise`` budget
    covering the call has been spent for the current period."""

    def __init__(
        self,
        budget: Budget,
        key: Mapping[str, AttributeValue],
        spent: Decimal,
        period_start: datetime,
        period_end: datetime,
    ) -> None:
        self.budget = budget
        self.key = dict(key)
        self.spent = spent
        self.limit = budget.limit_usd
        self.period_start = period_start
        self.period_end = period_end
        scope = " ".join(f"{k}={v}" for k, v in self.key.items()) or "all calls"
        super().__init__(
            f"llmmeter: budget {budget.name!r} spent for {scope}: {spent} of {budget.limit_usd} USD "
            f"since {period_start:%Y-%m-%dT%H:%MZ}; the call was not sent (the budget resets at "
            f"{period_end:%Y-%m-%dT%H:%MZ})"
        )


BudgetExceeded.__module__ = "llmmeter"  # its public name, in tracebacks and records' error.type


# --- the running book ----------------------------------------------------------------------------------
_Slot = tuple[int, tuple[tuple[str, AttributeValue], ...], int]
"""(budget index, key, period start): one budget's spend for one key in one period."""

_MAX_SLOTS = 100_000


class BudgetBook:
    """The spend of every configured budget; made by ``configure(budgets=...)``.

    ``check`` runs as a call starts (the call-start hook of :mod:`llmmeter.routing`); ``count``
    adds a finished call's cost, right after it was priced.
    """

    def __init__(
        self, budgets: Sequence[Budget], on_budget: BudgetHandler | None, store: SQLiteStore | None = None
    ) -> None:
        self.budgets = tuple(budgets)
        self.on_budget = on_budget
        self._raising = tuple((i, b) for i, b in enumerate(self.budgets) if b.action == "raise")
        self._local: dict[_Slot, Decimal] = {}
        self._others: dict[_Slot, Decimal] = {}
        self._notified: set[tuple[_Slot, Decimal]] = set()
        self._lock = threading.Lock()
        self._store = _reader_of(store, self)
        if self._store is not None:
            self._store.start()

    def spent(
        self, budget: Budget, key: Mapping[str, AttributeValue], at_unix_ns: int | None = None
    ) -> Decimal:
        """What ``budget`` has spent for ``key`` in the period containing ``at_unix_ns`` (now)."""
        index = self.budgets.index(budget)
        period, _ = budget.period_of(time.time_ns() if at_unix_ns is None else at_unix_ns)
        return self._total((index, tuple(key.items()), period))

    def refresh(self, timeout: float = 5.0) -> bool:
        """Read other processes' spend from the shared store now, waiting at most ``timeout``
        seconds for the read (before a batch job, in tests). ``True`` when it answered in time;
        ``False`` also without a shared store. A failed read is logged, never raised."""
        if self._store is None:
            return False
        return self._store.refresh_now(timeout)

    def _total(self, slot: _Slot) -> Decimal:
        return self._local.get(slot, Decimal(0)) + self._others.get(slot, Decimal(0))

    # --- before a call ---
    def check(self, attributes: Mapping[str, AttributeValue], telemetry: OtelTelemetry) -> None:
        """Raise :class:`BudgetExceeded` if a ``raise`` budget covering these attributes is spent;
        never raises anything else (llmmeter's own failures are logged)."""
        if not self._raising:
            return
        try:  # rather than `with guard(...)`: this runs as every call starts
            refusal = self._refusal(attributes)
        except Exception:
            if strict_mode():
                raise
            internal_error("checking the budgets")
            return
        if refusal is not None:
            _count_refusal(telemetry, refusal.budget)
            raise refusal

    def _refusal(self, attributes: Mapping[str, AttributeValue]) -> BudgetExceeded | None:
        now = None
        for index, budget in self._raising:
            key = budget.key_of(attributes)
            if key is None:
                continue
            if now is None:
                now = time.time_ns()
                if self._store is not None:
                    self._store.refresh_if_due()
            start, end = budget.period_of(now)
            spent = self._total((index, key, start))
            if spent >= budget.limit_usd:
                return BudgetExceeded(budget, dict(key), spent, _utc(start), _utc(end))
        return None

    # --- after a call ---
    def count(self, record: CallRecord) -> None:
        """Count a finished, priced LLM call's cost into every budget it matches (on the caller's
        thread, right after pricing: :func:`llmmeter.pipeline.complete`). Never raises."""
        cost = record.cost
        if cost is None:
            return
        try:  # rather than `with guard(...)`: this runs for every priced call
            if cost.currency != "USD":
                log_once(
                    f"budget:currency:{cost.currency}",
                    "llmmeter: budgets count USD only; a %s cost is not counted",
                    cost.currency,
                )
                return
            for index, budget in enumerate(self.budgets):
                key = budget.key_of(record.attributes)
                if key is not None:
                    start, _ = budget.period_of(record.timings.start_time_unix_ns)
                    self.add((index, key, start), cost.amount)
            if self._store is not None:  # warn budgets see the others' spend too
                self._store.refresh_if_due()
        except Exception:
            if strict_mode():
                raise
            internal_error("counting the spend of budgets")

    def add(self, slot: _Slot, amount: Decimal, *, local: bool = True) -> None:
        """Add ``amount`` to one slot (this process's spend, or another process's read from the
        store), then tell ``on_budget`` about every threshold it reached."""
        book = self._local if local else self._others
        with self._lock:
            if len(book) >= _MAX_SLOTS:
                self._forget_old_periods()
            book[slot] = book.get(slot, Decimal(0)) + amount
            total = self._total(slot)
        self._notify(slot, total)

    def replace_others(self, totals: Mapping[_Slot, Decimal]) -> None:
        """Make ``totals`` the whole of other processes' spend (a fleet read's result), then tell
        ``on_budget`` about every threshold a changed slot reached."""
        with self._lock:
            changed = [slot for slot, amount in totals.items() if self._others.get(slot) != amount]
            self._others = dict(totals)
            reached = [(slot, self._total(slot)) for slot in changed]
        for slot, total in reached:
            self._notify(slot, total)

    def forget_own_spend(self) -> None:
        """Start this process's spend afresh (a forked child: the parent's is read from the store)."""
        self._lock = threading.Lock()  # the parent's may have been held at the fork
        self._local = {}

    def current_periods(self) -> Iterator[tuple[int, int]]:
        """(budget index, start of its current period in unix seconds), for each budget."""
        now = time.time_ns()
        return ((index, budget.period_of(now)[0]) for index, budget in enumerate(self.budgets))

    def slots_of(
        self, start_ns: int, attributes: Mapping[str, Any], periods: dict[tuple[int, int], int] | None = None
    ) -> Iterator[_Slot]:
        """The slots a call that started at ``start_ns`` with ``attributes`` counts in (``periods``:
        a cache of period starts by budget index and start, for many calls of the same hours)."""
        for index, budget in enumerate(self.budgets):
            key = budget.key_of(attributes)
            if key is None:
                continue
            start = None if periods is None else periods.get((index, start_ns))
            if start is None:
                start = budget.period_of(start_ns)[0]
                if periods is not None:
                    periods[index, start_ns] = start
            yield (index, key, start)

    def _forget_old_periods(self) -> None:
        now = time.time_ns()
        for book in (self._local, self._others):
            for slot in [s for s in book if s[2] < self.budgets[s[0]].period_of(now)[0]]:
                del book[slot]

    def _notify(self, slot: _Slot, total: Decimal) -> None:
        index, key, start = slot
        budget = self.budgets[index]
        for threshold in THRESHOLDS:
            if total < threshold * budget.limit_usd:
                break
            with self._lock:
                if (slot, threshold) in self._notified:
                    continue
                self._notified.add((slot, threshold))
            _, end = budget.period_of(start * 1_000_000_000)
            self._tell(BudgetEvent(budget, dict(key), total, threshold, _utc(start), _utc(end)))

    def _tell(self, event: BudgetEvent) -> None:
        if self.on_budget is None:
            log_once(
                f"budget:{event.budget.name}:{sorted(event.key.items())}:{event.period_start}:{event.threshold}",
                "llmmeter: budget %r reached %s %% for %s: %s of %s USD this %s",
                event.budget.name,
                event.threshold * 100,
                event.key or "all calls",
                event.spent,
                event.limit,
                event.budget.per,
            )
            return
        with guard(f"on_budget callback {getattr(self.on_budget, '__qualname__', 'on_budget')!r}"):
            self.on_budget(event)


def _utc(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


# --- other processes' spend, from a shared store ----------------------------------------------------------
_SPEND_QUERY = (
    "SELECT id, start_time_unix_ns, attributes, cost_amount FROM records WHERE id > ? AND kind = 'llm' "
    "AND cost_amount IS NOT NULL AND (cost_currency IS NULL OR cost_currency = 'USD') "
    "AND start_time_unix_ns >= ? AND (record_id IS NULL OR substr(record_id, 1, ?) != ?) ORDER BY id"
)


class _OtherProcesses:
    """Reads, every refresh interval, the priced records other processes wrote to the store since
    the last read (this process's own records are told apart by their record-id prefix)."""

    def __init__(self, path: Path, book: BudgetBook) -> None:
        self.path = path
        self.book = book
        self.interval = _refresh_interval()
        self.last_id = 0
        self.due_at = 0.0
        self._reading = threading.Lock()

    def start(self) -> None:
        """Nothing before the first call a budget covers (the read runs on that call's thread)."""

    def refresh_now(self, timeout: float) -> bool:
        """Read now, on this thread (waiting at most ``timeout`` for another thread's read)."""
        return self._reading.acquire(timeout=max(0.0, timeout)) and self._read_and_release()

    def refresh_if_due(self) -> None:
        """Read what is new when the interval passed; never waits for another thread's read."""
        if time.monotonic() >= self.due_at and self._reading.acquire(blocking=False):
            self._read_and_release()

    def _read_and_release(self) -> bool:
        try:
            self.due_at = time.monotonic() + self.interval
            with guard("reading other processes' spend from the store"):
                self._read()
                return True
            return False
        finally:
            self._reading.release()

    def _read(self) -> None:
        if not self.path.exists():
            return
        since = min(budget.period_of(time.time_ns())[0] for budget in self.book.budgets) * 1_000_000_000
        own = f"{record_module._id_prefix}."
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.1)
        try:
            rows = conn.execute(_SPEND_QUERY, (self.last_id, since, len(own), own)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return
            raise
        finally:
            conn.close()
        for row_id, start_ns, attributes, amount in rows:
            self.last_id = max(self.last_id, row_id)
            self._count(start_ns, _attributes(attributes), Decimal(amount))

    def _count(self, start_ns: int, attributes: Mapping[str, Any], amount: Decimal) -> None:
        for slot in self.book.slots_of(start_ns, attributes):
            self.book.add(slot, amount, local=False)


def _attributes(text: str | None) -> Mapping[str, Any]:
    """The attributes of a stored record; ``{}`` for text that is not a JSON object (then the
    record counts only for budgets without ``match``)."""
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_HOUR_NS: Final = 3600 * 1_000_000_000
_FLEET_SPEND: Final = (
    "SELECT attributes, start_time_unix_ns / {hour} AS hour, COALESCE(inserted_at <= %s, TRUE), "
    "SUM(cost_amount)::text FROM {schema}.records WHERE kind = 'llm' AND cost_amount IS NOT NULL "
    "AND (cost_currency IS NULL OR cost_currency = 'USD') AND start_time_unix_ns >= %s "
    "AND left(record_id, %s) <> %s{newer} GROUP BY 1, 2, 3"
)


class _FleetProcesses:
    """Other processes' spend from the fleet (PostgreSQL) store, read on a thread of its own.

    Each read sums, per attribute set and hour, the priced LLM calls of other processes that
    started in the budgets' current periods. Rows inserted at least :data:`SETTLE_S` before the
    read are *settled*: added once for good, never read again. The others are read again at each
    read and their sum replaces the previous one, so a row committed a little after its
    ``inserted_at`` is still counted, and none twice. Rows from before ``inserted_at`` existed are
    settled by the first read.
    """

    def __init__(self, store: PostgresStore, book: BudgetBook) -> None:
        self.store = store
        self.book = book
        self.interval = _refresh_interval()
        self.due_at = 0.0
        self.reads = 0
        """Reads that answered (for tests and diagnostics)."""
        self._settled: dict[_Slot, Decimal] = {}
        self._settled_until: datetime | None = None
        self._pid = os.getpid()
        self._new_thread_state()

    def _new_thread_state(self) -> None:
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._attempts = 0
        self._reading = False
        self._last_ok = False
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._one_read = threading.Lock()

    def start(self) -> None:
        """The reading thread, and the first read, right away (at ``configure()``)."""
        self.refresh_if_due()

    def refresh_if_due(self) -> None:
        """Wake the reading thread when the interval has passed; never waits for the read."""
        if time.monotonic() < self.due_at:
            return
        self.due_at = time.monotonic() + self.interval
        if os.getpid() != self._pid:
            self._forget_parent()
        self._wake.set()
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start_thread()

    def _start_thread(self) -> None:
        if not self._starting.acquire(blocking=False):
            return  # another caller is starting it
        try:
            if self._thread is not None and self._thread.is_alive():
                return
            arguments = (weakref.ref(self), self._wake)
            thread = threading.Thread(target=_keep_reading, args=arguments, name="llmmeter-budget-read")
            thread.daemon = True
            thread.start()
            self._thread = thread
        except RuntimeError:  # interpreter shutdown: no new threads
            return
        finally:
            self._starting.release()

    def _forget_parent(self) -> None:
        """In a forked child: the parent's thread and locks are not ours, and the parent's spend,
        counted as this process's before the fork, is now another process's: read it all again."""
        self._pid = os.getpid()
        self._new_thread_state()
        self._settled, self._settled_until = {}, None
        self.book.forget_own_spend()

    def refresh_now(self, timeout: float) -> bool:
        """Have a read start now (after the one in progress) and wait for it at most ``timeout``;
        ``True`` when it answered."""
        deadline = time.monotonic() + max(0.0, timeout)
        if os.getpid() != self._pid:
            self._forget_parent()
        with self._done:
            wanted = self._attempts + (2 if self._reading else 1)
        self.due_at = 0.0
        self.refresh_if_due()
        with self._done:
            while self._attempts < wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._done.wait(remaining)
            return self._last_ok

    def read_once(self) -> None:
        """One read, on the reading thread; wakes whoever waits in :meth:`refresh_now`."""
        with self._one_read:  # one at a time, should two threads ever have been started
            self._read_once_locked()

    def _read_once_locked(self) -> None:
        with self._done:
            self._reading = True
        ok = False
        try:
            ok = self._read_logged()
        finally:
            with self._done:
                self._reading, self._last_ok = False, ok
                self._attempts += 1
                self._done.notify_all()

    def _read_logged(self) -> bool:
        with guard("reading other processes' spend from the fleet store"):
            try:
                self._read()
                return True
            except Exception as exc:
                if not is_fleet_failure(exc):
                    raise
                log_once(
                    f"budget:fleet-read:{self.store.url}:{type(exc).__name__}",
                    "llmmeter: budgets cannot read other processes' spend from the fleet store %s (%s); "
                    "they count this process's spend and what was read before, and read again in %g s",
                    self.store.url,
                    first_line(exc),
                    self.interval,
                )
        return False

    def _read(self) -> None:
        periods = dict(self.book.current_periods())
        since_ns = min(periods.values()) * 1_000_000_000
        own = f"{record_module._id_prefix}."
        timeout = FLEET_READ_TIMEOUT_S if self._settled_until is not None else FLEET_FIRST_READ_TIMEOUT_S
        mark, rows = self.store.run_on_fleet(lambda conn: self._query(conn, since_ns, own), timeout_s=timeout)
        self._settled = {
            slot: amount for slot, amount in self._settled.items() if slot[2] >= periods[slot[0]]
        }
        unsettled: dict[_Slot, Decimal] = {}
        parsed: dict[str | None, Mapping[str, Any]] = {}  # few distinct attribute sets, many hours
        hours: dict[tuple[int, int], int] = {}
        for attributes, hour, settled, amount in rows:
            into = self._settled if settled else unsettled
            if attributes not in parsed:
                parsed[attributes] = _attributes(attributes)
            for slot in self.book.slots_of(int(hour) * _HOUR_NS, parsed[attributes], hours):
                into[slot] = into.get(slot, Decimal(0)) + Decimal(amount)
        self._settled_until = mark
        totals = dict(self._settled)
        for slot, amount in unsettled.items():
            totals[slot] = totals.get(slot, Decimal(0)) + amount
        self.book.replace_others(totals)
        self.reads += 1

    def _query(self, conn: Any, since_ns: int, own: str) -> tuple[datetime, list[tuple[Any, ...]]]:
        from llmmeter.store.postgres import SCHEMA

        (mark,) = conn.execute("SELECT clock_timestamp() - make_interval(secs => %s)", (SETTLE_S,)).fetchone()
        newer = "" if self._settled_until is None else " AND inserted_at > %s"
        sql = _FLEET_SPEND.format(hour=_HOUR_NS, schema=SCHEMA, newer=newer)
        params: list[Any] = [mark, since_ns, len(own), own]
        if self._settled_until is not None:
            params.append(self._settled_until)
        return mark, conn.execute(sql, params).fetchall()


_IDLE_CHECK_S: Final = 30.0
"""How often an idle reading thread checks that its budgets are still configured."""


def _keep_reading(reader_ref: weakref.ref[_FleetProcesses], wake: threading.Event) -> None:
    """The reading thread: one read each time it is woken; it ends once its budgets are gone
    (reconfigured), holding them only while it reads."""
    while True:
        woken = wake.wait(_IDLE_CHECK_S)
        reader = reader_ref()
        if reader is None or reader._wake is not wake:  # gone, or a forked child's new thread
            return
        if woken:
            wake.clear()
            reader.read_once()
        del reader


def is_fleet_failure(exc: BaseException) -> bool:
    """Is ``exc`` the fleet store failing (down, slow, refusing, not set up), not an llmmeter bug?"""
    import sys

    from llmmeter.store.schema import StoreError

    psycopg = sys.modules.get("psycopg")  # imported by whatever talked to the server
    failures: tuple[type[BaseException], ...] = (StoreError, OSError)  # TimeoutError is an OSError
    return isinstance(exc, failures) or (psycopg is not None and isinstance(exc, psycopg.Error))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reader_of(store: SQLiteStore | None, book: BudgetBook) -> _OtherProcesses | _FleetProcesses | None:
    """What reads other processes' spend from ``store``: ``None`` without a store."""
    if store is None:
        return None
    from llmmeter.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return _FleetProcesses(store, book)
    return _OtherProcesses(store.path, book)


def _refresh_interval() -> float:
    text = os.environ.get(REFRESH_ENV_VAR)
    if not text:
        return REFRESH_S
    try:
        seconds = float(text)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    except ValueError:
        pass
    log_once("budget:refresh-env", "llmmeter: ignoring %s=%r (seconds >= 0 expected)", REFRESH_ENV_VAR, text)
    return REFRESH_S


# --- refusals counter and configuration ------------------------------------------------------------------
def _count_refusal(telemetry: OtelTelemetry, budget: Budget) -> None:
    from llmmeter.routing import own_counter

    with guard("counting a budget refusal"):
        own_counter(telemetry, sc.BUDGET_REFUSALS_METRIC).add(
            1, {sc.BUDGET_NAME: budget.name, sc.BUDGET_ACTION: budget.action}
        )


def budget_book(
    budgets: Sequence[Budget] | None, on_budget: BudgetHandler | None, store: SQLiteStore | None
) -> BudgetBook | None:
    """The book for ``configure(budgets=..., on_budget=...)``; ``None`` without budgets."""
    if not budgets:
        return None
    if isinstance(budgets, Budget):
        budgets = [budgets]
    for budget in budgets:
        if not isinstance(budget, Budget):
            raise TypeError(f"llmmeter.configure: budgets must be llmmeter.Budget objects, got {budget!r}")
    if on_budget is not None and not callable(on_budget):
        raise TypeError(f"llmmeter.configure: on_budget {on_budget!r} is not callable")
    from llmmeter.routing import install_call_start_hook

    install_call_start_hook()
    return BudgetBook(budgets, on_budget, store)
