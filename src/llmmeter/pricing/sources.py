"""Price sources: where a :class:`~llmmeter.pricing.PricingRegistry` finds a model's price.

A source answers one question: *what did ``model`` on ``provider`` cost on day ``at``?* The
registry asks its sources in precedence order with each name a model can go by (see
``docs/pricing.md``), so a source only needs exact and pattern matching. Everything here is
offline: a source reads what it was given, never the network.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Protocol, runtime_checkable

from llmmeter.pricing.models import GpuHourPrice, ModelPrice

__all__ = [
    "INFERRED_MARK",
    "AnyPrice",
    "BundledSource",
    "DictSource",
    "FileSource",
    "GpuHourSource",
    "PriceEntry",
    "PriceSource",
    "ResolvedPrice",
    "TableSource",
    "bundled_table_date",
    "is_inferred_price",
    "is_pattern",
]

AnyPrice = ModelPrice | GpuHourPrice


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    """A price found for a call, with where it came from (for ``Cost.price_ref`` and audits)."""

    price: AnyPrice
    model: str
    """The table key that matched: a name, a glob (``gpt-4o-*``) or ``re:<regex>``."""
    provider: str | None
    source: str
    """The source's label: ``bundled``, ``user``, ``file:/path/prices.yaml``..."""
    requested_model: str = ""
    """The model name the lookup started from."""
    matched_via: str = "exact"
    """How the name was matched: ``exact``, ``alias``, ``resource-name``, ``router-prefix``,
    ``router-variant``, ``provider-prefix``, ``bedrock-id``, ``router-name``, ``vertex-version``,
    ``snapshot``, ``latest``, ``azure-name``, ``fine-tune``, ``pattern`` (joined with ``+``)."""
    provider_inferred: bool = False
    """The call's provider was not known (a gateway, a proxy, ``openai_compatible``): the
    provider priced (:attr:`provider`) was inferred from the model name."""
    snapshot_inferred: bool = False
    """The model is a dated snapshot no layer knows: it was priced as its family (:attr:`model`)."""

    @property
    def ref(self) -> str:
        """A stable reference to the price applied, e.g. ``bundled:openai/gpt-4o-mini``."""
        key = f"{self.provider}/{self.model}" if self.provider else self.model
        when = f"@{self.price.effective_from.isoformat()}" if self.price.effective_from else ""
        return f"{self.source}:{key}{when}"

    @property
    def inferred(self) -> bool:
        """Whether the price rests on an inference (the provider, or the snapshot's family)."""
        return self.provider_inferred or self.snapshot_inferred

    @property
    def price_ref(self) -> str:
        """:attr:`ref` plus how the name was resolved, as ``Cost.price_ref`` carries it.

        ``bundled:openai/gpt-4o-mini;via=router-prefix+provider-prefix;inferred-provider=openai``:
        ``;via=`` when the name was not matched as given, ``;inferred-provider=P`` and
        ``;inferred-snapshot=FAMILY`` when the price was inferred (``INFERRED_MARK`` finds both).
        """
        parts = [self.ref]
        if self.matched_via != "exact":
            parts.append(f"via={self.matched_via}")
        if self.provider_inferred:
            parts.append(f"inferred-provider={self.provider}")
        if self.snapshot_inferred:
            parts.append(f"inferred-snapshot={self.model}")
        return ";".join(parts)


INFERRED_MARK = ";inferred-"
"""In a ``Cost.price_ref``: the price was inferred (``ref.find(INFERRED_MARK) >= 0``)."""


def is_inferred_price(price_ref: str | None) -> bool:
    """Whether a ``Cost.price_ref`` names an inferred price (provider or snapshot family)."""
    return price_ref is not None and INFERRED_MARK in price_ref


