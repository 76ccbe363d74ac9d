"""Every measured generator is finished exactly once, with the outcome of how it ended.

The never-leak matrix: one test body per way a generator can end, run for every generator type
llmmeter measures -- ``@metered`` generator functions and async generator functions, and the
:class:`MeteredGenerator` / :class:`AsyncMeteredGenerator` proxies that SDK streams which are
plain generators are wrapped in. Each case checks that exactly one record exists afterwards (after
a garbage collection), that the outcome is the right one, and that the generator behaves as it
does unwrapped: values sent reach it, exceptions thrown in are raised inside it, closing runs its
``finally``, and its own exceptions come out as the same objects.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import llmmeter
from llmmeter.instrument.generators import AsyncMeteredGenerator, MeteredGenerator
from llmmeter.measure import Measurement, error_type_of
from llmmeter.record import CallRecord, Outcome

from .conftest import Telemetry

MODEL = "acme-chat-1"


class QuotaExceeded(Exception):
    """A provider error raised mid-stream."""


class Retry(Exception):
    """Thrown into a generator, which answers it with one more item."""


@dataclass
class Seen:
    """What the user's generator itself saw."""

    sent: list[Any] = field(default_factory=list)
    finally_ran: int = 0


def tokens(seen: Seen, n: int = 3, fail: BaseException | None = None) -> Iterator[str]:
    """The user's generator: ``n`` items; records what is sent in; answers a thrown ``Retry``
    with an extra item; raises ``fail`` after its items."""
    try:
        for i in range(n):
            try:
                sent = yield f"tok{i}"
            except Retry:
                sent = yield "retried"
            seen.sent.append(sent)
        if fail is not None:
            raise fail
        return "done"
    finally:
        seen.finally_ran += 1


async def atokens(
    seen: Seen, n: int = 3, fail: BaseException | None = None, hang: bool = False
) -> AsyncIterator[str]:
    """:func:`tokens` as an async generator; ``hang``: wait forever after the first item."""
    try:
        for i in range(n):
            await asyncio.sleep(0)
            try:
                sent = yield f"tok{i}"
            except Retry:
                sent = yield "retried"
            seen.sent.append(sent)
            if hang:
                await asyncio.Event().wait()
        if fail is not None:
            raise fail
    finally:
        seen.finally_ran += 1


def new_measurement() -> Measurement:
    record = CallRecord(operation="chat", provider="openai", request_model=MODEL, streaming=True)
    return Measurement(llmmeter.get_settings(), record)


# --- the generator types, driven through one async interface --------------------------------------


class Ended(Exception):
    """A sync generator's ``StopIteration``, carried out of a coroutine (which may not raise it)."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


def _step(method: Callable[..., Any], *args: Any) -> Any:
    try:
        return method(*args)
    except StopIteration as stop:
        raise Ended(stop.value) from None


class SyncDriver:
    """Drives a sync generator from the (async) test bodies."""

    is_async = False
    source: Callable[..., Any] = staticmethod(tokens)
    end_of_stream: type[BaseException] = Ended

    async def next(self, gen: Any) -> Any:
        return _step(next, gen)

    async def send(self, gen: Any, value: Any) -> Any:
        return _step(gen.send, value)

    async def throw(self, gen: Any, exc: BaseException) -> Any:
        return _step(gen.throw, exc)

    async def close(self, gen: Any) -> None:
        gen.close()

    async def drain(self, gen: Any) -> list[Any]:
        return list(gen)

    async def first_then_break(self, gen: Any) -> Any:
        for item in gen:
            return item
        return None

    async def interrupted(self, make: Callable[..., Any], seen: Seen) -> BaseException:
        """Ctrl-C inside the generator (a sync generator cannot be cancelled as a task)."""
        with pytest.raises(KeyboardInterrupt) as caught:
            list(make(seen, n=1, fail=KeyboardInterrupt()))
        return caught.value

    async def collect_garbage(self) -> None:
        gc.collect()


class AsyncDriver:
    """Drives an async generator."""

    is_async = True
    source: Callable[..., Any] = staticmethod(atokens)
    end_of_stream: type[BaseException] = StopAsyncIteration

    async def next(self, gen: Any) -> Any:
        return await gen.__anext__()

    async def send(self, gen: Any, value: Any) -> Any:
        return await gen.asend(value)

    async def throw(self, gen: Any, exc: BaseException) -> Any:
        return await gen.athrow(exc)

    async def close(self, gen: Any) -> None:
        await gen.aclose()

    async def drain(self, gen: Any) -> list[Any]:
        return [item async for item in gen]

    async def first_then_break(self, gen: Any) -> Any:
        async for item in gen:
            return item
        return None

    async def interrupted(self, make: Callable[..., Any], seen: Seen) -> BaseException:
        """The consuming task is cancelled while the generator waits."""
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in make(seen, hang=True):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
        return caught.value

    async def collect_garbage(self) -> None:
        for _ in range(3):  # the event loop closes a collected async generator in a task of its own
            gc.collect()
            await asyncio.sleep(0)


@dataclass
class Kind:
    """One measured generator type: how to make one around the user's generator function."""

    name: str
    driver: Any
    wrap: Callable[..., Any]
    dropped: Outcome | None
    """The outcome of a generator dropped unfinished (``None``: no record, it never started)."""
    dropped_unstarted: Outcome | None

    def make(self, seen: Seen, **kwargs: Any) -> Any:
        return self.wrap(self.driver.source, seen, **kwargs)

    def plain(self, seen: Seen, **kwargs: Any) -> Any:
        return self.driver.source(seen, **kwargs)


