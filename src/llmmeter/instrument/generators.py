"""Measured proxies of generators and async generators: one stream, one record, finished once.

:class:`MeteredGenerator` and :class:`AsyncMeteredGenerator` wrap a generator (an SDK stream that
is a plain generator, as Google Gen AI's and Ollama's are; vLLM's ``AsyncLLM.generate``) and hand
it back measured and otherwise untouched: ``isinstance(proxy, types.GeneratorType)`` holds,
attributes (``gi_frame``, ``__name__``...) are the generator's, ``__wrapped__`` is the generator.
The consumer may iterate, ``send()``/``asend()``, ``throw()``/``athrow()`` and
``close()``/``aclose()`` exactly as on the generator itself: values sent reach it and what it
yields back comes out; a thrown exception is raised inside it; closing runs its ``finally``. The
record is finished exactly once:

* exhausted -> ``ok``; an exception out of the generator (thrown in or its own) -> ``error``, the
  same exception object re-raised; ``close()``/``aclose()`` before the end, ``KeyboardInterrupt``
  or task cancellation -> ``aborted``;
* dropped unfinished and garbage-collected -> ``abandoned``, via
  :func:`~llmmeter.measure.abandonment_finalizer` (on the proxy until iteration starts, then on
  the measuring generator, which a ``for`` loop over a temporary proxy keeps alive).

``iter(proxy)`` / ``aiter(proxy)`` is the measuring generator itself
(:meth:`~llmmeter.measure.Measurement.observe_generator`), so a ``for`` loop resumes one
generator frame per chunk and calls no proxy method.

A measurement may start lazily: ``start=`` is called when iteration starts (vLLM submits a
request only when its generator is first awaited, so a generator never iterated records nothing).

The sync and async proxies are siblings, not parent and child (their protocols differ; a shared
base invites calling a sync method on an async generator); a test keeps their signatures equal.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import wrapt

from llmmeter._log import guard
from llmmeter.measure import Measurement, abandonment_finalizer, outcome_of
from llmmeter.record import Outcome

__all__ = ["AsyncMeteredGenerator", "MeteredGenerator"]

StartMeasurement = Callable[[], Measurement | None]
"""Creates the measurement when iteration starts (``None``: do not measure this one)."""


class _GeneratorBookkeeping:
    """State shared by the two proxies (stored on the proxy, not on the generator)."""

    __wrapped__: Any
    _self_measurement: Measurement | None
    _self_start: StartMeasurement | None
    _self_chunks: Any
    _self_finalizer: weakref.finalize[..., Any] | None

    def _self_setup(self, measurement: Measurement | None, start: StartMeasurement | None) -> None:
        self._self_measurement = measurement
        self._self_start = start
        self._self_chunks = None
        self._self_finalizer = None
        if measurement is not None:
            self._self_finalizer = abandonment_finalizer(self, measurement)

    def _self_started_measurement(self) -> Measurement | None:
        """The measurement, started now if it starts lazily (once)."""
        start, self._self_start = self._self_start, None
        if start is not None and self._self_measurement is None:
            with guard("starting a measurement"):
                self._self_measurement = start()
        return self._self_measurement

    def _self_watch(self, chunks: Any, measurement: Measurement) -> Any:
        """From now on the stream is abandoned when ``chunks`` (the measuring generator) is
        collected unfinished: a ``for`` loop over a temporary proxy keeps only ``chunks``."""
        if self._self_finalizer is not None:
            self._self_finalizer.detach()
        self._self_finalizer = abandonment_finalizer(chunks, measurement)
        self._self_chunks = chunks
        return chunks

    def _self_end(self, outcome: Outcome, exc: BaseException | None = None) -> None:
        """Finish with ``outcome`` unless the generator already ended on its own; a stream
        that ends before iteration started (closed, thrown into) never starts a measurement."""
        self._self_start = None
        if self._self_finalizer is not None:
            self._self_finalizer.detach()
        if self._self_measurement is not None:
            self._self_measurement.finish(outcome, exc)


class MeteredGenerator(_GeneratorBookkeeping, wrapt.BaseObjectProxy):  # type: ignore[misc,type-arg]
    """Measured proxy of a generator (see the module docstring).

    Args:
        generator: the generator to measure (any iterator works; without ``send``/``throw`` it
            is iterated with :meth:`~llmmeter.measure.Measurement.observe`).
        measurement: the measurement to drive, already started.
        start: instead of ``measurement``: makes it when iteration starts.
    """

    def __init__(
        self,
        generator: Any,
        measurement: Measurement | None = None,
        *,
        start: StartMeasurement | None = None,
    ) -> None:
        super().__init__(generator)
        self._self_setup(measurement, start)

    def _self_iterator(self) -> Iterator[Any]:
        chunks = self._self_chunks
        if chunks is None:
            chunks = self._self_begin()
        return chunks  # type: ignore[no-any-return]

    def _self_begin(self) -> Iterator[Any]:
        generator = self.__wrapped__
        measurement = self._self_started_measurement()
        if measurement is None:
            self._self_chunks = generator
            return generator  # type: ignore[no-any-return]
        chunks: Iterator[Any]
        if hasattr(generator, "send"):
            chunks = measurement.observe_generator(generator)
        else:
            chunks = measurement.observe(iter(generator))
        return self._self_watch(chunks, measurement)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        return self._self_iterator()

    def __next__(self) -> Any:
        return next(self._self_iterator())

    def send(self, value: Any) -> Any:
        """Send ``value`` into the generator; returns what it yields next (timed as a chunk)."""
        return self._self_iterator().send(value)  # type: ignore[attr-defined]

    def throw(self, *args: Any) -> Any:
        """Raise an exception inside the generator (``throw(exc)``, or the legacy 3-argument
        form); returns what it yields next, or ends the record with the outcome it ends with."""
        chunks = self._self_chunks
        target = chunks if chunks is not None else self.__wrapped__
        try:
            return target.throw(*args)
        except StopIteration:
            self._self_end(Outcome.OK)
            raise
        except BaseException as exc:
            self._self_end(outcome_of(exc), exc)
            raise

    def close(self) -> Any:
        """Close the generator (its ``finally`` runs); finish ``aborted`` unless it had ended."""
        chunks = self._self_chunks
        try:
            result = chunks.close() if chunks is not None and chunks is not self.__wrapped__ else None
            wrapped_result = self.__wrapped__.close()
        except BaseException as exc:
            self._self_end(outcome_of(exc), exc)
            raise
        self._self_end(Outcome.ABORTED)
        return result if result is not None else wrapped_result


class AsyncMeteredGenerator(_GeneratorBookkeeping, wrapt.BaseObjectProxy):  # type: ignore[misc,type-arg]
    """Measured proxy of an async generator (see the module docstring and
    :class:`MeteredGenerator`; the arguments are the same)."""

    def __init__(
        self,
        generator: Any,
        measurement: Measurement | None = None,
        *,
        start: StartMeasurement | None = None,
    ) -> None:
        super().__init__(generator)
        self._self_setup(measurement, start)

    def _self_iterator(self) -> AsyncIterator[Any]:
        chunks = self._self_chunks
        if chunks is None:
            chunks = self._self_begin()
        return chunks  # type: ignore[no-any-return]

    def _self_begin(self) -> AsyncIterator[Any]:
        generator = self.__wrapped__
        measurement = self._self_started_measurement()
        if measurement is None:
            self._self_chunks = generator
            return generator  # type: ignore[no-any-return]
        chunks: AsyncIterator[Any]
        if hasattr(generator, "asend"):
            chunks = measurement.observe_async_generator(generator)
        else:
            chunks = measurement.observe_async(generator.__aiter__())
        return self._self_watch(chunks, measurement)  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._self_iterator()

    async def __anext__(self) -> Any:
        return await self._self_iterator().__anext__()

    async def asend(self, value: Any) -> Any:
        """Send ``value`` into the generator; returns what it yields next (timed as a chunk)."""
        return await self._self_iterator().asend(value)  # type: ignore[attr-defined]

    async def athrow(self, *args: Any) -> Any:
        """Raise an exception inside the generator (``athrow(exc)``, or the legacy 3-argument
        form); returns what it yields next, or ends the record with the outcome it ends with."""
        chunks = self._self_chunks
        target = chunks if chunks is not None else self.__wrapped__
        try:
            return await target.athrow(*args)
        except StopAsyncIteration:
            self._self_end(Outcome.OK)
            raise
        except BaseException as exc:
            self._self_end(outcome_of(exc), exc)
            raise

    async def aclose(self) -> Any:
        """Close the generator (its ``finally`` runs); finish ``aborted`` unless it had ended."""
        chunks = self._self_chunks
        try:
            if chunks is not None and chunks is not self.__wrapped__:
                await chunks.aclose()
            await self.__wrapped__.aclose()
        except BaseException as exc:
            self._self_end(outcome_of(exc), exc)
            raise
        self._self_end(Outcome.ABORTED)
