"""``llmmeter prices show MODEL``, ``prices list``, ``prices diff FILE`` and ``prices check FILE``.

:func:`add_subcommand` adds the ``prices`` command to the main CLI's argparse subparsers; each
subcommand sets ``func`` (``args.func(args) -> int``, the exit status).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TextIO

from llmmeter.pricing.files import PriceFileError, check_price_file, parse_price_file
from llmmeter.pricing.models import GpuHourPrice, ModelPrice, kind_of
from llmmeter.pricing.registry import _MAX_NAME, PricingRegistry, is_self_hosted, normalize_provider
from llmmeter.pricing.sources import (
    AnyPrice,
    BundledSource,
    PriceEntry,
    ResolvedPrice,
    bundled_table_date,
    is_pattern,
)

__all__ = [
    "STALE_AFTER_DAYS",
    "add_subcommand",
    "check_command",
    "describe",
    "diff_command",
    "list_command",
    "show_command",
    "staleness_warning",
    "why_unpriced",
]

STALE_AFTER_DAYS = 90
"""``prices show`` warns when the bundled table was last checked longer ago than this."""


def add_subcommand(subparsers: Any) -> None:
    """Add ``prices show`` and ``prices check`` to an ``argparse`` subparsers object."""
    prices = subparsers.add_parser("prices", help="show, list and diff prices, check a price file")
    commands = prices.add_subparsers(dest="prices_command", metavar="{show,list,diff,check}", required=True)

    show = commands.add_parser("show", help="print the rates in force for a model and where they come from")
    show.add_argument(
        "model", help="model name as the API reports it (snapshot, alias, ft:..., provider/...)"
    )
    show.add_argument(
        "--provider", help="gen_ai.provider.name of the call (openai, azure.ai.openai, groq...)"
    )
    show.add_argument(
        "--at", type=dt.date.fromisoformat, help="price on this day (YYYY-MM-DD), default today"
    )
    show.add_argument(
        "--file", action="append", default=[], metavar="FILE", help="also load this price file (repeatable)"
    )
    show.set_defaults(func=show_command)

    listing = commands.add_parser("list", help="list the priced models (bundled table and --file)")
    listing.add_argument("--provider", help="only this provider (openai, azure.ai.openai, aws.bedrock...)")
    listing.add_argument("--match", metavar="GLOB", help="only models matching this glob (gpt-5*)")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.add_argument(
        "--file", action="append", default=[], metavar="FILE", help="also list this price file (repeatable)"
    )
    listing.set_defaults(func=list_command)

    diff = commands.add_parser("diff", help="what loading a price file would change")
    diff.add_argument("file", metavar="FILE")
    diff.set_defaults(func=diff_command)

    check = commands.add_parser("check", help="validate price files; print each problem with its location")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=check_command)


def show_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the price ``args.model`` resolves to and how; exit status 1 when it has none.

    Any model string gets a clear answer, never a traceback: an odd name is unpriced (status 1),
    a failure is one ``error:`` line (status 2).
    """
    out = out or sys.stdout
    try:
        return _show(args, out)
    except PriceFileError as exc:
        _print_problems(exc, out)
        return 2
    except Exception as exc:  # an answer, never a traceback
        print(f"{_shown(args.model)}: error: {type(exc).__name__}: {_shown(str(exc))}", file=out)
        return 2


def _print_problems(error: PriceFileError, out: TextIO) -> None:
    """One ``error:`` line per problem of a price file."""
    for problem in error.problems:
        print(f"error: {_shown(str(problem), 400)}", file=out)


def _show(args: argparse.Namespace, out: TextIO) -> int:
    warning = staleness_warning(dt.datetime.now(dt.UTC).date())
    if warning:
        print(warning, file=out)
    registry = PricingRegistry.default()
    for path in args.file:
        registry.load(path)
    model, provider = args.model, args.provider
    at = dt.datetime.combine(args.at, dt.time(12), tzinfo=dt.UTC) if args.at else None
    resolved = registry.lookup(model, provider=provider, at=at)
    if resolved is None:
        print(f"{_shown(model)}: no price ({why_unpriced(registry, model, provider, at)})", file=out)
        return 1
    for line in describe(resolved, provider=provider):
        print(line, file=out)
    return 0


