"""Pydantic's ``genai-prices`` data as a fallback :class:`~llmmeter.pricing.PriceSource`.

``pip install "llmmeter[genai-prices]"``, then::

    from llmmeter.pricing import PricingRegistry
    from llmmeter.pricing.genai_prices import GenaiPricesSource

    registry = PricingRegistry.default()
    registry.add_source(GenaiPricesSource(), fallback=True)  # asked after the bundled table

The source reads the price data bundled inside the installed ``genai-prices`` package. It never
fetches anything: ``genai-prices`` only downloads newer data when an application starts its
``UpdatePrices`` thread itself, and then this source uses that data from the next registry
cache clear on. Prices are converted once per model and price period to
:class:`~llmmeter.pricing.ModelPrice` (per-million rates, prompt-size tiers, per-request,
per-hour-of-audio and per-character fees); a price with a unit llmmeter cannot bill (pages,
video tokens, text messages) is not used, so the call stays unpriced rather than under-priced.
Tool fees (web searches, file-search storage) are left out, as in the bundled table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from llmmeter.pricing.models import ModelPrice
from llmmeter.pricing.sources import ResolvedPrice

__all__ = ["GenaiPricesSource"]

LABEL = "genai-prices"

_PROVIDER_IDS: Mapping[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "xai": "x-ai",
    "groq": "groq",
    "together": "together",
    "fireworks": "fireworks",
    "bedrock": "aws",
    "openrouter": "openrouter",
}
"""llmmeter's provider keys -> genai-prices' provider ids."""
_PROVIDER_KEYS: Mapping[str, str] = {value: key for key, value in _PROVIDER_IDS.items()}

_PER_MTOK: Mapping[str, str] = {
    "input_mtok": "input_per_mtok",
    "output_mtok": "output_per_mtok",
    "cache_read_mtok": "cached_input_per_mtok",
    "cache_write_mtok": "cache_write_per_mtok",
    "cache_write_1h_mtok": "cache_write_1h_per_mtok",
    "output_reasoning_mtok": "reasoning_per_mtok",
    "input_audio_mtok": "audio_input_per_mtok",
    "cache_audio_read_mtok": "cached_audio_input_per_mtok",
    "output_audio_mtok": "audio_output_per_mtok",
    "input_image_mtok": "image_input_per_mtok",
    "output_image_mtok": "image_output_per_mtok",
}
_TOOL_FEES = frozenset({"web_searches_kcount", "storage_searches_kcount"})
_SIXTY = Decimal(60)
_THOUSAND = Decimal(1000)


class GenaiPricesSource:
    """Prices from the ``genai-prices`` package's bundled data, converted to llmmeter's model.

    Raises ``ImportError`` with the install command when the package is missing.
    """

    def __init__(self) -> None:
        try:
            from genai_prices import data_snapshot
        except ImportError as exc:  # one clear line instead of a missing-module trace
            raise ImportError('genai-prices is not installed: pip install "llmmeter[genai-prices]"') from exc
        self._snapshot: Any = data_snapshot.get_snapshot()
        self._converted: dict[int, tuple[Any, ModelPrice | None]] = {}

    def lookup(self, model: str, provider: str | None, at: dt.datetime) -> ResolvedPrice | None:
        """The price genai-prices gives ``model`` on ``provider`` (``None``: any) at ``at``."""
        provider_id = None if provider is None else _PROVIDER_IDS.get(provider)
        if provider is not None and provider_id is None:
            return None  # a self-hosted runtime or a gateway: never a hosted list price
        try:
            found_provider, info = self._snapshot.find_provider_model(model, None, provider_id, None)
            price = self._price(info.get_prices(at))
        except Exception:  # LookupError for an unknown model; a source never raises
            return None
        if price is None:
            return None
        return ResolvedPrice(
            price=price,
            model=info.id,
            provider=_PROVIDER_KEYS.get(found_provider.id, found_provider.id),
            source=LABEL,
            requested_model=model,
            matched_via="exact" if info.id == model.lower() else "pattern",
        )

    def models(self) -> list[tuple[str, str]]:
        """(llmmeter provider key, model id) of every model genai-prices prices for those providers."""
        return [
            (_PROVIDER_KEYS[provider.id], info.id)
            for provider in self._snapshot.providers
            if provider.id in _PROVIDER_KEYS
            for info in provider.models
        ]

    def _price(self, prices: Any) -> ModelPrice | None:
        """Converted once per genai-prices price object (kept here, so its id stays its own)."""
        known = self._converted.get(id(prices))
        if known is None or known[0] is not prices:
            known = self._converted[id(prices)] = (prices, to_model_price(prices))
        return known[1]


def to_model_price(prices: Any) -> ModelPrice | None:
    """A genai-prices ``ModelPrice`` as llmmeter's (``None`` when a unit cannot be billed)."""
    fields: dict[str, Any] = {}
    tiers: dict[int, dict[str, Decimal]] = {}
    for name, value in vars(prices).items():
        if value is None or name.startswith("_") or name in _TOOL_FEES:
            continue
        target = _PER_MTOK.get(name)
        if target is not None:
            fields[target] = getattr(value, "base", value)
            for tier in getattr(value, "tiers", ()):
                if tier.start > 0:
                    tiers.setdefault(tier.start, {})[target] = tier.price
        elif name == "requests_kcount":
            fields["per_request"] = value / _THOUSAND
        elif name in ("audio_hours", "input_audio_hours"):
            fields["per_audio_minute"] = value / _SIXTY
        elif name == "input_mchars":
            fields["per_million_characters"] = value
        else:
            return None
    if "input_per_mtok" in fields or "output_per_mtok" in fields:
        fields.setdefault("input_per_mtok", Decimal(0))
        fields.setdefault("output_per_mtok", Decimal(0))
    elif not fields:
        return None
    if tiers:
        fields["tiers"] = [{"above_input_tokens": start, **rates} for start, rates in sorted(tiers.items())]
    try:
        return ModelPrice.model_validate(fields)
    except ValueError:
        return None
