"""A :class:`Measurement` is one call in flight: its clock, its span, its record.

Instrumentation creates a Measurement just before it calls the wrapped function, passes a stream
through it (:meth:`Measurement.observe` and its async and generator twins, the hot path), and
finishes it exactly once. Finishing runs the rest of the pipeline: pricing, OTel export, the local
store, user callbacks, and the roll-up into an enclosing ``@metered`` step.

The module-level helpers are the pieces every instrumentation needs around a measurement:
:func:`attach_guarded` / :func:`detach_guarded` (make the call's span current without ever
raising) and :func:`abandonment_finalizer` (finish as ``abandoned`` when a stream is dropped).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from contextvars import ContextVar, Token
from decimal import Decimal
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from llmmeter._log import guard, log_once, swallowed
from llmmeter.config import Settings
from llmmeter.context import current_attributes
from llmmeter.pipeline import complete
from llmmeter.providers.estimate import estimate_usage
from llmmeter.providers.types import EstimateInput, Observed, StreamReader, apply_observed
from llmmeter.record import CallKind, CallRecord, Outcome, Usage

_current: ContextVar[Measurement | None] = ContextVar("llmmeter_measurement", default=None)

_perf_ns = time.perf_counter_ns

servers_without_stream_usage: set[tuple[str | None, int | None]] = set()
"""Servers (address, port) whose skimmed stream ended without the usage it was asked for: their
next streams are read whole, so that an estimate counts their text (this process)."""

call_start_hook: Callable[[Measurement], None] | None = None
"""Set by :mod:`llmmeter.routing` once a route or a budget is in use: runs as each call starts (it
may refuse the call by raising :class:`llmmeter.BudgetExceeded`). ``None`` costs calls nothing."""


def _no_output(chunk: Any) -> bool:
    return False


def _reader_failed() -> bool:
    """Log a failing ``StreamReader.feed`` (once) and carry on: the chunk still reaches the caller."""
    with guard("reading a stream chunk"):
        raise
    return False


def _hides(hidden: Callable[[Any], bool], chunk: Any) -> bool:
    with guard("checking for a usage-only chunk"):
        return hidden(chunk)
    return False


def _hides_failed() -> None:
    """Log a failing ``hidden`` check (once) and carry on: the chunk reaches the caller."""
    with guard("checking for a usage-only chunk"):
        raise


def _close(generator: Generator[Any, Any, Any]) -> Any:
    """``generator.close()``, passing on what it returns (its return value, since Python 3.13)."""
    close: Callable[[], Any] = generator.close
    return close()


def outcome_of(exc: BaseException) -> Outcome:
    """ABORTED for cancellation and interrupts, ERROR for everything else."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit):
        return Outcome.ABORTED
    return Outcome.ERROR


def error_type_of(exc: BaseException) -> str:
    """The exception's public qualified name: ``openai.BadRequestError``, ``ValueError``."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    public = ".".join(part for part in cls.__module__.split(".") if not part.startswith("_"))
    return f"{public}.{cls.__qualname__}" if public else cls.__qualname__


class Attached(NamedTuple):
    """Context tokens of an attached measurement."""

    otel: Token[Context] | None
    measurement: Token[Measurement | None]


def attach_guarded(measurement: Measurement | None) -> Attached | None:
    """Make ``measurement``'s span and the measurement itself current; ``None`` when there is no
    measurement or attaching failed (logged once): the caller's code runs either way."""
    # try/except rather than `with guard(...)`: a @metered generator attaches at every resumption.
    if measurement is None:
        return None
    try:
        return measurement.attach()
    except Exception:
        _failed("attaching the span context")
        return None


def detach_guarded(token: Attached | None) -> None:
    """Undo :func:`attach_guarded` (same thread or task); never raises."""
    if token is None:
        return
    try:
        Measurement.detach(token)
    except Exception:
        _failed("detaching the span context")


def _failed(stage: str) -> None:
    """Log the exception being handled as llmmeter's own failure in ``stage`` (once; raised
    under ``LLMMETER_STRICT=1``). Call from an ``except`` block."""
    with guard(stage):
        raise


