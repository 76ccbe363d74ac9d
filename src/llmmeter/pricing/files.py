"""Price files (YAML or JSON): parsing and validation that names file, line, model and field.

A file is checked completely before anything from it is used: :func:`parse_price_file` either
returns every entry or raises :class:`PriceFileError` listing every problem. The schema is
documented in ``docs/pricing.md``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmmeter.pricing.models import GpuHourPrice, ModelPrice
from llmmeter.pricing.sources import AnyPrice, PriceEntry, compile_pattern, is_pattern

__all__ = [
    "PriceDocument",
    "PriceFileError",
    "Problem",
    "check_price_file",
    "parse_price_document",
    "parse_price_file",
    "parse_price_text",
]

SCHEMA_VERSION = 1
_TOP_LEVEL_KEYS = frozenset({"version", "provider", "defaults", "aliases", "models"})
_ENTRY_KEYS = frozenset({"model", "provider"})
# libyaml's parser when PyYAML was built with it (5x faster on the bundled table).
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a price file, with its location."""

    file: str
    message: str
    line: int | None = None
    where: str | None = None
    """Path inside the document: ``models[3]``, ``aliases.my-deployment``..."""
    model: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        location = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [location]
        if self.where:
            parts.append(self.where + (f" (model {self.model!r})" if self.model else ""))
        if self.field:
            parts.append(f"field {self.field!r}")
        return ": ".join(parts) + f": {self.message}"


class PriceFileError(ValueError):
    """A price file is malformed; nothing from it was loaded. ``problems`` lists every error."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{len(problems)} problem(s) in price file:\n{lines}")


@dataclass(frozen=True, slots=True)
class PriceDocument:
    """The validated content of one price file."""

    entries: tuple[PriceEntry, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Lines:
    """Line numbers of a YAML document's nodes (empty for JSON, which reports none)."""

    entries: list[int | None] = field(default_factory=list)
    fields: list[dict[str, int]] = field(default_factory=list)
    aliases: dict[str, int] = field(default_factory=dict)

    def entry(self, index: int) -> int | None:
        return self.entries[index] if index < len(self.entries) else None

    def field(self, index: int, name: str | None) -> int | None:
        """The line of one field of an entry (falls back to the entry's first line)."""
        if index < len(self.fields) and name is not None and name in self.fields[index]:
            return self.fields[index][name]
        return self.entry(index)


def parse_price_file(path: str | os.PathLike[str]) -> PriceDocument:
    """Read and validate a ``.yaml``/``.yml``/``.json`` price file, or raise :class:`PriceFileError`."""
    origin = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceFileError([Problem(file=origin, message=f"cannot read the file: {exc}")]) from exc
    return parse_price_text(text, origin=origin, json_format=origin.endswith(".json"))