def staleness_warning(today: dt.date, checked: dt.date | None = None) -> str | None:
    """A one-line warning when the bundled table was last checked more than 90 days before ``today``."""
    checked = checked or bundled_table_date()
    if checked is None or (today - checked).days <= STALE_AFTER_DAYS:
        return None
    return (
        f"warning: the bundled price table was last checked on {checked} ({(today - checked).days} days "
        "ago): prices may have changed; upgrade llmmeter or load a price file with your current rates"
    )


def _answering(command: Callable[[argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    """Run a subcommand so that any failure is one ``error:`` line (status 2), never a traceback."""

    def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
        out = out or sys.stdout
        try:
            return command(args, out)
        except PriceFileError as exc:
            _print_problems(exc, out)
            return 2
        except Exception as exc:
            print(f"error: {type(exc).__name__}: {_shown(str(exc), 400)}", file=out)
            return 2

    run.__doc__ = command.__doc__
    return run


def _list(args: argparse.Namespace, out: TextIO) -> int:
    """Print the priced models, one per line (or a JSON list); status 1 when none matches."""
    entries = _listed_entries(args.file)
    provider = normalize_provider(args.provider) if args.provider else None
    pattern = args.match.lower() if args.match else None
    rows = sorted(
        (
            entry
            for entry in entries
            if (provider is None or entry.provider == provider)
            and (pattern is None or fnmatch.fnmatchcase(entry.model.lower(), pattern))
        ),
        key=lambda entry: (entry.provider or "", entry.model),
    )
    if not rows:
        print("no priced model matches", file=out)
        return 1
    if args.format == "json":
        print(json.dumps([_entry_json(entry) for entry in rows], indent=1), file=out)
    else:
        _print_table(rows, out)
    return 0


list_command = _answering(_list)


def _listed_entries(files: list[str]) -> list[PriceEntry]:
    entries: list[PriceEntry] = []
    for path in files:
        entries.extend(parse_price_file(path).entries)
    return entries + BundledSource().entries


_LIST_COLUMNS = ("provider", "model", "kind", "input", "cached", "output", "checked", "from")


def _entry_row(entry: PriceEntry) -> tuple[str, ...]:
    price = entry.price
    if isinstance(price, GpuHourPrice):
        rates = (f"{_money(price.hourly)}/h", "", "")
    else:
        cached = price.cached_input_per_mtok
        rates = (
            _money(price.input_per_mtok),
            "" if cached is None else _money(cached),
            _money(price.output_per_mtok),
        )
        if price.bills_media and not price.bills_tokens():
            rates = (_fee_summary(price), "", "")
    return (
        entry.provider or "any",
        _shown(entry.model, 70),
        kind_of(entry.model, price),
        *rates,
        str(price.checked_on or ""),
        (entry.origin or "").removeprefix("bundled/"),
    )


def _fee_summary(price: ModelPrice) -> str:
    if price.per_million_characters is not None:
        return f"{_money(price.per_million_characters)}/1M chars"
    if price.per_audio_minute is not None:
        return f"{_money(price.per_audio_minute)}/min"
    fee = price.per_image
    if fee is None and price.per_image_by_quality_size:
        fee = min(rate for sizes in price.per_image_by_quality_size.values() for rate in sizes.values())
    return "" if fee is None else f"{_money(fee)}/image"


def _training(entry: PriceEntry) -> str:
    """``300 USD/30d from 2026-11-01``: a fine-tune's declared training cost, or nothing."""
    price = entry.price
    if price.training_cost is None:
        return ""
    cost = f"{_plain(price.training_cost)} {price.currency}"
    return f"{cost}/{price.amortize_days}d from {price.amortization_start}"


def _print_table(entries: list[PriceEntry], out: TextIO) -> None:
    """The entries as aligned columns; a ``training`` column when one declares a training cost."""
    columns: tuple[str, ...] = _LIST_COLUMNS
    rows = [_entry_row(entry) for entry in entries]
    if any(entry.price.training_cost is not None for entry in entries):
        columns = (*columns, "training")
        rows = [(*row, _training(entry)) for row, entry in zip(rows, entries, strict=True)]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    for row in [columns, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out
        )
    print(f"{len(rows)} entries (rates in USD per million tokens unless a fee is shown)", file=out)


def _entry_json(entry: PriceEntry) -> dict[str, Any]:
    return {
        "model": entry.model,
        "provider": entry.provider,
        "kind": kind_of(entry.model, entry.price),
        "from": entry.origin,
        **entry.price.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
    }


def _diff(args: argparse.Namespace, out: TextIO) -> int:
    """Print what loading ``args.file`` would change; status 0 when it changes nothing, 1 otherwise."""
    document = parse_price_file(args.file)
    before = PricingRegistry.default()
    changes = 0
    for entry in document.entries:
        line = _entry_change(before, entry)
        if line is not None:
            changes += 1
            print(line, file=out)
    for name, target in document.aliases.items():
        old = before.lookup(name)
        was = "unpriced" if old is None else f"priced as {old.ref}"
        print(f"alias    {_shown(name)} -> {_shown(target)} (was {was})", file=out)
        changes += 1
    print(f"{args.file}: {changes} change(s), {len(document.entries)} entries", file=out)
    return 1 if changes else 0


diff_command = _answering(_diff)


def _entry_change(before: PricingRegistry, entry: PriceEntry) -> str | None:
    """One line for an entry that adds or changes a price (``None``: the same price as now)."""
    name = f"{entry.provider}/{entry.model}" if entry.provider else entry.model
    if is_pattern(entry.model):
        return f"pattern  {_shown(name)}: prices every model it matches that has no entry of its own"
    old = before.lookup(entry.model, provider=entry.provider)
    if old is None:
        return f"added    {_shown(name)}"
    changed = _changed_rates(old.price, entry.price)
    if not changed:
        return None
    return f"changed  {_shown(name)} (was {old.ref}): " + ", ".join(changed)


def _changed_rates(old: AnyPrice, new: AnyPrice) -> list[str]:
    if type(old) is not type(new):
        return [f"{type(old).__name__} -> {type(new).__name__}"]
    before = old.model_dump(exclude={"source_url", "checked_on", "notes", "kind"})
    after = new.model_dump(exclude={"source_url", "checked_on", "notes", "kind"})
    return [
        f"{field} {_value(before[field])} -> {_value(after[field])}"
        for field in after
        if before.get(field) != after[field]
    ]


def _value(value: Any) -> str:
    if isinstance(value, Decimal):
        return _money(value)
    if isinstance(value, dict):  # service tiers, an image table: their names
        return "{" + ", ".join(map(str, value)) + "}" if value else "none"
    if isinstance(value, tuple | list):  # prompt-size tiers
        return f"{len(value)} tier(s)" if value else "none"
    return "none" if value is None else _shown(str(value), 60)


def check_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Validate each file; print every problem as ``file:line: where: field: message``."""
    out = out or sys.stdout
    failed = False
    for path in args.files:
        problems = check_price_file(path)
        for problem in problems:
            print(problem, file=out)
        if problems:
            failed = True
            print(f"{path}: {len(problems)} problem(s)", file=out)
        else:
            print(f"{path}: OK", file=out)
    return 1 if failed else 0


_VIA = {
    "alias": "an alias names its target",
    "provider-prefix": "a provider prefix (openai/, anthropic/, azure/, groq/...) names the provider",
    "router-prefix": "a router or cloud prefix (openrouter/, litellm_proxy/, bedrock/, vertex_ai/) dropped",
    "resource-name": "a Bedrock ARN or a Vertex AI resource name around the model id",
    "router-variant": "an OpenRouter suffix billed at the base price (:thinking, :beta, :extended) dropped",
    "router-name": "OpenRouter's dotted Claude version (claude-3.5-haiku) is Anthropic's claude-3-5-haiku",
    "bedrock-id": "a Bedrock id (region., anthropic., -vN:M) is Anthropic's model name",
    "bedrock-region": "a Bedrock geographic profile (us., eu., apac....) bills the in-region id's price",
    "vertex-version": "a Vertex AI @version (claude-3-5-sonnet-v2@20241022) is Anthropic's dated name",
    "snapshot": "a dated (or -exp experimental) snapshot was priced as its family",
    "latest": "a -latest name is its family",
    "azure-name": "Azure's gpt-35 spelling is gpt-3.5",
    "fine-tune": "a fine-tune is priced at its base model's fine-tuned rate",
    "pattern": "a family pattern of the table matched",
}
"""What each step of ``ResolvedPrice.matched_via`` did, for ``prices show``."""


def describe(resolved: ResolvedPrice, *, provider: str | None = None) -> list[str]:
    """Human-readable lines: what matched, how, what was inferred, the rates in force, provenance."""
    price = resolved.price
    lines = [
        f"model:      {_shown(resolved.requested_model)}",
        f"priced as:  {resolved.ref}  (matched via {resolved.matched_via})",
        f"price ref:  {resolved.price_ref}  (Cost.price_ref of such a call)",
        f"kind:       {kind_of(resolved.model, price)}",
    ]
    lines += [
        f"resolved:   {_VIA.get(step, step)}" for step in resolved.matched_via.split("+") if step != "exact"
    ]
    if resolved.provider_inferred:
        lines.append(
            f"inferred:   provider {resolved.provider!r} from the model name ({_quoted(provider)} is a "
            "gateway, a proxy or an unknown host; declare the host's provider to price it exactly)"
        )
    elif provider is None and resolved.provider is not None:
        lines.append(
            f"provider:   {resolved.provider} (through a gateway or an unknown host, the same price, "
            f"marked ;inferred-provider={resolved.provider}; --provider shows a given host's price)"
        )
    if resolved.snapshot_inferred:
        lines.append(
            f"inferred:   no price for this snapshot: priced as its family {resolved.model!r} "
            "(register the snapshot's price if it differs)"
        )
    if isinstance(price, GpuHourPrice):
        lines += _gpu_lines(price)
    else:
        lines += _rate_lines(price)
    if price.effective_from or price.effective_to:
        lines.append(f"in force:   {price.effective_from or '...'} to {price.effective_to or 'now'}")
    if price.training_cost is not None and price.amortize_days is not None:
        daily = (price.training_cost / price.amortize_days).quantize(Decimal("1e-6")).normalize()
        lines.append(
            f"training:   {_plain(price.training_cost)} {price.currency} over {price.amortize_days} days "
            f"from {price.amortization_start} ({_plain(daily)} {price.currency} a day)"
        )
    lines.append(f"source:     {price.source_url or 'not given'}")
    lines.append(f"checked on: {price.checked_on or 'not given'}")
    if price.notes:
        lines.append(f"notes:      {price.notes}")
    return lines


def _plain(amount: Decimal) -> str:
    """``300``, ``0.15``: an amount without exponent or trailing zeros."""
    return f"{amount.normalize():f}"


def why_unpriced(registry: PricingRegistry, model: str, provider: str | None, at: dt.datetime | None) -> str:
    """Why ``model`` has no price on ``provider``, and what to do, in one line."""
    if not model.strip():
        return "an empty model name"
    if len(model) > _MAX_NAME:
        return f"a {len(model)}-character name: no price table has one longer than {_MAX_NAME}"
    if is_self_hosted(provider):
        return f"{_quoted(provider)} is a server you run: register its price (per token or per GPU-hour)"
    other = registry.lookup(model, at=at) if provider is not None else None
    if other is not None:
        return (
            f"priced for provider {other.provider!r}, not for {_quoted(provider)}: a host prices the same "
            "weights its own way; register a price for this provider"
        )
    org, _, rest = model.partition("/")
    if rest and org.lower() in {"openrouter", *_OPEN_WEIGHT_ORGS}:
        return (
            "an open-weight model through a router has no single list price: OpenRouter reports "
            "what it charged (usage.cost), which llmmeter keeps; or register a price"
        )
    return "calls would be recorded as 'unpriced'; register a price, load a price file or add an alias"


_OPEN_WEIGHT_ORGS = frozenset({"meta-llama", "qwen", "mistralai", "deepseek-ai", "nousresearch", "microsoft"})


def _quoted(text: str | None, limit: int = 40) -> str:
    """``'name'`` for a provider name from the command line, cut and escaped like :func:`_shown`."""
    if text is None:
        return "None"
    return repr(text) if len(text) <= limit else _shown(text, limit)


def _shown(text: str, limit: int = 80) -> str:
    """``text`` safe for one terminal line: control characters escaped, long names cut."""
    if text and text.isprintable() and len(text) <= limit:
        return text
    shown = repr(text[:limit])
    return shown + (f"... ({len(text)} characters)" if len(text) > limit else "")


def _rate_lines(price: ModelPrice) -> list[str]:
    if not price.bills_tokens():
        free = not (price.bills_media or price.per_request)
        return [
            "tokens:     not billed" + ("; every rate is 0: calls cost 0" if free else ""),
            *_fee_lines(price),
        ]
    lines = [f"rates ({price.currency} per 1M tokens):"]
    explicit = price.model_dump(exclude_none=True)
    for name, rate in price.rates().items():
        label = name.removesuffix("_per_mtok").replace("_", " ")
        fallback = "" if name in explicit else "  (fallback)"
        lines.append(f"  {label:<20} {_money(rate)}{fallback}")
    lines += _fee_lines(price)
    for tier in price.tiers:
        overrides = ", ".join(
            f"{k.removesuffix('_per_mtok')} {_money(v)}" for k, v in tier.overrides().items()
        )
        lines.append(f"  above {tier.above_input_tokens} input tokens: {overrides}")
    for name, service in price.service_tiers.items():
        parts = [f"x{service.factor}"] if service.factor != 1 else []
        parts += [f"{k.removesuffix('_per_mtok')} {_money(v)}" for k, v in service.overrides().items()]
        if service.exempt:
            parts.append("not scaled: " + ", ".join(e.removesuffix("_per_mtok") for e in service.exempt))
        lines.append(f"  service tier {name}: {'; '.join(parts)}")
    return lines


def _fee_lines(price: ModelPrice) -> list[str]:
    """Fees per request, per image (by quality and size), per audio minute, per 1M characters."""
    lines: list[str] = []
    if price.per_request is not None:
        lines.append(f"  per request          {_money(price.per_request)}")
    if price.per_image is not None:
        lines.append(f"  per image            {_money(price.per_image)}")
    if price.per_image_by_quality_size is not None:
        lines.append(f"per image ({price.currency}), by quality and size:")
        for quality, by_size in price.per_image_by_quality_size.items():
            sizes = "  ".join(f"{size} {_money(fee):<6}" for size, fee in by_size.items())
            lines.append(f"  {quality:<10} {sizes.rstrip()}")
        lines.append(
            f"  default    {price.default_image_quality or 'none'} quality, "
            f"{price.default_image_size or 'no'} size (a request naming none, or auto)"
        )
    if price.per_audio_minute is not None:
        minute = _money(price.per_audio_minute)
        lines.append(f"per audio minute:     {minute} {price.currency} (x the seconds reported / 60)")
    if price.per_million_characters is not None:
        lines.append(f"per 1M characters:    {_money(price.per_million_characters)} {price.currency}")
    return lines


def _gpu_lines(price: GpuHourPrice) -> list[str]:
    lines = [
        f"GPU-hour:   {_money(price.usd_per_gpu_hour)} {price.currency} x {price.gpu_count} GPU(s)"
        f" = {_money(price.hourly)} per hour",
    ]
    if price.tokens_per_second is not None:
        lines.append(f"throughput: {price.tokens_per_second} {price.throughput_counts} tokens/s (declared)")
    else:
        lines.append(f"busy time:  measured duration / concurrency {price.concurrency}")
    return lines


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f")
