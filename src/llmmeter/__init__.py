"""llmmeter: per-request LLM cost and latency telemetry on OpenTelemetry.

::

    import llmmeter

    llmmeter.configure()                            # optional: zero-config works
    client = llmmeter.instrument(openai.OpenAI())   # same client back, measured

    with llmmeter.attributes(user_id="u-17", team="search", feature="summaries"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])

Then ``llmmeter report --by model,team --since 24h`` in a shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from llmmeter._version import __version__
from llmmeter.config import Settings, configure, flush, get_settings
from llmmeter.context import attributes, current_attributes
from llmmeter.instrument.metered import metered
from llmmeter.record import (
    CallKind,
    CallRecord,
    Cost,
    CostStatus,
    Outcome,
    ServerTimings,
    Timings,
    Usage,
    UsageSource,
)

if TYPE_CHECKING:
    from llmmeter.pricing import (
        GpuHourPrice,
        ModelPrice,
        PriceFileError,
        PriceSource,
        PricingRegistry,
        ResolvedPrice,
    )

__all__ = [
    "CallKind",
    "CallRecord",
    "Cost",
    "CostStatus",
    "GpuHourPrice",
    "ModelPrice",
    "Outcome",
    "PriceFileError",
    "PriceSource",
    "PricingRegistry",
    "ResolvedPrice",
    "ServerTimings",
    "Settings",
    "Timings",
    "Usage",
    "UsageSource",
    "__version__",
    "attributes",
    "configure",
    "current_attributes",
    "flush",
    "get_settings",
    "instrument",
    "instrument_openai",
    "metered",
    "uninstrument",
    "uninstrument_openai",
]

T = TypeVar("T")

_PRICING_NAMES = frozenset(
    {"GpuHourPrice", "ModelPrice", "PriceFileError", "PriceSource", "PricingRegistry", "ResolvedPrice"}
)


def __getattr__(name: str) -> Any:
    # Pricing loads pydantic models and the bundled table: only when first asked for.
    if name in _PRICING_NAMES:
        from llmmeter import pricing

        return getattr(pricing, name)
    raise AttributeError(f"module 'llmmeter' has no attribute {name!r}")


def instrument(client: T, *, provider: str | None = None, model: str | None = None) -> T:
    """Measure every request made through ``client``; returns the same object.

    Supported: ``openai.OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI``, ``AsyncAzureOpenAI`` (and so
    any OpenAI-compatible server reached through them), and vLLM's in-process engines
    ``vllm.LLM`` (``generate``/``chat``) and ``AsyncLLM`` (``generate``; start it with
    ``disable_log_stats=False`` to get vLLM's own per-request timings too).
    ``provider`` overrides the ``gen_ai.provider.name`` detected from the base URL (e.g.
    ``"vllm"`` for your own server); ``model`` names a vLLM engine's model in records (default:
    its served model name).
    """
    from llmmeter.instrument.openai import instrument_client, is_openai_client
    from llmmeter.instrument.vllm import instrument_vllm, is_vllm_engine

    if is_openai_client(client):
        return instrument_client(client, provider=provider)
    if is_vllm_engine(client):
        return instrument_vllm(client, model=model)
    raise TypeError(
        f"llmmeter.instrument: don't know how to measure a {type(client).__module__}."
        f"{type(client).__qualname__}; supported: openai clients, vllm.LLM and vllm AsyncLLM. "
        "For your own function, use @llmmeter.metered."
    )


def uninstrument(client: T) -> T:
    """Stop measuring a client passed to :func:`instrument`; returns the same object."""
    from llmmeter.instrument.openai import uninstrument_client
    from llmmeter.instrument.vllm import is_vllm_engine, uninstrument_vllm

    if is_vllm_engine(client):
        return uninstrument_vllm(client)
    return uninstrument_client(client)


def instrument_openai() -> None:
    """Measure every ``openai`` client of this process, existing and future (idempotent)."""
    from llmmeter.instrument.openai import instrument_openai as _install

    _install()


def uninstrument_openai() -> None:
    """Undo :func:`instrument_openai`."""
    from llmmeter.instrument.openai import uninstrument_openai as _uninstall

    _uninstall()
