"""The public API is what ``llmmeter.__all__`` says, and nothing drifts into it unnoticed.

Adding a public name is a decision: add it here in the same commit, with its docstring.
"""

from __future__ import annotations

import llmmeter

PUBLIC_NAMES = {
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
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(llmmeter.__all__) == PUBLIC_NAMES
    assert len(llmmeter.__all__) == len(PUBLIC_NAMES)  # no name twice


def test_every_public_name_resolves_and_is_documented() -> None:
    for name in llmmeter.__all__:
        value = getattr(llmmeter, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), f"llmmeter.{name} has no docstring"
