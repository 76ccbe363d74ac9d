"""llmmeter: per-request LLM cost and latency telemetry on OpenTelemetry."""

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

__all__ = [
    "CallKind",
    "CallRecord",
    "Cost",
    "CostStatus",
    "Outcome",
    "ServerTimings",
    "Timings",
    "Usage",
    "UsageSource",
]
