"""Every OpenTelemetry name llmmeter emits, in one place.

Span attributes follow the OTel GenAI semantic conventions (v1.41.0 plus the changes merged in
the semantic-conventions-genai repository: ``cache_write`` and per-modality usage). Names that have
no convention yet live under ``llmmeter.*``; the cost names follow the open proposal
semantic-conventions-genai PR #443 and are **provisional**.

Metric names, units and advisory bucket boundaries are in :data:`METRICS`, so a newer convention
(e.g. the ``gen_ai.client.inference.*`` drafts) can be switched on by editing one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --- span / metric attributes -------------------------------------------------------------------
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
REQUEST_STREAM: Final = "gen_ai.request.stream"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_ID: Final = "gen_ai.response.id"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
TOKEN_TYPE: Final = "gen_ai.token.type"
OPENAI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"

USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"

# Usage field of llmmeter.record.Usage -> span attribute.
USAGE_ATTRIBUTES: Final[dict[str, str]] = {
    "input_tokens": USAGE_INPUT_TOKENS,
    "output_tokens": USAGE_OUTPUT_TOKENS,
    "cache_read_input_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_write_input_tokens": "gen_ai.usage.cache_write.input_tokens",
    "reasoning_output_tokens": "gen_ai.usage.reasoning.output_tokens",
    "text_input_tokens": "gen_ai.usage.text.input_tokens",
    "image_input_tokens": "gen_ai.usage.image.input_tokens",
    "audio_input_tokens": "gen_ai.usage.audio.input_tokens",
    "text_output_tokens": "gen_ai.usage.text.output_tokens",
    "image_output_tokens": "gen_ai.usage.image.output_tokens",
    "audio_output_tokens": "gen_ai.usage.audio.output_tokens",
    "audio_cache_read_input_tokens": "gen_ai.usage.audio.cache_read.input_tokens",
    "cache_write_1h_input_tokens": "llmmeter.usage.cache_write_1h.input_tokens",
    "accepted_prediction_tokens": "llmmeter.usage.prediction.accepted_tokens",
    "rejected_prediction_tokens": "llmmeter.usage.prediction.rejected_tokens",
}

# Request parameters (keys of CallRecord.request_params are already these names).
REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
REQUEST_TOP_P: Final = "gen_ai.request.top_p"
REQUEST_TOP_K: Final = "gen_ai.request.top_k"
REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
REQUEST_SEED: Final = "gen_ai.request.seed"
REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
REQUEST_REASONING_LEVEL: Final = "gen_ai.request.reasoning.level"
REQUEST_ENCODING_FORMATS: Final = "gen_ai.request.encoding_formats"
EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"
OUTPUT_TYPE: Final = "gen_ai.output.type"
OPENAI_REQUEST_SERVICE_TIER: Final = "openai.request.service_tier"
OPENAI_API_TYPE: Final = "openai.api.type"
REQUEST_PARAMS: Final = (
    REQUEST_MAX_TOKENS,
    REQUEST_TEMPERATURE,
    REQUEST_TOP_P,
    REQUEST_TOP_K,
    REQUEST_FREQUENCY_PENALTY,
    REQUEST_PRESENCE_PENALTY,
    REQUEST_SEED,
    REQUEST_STOP_SEQUENCES,
    REQUEST_CHOICE_COUNT,
    REQUEST_REASONING_LEVEL,
    OUTPUT_TYPE,
    OPENAI_REQUEST_SERVICE_TIER,
)

# Provisional cost attributes (semantic-conventions-genai PR #443).
COST_AMOUNT: Final = "gen_ai.usage.cost.amount"
COST_CURRENCY: Final = "gen_ai.usage.cost.currency"
COST_SOURCE: Final = "gen_ai.usage.cost.source"

# llmmeter's own attributes.
TTFT: Final = "llmmeter.response.time_to_first_token"
TPOT: Final = "llmmeter.response.time_per_output_token"
CHUNKS: Final = "llmmeter.response.chunks"
OUTCOME: Final = "llmmeter.outcome"
USAGE_SOURCE: Final = "llmmeter.usage.source"
USAGE_ESTIMATE_METHOD: Final = "llmmeter.usage.estimate_method"
COST_STATUS: Final = "llmmeter.cost.status"
COST_PRICE_REF: Final = "llmmeter.cost.price_ref"
COST_INFERRED: Final = "llmmeter.cost.inferred"
"""``True`` on a cost point (and span) priced from an inferred price: the provider guessed from
the model name (a gateway), or an unknown dated snapshot priced as its family. Absent otherwise,
so ``sum(..._cost_sum{llmmeter_cost_inferred="true"})`` is the cost a report cannot vouch for."""
CALL_KIND: Final = "llmmeter.kind"
STEP_NAME: Final = "llmmeter.step.name"
SERVER_TIMING_PREFIX: Final = "llmmeter.server."
ROLLUP_CALLS: Final = "llmmeter.rollup.calls"
ROLLUP_UNPRICED_CALLS: Final = "llmmeter.rollup.unpriced_calls"
ROLLUP_COST: Final = "llmmeter.rollup.cost.amount"
ROLLUP_USAGE_PREFIX: Final = "llmmeter.rollup."
TOKEN_KIND: Final = "llmmeter.token.kind"
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"

# --- metrics ------------------------------------------------------------------------------------
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
# semconv's gen_ai.server.time_to_first_token boundaries: finer than duration's at the low end.
TTFT_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# semconv's gen_ai.server.time_per_output_token boundaries, extended below 10 ms: fast models
# (and vLLM on small GPUs) decode at 2-10 ms per token, which the semconv list lumps together.
TPOT_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)
COST_BUCKETS: Final = (
    0.00001,
    0.00005,
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """Name, instrument kind, unit, description and advisory buckets of one metric."""

    name: str
    instrument: str  # "histogram" | "counter"
    unit: str
    description: str
    buckets: tuple[float, ...] | None = None


METRICS: Final[dict[str, MetricSpec]] = {
    "token_usage": MetricSpec(
        "gen_ai.client.token.usage",
        "histogram",
        "{token}",
        "Input and output tokens per operation (gen_ai.token.type).",
        TOKEN_BUCKETS,
    ),
    "duration": MetricSpec(
        "gen_ai.client.operation.duration",
        "histogram",
        "s",
        "Duration of the GenAI operation, start to response fully received.",
        DURATION_BUCKETS,
    ),
    "time_to_first_chunk": MetricSpec(
        "gen_ai.client.operation.time_to_first_chunk",
        "histogram",
        "s",
        "Streaming only: time from request issuance to the first chunk.",
        DURATION_BUCKETS,
    ),
    "time_per_output_chunk": MetricSpec(
        "gen_ai.client.operation.time_per_output_chunk",
        "histogram",
        "s",
        "Streaming only, opt-in: time between consecutive chunks (one point per chunk).",
        DURATION_BUCKETS,
    ),
    "time_to_first_token": MetricSpec(
        "llmmeter.client.operation.time_to_first_token",
        "histogram",
        "s",
        "Streaming only: time from request issuance to the first chunk carrying output.",
        TTFT_BUCKETS,
    ),
    "time_per_output_token": MetricSpec(
        "llmmeter.client.operation.time_per_output_token",
        "histogram",
        "s",
        "Streaming only: (last output chunk - first output chunk) / (output tokens - 1).",
        TPOT_BUCKETS,
    ),
    "cost": MetricSpec(
        "gen_ai.client.operation.cost",
        "histogram",
        "{USD}",
        "Provisional (semconv-genai PR #443): cost of one operation, in its currency.",
        COST_BUCKETS,
    ),
    "token_parts": MetricSpec(
        "llmmeter.client.token.usage",
        "counter",
        "{token}",
        "Tokens by kind and modality (llmmeter.token.kind); parts are subsets of input/output.",
    ),
    "unpriced_tokens": MetricSpec(
        "llmmeter.client.token.unpriced",
        "counter",
        "{token}",
        "Tokens of calls that could not be priced (model missing from the price registry).",
    ),
}

# Usage field -> llmmeter.token.kind value for the token_parts counter. Input and output totals
# are not repeated here: gen_ai.client.token.usage has them (each metric point costs CPU per call).
TOKEN_KINDS: Final[dict[str, str]] = {
    "cache_read_input_tokens": "cache_read_input",
    "cache_write_input_tokens": "cache_write_input",
    "reasoning_output_tokens": "reasoning_output",
    "text_input_tokens": "text_input",
    "image_input_tokens": "image_input",
    "audio_input_tokens": "audio_input",
    "text_output_tokens": "text_output",
    "image_output_tokens": "image_output",
    "audio_output_tokens": "audio_output",
}

# llmmeter's own health (not in METRICS: one observable counter per provider, read from the pipeline).
RECORDS_DROPPED_METRIC: Final = MetricSpec(
    "llmmeter.records.dropped",
    "counter",
    "{record}",
    "Finished records llmmeter could not deliver to every sink (a sink failed, or exit came first).",
)

# One point per finished step (``@metered``/``llmmeter.step``/``llmmeter.route``): how many LLM calls
# it rolled up, by operation, step name and the allow-listed attribution keys. A runaway agent loop
# shows as steps in the top buckets (alert: examples/prometheus/alerts.yaml). Kept out of METRICS
# (what every measured call may emit): LLM calls record no point here.
STEP_CALLS_BUCKETS: Final = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
STEP_CALLS_METRIC: Final = MetricSpec(
    "llmmeter.step.calls",
    "histogram",
    "{call}",
    "LLM calls rolled up into one finished step (route): the runaway-loop signal.",
    STEP_CALLS_BUCKETS,
)

# --- routes, budgets, feedback (llmmeter.routing, llmmeter.budgets, llmmeter.feedback) -----------
# On every LLM call made inside ``llmmeter.route(name)``:
ROUTE_NAME: Final = "llmmeter.route.name"
ROUTE_ATTEMPT: Final = "llmmeter.route.attempt"
"""1 for the route's first LLM call, 2 for the next one started..."""
ROUTE_ESCALATION_REASON: Final = "llmmeter.route.escalation_reason"
"""On calls made after ``escalate(reason)``: the latest reason (and on the route's record)."""
ROUTE_FALLBACK_REASON: Final = "llmmeter.route.fallback_reason"
"""On a call started right after the route's previous call failed: that call's error type (and on
the route's record, when such a call succeeded)."""
# On the route's own record (a step whose operation is ROUTE_OPERATION):
ROUTE_OPERATION: Final = "route"
ROUTE_ATTEMPTS: Final = "llmmeter.route.attempts"
ROUTE_ESCALATED: Final = "llmmeter.route.escalated"
ROUTE_ESCALATIONS: Final = "llmmeter.route.escalations"
ROUTE_FALLBACK: Final = "llmmeter.route.fallback"
ROUTE_FALLBACKS: Final = "llmmeter.route.fallbacks"
ROUTE_FINAL_MODEL: Final = "llmmeter.route.final_model"
ROUTE_FINAL_PROVIDER: Final = "llmmeter.route.final_provider"

