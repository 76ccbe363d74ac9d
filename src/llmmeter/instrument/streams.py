"""Stream proxies: the caller gets the SDK's stream back, measured, and otherwise untouched.

A proxy forwards everything to the wrapped stream (``isinstance(proxy, openai.Stream)`` holds,
``proxy.response`` works, ``__wrapped__`` is the SDK stream) and only adds bookkeeping to
iteration, ``close()`` and the context-manager protocol. Its measurement finishes exactly once:

* exhausted -> ``ok``; an exception from the SDK mid-stream -> ``error`` (the same exception
  object is re-raised, unmodified);
* ``close()`` or leaving ``with`` early -> ``aborted`` (``ok`` if the end had been reached);
* ``KeyboardInterrupt`` / task cancellation -> ``aborted``;
* dropped unfinished and garbage-collected -> ``abandoned``, via a ``weakref.finalize`` that holds
  the measurement, never the stream, so a stream that is never iterated keeps nothing alive.

The sync and async proxies are siblings, not parent and child: their iteration protocols differ
and sharing a base invites calling a sync method on an async stream.
"""

from __future__ import annotations

import weakref
from typing import Any

import wrapt

from llmmeter._log import guard
from llmmeter.measure import Measurement, outcome_of
from llmmeter.record import Outcome


def _is_usage_only(chunk: Any) -> bool:
    """The extra chunk OpenAI sends for ``include_usage``: no choices, only usage."""
    return not chunk.choices and chunk.usage is not None


class StreamBookkeeping:
    """State and end-of-stream logic shared by the sync and async proxies (stored on the proxy)."""

    _self_measurement: Measurement
    _self_iterator: Any
    _self_hide_usage_chunk: bool
    _self_exhausted: bool
    _self_finalizer: weakref.finalize[..., Any]

    def _self_setup(self, measurement: Measurement, hide_usage_chunk: bool) -> None:
        self._self_measurement = measurement
        self._self_iterator = None
        self._self_hide_usage_chunk = hide_usage_chunk
        self._self_exhausted = False
        # Holds the measurement, never the stream: an abandoned stream is still collectable.
        self._self_finalizer = weakref.finalize(self, measurement.finish, Outcome.ABANDONED)
        self._self_finalizer.atexit = False

    def _end(self, outcome: Outcome, exc: BaseException | None = None) -> None:
        self._self_finalizer.detach()
        self._self_measurement.finish(outcome, exc)

    def _self_closed_outcome(self) -> Outcome:
        return Outcome.OK if self._self_exhausted else Outcome.ABORTED


class MeteredStream(StreamBookkeeping, wrapt.BaseObjectProxy):  # type: ignore[misc,type-arg]
    """Measured proxy of a synchronous SDK stream (``openai.Stream``)."""

    def __init__(self, stream: Any, measurement: Measurement, *, hide_usage_chunk: bool = False) -> None:
        super().__init__(stream)
        self._self_setup(measurement, hide_usage_chunk)

    def __iter__(self) -> MeteredStream:
        # Iteration must come through __next__ below, not straight to the wrapped stream.
        return self

    def __next__(self) -> Any:
        iterator = self._self_iterator
        if iterator is None:
            iterator = self._self_iterator = iter(self.__wrapped__)
        measurement = self._self_measurement
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                self._self_exhausted = True
                self._end(Outcome.OK)
                raise
            except BaseException as exc:
                self._end(outcome_of(exc), exc)
                raise
            try:
                measurement.on_chunk(chunk)
            except Exception:
                with guard("reading a stream chunk"):
                    raise
            if self._self_hide_usage_chunk and _is_usage_only(chunk):
                continue  # the usage chunk llmmeter asked for and the caller did not
            return chunk

    def close(self) -> None:
        """Close the SDK stream, then finish: ``ok`` if its end was reached, else ``aborted``."""
        try:
            self.__wrapped__.close()
        except BaseException as exc:
            self._end(Outcome.ERROR, exc)
            raise
        self._end(self._self_closed_outcome())

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
    """Measured proxy of an asynchronous SDK stream (``openai.AsyncStream``)."""

    def __init__(self, stream: Any, measurement: Measurement, *, hide_usage_chunk: bool = False) -> None:
        super().__init__(stream)
        self._self_setup(measurement, hide_usage_chunk)

    def __aiter__(self) -> AsyncMeteredStream:
        return self

    async def __anext__(self) -> Any:
        iterator = self._self_iterator
        if iterator is None:
            iterator = self._self_iterator = self.__wrapped__.__aiter__()
        measurement = self._self_measurement
        while True:
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                self._self_exhausted = True
                self._end(Outcome.OK)
                raise
            except BaseException as exc:
                self._end(outcome_of(exc), exc)
                raise
            try:
                measurement.on_chunk(chunk)
            except Exception:
                with guard("reading a stream chunk"):
                    raise
            if self._self_hide_usage_chunk and _is_usage_only(chunk):
                continue
            return chunk

    async def close(self) -> None:
        """Close the SDK stream, then finish: ``ok`` if its end was reached, else ``aborted``."""
        try:
            await self.__wrapped__.close()
        except BaseException as exc:
            self._end(Outcome.ERROR, exc)
            raise
        self._end(self._self_closed_outcome())

    async def __aenter__(self) -> AsyncMeteredStream:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            await self.close()
            return
        self._end(outcome_of(exc), exc)
        with guard("closing the stream after an error"):
            await self.__wrapped__.close()