@runtime_checkable
class PriceSource(Protocol):
    """Anything that can price a model: a company catalogue, a database, a negotiated table.

    ``lookup`` is called with each candidate name of a model in turn (the registry already
    handles aliases, router and cloud spellings, provider prefixes, snapshots, ``-latest`` and
    fine-tunes), and with ``provider`` normalized to the bundled table's keys (``openai``,
    ``anthropic``, ``google``, ``mistral``, ``deepseek``, ``xai``, ``groq``, ``together``,
    ``fireworks``, ``bedrock``), another provider's name as the call gave it (``vllm``,
    ``openai_compatible``...), or ``None`` (any provider: for a call through a gateway, the
    registry keeps an answer whose provider is none or a model maker, and marks it inferred).
    Return ``None`` when the source has no price; never raise for an unknown model. Results are
    cached by the registry until it changes (:meth:`PricingRegistry.clear_cache`).
    """

    def lookup(self, model: str, provider: str | None, at: dt.datetime) -> ResolvedPrice | None:
        """The price of ``model`` in force at ``at``, or ``None``."""
        ...


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One row of a price table: a model name (or pattern), an optional provider, a price."""

    model: str
    price: AnyPrice
    provider: str | None = None
    origin: str | None = None
    """The file the entry was read from (``bundled/openai.yaml``), if any."""


def is_pattern(name: str) -> bool:
    """Whether a table key is a family pattern (glob or ``re:``) rather than one name."""
    return name.startswith("re:") or any(ch in name for ch in "*?[")


def compile_pattern(name: str) -> re.Pattern[str]:
    """The regex a table key stands for (raises ``re.error`` on a bad ``re:`` pattern)."""
    if name.startswith("re:"):
        return re.compile(name[3:])
    return re.compile(fnmatch.translate(name))


def _specificity(name: str) -> int:
    # The more literal characters a pattern has, the narrower the family it names.
    body = name[3:] if name.startswith("re:") else name
    return sum(1 for ch in body if ch.isalnum() or ch in "-_./:")


class TableSource:
    """An in-memory price table with exact names and family patterns.

    Exact names win over patterns; among patterns the most specific (most literal
    characters) wins; among equals, the first in the table.
    """

    def __init__(self, entries: Iterable[PriceEntry], *, label: str) -> None:
        self.label = label
        self._exact: dict[str, list[PriceEntry]] = {}
        patterns: list[tuple[int, int, re.Pattern[str], PriceEntry]] = []
        for position, entry in enumerate(entries):
            if is_pattern(entry.model):
                patterns.append((-_specificity(entry.model), position, compile_pattern(entry.model), entry))
            else:
                self._exact.setdefault(entry.model, []).append(entry)
        patterns.sort(key=lambda item: (item[0], item[1]))
        self._patterns = [(regex, entry) for _, _, regex, entry in patterns]

    @property
    def entries(self) -> list[PriceEntry]:
        """Every entry of the table (exact names first)."""
        exact = [entry for entries in self._exact.values() for entry in entries]
        return exact + [entry for _, entry in self._patterns]

    def lookup(self, model: str, provider: str | None, at: dt.datetime) -> ResolvedPrice | None:
        """The price of exactly ``model`` (or of a pattern matching it) in force at ``at``."""
        day = at.astimezone(dt.UTC).date() if at.tzinfo else at.date()
        for entry in self._exact.get(model, ()):
            if _fits(entry, provider, day):
                return self._resolved(entry, model, "exact")
        for regex, entry in self._patterns:
            if regex.fullmatch(model) and _fits(entry, provider, day):
                return self._resolved(entry, model, "pattern")
        return None

    def _resolved(self, entry: PriceEntry, model: str, via: str) -> ResolvedPrice:
        return ResolvedPrice(
            price=entry.price,
            model=entry.model,
            provider=entry.provider,
            source=self.label,
            requested_model=model,
            matched_via=via,
        )


def _fits(entry: PriceEntry, provider: str | None, day: dt.date) -> bool:
    if provider is not None and entry.provider is not None and entry.provider != provider:
        return False
    return entry.price.in_force(day)


class DictSource(TableSource):
    """Prices given in code: ``{"model": ModelPrice(...)}`` or a price-file document (a dict)."""

    def __init__(
        self,
        prices: Mapping[str, AnyPrice] | Mapping[str, object],
        *,
        provider: str | None = None,
        label: str = "dict",
    ) -> None:
        from llmmeter.pricing.files import parse_price_document

        if all(isinstance(value, ModelPrice | GpuHourPrice) for value in prices.values()):
            entries = [
                PriceEntry(model=name, price=price, provider=provider)  # type: ignore[arg-type]
                for name, price in prices.items()
            ]
            self.aliases: dict[str, str] = {}
        else:
            document = parse_price_document(dict(prices), origin=label)
            entries = list(document.entries)
            self.aliases = dict(document.aliases)
        super().__init__(entries, label=label)


class FileSource(TableSource):
    """Prices read once from a YAML or JSON price file (all-or-nothing, see ``files.py``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from llmmeter.pricing.files import parse_price_file

        self.path = Path(path).resolve()
        document = parse_price_file(self.path)
        self.aliases = dict(document.aliases)
        super().__init__(document.entries, label=f"file:{self.path}")


class GpuHourSource(TableSource):
    """Self-hosted models priced by GPU time: ``{"meta-llama/Llama-3.1-8B-Instruct": GpuHourPrice(...)}``.

    Keys may be patterns (``"meta-llama/*"``). Register it with
    :meth:`PricingRegistry.add_source`; pass ``provider="vllm"`` to restrict it to calls whose
    ``gen_ai.provider.name`` is ``vllm``.
    """

    def __init__(
        self, prices: Mapping[str, GpuHourPrice], *, provider: str | None = None, label: str = "gpu-hour"
    ) -> None:
        super().__init__(
            [PriceEntry(model=name, price=price, provider=provider) for name, price in prices.items()],
            label=label,
        )


GENERATED_PREFIX = "reference-"
"""Bundled files named ``reference-*.json`` are written by ``python -m llmmeter.pricing.regen``
from the reference tables; the ``*.yaml`` files beside them are curated by hand."""


@cache
def _bundled_document(
    include_generated: bool = True,
) -> tuple[tuple[PriceEntry, ...], tuple[tuple[str, str], ...]]:
    """Parse the price files shipped in ``llmmeter/pricing/data`` once per process.

    Curated files come first, so a curated entry is found before a generated one of the same name.
    """
    from llmmeter.pricing.files import parse_price_text

    entries: list[PriceEntry] = []
    aliases: list[tuple[str, str]] = []
    for item in _bundled_files(include_generated):
        document = parse_price_text(
            item.read_text(encoding="utf-8"),
            origin=f"bundled/{item.name}",
            json_format=item.name.endswith(".json"),
        )
        entries.extend(document.entries)
        aliases.extend(document.aliases.items())
    return tuple(entries), tuple(aliases)


def _bundled_files(include_generated: bool) -> list[Traversable]:
    data_dir = resources.files("llmmeter.pricing") / "data"
    files = [item for item in data_dir.iterdir() if item.name.endswith((".yaml", ".yml", ".json"))]
    curated = sorted((item for item in files if not item.name.startswith(GENERATED_PREFIX)), key=_name)
    generated = sorted((item for item in files if item.name.startswith(GENERATED_PREFIX)), key=_name)
    return curated + generated if include_generated else curated


def _name(item: Traversable) -> str:
    return item.name


def bundled_table_date() -> dt.date | None:
    """The newest ``checked_on`` of the bundled table: when its prices were last checked."""
    entries, _ = _bundled_document()
    return max((entry.price.checked_on for entry in entries if entry.price.checked_on), default=None)


class BundledSource(TableSource):
    """The price table shipped with llmmeter (parsed once per process, no network).

    ``include_generated=False``: the curated files only (what the table generator starts from).
    """

    def __init__(self, *, include_generated: bool = True) -> None:
        entries, aliases = _bundled_document(include_generated)
        self.aliases = dict(aliases)
        super().__init__(entries, label="bundled")
