"""``llmmeter prices show MODEL`` and ``llmmeter prices check FILE``.

:func:`add_subcommand` adds the ``prices`` command to the main CLI's argparse subparsers; each
subcommand sets ``func`` (``args.func(args) -> int``, the exit status).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from decimal import Decimal
from typing import Any, TextIO

from llmmeter.pricing.files import PriceFileError, check_price_file
from llmmeter.pricing.models import GpuHourPrice, ModelPrice
from llmmeter.pricing.registry import PricingRegistry
from llmmeter.pricing.sources import ResolvedPrice

__all__ = ["add_subcommand", "check_command", "show_command"]


def add_subcommand(subparsers: Any) -> None:
    """Add ``prices show`` and ``prices check`` to an ``argparse`` subparsers object."""
    prices = subparsers.add_parser("prices", help="show the price of a model, check a price file")
    commands = prices.add_subparsers(dest="prices_command", metavar="{show,check}", required=True)

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

    check = commands.add_parser("check", help="validate price files; print each problem with its location")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=check_command)


def show_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the price ``args.model`` resolves to; exit status 1 when it has none."""
    out = out or sys.stdout
    registry = PricingRegistry.default()
    try:
        for path in args.file:
            registry.load(path)
    except PriceFileError as exc:
        print(exc, file=out)
        return 2
    at = dt.datetime.combine(args.at, dt.time(12), tzinfo=dt.UTC) if args.at else None
    resolved = registry.lookup(args.model, provider=args.provider, at=at)
    if resolved is None:
        print(f"{args.model}: no price (calls would be recorded as 'unpriced')", file=out)
        return 1
    for line in describe(resolved):
        print(line, file=out)
    return 0


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


def describe(resolved: ResolvedPrice) -> list[str]:
    """Human-readable lines: what matched, how, the rates in force, provenance."""
    price = resolved.price
    lines = [
        f"model:      {resolved.requested_model}",
        f"priced as:  {resolved.ref}  (matched via {resolved.matched_via})",
    ]
    if isinstance(price, GpuHourPrice):
        lines += _gpu_lines(price)
    else:
        lines += _rate_lines(price)
    if price.effective_from or price.effective_to:
        lines.append(f"in force:   {price.effective_from or '...'} to {price.effective_to or 'now'}")
    lines.append(f"source:     {price.source_url or 'not given'}")
    lines.append(f"checked on: {price.checked_on or 'not given'}")
    if price.notes:
        lines.append(f"notes:      {price.notes}")
    return lines


def _rate_lines(price: ModelPrice) -> list[str]:
    lines = [f"rates ({price.currency} per 1M tokens):"]
    explicit = price.model_dump(exclude_none=True)
    for name, rate in price.rates().items():
        label = name.removesuffix("_per_mtok").replace("_", " ")
        fallback = "" if name in explicit else "  (fallback)"
        lines.append(f"  {label:<20} {_money(rate)}{fallback}")
    if price.per_request is not None:
        lines.append(f"  per request          {_money(price.per_request)}")
    if price.per_image is not None:
        lines.append(f"  per image            {_money(price.per_image)}")
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
