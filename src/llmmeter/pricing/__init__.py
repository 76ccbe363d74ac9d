"""Pricing: offline, layered price lookup and an exact cost engine.

>>> from llmmeter.pricing import PricingRegistry, ModelPrice
>>> reg = PricingRegistry.default()                      # bundled prices, no network
>>> reg.register("acme-llama-70b", ModelPrice(input_per_mtok="0.60", output_per_mtok="0.80"))

See ``docs/pricing.md`` for the price-file schema, the lookup rules and the cost formula.
"""

from llmmeter.pricing.files import PriceFileError, Problem, check_price_file
from llmmeter.pricing.models import GpuHourPrice, ModelPrice, PromptTier, ServiceTierPrice
from llmmeter.pricing.registry import PricingRegistry, UsageInconsistentError
from llmmeter.pricing.sources import (
    INFERRED_MARK,
    BundledSource,
    DictSource,
    FileSource,
    GpuHourSource,
    PriceSource,
    ResolvedPrice,
    is_inferred_price,
)

__all__ = [
    "INFERRED_MARK",
    "BundledSource",
    "DictSource",
    "FileSource",
    "GpuHourPrice",
    "GpuHourSource",
    "ModelPrice",
    "PriceFileError",
    "PriceSource",
    "PricingRegistry",
    "Problem",
    "PromptTier",
    "ResolvedPrice",
    "ServiceTierPrice",
    "UsageInconsistentError",
    "check_price_file",
    "is_inferred_price",
]