def check_price_file(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem in a price file (empty when the file is valid)."""
    try:
        parse_price_file(path)
    except PriceFileError as exc:
        return exc.problems
    return []


def parse_price_text(text: str, *, origin: str, json_format: bool = False) -> PriceDocument:
    """Validate the text of a price file; ``origin`` names it in error messages."""
    try:
        if json_format:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PriceFileError(
                    [Problem(file=origin, line=exc.lineno, message=f"invalid JSON: {exc.msg}")]
                ) from exc
            return parse_price_document(data, origin=origin)
        data, lines = _load_yaml(text, origin)
        return parse_price_document(data, origin=origin, lines=lines)
    except RecursionError as exc:  # [[[[...]]]] a few thousand deep: no price file is nested so
        raise PriceFileError([Problem(file=origin, message="the document is nested too deeply")]) from exc


def _load_yaml(text: str, origin: str) -> tuple[Any, _Lines]:
    loader = _SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise PriceFileError(
            [Problem(file=origin, line=line, message=f"invalid YAML: {exc.problem}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise PriceFileError(
            [Problem(file=origin, message=f"invalid YAML: {' '.join(str(exc).split())}")]
        ) from exc
    finally:
        loader.dispose()
    return data, _yaml_lines(node)


def _yaml_lines(node: yaml.Node | None) -> _Lines:
    lines = _Lines()
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key_node, value_node in node.value:
        if key_node.value == "models" and isinstance(value_node, yaml.SequenceNode):
            lines.entries = [item.start_mark.line + 1 for item in value_node.value]
            lines.fields = [
                {str(k.value): k.start_mark.line + 1 for k, _ in item.value}
                if isinstance(item, yaml.MappingNode)
                else {}
                for item in value_node.value
            ]
        elif key_node.value == "aliases" and isinstance(value_node, yaml.MappingNode):
            lines.aliases = {str(k.value): k.start_mark.line + 1 for k, _ in value_node.value}
    return lines


def parse_price_document(data: Any, *, origin: str, lines: _Lines | None = None) -> PriceDocument:
    """Validate an already-parsed price document (a dict in the file schema)."""
    lines = lines or _Lines()
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise PriceFileError(
            [Problem(file=origin, message="the document must be a mapping with a 'models' list")]
        )
    for key in sorted(set(data) - _TOP_LEVEL_KEYS, key=str):
        problems.append(Problem(file=origin, where=str(key), message="unknown top-level key"))
    if data.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
        problems.append(
            Problem(file=origin, where="version", message=f"unsupported version (expected {SCHEMA_VERSION})")
        )
    file_provider = _optional_str(data.get("provider"), origin, "provider", problems)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(Problem(file=origin, where="defaults", message="must be a mapping"))
        defaults = {}
    entries = _parse_entries(data.get("models"), origin, file_provider, defaults, lines, problems)
    aliases = _parse_aliases(data.get("aliases"), origin, lines, problems)
    problems.extend(_overlaps(entries, origin))
    if problems:
        raise PriceFileError(problems)
    return PriceDocument(entries=tuple(entry for entry, _, _ in entries), aliases=aliases)


def _optional_str(value: Any, origin: str, where: str, problems: list[Problem]) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    problems.append(Problem(file=origin, where=where, message="must be a non-empty string"))
    return None


def _parse_entries(
    items: Any,
    origin: str,
    file_provider: str | None,
    defaults: dict[str, Any],
    lines: _Lines,
    problems: list[Problem],
) -> list[tuple[PriceEntry, str, int | None]]:
    if items is None:
        problems.append(Problem(file=origin, where="models", message="missing: the list of prices"))
        return []
    if not isinstance(items, list):
        problems.append(Problem(file=origin, where="models", message="must be a list of price entries"))
        return []
    parsed: list[tuple[PriceEntry, str, int | None]] = []
    for index, item in enumerate(items):
        where, line = f"models[{index}]", lines.entry(index)
        entry = _parse_entry(item, origin, where, index, lines, file_provider, defaults, problems)
        if entry is not None:
            parsed.append((entry, where, line))
    return parsed


def _parse_entry(
    item: Any,
    origin: str,
    where: str,
    index: int,
    lines: _Lines,
    file_provider: str | None,
    defaults: dict[str, Any],
    problems: list[Problem],
) -> PriceEntry | None:
    def problem(message: str, *, model: str | None = None, field_name: str | None = None) -> None:
        top_field = field_name.split(".", 1)[0] if field_name else None
        line = lines.field(index, top_field)
        problems.append(
            Problem(file=origin, line=line, where=where, model=model, field=field_name, message=message)
        )

    if not isinstance(item, dict):
        problem("must be a mapping with at least 'model', 'input_per_mtok' and 'output_per_mtok'")
        return None
    model = item.get("model")
    if not isinstance(model, str) or not model.strip():
        problem("missing or empty", field_name="model")
        return None
    if is_pattern(model):
        try:
            compile_pattern(model)
        except re.error as exc:
            problem(f"invalid pattern: {exc}", model=model, field_name="model")
            return None
    provider = item.get("provider", file_provider)
    if provider is not None and (not isinstance(provider, str) or not provider):
        problem("must be a non-empty string", model=model, field_name="provider")
        return None
    fields = {**defaults, **{k: v for k, v in item.items() if k not in _ENTRY_KEYS}}
    price_type: type[ModelPrice] | type[GpuHourPrice] = (
        GpuHourPrice if "usd_per_gpu_hour" in fields else ModelPrice
    )
    try:
        price: AnyPrice = price_type.model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors():
            field_name = ".".join(str(part) for part in error["loc"]) or None
            problem(error["msg"], model=model, field_name=field_name)
        return None
    return PriceEntry(model=model, price=price, provider=provider, origin=origin)


def _parse_aliases(raw: Any, origin: str, lines: _Lines, problems: list[Problem]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(Problem(file=origin, where="aliases", message="must be a mapping of name: target"))
        return {}
    aliases: dict[str, str] = {}
    for name, target in raw.items():
        where, line = f"aliases.{name}", lines.aliases.get(str(name))
        if not isinstance(name, str) or not isinstance(target, str) or not name or not target:
            problems.append(
                Problem(file=origin, line=line, where=where, message="name and target must be strings")
            )
        elif name == target:
            problems.append(
                Problem(file=origin, line=line, where=where, message="an alias cannot target itself")
            )
        else:
            aliases[name] = target
    for name in aliases:
        if _alias_cycle(name, aliases):
            problems.append(
                Problem(
                    file=origin, line=lines.aliases.get(name), where=f"aliases.{name}", message="alias cycle"
                )
            )
    return aliases


def _alias_cycle(start: str, aliases: Mapping[str, str]) -> bool:
    seen = {start}
    current = aliases.get(start)
    while current is not None:
        if current in seen:
            return True
        seen.add(current)
        current = aliases.get(current)
    return False


def _overlaps(entries: list[tuple[PriceEntry, str, int | None]], origin: str) -> list[Problem]:
    """Two prices for the same model and provider whose effective dates overlap are ambiguous."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str | None], list[PriceEntry]] = {}
    for entry, where, line in entries:
        earlier = seen.setdefault((entry.model, entry.provider), [])
        if any(_periods_overlap(entry.price, other.price) for other in earlier):
            problems.append(
                Problem(
                    file=origin,
                    line=line,
                    where=where,
                    model=entry.model,
                    field="effective_from",
                    message="another price for this model and provider is in force on the same days",
                )
            )
        earlier.append(entry)
    return problems


def _periods_overlap(a: AnyPrice, b: AnyPrice) -> bool:
    a_starts_before_b_ends = (
        b.effective_to is None or a.effective_from is None or a.effective_from < b.effective_to
    )
    b_starts_before_a_ends = (
        a.effective_to is None or b.effective_from is None or b.effective_from < a.effective_to
    )
    return a_starts_before_b_ends and b_starts_before_a_ends