def _metered(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return llmmeter.metered(model=MODEL, provider="openai")(fn)(*args, **kwargs)


# A @metered generator function stays a generator function (frameworks check
# inspect.isgeneratorfunction), and Python closes a collected generator exactly as close() does:
# from inside, dropping and closing look the same, so a dropped one is recorded `aborted`. A
# generator whose body never ran made no call: nothing is recorded. The proxies tell the two
# apart (their measurement is watched by a finalizer) and record `abandoned`.
KINDS = [
    Kind("@metered generator", SyncDriver(), _metered, Outcome.ABORTED, None),
    Kind("@metered async generator", AsyncDriver(), _metered, Outcome.ABORTED, None),
    Kind(
        "MeteredGenerator",
        SyncDriver(),
        lambda fn, *a, **k: MeteredGenerator(fn(*a, **k), new_measurement()),
        Outcome.ABANDONED,
        Outcome.ABANDONED,
    ),
    Kind(
        "AsyncMeteredGenerator",
        AsyncDriver(),
        lambda fn, *a, **k: AsyncMeteredGenerator(fn(*a, **k), new_measurement()),
        Outcome.ABANDONED,
        Outcome.ABANDONED,
    ),
]


@pytest.fixture(params=KINDS, ids=[kind.name for kind in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


async def only_record(telemetry: Telemetry, kind: Kind) -> CallRecord:
    """The one record there is, after every finalizer had its chance to run."""
    await kind.driver.collect_garbage()
    (record,) = telemetry.records
    return record


# --- the matrix ---------------------------------------------------------------------------------


async def test_exhausted_generator_is_recorded_once_as_ok_with_every_item(
    kind: Kind, telemetry: Telemetry
) -> None:
    seen = Seen()
    items = await kind.driver.drain(kind.make(seen))

    assert items == ["tok0", "tok1", "tok2"]
    assert seen.finally_ran == 1
    record = await only_record(telemetry, kind)
    assert record.outcome is Outcome.OK
    assert record.streaming and record.timings.chunks == 3
    assert record.timings.ttfc_s is not None


async def test_closed_early_is_aborted_and_the_generators_finally_runs(
    kind: Kind, telemetry: Telemetry
) -> None:
    seen = Seen()
    gen = kind.make(seen)
    assert await kind.driver.next(gen) == "tok0"
    await kind.driver.close(gen)
    await kind.driver.close(gen)  # closing twice is harmless, as on a generator

    assert seen.finally_ran == 1
    with pytest.raises(kind.driver.end_of_stream):
        await kind.driver.next(gen)
    record = await only_record(telemetry, kind)
    assert record.outcome is Outcome.ABORTED
    assert record.timings.chunks == 1


async def test_break_then_close_is_aborted(kind: Kind, telemetry: Telemetry) -> None:
    seen = Seen()
    gen = kind.make(seen)
    assert await kind.driver.first_then_break(gen) == "tok0"
    await kind.driver.close(gen)

    assert seen.finally_ran == 1
    record = await only_record(telemetry, kind)
    assert record.outcome is Outcome.ABORTED


async def test_break_then_drop_is_recorded_once_when_collected(kind: Kind, telemetry: Telemetry) -> None:
    seen = Seen()
    gen = kind.make(seen)
    assert await kind.driver.first_then_break(gen) == "tok0"
    del gen

    record = await only_record(telemetry, kind)
    assert record.outcome is kind.dropped
    assert record.timings.chunks == 1
    assert seen.finally_ran == 1  # collecting the generator closed the user's generator too


async def test_partly_read_then_dropped_is_recorded_once_when_collected(
    kind: Kind, telemetry: Telemetry
) -> None:
    seen = Seen()
    gen = kind.make(seen)
    await kind.driver.next(gen)
    await kind.driver.send(gen, "hello")
    del gen

    record = await only_record(telemetry, kind)
    assert record.outcome is kind.dropped
    assert record.timings.chunks == 2
    assert seen.sent == ["hello"]


async def test_never_iterated_and_dropped_records_at_most_once_and_keeps_nothing_alive(
    kind: Kind, telemetry: Telemetry
) -> None:
    seen = Seen()
    kind.make(seen)

    await kind.driver.collect_garbage()
    records = telemetry.records
    if kind.dropped_unstarted is None:
        assert records == []
    else:
        (record,) = records
        assert record.outcome is kind.dropped_unstarted
        assert record.timings.chunks == 0 and record.timings.ttfc_s is None


async def test_interrupted_or_cancelled_is_aborted_and_the_interruption_propagates(
    kind: Kind, telemetry: Telemetry
) -> None:
    seen = Seen()
    raised = await kind.driver.interrupted(kind.make, seen)

    assert seen.finally_ran == 1
    record = await only_record(telemetry, kind)
    assert record.outcome is Outcome.ABORTED
    assert record.error_type == error_type_of(raised)


async def test_failure_mid_way_is_an_error_and_the_same_exception_object_propagates(
    kind: Kind, telemetry: Telemetry
) -> None:
    seen = Seen()
    failure = QuotaExceeded("cut mid-stream")
    gen = kind.make(seen, n=2, fail=failure)
    received = [await kind.driver.next(gen), await kind.driver.next(gen)]
    with pytest.raises(QuotaExceeded) as caught:
        await kind.driver.next(gen)

    assert received == ["tok0", "tok1"]
    assert caught.value is failure
    record = await only_record(telemetry, kind)
    assert record.outcome is Outcome.ERROR
    assert record.error_type == error_type_of(failure)
    assert record.timings.chunks == 2


# --- send / throw: the same as the unwrapped generator ----------------------------------------------


async def transcript(driver: Any, gen: Any, script: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Run ``script`` against ``gen``; what came back, step by step (exceptions by identity or,
    for the end of the stream, by the value they carry)."""
    steps: list[tuple[str, Any]] = []
    for op, arg in script:
        try:
            if op == "next":
                result = await driver.next(gen)
            elif op == "send":
                result = await driver.send(gen, arg)
            else:
                result = await driver.throw(gen, arg)
        except (Ended, StopAsyncIteration) as end:
            steps.append(("end", getattr(end, "value", None)))
        except Exception as exc:
            steps.append(("raised", exc))
        else:
            steps.append(("yielded", result))
    return steps


async def test_sent_and_thrown_values_reach_the_generator_and_its_answers_come_back(
    kind: Kind, telemetry: Telemetry
) -> None:
    retry = Retry()
    script = [("next", None), ("send", 5), ("throw", retry), ("send", 7), ("send", 9), ("next", None)]
    plain_seen, seen = Seen(), Seen()
    expected = await transcript(kind.driver, kind.plain(plain_seen), script)

    got = await transcript(kind.driver, kind.make(seen), script)

    assert got == expected
    returned = None if kind.driver.is_async else "done"  # async generators return no value
    items = [("yielded", "tok0"), ("yielded", "tok1"), ("yielded", "retried"), ("yielded", "tok2")]
    assert got[:5] == [*items, ("end", returned)]
    assert seen == plain_seen and seen.sent == [5, 7, 9]
    record = await only_record(telemetry, kind)
    assert record.outcome is Outcome.OK
    assert record.timings.chunks == 4


async def test_exception_thrown_in_and_not_caught_comes_back_out_as_the_same_object_and_is_an_error(
    kind: Kind, telemetry: Telemetry
) -> None:
    failure = QuotaExceeded("thrown in")
    script = [("next", None), ("throw", failure), ("next", None)]
    plain_seen, seen = Seen(), Seen()
    expected = await transcript(kind.driver, kind.plain(plain_seen), script)

    got = await transcript(kind.driver, kind.make(seen), script)

    assert got == expected == [("yielded", "tok0"), ("raised", failure), ("end", None)]
    assert seen.finally_ran == 1
    record = await only_record(telemetry, kind)
    assert record.outcome is Outcome.ERROR
    assert record.error_type == error_type_of(failure)


async def test_send_into_a_generator_that_ends_on_it_finishes_ok(kind: Kind, telemetry: Telemetry) -> None:
    seen = Seen()
    gen = kind.make(seen, n=1)
    await kind.driver.next(gen)
    with pytest.raises(kind.driver.end_of_stream):
        await kind.driver.send(gen, "last")

    assert seen.sent == ["last"]
    record = await only_record(telemetry, kind)
    assert record.outcome is Outcome.OK and record.timings.chunks == 1


# --- the proxies ---------------------------------------------------------------------------------


def test_generator_proxy_is_the_generator_to_isinstance_and_attributes() -> None:
    gen = tokens(Seen())
    proxy = MeteredGenerator(gen, None)

    assert isinstance(proxy, types.GeneratorType) and inspect.isgenerator(proxy)
    assert proxy.__wrapped__ is gen
    assert proxy.__name__ == "tokens" and proxy.gi_frame is gen.gi_frame
    assert list(proxy) == ["tok0", "tok1", "tok2"]


async def test_async_generator_proxy_is_the_async_generator_to_isinstance_and_attributes() -> None:
    gen = atokens(Seen())
    proxy = AsyncMeteredGenerator(gen, None)

    assert isinstance(proxy, types.AsyncGeneratorType) and inspect.isasyncgen(proxy)
    assert proxy.__wrapped__ is gen
    assert proxy.__name__ == "atokens" and proxy.ag_frame is gen.ag_frame
    assert [item async for item in proxy] == ["tok0", "tok1", "tok2"]


def test_a_lazily_started_measurement_starts_with_iteration_and_never_for_a_stream_never_read(
    telemetry: Telemetry,
) -> None:
    starts: list[Measurement] = []

    def start() -> Measurement:
        starts.append(new_measurement())
        return starts[-1]

    MeteredGenerator(tokens(Seen()), start=start)
    closed = MeteredGenerator(tokens(Seen()), start=start)
    closed.close()
    gc.collect()
    assert starts == [] and telemetry.records == []

    assert list(MeteredGenerator(tokens(Seen()), start=start)) == ["tok0", "tok1", "tok2"]
    (record,) = telemetry.records
    assert len(starts) == 1 and record.outcome is Outcome.OK


async def test_a_lazily_started_async_measurement_starts_with_iteration_and_never_for_a_stream_never_read(
    telemetry: Telemetry,
) -> None:
    starts: list[Measurement] = []

    def start() -> Measurement:
        starts.append(new_measurement())
        return starts[-1]

    AsyncMeteredGenerator(atokens(Seen()), start=start)
    closed = AsyncMeteredGenerator(atokens(Seen()), start=start)
    await closed.aclose()
    gc.collect()
    assert starts == [] and telemetry.records == []

    items = [item async for item in AsyncMeteredGenerator(atokens(Seen()), start=start)]
    assert items == ["tok0", "tok1", "tok2"]
    (record,) = telemetry.records
    assert len(starts) == 1 and record.outcome is Outcome.OK


TWINS = [
    ("__init__", "__init__"),
    ("__iter__", "__aiter__"),
    ("__next__", "__anext__"),
    ("send", "asend"),
    ("throw", "athrow"),
    ("close", "aclose"),
]


@pytest.mark.parametrize(("sync_name", "async_name"), TWINS)
def test_sync_and_async_generator_proxies_take_the_same_parameters(sync_name: str, async_name: str) -> None:
    sync_signature = inspect.signature(getattr(MeteredGenerator, sync_name))
    async_signature = inspect.signature(getattr(AsyncMeteredGenerator, async_name))

    assert sync_signature.parameters == async_signature.parameters
    if sync_name != "__iter__":  # Iterator vs AsyncIterator
        assert sync_signature.return_annotation == async_signature.return_annotation


def test_sync_and_async_generator_proxies_are_siblings_not_parent_and_child() -> None:
    assert not issubclass(AsyncMeteredGenerator, MeteredGenerator)
    assert not issubclass(MeteredGenerator, AsyncMeteredGenerator)


class _Countdown:
    """An async iterator that is not an async generator (no ``asend``/``athrow``)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __aiter__(self) -> _Countdown:
        return self

    async def __anext__(self) -> int:
        if self.n == 0:
            raise StopAsyncIteration
        self.n -= 1
        return self.n


def test_a_plain_iterator_behind_the_generator_proxy_is_measured_like_a_stream(telemetry: Telemetry) -> None:
    assert list(MeteredGenerator(iter(["a", "b"]), new_measurement())) == ["a", "b"]

    (record,) = telemetry.records
    assert record.outcome is Outcome.OK and record.timings.chunks == 2


async def test_a_plain_async_iterator_behind_the_async_generator_proxy_is_measured_like_a_stream(
    telemetry: Telemetry,
) -> None:
    assert [n async for n in AsyncMeteredGenerator(_Countdown(2), new_measurement())] == [1, 0]

    (record,) = telemetry.records
    assert record.outcome is Outcome.OK and record.timings.chunks == 2


def test_throwing_into_a_generator_never_iterated_raises_it_and_records_the_error(
    telemetry: Telemetry,
) -> None:
    seen = Seen()
    failure = QuotaExceeded("before the first item")
    proxy = MeteredGenerator(tokens(seen), new_measurement())

    with pytest.raises(QuotaExceeded) as caught:
        proxy.throw(failure)

    assert caught.value is failure
    assert list(proxy) == []
    (record,) = telemetry.records
    assert record.outcome is Outcome.ERROR and record.timings.chunks == 0
