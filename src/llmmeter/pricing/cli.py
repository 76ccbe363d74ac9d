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
from llmmeter.pricing.registry import _MAX_NAME, PricingRegistry, is_self_hosted
from llmmeter.pricing.sources import ResolvedPrice

__all__ = ["add_subcommand", "check_command", "describe", "show_command", "why_unpriced"]


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
    """Print the price ``args.model`` resolves to and how; exit status 1 when it has none.

    Any model string gets a clear answer, never a traceback: an odd name is unpriced (status 1),
    a failure is one ``error:`` line (status 2).
    """
    out = out or sys.stdout
    try:
        return _show(args, out)
    except PriceFileError as exc:
        print(exc, file=out)
        return 2
    except Exception as exc:  # an answer, never a traceback
        print(f"{_shown(args.model)}: error: {type(exc).__name__}: {_shown(str(exc))}", file=out)
        return 2


def _show(args: argparse.Namespace, out: TextIO) -> int:
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
    "snapshot": "a dated snapshot was priced as its family",
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
    lines.append(f"source:     {price.source_url or 'not given'}")
    lines.append(f"checked on: {price.checked_on or 'not given'}")
    if price.notes:
        lines.append(f"notes:      {price.notes}")
    return lines


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
