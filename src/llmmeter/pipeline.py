"""What happens to a finished call: the record pipeline and its sinks.

The caller's thread keeps only what must happen while the call is in flight or before it
returns (see :func:`complete`): pricing (a priced record is what the store journals and what a
budget check needs), the store's journal, the roll-up into an enclosing ``@metered`` step and
callbacks marked :func:`inline`. Everything else runs on one background thread (a daemon, started
on the first record and again in a forked child): the span's end, with the call's own end time,
and the metric points, in the call's trace context (so exemplars point at the call's span), then
every :class:`Sink` in turn: the local store, exporters, ``on_record`` callbacks.

A sink is any object with ``accept``, ``flush`` and ``close`` (like structlog's processors, a
protocol rather than a base class): adding an exporter is one file and one entry in
``configure(sinks=...)``.

The queue is bounded: when it is full, that record's work runs on the caller's thread instead
(counted in :attr:`PipelineStats.ran_inline`), never dropped. A record is dropped only when a sink
fails on it or the process exits before it was delivered; both are counted
(:attr:`PipelineStats.dropped`, the ``llmmeter.records.dropped`` counter) and logged once.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmmeter._log import guard, internal_error, log_once, strict_mode, swallowed
from llmmeter.record import CallKind, CallRecord, CostStatus

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from llmmeter.config import Settings

RecordCallback = Callable[[CallRecord], None]

DEFAULT_MAX_QUEUE = 10_000
DEFAULT_EXIT_TIMEOUT_S = 2.0
"""How long interpreter exit waits, at most, for the pipeline and its sinks (``configure(exit_timeout=)``
or ``$LLMMETER_EXIT_TIMEOUT``)."""


# --- the protocols --------------------------------------------------------------------------------
@runtime_checkable
class Sink(Protocol):
    """Where finished records go. Any object with these three methods is a sink.

    ``accept`` runs on the pipeline's thread, once per record, in the order the calls finished
    (a record whose queue slot was full is accepted on the caller's thread instead); the record is
    final (timed, priced, rolled up) and must not be modified. It should return quickly: a slow
    sink delays the sinks after it, never the application. An exception it raises is logged once
    and counted as a dropped record.

    ``flush(timeout)`` returns ``True`` only when everything accepted so far was delivered;
    ``close(timeout)`` flushes and releases resources. Neither may wait longer than ``timeout``
    seconds (the pipeline also stops waiting for them then).
    """

    def accept(self, record: CallRecord) -> None:
        """Take one finished record (on the pipeline's thread)."""
        ...

    def flush(self, timeout: float) -> bool:
        """Deliver everything accepted so far; ``True`` when all of it was delivered."""
        ...

    def close(self, timeout: float) -> bool:
        """Flush, then release resources; ``True`` when everything accepted was delivered."""
        ...


@runtime_checkable
class DurableSink(Sink, Protocol):
    """A sink that also writes each record to a journal on the caller's thread, right when the
    record is handed to the pipeline, so that it survives the process being killed."""

    def journal(self, record: CallRecord) -> None:
        """Persist ``record`` before it is queued (on the caller's thread; must be cheap)."""
        ...


# --- callbacks --------------------------------------------------------------------------------------
class inline:  # lower-case: used like a function, `on_record=[llmmeter.inline(check_budget)]`
    """Mark an ``on_record`` callback to run on the caller's thread, before the call returns.

    By default callbacks run on llmmeter's pipeline thread, after the call returned, so a slow
    callback never slows the application. A budget check that must stop the *next* call needs the
    record before this call returns: wrap it, ``configure(on_record=[llmmeter.inline(check)])``.
    Its exceptions are logged, never raised into the call. A wrapper (rather than a separate
    ``on_record_inline=`` list) keeps one list of callbacks in one order, and marks the choice
    where the callback is named.
    """

    __slots__ = ("callback",)

    def __init__(self, callback: RecordCallback) -> None:
        if not callable(callback):
            raise TypeError(f"llmmeter.inline: {callback!r} is not callable")
        self.callback = callback

    def __call__(self, record: CallRecord) -> None:
        self.callback(record)

    def __repr__(self) -> str:
        return f"llmmeter.inline({self.callback!r})"


def callback_name(callback: object) -> str:
    """A callback's name for log lines."""
    if isinstance(callback, inline):
        callback = callback.callback
    return str(getattr(callback, "__qualname__", None) or type(callback).__qualname__)


_in_callback: ContextVar[bool] = ContextVar("llmmeter_in_callback", default=False)


def run_callbacks(callbacks: Sequence[RecordCallback], record: CallRecord) -> None:
    """Run ``callbacks`` on ``record``, each guarded; calls they make are marked as theirs."""
    token = _in_callback.set(True)
    try:
        for callback in callbacks:
            with guard(f"on_record callback {callback_name(callback)!r}"):
                callback(record)
    finally:
        _in_callback.reset(token)


class CallbackSink:
    """The ``on_record`` callbacks as a sink: they run on the pipeline's thread."""

    __slots__ = ("callbacks",)

    def __init__(self, callbacks: Sequence[RecordCallback]) -> None:
        self.callbacks = tuple(callbacks)

    def accept(self, record: CallRecord) -> None:
        """Hand ``record`` to every callback (an exception in one is logged, the next still runs)."""
        run_callbacks(self.callbacks, record)

    def flush(self, timeout: float) -> bool:
        """Callbacks hold nothing back."""
        return True

    def close(self, timeout: float) -> bool:
        """Nothing to release."""
        return True


# --- statistics -------------------------------------------------------------------------------------
@dataclass(slots=True)
class PipelineStats:
    """What the pipeline did in this process (``llmmeter.get_settings().pipeline_stats``)."""

    queued: int = 0
    """Records handed to the pipeline thread."""
    ran_inline: int = 0
    """Records whose work ran on the caller's thread because the queue was full."""
    delivered: int = 0
    """Records every sink accepted."""
    dropped: int = 0
    """Records a sink failed on, or that exit left undelivered (logged once)."""
    reentrant: int = 0
    """Records of calls made inside an ``on_record`` callback: measured, not handed to callbacks."""

    def snapshot(self) -> PipelineStats:
        """A copy, safe to read while the pipeline runs."""
        return PipelineStats(*(getattr(self, f.name) for f in fields(self)))


# --- the pipeline -----------------------------------------------------------------------------------
_Work = tuple[CallRecord, "Span | None", "Settings", bool]


class Pipeline:
    """One bounded queue and one daemon thread delivering finished records to the sinks."""

    def __init__(self, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.max_queue = max(1, max_queue)
        self.stats = PipelineStats()
        self._errors: list[BaseException] = []
        self._reset()

    def _reset(self) -> None:
        """Fresh queue, no thread: at construction, and in a forked child (the parent's queued
        records are the parent's to deliver; the child delivering them too would duplicate them)."""
        self._queue: queue.SimpleQueue[_Work | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- the caller's side ---
    def submit(self, record: CallRecord, span: Span | None, settings: Settings, reentrant: bool) -> None:
        """Queue a finished record; when the queue is full, deliver it here instead."""
        work = (record, span, settings, reentrant)
        if self._queue.qsize() >= self.max_queue:
            self.stats.ran_inline += 1
            log_once(
                "pipeline:full",
                "llmmeter: the record pipeline is %d records behind; delivering on the caller's "
                "thread until it catches up (counted in pipeline_stats.ran_inline)",
                self.max_queue,
            )
            self.deliver(work)
            return
        if self._thread is None:
            self._start()
        self.stats.queued += 1
        self._queue.put(work)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="llmmeter-pipeline", daemon=True)
            thread.start()
            self._thread = thread

    def on_pipeline_thread(self) -> bool:
        """True on the pipeline's own thread (e.g. inside a callback)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def drain(self, timeout: float) -> bool:
        """Wait until every record queued so far went through the sinks' ``accept``."""
        if self._thread is None or self.on_pipeline_thread():
            return self._queue.empty() or self._thread is None
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(max(0.0, timeout))

    def raise_pending_error(self) -> None:
        """Under ``LLMMETER_STRICT=1``: re-raise, on the caller's thread, the first internal error
        the pipeline's thread met (so that llmmeter's own tests fail on it)."""
        if self._errors:
            error, self._errors[:] = self._errors[0], []
            raise error

    # --- the pipeline's side ---
    def _run(self) -> None:
        get = self._queue.get
        while True:
            work = get()
            if work is None:
                return
            if isinstance(work, threading.Event):
                work.set()
                continue
            try:
                self.deliver(work)
            except Exception as exc:  # strict mode only: guard re-raises there
                self._errors.append(exc)
            except BaseException:  # a callback calling sys.exit(): this thread must live on
                internal_error("the pipeline thread (a sink raised SystemExit or similar)")
                self.count_dropped(1, "a sink raised SystemExit or similar")

    def deliver(self, work: _Work) -> None:
        """Span end and metric points, then every sink, for one record."""
        record, span, settings, reentrant = work
        if record.cost_status is CostStatus.PENDING:
            _price(settings, record)
        with guard("exporting to OpenTelemetry"):
            settings.telemetry.finish(record, span)
        ok = True
        for sink in settings.sinks:
            if reentrant and isinstance(sink, CallbackSink):
                continue
            try:
                sink.accept(record)
            except Exception:
                ok = False
                if strict_mode():
                    raise
                internal_error(f"sink {type(sink).__qualname__}")
        if ok:
            self.stats.delivered += 1
        else:
            self.count_dropped(1, "a sink failed")

    def count_dropped(self, count: int, why: str) -> None:
        """Count ``count`` undelivered records, log once, and add them to the dropped counter."""
        self.stats.dropped += count
        log_once(
            f"pipeline:dropped:{why}",
            "llmmeter: %d record(s) not delivered (%s); counted in pipeline_stats.dropped",
            count,
            why,
        )

    # --- exit ---
    def pending(self) -> int:
        """Records queued and not yet taken by the pipeline's thread (approximate)."""
        return self._queue.qsize()


_pipeline = Pipeline()


def get_pipeline() -> Pipeline:
    """The process's pipeline."""
    return _pipeline


def _after_fork_in_child() -> None:
    _pipeline._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the caller's thread ---------------------------------------------------------------------------
class _Parent(Protocol):
    @property
    def finished(self) -> bool: ...

    def add_child(self, child: CallRecord) -> None: ...


def complete(settings: Settings, record: CallRecord, span: Span | None, parent: _Parent | None) -> None:
    """A call finished: price, journal, roll up, run inline callbacks, then queue the rest.

    On the caller's thread, before the call returns. The roll-up happens here so that a step
    never ends before the children it saw were added to it.
    """
    if record.kind is CallKind.LLM:
        if _price_later(settings, parent):
            record.cost_status = CostStatus.PENDING  # priced by Pipeline.deliver
        else:
            _price(settings, record)
        if settings.budgets is not None:  # issue 14: count the cost before the call returns
            settings.budgets.count(record)
    for durable in settings.durable_sinks:
        try:
            durable.journal(record)
        except Exception:
            if not swallowed("journaling the record"):
                raise
    if parent is not None and not parent.finished:
        with guard("rolling up into the enclosing step"):
            parent.add_child(record)
    reentrant = _in_callback.get()
    if reentrant:
        _pipeline.stats.reentrant += 1
        log_once(
            "pipeline:reentrant",
            "llmmeter: a call made inside an on_record callback is measured but not handed to the "
            "callbacks again (that would loop)",
        )
    elif settings.inline_callbacks:
        run_callbacks(settings.inline_callbacks, record)
    _pipeline.submit(record, span, settings, reentrant)


def _price_later(settings: Settings, parent: _Parent | None) -> bool:
    """Whether pricing can wait for the pipeline's thread: nothing on the caller's thread reads
    the cost (no budget counts it, no inline callback sees it, no open step rolls it up)."""
    return (
        settings.pricing is not None
        and settings.budgets is None
        and not settings.inline_callbacks
        and (parent is None or parent.finished)
    )


def _price(settings: Settings, record: CallRecord) -> None:
    if settings.pricing is None:
        record.cost_status = CostStatus.DISABLED
        return
    try:
        settings.pricing.price(record)
    except Exception:
        record.cost, record.cost_status = None, CostStatus.ERROR
        if strict_mode():
            raise
        internal_error("pricing")


# --- flush and exit ----------------------------------------------------------------------------------
def flush(settings: Settings, timeout: float) -> bool:
    """Deliver everything handed to the pipeline so far; ``False`` if anything was not delivered
    within ``timeout`` seconds (returns by then, give or take a few milliseconds)."""
    deadline = time.monotonic() + max(0.0, timeout)
    drained = _pipeline.drain(timeout)
    flushed = _bounded(lambda left: _each(settings.sinks, "flush", left), deadline)
    if strict_mode():
        _pipeline.raise_pending_error()
    return drained and flushed


def close_sinks(sinks: Sequence[Sink], timeout: float) -> bool:
    """Close ``sinks`` (a configuration being replaced), waiting at most ``timeout`` seconds."""
    return _bounded(lambda left: _each(sinks, "close", left), time.monotonic() + max(0.0, timeout))


def _each(sinks: Sequence[Sink], method: str, deadline: float) -> bool:
    ok = True
    for sink in sinks:
        left = max(0.0, deadline - time.monotonic())
        try:
            ok = bool(getattr(sink, method)(left)) and ok
        except Exception:
            ok = False
            if strict_mode():
                raise
            internal_error(f"{method} of sink {type(sink).__qualname__}")
    return ok


def _bounded(work: Callable[[float], bool], deadline: float) -> bool:
    """Run ``work(deadline)`` on a helper daemon thread and wait for it until ``deadline`` at most:
    an exporter stuck on a dead endpoint keeps its own thread, never the caller."""
    result: list[bool] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work(deadline))
        except BaseException as exc:  # strict mode: carried to the caller below
            errors.append(exc)

    helper = threading.Thread(target=run, name="llmmeter-flush", daemon=True)
    helper.start()
    helper.join(max(0.0, deadline - time.monotonic()) + 0.05)
    if errors:
        raise errors[0]
    return bool(result and result[0])


def exit_timeout_from_env() -> float:
    """``$LLMMETER_EXIT_TIMEOUT`` in seconds, else :data:`DEFAULT_EXIT_TIMEOUT_S`."""
    raw = os.environ.get("LLMMETER_EXIT_TIMEOUT")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            log_once("exit-timeout", "llmmeter: LLMMETER_EXIT_TIMEOUT=%r is not a number of seconds", raw)
    return DEFAULT_EXIT_TIMEOUT_S


_exit_settings: Callable[[], Settings | None] | None = None


def register_exit(current: Callable[[], Settings | None]) -> None:
    """(Re)register the exit hook so that it runs before the hooks of sinks made since: the
    pipeline delivers its queue to the store before the store closes."""
    global _exit_settings
    _exit_settings = current
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)


def _at_exit() -> None:
    settings = _exit_settings() if _exit_settings is not None else None
    if settings is None:
        return
    budget = settings.exit_timeout
    deadline = time.monotonic() + budget
    try:
        _pipeline.drain(budget)
        left = _pipeline.pending()
        closed = _bounded(lambda d: _each(settings.sinks, "close", d), deadline)
    except Exception:
        internal_error("exit")
        return
    if left:
        _pipeline.count_dropped(left, f"the process exited after waiting {budget:g} s")
    elif not closed:
        log_once(
            "pipeline:exit",
            "llmmeter: at exit, not every sink delivered its records within %g s (exit_timeout)",
            budget,
        )
