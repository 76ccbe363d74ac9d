"""What every provider adapter shares: the :class:`ResponseInfo` it fills and cheap field access.

Adapters read provider objects that arrive either as the SDK's pydantic models or as plain dicts
(decoded JSON). :func:`field` reads both without ever raising, and without pydantic's slow path:
a *missing* attribute on a pydantic v2 model goes through ``BaseModel.__getattr__``, which raises
and catches an ``AttributeError`` (about 5 µs each), far too slow for a per-call hot path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_
from typing import Any

from llmmeter.record import Cost, ServerTimings

__all__ = [
    "CountTable",
    "ResponseInfo",
    "field",
    "fields_of",
    "int_or_none",
    "items_of",
    "str_or_none",
    "sum_known",
]

_ABSENT: Any = object()
_NO_FIELDS: dict[str, Any] = {}


@dataclass(slots=True, frozen=True)
class ResponseInfo:
    """What a response says about itself, apart from token usage. ``None`` means *not reported*."""

    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: tuple[str, ...] | None = None
    """One reason per choice/candidate that reported one, in order (``stop``, ``length``...)."""
    service_tier: str | None = None
    provider_cost: Cost | None = None
    """What the response says the call cost (OpenRouter's ``usage.cost``), ``source="provider"``."""
    server_timings: ServerTimings | None = None
    """Timings the server reported about itself (Groq's ``queue_time``, ``prompt_time``...)."""


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` for a dict, ``obj.name`` otherwise; ``None`` when absent. Never raises."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, "__dict__", _NO_FIELDS).get(name, _ABSENT)
    if value is not _ABSENT:
        return value
    extra = getattr(obj, "__pydantic_extra__", _ABSENT)
    if extra is not _ABSENT:
        # A pydantic model: undeclared fields live here; never fall into its raising __getattr__.
        return extra.get(name) if extra else None
    return getattr(obj, name, None)


def fields_of(obj: Any) -> Mapping[str, Any]:
    """All fields of ``obj`` as one mapping, for reading many of them at dict speed.

    A dict is returned as is; a pydantic model gives its ``__dict__`` (declared fields) merged
    with its extras (fields an OpenAI-compatible server added); ``None`` gives an empty mapping.
    """
    if obj is None:
        return _NO_FIELDS
    if type(obj) is dict or isinstance(obj, dict):
        return obj
    values = getattr(obj, "__dict__", None)
    if values is None:
        return obj if isinstance(obj, Mapping) else _AttributeView(obj)
    extra = getattr(obj, "__pydantic_extra__", None)
    return {**values, **extra} if extra else values


class _AttributeView(Mapping[str, Any]):
    """Attribute access behind the ``Mapping.get`` interface, for objects without ``__dict__``."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self._obj, name)
        except AttributeError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class CountTable:
    """Where a provider's usage keeps each token count: ``(Usage field, index of the source
    mapping, provider key)`` rows, read by :meth:`read`."""

    __slots__ = ("_keys_by_source", "_targets", "rows")

    def __init__(self, *rows: tuple[str, int, str]) -> None:
        self.rows = rows
        by_source = sorted(rows, key=lambda row: row[1])
        self._targets = tuple(target for target, _, _ in by_source)
        self._keys_by_source = tuple(
            (source, tuple(key for _, _, key in group))
            for source, group in itertools.groupby(by_source, key=lambda row: row[1])
        )

    def read(self, sources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The counts found in ``sources``; values that are not ints are left out."""
        # Every step runs in C (map, zip, compress): this runs once per measured call, and a
        # comprehension over the rows costs a dozen bytecodes per row.
        values: list[Any] = []
        for source, keys in self._keys_by_source:
            values += map(sources[source].get, keys)
        are_ints = map(is_, map(type, values), repeat(int))
        return dict(compress(zip(self._targets, values, strict=True), are_ints))


def items_of(value: Any) -> Sequence[Any]:
    """A list or tuple as is; anything else (a server's odd value: a bool, a dict, a string) as no
    items, so that a reader never iterates what is not a sequence."""
    return value if isinstance(value, list | tuple) else ()


def int_or_none(value: Any) -> int | None:
    """A token count as ``int``; ``None`` for absent or non-numeric values (never a made-up 0)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def str_or_none(value: Any) -> str | None:
    """A string field as ``str`` (enum members by their value); ``None`` when absent."""
    if value is None:
        return None
    if type(value) is str:  # the common case; hasattr() on a str raises and catches internally
        return value
    if isinstance(value, str):
        return str(value.value) if hasattr(value, "value") else value
    inner = getattr(value, "value", None)
    return inner if isinstance(inner, str) else None


def sum_known(*values: int | None) -> int | None:
    """The sum of the reported values; ``None`` when none of them was reported."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None
