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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from llmmeter._version import __version__
from llmmeter.budgets import Budget, BudgetEvent, BudgetExceeded
from llmmeter.config import Settings, configure, flush, get_settings
from llmmeter.context import attributes, current_attributes
from llmmeter.feedback import Feedback, feedback
from llmmeter.instrument.metered import metered
from llmmeter.pipeline import PipelineStats, Sink, inline
from llmmeter.record import (
    CallKind,
    CallRecord,
    Cost,
    CostStatus,
    MediaUnits,
    Outcome,
    ServerTimings,
    Timings,
    Usage,
    UsageSource,
)
from llmmeter.routing import Route, escalate, route

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
    "Budget",
    "BudgetEvent",
    "BudgetExceeded",
    "CallKind",
    "CallRecord",
    "Cost",
    "CostStatus",
    "Feedback",
    "GpuHourPrice",
    "MediaUnits",
    "ModelPrice",
    "Outcome",
    "PipelineStats",
    "PriceFileError",
    "PriceSource",
    "PricingRegistry",
    "ResolvedPrice",
    "Route",
    "ServerTimings",
    "Settings",
    "Sink",
    "Timings",
    "Usage",
    "UsageSource",
    "__version__",
    "attributes",
    "configure",
    "current_attributes",
    "escalate",
    "feedback",
    "flush",
    "get_settings",
    "inline",
    "instrument",
    "instrument_anthropic",
    "instrument_google_genai",
    "instrument_ollama",
    "instrument_openai",
    "metered",
    "route",
    "uninstrument",
    "uninstrument_anthropic",
    "uninstrument_google_genai",
    "uninstrument_ollama",
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
    any OpenAI-compatible server or gateway reached through them); ``anthropic.Anthropic``,
    ``AsyncAnthropic`` (and the Bedrock and Vertex clients); ``ollama.Client``, ``AsyncClient``;
    ``google.genai.Client`` (the Gemini API and Vertex AI, ``client.aio`` too); vLLM's in-process
    engines ``vllm.LLM`` (``generate``/``chat``/``embed``) and ``AsyncLLM`` (``generate``; start it
    with ``disable_log_stats=False`` to get vLLM's own per-request timings too).
    ``provider`` overrides the ``gen_ai.provider.name`` detected from the client and its base
    URL (e.g. ``"vllm"`` for your own server, ``"openai"`` for a gateway in front of OpenAI);
    ``model`` names a vLLM engine's model in records (default: its served model name).
    """
    from llmmeter.instrument import INTEGRATIONS, integration_for

    row = integration_for(client)
    if row is None:
        supported = ", ".join(r.name for r in INTEGRATIONS)
        raise TypeError(
            f"llmmeter.instrument: don't know how to measure a {type(client).__module__}."
            f"{type(client).__qualname__}; supported: {supported} clients. "
            "For your own function, use @llmmeter.metered."
        )
    return row.instrument(client, provider=provider, model=model)  # type: ignore[no-any-return]


def uninstrument(client: T) -> T:
    """Stop measuring a client passed to :func:`instrument`; returns the same object."""
    from llmmeter.instrument import integration_for

    row = integration_for(client)
    return client if row is None else row.uninstrument(client)  # type: ignore[no-any-return]


def _install(name: str) -> None:
    from llmmeter.instrument import integration_named

    install = integration_named(name).install
    if install is not None:
        install()


def _uninstall(name: str) -> None:
    from llmmeter.instrument import integration_named

    uninstall = integration_named(name).uninstall
    if uninstall is not None:
        uninstall()


def instrument_openai(*, providers: Mapping[str, str] | None = None) -> None:
    """Measure every ``openai`` client of this process, existing and future (idempotent).

    ``providers`` names the provider behind hosts llmmeter cannot recognise from the URL, e.g.
    ``{"gateway.internal": "openai", "10.0.0.7:8000": "vllm"}`` (also settable as
    ``LLMMETER_PROVIDERS="gateway.internal=openai,10.0.0.7:8000=vllm"``). Unknown hosts are
    otherwise recorded as ``openai_compatible`` and priced from the model name, marked inferred.
    """
    if providers:
        from llmmeter.instrument.sdk import declare_providers

        declare_providers(providers)
    _install("openai")


def uninstrument_openai() -> None:
    """Undo :func:`instrument_openai`."""
    _uninstall("openai")


def instrument_anthropic() -> None:
    """Measure every ``anthropic`` client of this process, existing and future (idempotent)."""
    _install("anthropic")


def uninstrument_anthropic() -> None:
    """Undo :func:`instrument_anthropic`."""
    _uninstall("anthropic")


def instrument_ollama() -> None:
    """Measure every ``ollama`` client of this process (``Client``, ``AsyncClient``, the module's
    ``ollama.chat``...), existing and future (idempotent)."""
    _install("ollama")


def uninstrument_ollama() -> None:
    """Undo :func:`instrument_ollama`."""
    _uninstall("ollama")


def instrument_google_genai() -> None:
    """Measure every ``google-genai`` client of this process (``genai.Client()``, its ``aio``),
    existing and future (idempotent)."""
    _install("google_genai")


def uninstrument_google_genai() -> None:
    """Undo :func:`instrument_google_genai`."""
    _uninstall("google_genai")