def abandonment_finalizer(owner: object, measurement: Measurement) -> weakref.finalize[..., Any]:
    """Finish ``measurement`` as ``abandoned`` when ``owner`` is garbage-collected unfinished.

    The finalizer holds the measurement, never ``owner``, so a stream nobody reads stays
    collectable; it is a no-op once the measurement finished, and it does not run at interpreter
    exit (a record half-exported during shutdown helps nobody). ``detach()`` it when the owner
    finishes on its own.
    """
    finalizer = weakref.finalize(owner, measurement.finish, Outcome.ABANDONED)
    finalizer.atexit = False
    return finalizer


class Measurement:
    """One measured call. Not thread-safe by design except :meth:`add_child` (see below)."""

    __slots__ = (
        "_children_lock",
        "_finished",
        "_per_chunk_metrics",
        "_skim_output_chunks",
        "_skimmed_from",
        "_t0",
        "_t_first_chunk",
        "_t_first_output",
        "_t_last_chunk",
        "_t_last_output",
        "chunks",
        "estimate_input",
        "parent",
        "reader",
        "record",
        "settings",
        "skim",
        "span",
    )

    def __init__(self, settings: Settings, record: CallRecord, reader: StreamReader | None = None) -> None:
        self.settings = settings
        self.record = record
        self.reader = reader
        self.parent = _current.get()
        self.span: Span | None = None
        self.estimate_input: EstimateInput | None = None
        self.chunks = 0
        self._finished = False
        self._t_first_chunk: int | None = None
        self._t_first_output: int | None = None
        self._t_last_output: int | None = None
        self._t_last_chunk: int | None = None
        self._children_lock: threading.Lock | None = None
        self._per_chunk_metrics = settings.telemetry.per_chunk_metrics
        self.skim = False
        """Set when the stream will end with its usage (:attr:`RequestSpec.usage_expected`):
        :meth:`observe` stops reading chunks after the first output chunk."""
        self._skimmed_from: int | None = None
        self._skim_output_chunks: int | None = None
        attrs = current_attributes()
        if attrs:
            record.attributes.update(attrs)
        if call_start_hook is not None:  # routes and budgets (llmmeter.routing)
            call_start_hook(self)
        try:
            self.span = span = settings.telemetry.start_span(record)
            span_context = span.get_span_context()
            if span_context.is_valid:
                # to_bytes().hex(): the W3C lower-case hex at half the cost of format(..., "032x")
                record.trace_id = span_context.trace_id.to_bytes(16, "big").hex()
                record.span_id = span_context.span_id.to_bytes(8, "big").hex()
        except Exception:
            if not swallowed("starting the span"):
                raise
        record.timings.start_time_unix_ns = time.time_ns()
        self._t0 = _perf_ns()

    # --- context ----------------------------------------------------------------------------
    def attach(self) -> Attached:
        """Make this call's span and this measurement current; returns what :meth:`detach` needs."""
        otel_token = None
        if self.span is not None:
            otel_token = otel_context.attach(trace.set_span_in_context(self.span))
        return Attached(otel_token, _current.set(self))

    @staticmethod
    def detach(token: Attached) -> None:
        """Undo :meth:`attach` (same thread/task)."""
        _current.reset(token.measurement)
        if token.otel is not None:
            otel_context.detach(token.otel)

    # --- streams (hot path) -------------------------------------------------------------------
    def observe(self, chunks: Iterator[Any], hidden: Callable[[Any], bool] | None = None) -> Iterator[Any]:
        """Yield the items of ``chunks`` (an SDK stream's iterator), timing each, and finish when
        they end: ``ok`` when exhausted, ``error``/``aborted`` with the exception they raise (which
        propagates unchanged).

        The hot path of every stream proxy, written as a generator so that a ``for`` loop resumes
        this frame directly: no proxy method, coroutine or bound-method call per chunk. Chunks
        without output for which ``hidden(chunk)`` is true are read but not yielded (the usage
        chunk llmmeter asked for and the caller did not). Leaving early (``close()``, garbage
        collection) finishes nothing here: the proxy owning this generator decides the outcome.

        With :attr:`skim` set, every chunk is read until the first one with output; from then on
        each is only timed and counted (and checked with ``hidden``), and the last four are read
        when the stream ends (its usage, finish reasons and last output). Reading a chunk of an
        SDK's pydantic objects costs three hooked attribute reads: most of what a chunk cost.
        """
        reader = self.reader
        feed = reader.feed if reader is not None else _no_output
        track = self._track
        per_chunk = self._per_chunk_metrics
        skim = self._skims()
        try:
            for chunk in chunks:
                now = _perf_ns()
                if per_chunk or self._t_last_chunk is None:
                    track(now)
                self._t_last_chunk = now
                self.chunks += 1
                try:
                    has_output = feed(chunk)
                except Exception:
                    has_output = _reader_failed()
                if has_output:
                    if self._t_first_output is None:
                        self._t_first_output = now
                    self._t_last_output = now
                elif hidden is not None and _hides(hidden, chunk):
                    continue
                yield chunk
                if skim and self._t_first_output is not None:
                    break
            else:
                self.finish(Outcome.OK)
                return
            # Skimming. The ring of the last four chunks and their times is kept in locals (the
            # cheapest state a generator has); what a close() or an abandonment reads is on self.
            self._skimmed_from = self.chunks
            c1: Any = None
            c2: Any = None
            c3: Any = None
            c4: Any = None
            t1 = t2 = t3 = t4 = 0
            for chunk in chunks:
                now = _perf_ns()
                self._t_last_chunk = now
                self.chunks += 1
                c4 = c3
                c3 = c2
                c2 = c1
                c1 = chunk
                t4 = t3
                t3 = t2
                t2 = t1
                t1 = now
                if hidden is not None:
                    try:
                        if hidden(chunk):
                            continue
                    except Exception:
                        _hides_failed()
                yield chunk
            self._read_tail(((c4, t4), (c3, t3), (c2, t2), (c1, t1)))
        except GeneratorExit:  # closed or collected while suspended: the proxy decides
            raise
        except BaseException as exc:
            self.finish(outcome_of(exc), exc)
            raise
        self.finish(Outcome.OK)

    async def observe_async(
        self, chunks: AsyncIterator[Any], hidden: Callable[[Any], bool] | None = None
    ) -> AsyncIterator[Any]:
        """:meth:`observe` for an async stream's iterator.

        The loop bodies repeat :meth:`observe`'s on purpose: a sync and an async generator cannot
        share one, and moving them into a method would add a call per chunk (≈ 20 % of the
        per-chunk cost, ``benchmarks/chunk_overhead.py``).
        """
        reader = self.reader
        feed = reader.feed if reader is not None else _no_output
        track = self._track
        per_chunk = self._per_chunk_metrics
        skim = self._skims()
        try:
            async for chunk in chunks:
                now = _perf_ns()
                if per_chunk or self._t_last_chunk is None:
                    track(now)
                self._t_last_chunk = now
                self.chunks += 1
                try:
                    has_output = feed(chunk)
                except Exception:
                    has_output = _reader_failed()
                if has_output:
                    if self._t_first_output is None:
                        self._t_first_output = now
                    self._t_last_output = now
                elif hidden is not None and _hides(hidden, chunk):
                    continue
                yield chunk
                if skim and self._t_first_output is not None:
                    break
            else:
                self.finish(Outcome.OK)
                return
            self._skimmed_from = self.chunks
            c1: Any = None
            c2: Any = None
            c3: Any = None
            c4: Any = None
            t1 = t2 = t3 = t4 = 0
            async for chunk in chunks:
                now = _perf_ns()
                self._t_last_chunk = now
                self.chunks += 1
                c4 = c3
                c3 = c2
                c2 = c1
                c1 = chunk
                t4 = t3
                t3 = t2
                t2 = t1
                t1 = now
                if hidden is not None:
                    try:
                        if hidden(chunk):
                            continue
                    except Exception:
                        _hides_failed()
                yield chunk
            self._read_tail(((c4, t4), (c3, t3), (c2, t2), (c1, t1)))
        except GeneratorExit:  # closed or collected while suspended: the proxy decides
            raise
        except BaseException as exc:
            self.finish(outcome_of(exc), exc)
            raise
        self.finish(Outcome.OK)

    def _skims(self) -> bool:
        """Whether this stream's loop skims: :attr:`skim` was set, per-chunk metrics are off, and
        the reader does not skim by itself (a reader with ``read_lightly()`` is told to, and is
        still handed every chunk: Gemini's running usage is on every chunk)."""
        if not self.skim or self._per_chunk_metrics:
            return False
        read_lightly = getattr(self.reader, "read_lightly", None)
        if read_lightly is None:
            return True
        read_lightly()
        return False

    def _read_tail(self, tail: tuple[tuple[Any, int], ...]) -> None:
        """A skimmed stream ended: read its last chunks (oldest first; ``None`` where the stream
        was shorter) for usage, finish reasons and the time of its last output. Four chunks with
        no output leave that time unknown (no TPOT) rather than guessed."""
        reader = self.reader
        if reader is None:
            return
        silent = 0
        last_output: int | None = None
        for chunk, at in tail:
            if chunk is None:
                continue
            try:
                has_output = reader.feed(chunk)
            except Exception:
                has_output = _reader_failed()
            if has_output:
                last_output = at
            else:
                silent += 1
        if last_output is not None:
            self._t_last_output = last_output
        elif tail[0][0] is not None:
            self._t_last_output = None
        skimmed_from = self._skimmed_from if self._skimmed_from is not None else self.chunks
        self._skim_output_chunks = 1 + self.chunks - skimmed_from - silent

    def observe_generator(
        self, generator: Generator[Any, Any, Any], *, current: bool = False
    ) -> Generator[Any, Any, Any]:
        """:meth:`observe` for a generator whose consumer may also ``send()``, ``throw()`` and
        ``close()``: all three reach ``generator`` with a generator's own semantics.

        Sent values reach ``generator`` and what it yields back is timed like any chunk; an
        exception thrown in is raised inside it (``error``/``aborted`` if it comes back out);
        closing this generator closes ``generator`` (its ``finally`` runs) and finishes
        ``aborted`` -- unless it was garbage-collected unfinished and an
        :func:`abandonment_finalizer` watching it said ``abandoned`` first (CPython runs weak
        reference callbacks before it closes a collected generator). Its return value is this
        generator's (``yield from`` receives it). ``current=True`` makes the span current while
        ``generator``'s own code runs (a ``@metered`` generator's calls nest under it), not while
        the consumer handles a chunk.

        A variant rather than a parameter of :meth:`observe`, whose loop body it repeats: the
        ``openai`` streams' ``for`` loop pays nothing for sending and throwing.
        """
        reader = self.reader
        feed = reader.feed if reader is not None else _no_output
        track = self._track
        skim = self._skims()
        skimming = False
        c1: Any = None
        c2: Any = None
        c3: Any = None
        c4: Any = None
        t1 = t2 = t3 = t4 = 0
        send, throw = generator.send, generator.throw
        sent: Any = None
        pending: BaseException | None = None
        while True:
            token = attach_guarded(self) if current else None
            try:
                if pending is None:
                    chunk = send(sent)
                else:
                    chunk = throw(pending)
                    pending = None
            except StopIteration as stop:
                if skimming:
                    self._read_tail(((c4, t4), (c3, t3), (c2, t2), (c1, t1)))
                self.finish(Outcome.OK)
                return stop.value
            except BaseException as exc:
                self.finish(outcome_of(exc), exc)
                raise
            finally:
                if token is not None:
                    detach_guarded(token)
            now = _perf_ns()
            if skimming:  # see observe(): timed, counted, kept in the ring, not read
                self._t_last_chunk = now
                self.chunks += 1
                c4 = c3
                c3 = c2
                c2 = c1
                c1 = chunk
                t4 = t3
                t3 = t2
                t2 = t1
                t1 = now
            else:
                if self._t_last_chunk is None or self._per_chunk_metrics:
                    track(now)
                self._t_last_chunk = now
                self.chunks += 1
                try:
                    has_output = feed(chunk)
                except Exception:
                    has_output = _reader_failed()
                if has_output:
                    if self._t_first_output is None:
                        self._t_first_output = now
                        if skim:
                            skimming = True
                            self._skimmed_from = self.chunks
                    self._t_last_output = now
            try:
                sent = yield chunk
            except GeneratorExit:
                return self._close_generator(generator, current)
            except BaseException as exc:
                pending = exc

    def _close_generator(self, generator: Generator[Any, Any, Any], current: bool) -> Any:
        token = attach_guarded(self) if current else None
        try:
            result = _close(generator)
        except BaseException as exc:
            self.finish(outcome_of(exc), exc)
            raise
        finally:
            detach_guarded(token)
        self.finish(Outcome.ABORTED)
        return result

    async def observe_async_generator(
        self, generator: AsyncGenerator[Any, Any], *, current: bool = False
    ) -> AsyncGenerator[Any, Any]:
        """:meth:`observe_generator` for an async generator: ``asend()``, ``athrow()`` and
        ``aclose()`` reach ``generator``; a cancelled task finishes ``aborted``.

        The loop body repeats :meth:`observe_generator`'s for the reason given in
        :meth:`observe_async`.
        """
        reader = self.reader
        feed = reader.feed if reader is not None else _no_output
        track = self._track
        skim = self._skims()
        skimming = False
        c1: Any = None
        c2: Any = None
        c3: Any = None
        c4: Any = None
        t1 = t2 = t3 = t4 = 0
        asend, athrow = generator.asend, generator.athrow
        sent: Any = None
        pending: BaseException | None = None
        while True:
            token = attach_guarded(self) if current else None
            try:
                if pending is None:
                    chunk = await asend(sent)
                else:
                    chunk = await athrow(pending)
                    pending = None
            except StopAsyncIteration:
                if skimming:
                    self._read_tail(((c4, t4), (c3, t3), (c2, t2), (c1, t1)))
                self.finish(Outcome.OK)
                return
            except BaseException as exc:
                self.finish(outcome_of(exc), exc)
                raise
            finally:
                if token is not None:
                    detach_guarded(token)
            now = _perf_ns()
            if skimming:
                self._t_last_chunk = now
                self.chunks += 1
                c4 = c3
                c3 = c2
                c2 = c1
                c1 = chunk
                t4 = t3
                t3 = t2
                t2 = t1
                t1 = now
            else:
                if self._t_last_chunk is None or self._per_chunk_metrics:
                    track(now)
                self._t_last_chunk = now
                self.chunks += 1
                try:
                    has_output = feed(chunk)
                except Exception:
                    has_output = _reader_failed()
                if has_output:
                    if self._t_first_output is None:
                        self._t_first_output = now
                        if skim:
                            skimming = True
                            self._skimmed_from = self.chunks
                    self._t_last_output = now
            try:
                sent = yield chunk
            except GeneratorExit:
                await self._aclose_generator(generator, current)
                raise
            except BaseException as exc:
                pending = exc

    async def _aclose_generator(self, generator: AsyncGenerator[Any, Any], current: bool) -> None:
        token = attach_guarded(self) if current else None
        try:
            await generator.aclose()
        except BaseException as exc:
            self.finish(outcome_of(exc), exc)
            raise
        finally:
            detach_guarded(token)
        self.finish(Outcome.ABORTED)

    def _track(self, now: int) -> None:
        """The first chunk's time, or (opt-in) the gap since the previous chunk."""
        last = self._t_last_chunk
        if last is None:
            self._t_first_chunk = now
        else:
            with guard("recording the chunk gap"):
                self.settings.telemetry.record_chunk_gap(self.record, (now - last) / 1e9)

    # --- end --------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once :meth:`finish` ran."""
        return self._finished

    def finish(
        self,
        outcome: Outcome = Outcome.OK,
        exc: BaseException | None = None,
        *,
        fill: Callable[[CallRecord], None] | None = None,
        read: Callable[[], Observed] | None = None,
    ) -> None:
        """Finish the call exactly once: timings, usage, then the rest of the pipeline.

        ``read`` (a provider adapter reading the response) or the stream reader says what the
        response told; ``fill`` is the older form that fills the record itself. When the provider
        reported no usage but a response arrived, the usage is estimated locally (marked so).
        Never raises: llmmeter's own failures are logged and the record is exported with what is
        known.
        """
        if self._finished:
            return
        self._finished = True
        end = _perf_ns()
        record = self.record
        try:
            self._apply_response(record, outcome, exc, end, fill, read)
        except Exception:
            if not swallowed("finishing the measurement"):
                raise
        complete(self.settings, record, self.span, self.parent)

    def _apply_response(
        self,
        record: CallRecord,
        outcome: Outcome,
        exc: BaseException | None,
        end: int,
        fill: Callable[[CallRecord], None] | None,
        read: Callable[[], Observed] | None,
    ) -> None:
        """Outcome, timings, and what the response or stream said (estimated when it said no usage)."""
        record.outcome = outcome
        if exc is not None and outcome is not Outcome.OK:
            record.error_type = error_type_of(exc)
        if outcome is Outcome.ABANDONED and self._t_last_chunk is not None:
            end = self._t_last_chunk  # the last moment the call was observed alive
        self._fill_timings(end)
        observed = None
        if fill is not None:
            with guard("reading the response"):
                fill(record)
        if read is not None:
            try:
                observed = read()
            except Exception:
                if not swallowed("reading the response"):
                    raise
        reader = self.reader
        if reader is not None:
            with guard("reading the stream"):
                observed = reader.result()
            if self._skimmed_from is not None and observed is not None:
                self._skimmed(observed)
        if observed is not None:
            apply_observed(record, observed)
        if record.rollup_calls:
            # Calls measured inside (a @metered function around an instrumented client): a
            # step over them, so that no token is counted twice.
            record.kind, record.usage = CallKind.STEP, None
        elif observed is not None and observed.usage is not None:
            record.kind = CallKind.LLM
        if record.usage is None and self._responded(outcome, read is not None):
            with guard("estimating tokens"):
                record.usage = estimate_usage(
                    record.response_model or record.request_model,
                    self.estimate_input,
                    observed.text() if observed is not None else None,
                    observed.output_chunks if observed is not None else None,
                )
        self._fill_tpot()

    def _skimmed(self, observed: Observed) -> None:
        """What a skimmed stream's reader saw is its first chunks and its tail: its text is partial,
        so an estimate counts output chunks instead. A stream left before its end (closed,
        abandoned, failed) had output in every chunk after the first: its last chunk is its last
        output."""
        observed.output_text = None
        skimmed_from = self._skimmed_from or 0
        if self._skim_output_chunks is None:
            self._skim_output_chunks = 1 + self.chunks - skimmed_from
            self._t_last_output = self._t_last_chunk
        elif observed.usage is None:
            self._remember_no_usage()
        observed.output_chunks = self._skim_output_chunks

    def _remember_no_usage(self) -> None:
        server = (self.record.server_address, self.record.server_port)
        if len(servers_without_stream_usage) < 1024:
            servers_without_stream_usage.add(server)
        log_once(
            f"stream-usage:{server}",
            "llmmeter: a stream from %s:%s ended without the usage it was asked for; its output tokens "
            "are estimated from its chunks, and its next streams are read whole",
            *server,
        )

    def _responded(self, outcome: Outcome, read_a_response: bool) -> bool:
        """Whether a response (whole, or at least one chunk) arrived: only then is usage estimated."""
        if self.record.kind is not CallKind.LLM or self.estimate_input is None:
            return False
        return self.chunks > 0 if self.record.streaming else read_a_response and outcome is Outcome.OK

    def _fill_timings(self, end: int) -> None:
        t0 = self._t0
        timings = self.record.timings
        timings.duration_s = (end - t0) / 1e9
        if self.record.streaming:
            timings.chunks = self.chunks
            if self._t_first_chunk is not None:
                timings.ttfc_s = (self._t_first_chunk - t0) / 1e9
            if self._t_first_output is not None:
                timings.ttft_s = (self._t_first_output - t0) / 1e9

    def _fill_tpot(self) -> None:
        record = self.record
        usage = record.usage
        if (
            not record.streaming
            or usage is None
            or usage.output_tokens is None
            or usage.output_tokens < 2
            or self._t_first_output is None
            or self._t_last_output is None
        ):
            return
        record.timings.tpot_s = (self._t_last_output - self._t_first_output) / 1e9 / (usage.output_tokens - 1)

    # --- roll-up of nested calls into a step ---------------------------------------------------
    def add_child(self, child: CallRecord) -> None:
        """Roll a finished inner call up into this (outer) measurement's record.

        Inner calls may finish on other threads (a thread pool inside a step), hence the lock.
        """
        lock = self._children_lock
        if lock is None:
            lock = self._children_lock = threading.Lock()
        with lock:
            record = self.record
            record.rollup_calls += child.rollup_calls if child.kind is CallKind.STEP else 1
            if child.kind is CallKind.STEP:
                record.rollup_unpriced_calls += child.rollup_unpriced_calls
                usage, cost = child.rollup_usage, child.rollup_cost
            else:
                usage = child.usage
                cost = child.cost.amount if child.cost is not None else None
                if child.cost is None and child.usage is not None:
                    record.rollup_unpriced_calls += 1
            if usage is not None:
                if record.rollup_usage is None:
                    record.rollup_usage = Usage(source=usage.source)
                record.rollup_usage.add(usage)
            if cost is not None:
                record.rollup_cost = (record.rollup_cost or Decimal(0)) + cost
