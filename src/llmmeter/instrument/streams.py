"""Stream proxies: the caller gets the SDK's stream back, measured, and otherwise untouched.

A proxy forwards everything to the wrapped stream (``isinstance(proxy, openai.Stream)`` holds,
``proxy.response`` works, ``__wrapped__`` is the SDK stream) and only adds bookkeeping to
iteration, ``close()`` and the context-manager protocol. Its measurement finishes exactly once:

* exhausted -> ``ok``; an exception from the SDK mid-stream -> ``error`` (the same exception
  object is re-raised, unmodified);
* ``close()`` or leaving ``with`` early -> ``aborted`` (``ok`` if the end had been reached);
* ``KeyboardInterrupt`` / task cancellation -> ``aborted``;
* dropped unfinished and garbage-collected -> ``abandoned``, via a ``weakref.finalize`` that holds
  the measurement, never the stream, so a stream that is never iterated keeps nothing alive
  (on the proxy until iteration starts, then on the measuring generator, which the proxy holds
  and a ``for`` loop over a temporary proxy keeps alive).

``hidden`` marks chunks llmmeter asked for and the caller did not (the usage chunk added by
``include_usage``): they are read, never handed to the caller.

The sync and async proxies are siblings, not parent and child: their iteration protocols differ
and sharing a base invites calling a sync method on an async stream.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import wrapt

from llmmeter._log import guard
from llmmeter.measure import Measurement, abandonment_finalizer, outcome_of
from llmmeter.record import Outcome


class StreamBookkeeping:
    """State and end-of-stream logic shared by the sync and async proxies (stored on the proxy)."""

    _self_measurement: Measurement
    _self_chunks: Any
    _self_hidden: Any
    _self_finalizer: weakref.finalize[..., Any]

    def _self_setup(self, measurement: Measurement, hidden: Callable[[Any], bool] | None) -> None:
        self._self_measurement = measurement
        self._self_chunks = None
        self._self_hidden = hidden
        self._self_finalizer = abandonment_finalizer(self, measurement)

    def _self_watch(self, chunks: Any) -> Any:
        """From now on the stream is abandoned when ``chunks`` (the measuring generator) is
        collected unfinished: a ``for`` loop over a temporary proxy keeps only the generator."""
        self._self_finalizer.detach()
        self._self_finalizer = abandonment_finalizer(chunks, self._self_measurement)
        self._self_chunks = chunks
        return chunks

    def _end(self, outcome: Outcome, exc: BaseException | None = None) -> None:
        """Finish with ``outcome`` unless the stream already ended on its own (exhausted: ``ok``;
        failed: ``error``) -- a measurement finishes once."""
        self._self_finalizer.detach()
        self._self_measurement.finish(outcome, exc)


class MeteredStream(StreamBookkeeping, wrapt.BaseObjectProxy):  # type: ignore[misc,type-arg]
    """Measured proxy of a synchronous SDK stream (``openai.Stream``).

    ``iter(proxy)`` returns the measuring generator itself (the SDK's ``Stream.__iter__`` returns
    a generator too), so a ``for`` loop costs no proxy call per chunk; ``next(proxy)`` advances
    the same generator.
    """

    def __init__(
        self, stream: Any, measurement: Measurement, *, hidden: Callable[[Any], bool] | None = None
    ) -> None:
        super().__init__(stream)
        self._self_setup(measurement, hidden)

    def _self_iterator(self) -> Iterator[Any]:
        chunks = self._self_chunks
        if chunks is None:
            chunks = self._self_watch(
                self._self_measurement.observe(iter(self.__wrapped__), self._self_hidden)
            )
        return chunks  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        return self._self_iterator()

    def __next__(self) -> Any:
        return next(self._self_iterator())

    def close(self) -> None:
        """Close the SDK stream, then finish: ``ok`` if its end was reached, else ``aborted``."""
        try:
            self.__wrapped__.close()
        except BaseException as exc:
            self._end(Outcome.ERROR, exc)
            raise
        self._end(Outcome.ABORTED)

    def __enter__(self) -> MeteredStream:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
            return
        self._end(outcome_of(exc), exc)  # the user's exception wins over a failing close()
        with guard("closing the stream after an error"):
            self.__wrapped__.close()


class AsyncMeteredStream(StreamBookkeeping, wrapt.BaseObjectProxy):  # type: ignore[misc,type-arg]
    """Measured proxy of an asynchronous SDK stream (``openai.AsyncStream``); ``aiter(proxy)``
    is the measuring async generator (see :class:`MeteredStream`)."""

    def __init__(
        self, stream: Any, measurement: Measurement, *, hidden: Callable[[Any], bool] | None = None
    ) -> None:
        super().__init__(stream)
        self._self_setup(measurement, hidden)

    def _self_iterator(self) -> AsyncIterator[Any]:
        chunks = self._self_chunks
        if chunks is None:
            chunks = self._self_watch(
                self._self_measurement.observe_async(self.__wrapped__.__aiter__(), self._self_hidden)
            )
        return chunks  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._self_iterator()

    async def __anext__(self) -> Any:
        return await self._self_iterator().__anext__()

    async def close(self) -> None:
        """Close the SDK stream, then finish: ``ok`` if its end was reached, else ``aborted``."""
        try:
            await self.__wrapped__.close()
        except BaseException as exc:
            self._end(Outcome.ERROR, exc)
            raise
        self._end(Outcome.ABORTED)

    async def __aenter__(self) -> AsyncMeteredStream:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            await self.close()
            return
        self._end(outcome_of(exc), exc)
        with guard("closing the stream after an error"):
            await self.__wrapped__.close()