FEEDBACK_SCORE: Final = "llmmeter.feedback.score"
FEEDBACK_LABEL: Final = "llmmeter.feedback.label"
FEEDBACK_COMMENT: Final = "llmmeter.feedback.comment"
FEEDBACK_EVENT: Final = "llmmeter.feedback"
"""The span event (on a ``feedback`` span in the judged call's trace) carrying score and label."""
FEEDBACK_FOUND: Final = "llmmeter.feedback.call_found"

BUDGET_NAME: Final = "llmmeter.budget.name"
BUDGET_ACTION: Final = "llmmeter.budget.action"

# Counters of their own, outside METRICS (which lists what every measured call may emit):
ROUTE_REQUESTS_METRIC: Final = MetricSpec(
    "llmmeter.route.requests",
    "counter",
    "{request}",
    "Finished llmmeter.route() blocks by route name, escalated, fallback and final model: the "
    'escalation rate is escalated="true" over all.',
)
FEEDBACK_METRIC: Final = MetricSpec(
    "llmmeter.feedback",
    "counter",
    "{feedback}",
    "llmmeter.feedback() judgements by label, judged model and route name.",
)
BUDGET_REFUSALS_METRIC: Final = MetricSpec(
    "llmmeter.budget.refusals",
    "counter",
    "{request}",
    'Calls a budget with action="raise" refused before they were sent, by budget name.',
)
