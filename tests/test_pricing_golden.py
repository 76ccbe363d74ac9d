"""Golden costs: each expected amount is hand-computed from the published rates (USD per
million tokens) shown in its comment. Token parts are subsets of their totals (record.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from llmmeter import Usage
from llmmeter.pricing import GpuHourPrice, ModelPrice, PricingRegistry


def usage(input_tokens: int | None, output_tokens: int | None, **parts: int) -> Usage:
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, **parts)


def day(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def registry() -> PricingRegistry:
    reg = PricingRegistry.default()
    reg.alias("my-azure-deployment", "gpt-4o-2024-08-06")
    reg.register(
        "acme-metered", ModelPrice(input_per_mtok="1.00", output_per_mtok="2.00", per_request="0.005")
    )
    # An 8 x H100 node at $2.16/GPU-hour with a declared 1000 tokens/s.
    reg.register("acme-llama-70b", GpuHourPrice(usd_per_gpu_hour="2.16", gpu_count=8, tokens_per_second=1000))
    # 2 GPUs at $2.00/hour, priced by measured busy time.
    reg.register("acme-llama-8b", GpuHourPrice(usd_per_gpu_hour="2.00", gpu_count=2))
    # 4 GPUs at $2.49/hour serving 4 requests at once on average.
    reg.register("acme-qwen-32b", GpuHourPrice(usd_per_gpu_hour="2.49", gpu_count=4, concurrency=4))
    # 1 GPU at $1.80/hour decoding 90 output tokens/s.
    reg.register(
        "acme-mistral-7b",
        GpuHourPrice(usd_per_gpu_hour="1.80", tokens_per_second=90, throughput_counts="output"),
    )
    return reg


# (case id, model, provider, usage, service tier, call day, measured seconds, expected USD)
GOLDEN = [
    # --- plain ---------------------------------------------------------------------------
    # 1000 x 0.15 + 500 x 0.60 = 150 + 300 = 450 -> 0.00045
    ("plain gpt-4o-mini", "gpt-4o-mini", "openai", usage(1000, 500), None, None, None, "0.00045"),
    # 12 x 30 + 5 x 60 = 360 + 300 = 660 -> 0.00066
    ("plain gpt-4-0613", "gpt-4-0613", "openai", usage(12, 5), None, None, None, "0.00066"),
    # 1000 x 0.50 + 1000 x 1.50 = 2000 -> 0.002
    (
        "plain gpt-3.5-turbo-0125",
        "gpt-3.5-turbo-0125",
        "openai",
        usage(1000, 1000),
        None,
        None,
        None,
        "0.002",
    ),
    # 10 x 2 + 16 x 2 = 52 -> 0.000052 (davinci:2023-07-21-v2 is how the API names davinci-002)
    ("alias davinci", "davinci:2023-07-21-v2", "openai", usage(10, 16), None, None, None, "0.000052"),
    # 1000 x 2 + 1000 x 6 = 8000 -> 0.008
    (
        "plain mistral-large-2411",
        "mistral-large-2411",
        "mistral_ai",
        usage(1000, 1000),
        None,
        None,
        None,
        "0.008",
    ),
    # 1M x 0.05 + 1M x 0.08 = 0.05 + 0.08 = 0.13
    ("groq llama 8b", "llama-3.1-8b-instant", "groq", usage(1_000_000, 1_000_000), None, None, None, "0.13"),
    # 10000 x 0.88 + 2000 x 0.88 = 8800 + 1760 = 10560 -> 0.01056
    (
        "together llama 70b",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "together",
        usage(10_000, 2_000),
        None,
        None,
        None,
        "0.01056",
    ),
    # 5000 x 0.20 + 5000 x 0.20 = 2000 -> 0.002
    (
        "fireworks llama 8b",
        "accounts/fireworks/models/llama-v3p1-8b-instruct",
        "fireworks",
        usage(5_000, 5_000),
        None,
        None,
        None,
        "0.002",
    ),
    # 6 x 0.02 = 0.12 -> 0.00000012 (embeddings report no output tokens)
    ("embedding small", "text-embedding-3-small", "openai", usage(6, None), None, None, None, "0.00000012"),
    # 1000 x 2.50 + 100 x 10 = 2500 + 1000 = 3500 -> 0.0035 (OpenRouter name, OpenAI price)
    ("provider prefix", "openai/gpt-4o", "openrouter", usage(1000, 100), None, None, None, "0.0035"),
    # --- cached input ------------------------------------------------------------------------
    # (1149 - 1024) x 0.15 + 1024 x 0.075 + 353 x 0.60 = 18.75 + 76.8 + 211.8 = 307.35 -> 0.00030735
    (
        "cached gpt-4o-mini snapshot",
        "gpt-4o-mini-2024-07-18",
        "openai",
        usage(1149, 353, cache_read_input_tokens=1024),
        None,
        None,
        None,
        "0.00030735",
    ),
    # (3763 - 3584) x 2.50 + 3584 x 1.25 + 44 x 10 = 447.5 + 4480 + 440 = 5367.5 -> 0.0053675
    (
        "cached gpt-4o snapshot",
        "gpt-4o-2024-08-06",
        "openai",
        usage(3763, 44, cache_read_input_tokens=3584),
        None,
        None,
        None,
        "0.0053675",
    ),
    # 100 x 3 + 20000 x 0.30 + 300 x 15 = 300 + 6000 + 4500 = 10800 -> 0.0108
    (
        "cache read claude",
        "claude-sonnet-4-5",
        "anthropic",
        usage(20_100, 300, cache_read_input_tokens=20_000),
        None,
        None,
        None,
        "0.0108",
    ),
    # (10000 - 2000) x 0.27 + 2000 x 0.07 + 1000 x 1.10 = 2160 + 140 + 1100 = 3400 -> 0.0034
    (
        "cache hit deepseek 2025-03",
        "deepseek-chat",
        "deepseek",
        usage(10_000, 1_000, cache_read_input_tokens=2_000),
        None,
        day("2025-03-01"),
        None,
        "0.0034",
    ),
    # --- cache writes --------------------------------------------------------------------
    # 100 x 3 + 5000 x 3.75 + 200 x 15 = 300 + 18750 + 3000 = 22050 -> 0.02205
    (
        "cache write 5m claude",
        "claude-sonnet-4-5-20250929",
        "anthropic",
        usage(5_100, 200, cache_write_input_tokens=5_000),
        None,
        None,
        None,
        "0.02205",
    ),
    # 1000 x 15 + (9000 - 4000) x 18.75 + 4000 x 30 + 500 x 75 = 15000 + 93750 + 120000 + 37500
    #   = 266250 -> 0.26625
    (
        "cache write 1h claude opus",
        "claude-opus-4-1",
        "anthropic",
        usage(10_000, 500, cache_write_input_tokens=9_000, cache_write_1h_input_tokens=4_000),
        None,
        None,
        None,
        "0.26625",
    ),
    # 14 x 3 + 11 x 15 = 42 + 165 = 207 -> 0.000207
    (
        "plain claude-sonnet-4-6",
        "claude-sonnet-4-6",
        "anthropic",
        usage(14, 11),
        None,
        None,
        None,
        "0.000207",
    ),
    # --- reasoning -----------------------------------------------------------------------
    # 11 x 0.05 + (228 - 192) x 0.40 + 192 x 0.40 = 0.55 + 14.4 + 76.8 = 91.75 -> 0.00009175
    (
        "reasoning gpt-5-nano",
        "gpt-5-nano-2025-08-07",
        "openai",
        usage(11, 228, reasoning_output_tokens=192),
        None,
        None,
        None,
        "0.00009175",
    ),
    # 100 x 1.10 + (1000 - 800) x 4.40 + 800 x 4.40 = 110 + 880 + 3520 = 4510 -> 0.00451
    (
        "reasoning o3-mini",
        "o3-mini-2025-01-31",
        "openai",
        usage(100, 1000, reasoning_output_tokens=800),
        None,
        None,
        None,
        "0.00451",
    ),
    # 44 x 2.50 + (288 - 9) x 15 + 9 x 15 = 110 + 4185 + 135 = 4430 -> 0.00443
    (
        "reasoning gpt-5.4 snapshot",
        "gpt-5.4-2026-03-05",
        "openai",
        usage(44, 288, reasoning_output_tokens=9),
        None,
        None,
        None,
        "0.00443",
    ),
    # Gemini thoughts are normalized into output: 100000 x 1.25 + 5000 x 10 + 5000 x 10
    #   = 125000 + 50000 + 50000 = 225000 -> 0.225
    (
        "thinking gemini-2.5-pro",
        "gemini-2.5-pro",
        "gcp.gemini",
        usage(100_000, 10_000, reasoning_output_tokens=5_000),
        None,
        None,
        None,
        "0.225",
    ),
    # (10000-2000) x 0.28 + 2000 x 0.028 + (1000-600) x 0.42 + 600 x 0.42 = 2240 + 56 + 168 + 252
    #   = 2716 -> 0.002716
    (
        "reasoning deepseek 2025-10",
        "deepseek-reasoner",
        "deepseek",
        usage(10_000, 1_000, cache_read_input_tokens=2_000, reasoning_output_tokens=600),
        None,
        day("2025-10-15"),
        None,
        "0.002716",
    ),
    # --- audio ---------------------------------------------------------------------------
    # (21 - 2) x 2.50 + 2 x 40 + 1 x 10 = 47.5 + 80 + 10 = 137.5 -> 0.0001375
    (
        "audio in gpt-4o-audio",
        "gpt-4o-audio-preview-2025-06-03",
        "openai",
        usage(21, 1, audio_input_tokens=2),
        None,
        None,
        None,
        "0.0001375",
    ),
    # (64 - 44) x 2.50 + 44 x 40 + (100 - 80) x 10 + 80 x 80 = 50 + 1760 + 200 + 6400 = 8410 -> 0.00841
    (
        "audio in and out",
        "gpt-4o-audio-preview",
        "openai",
        usage(64, 100, audio_input_tokens=44, audio_output_tokens=80),
        None,
        None,
        None,
        "0.00841",
    ),
    # input 1000 = 300 text + 700 audio; 500 cached of which 400 audio; 200 audio out:
    # (300 - 100) x 5 + 100 x 2.50 + 400 x 2.50 + (700 - 400) x 40 + 200 x 80
    #   = 1000 + 250 + 1000 + 12000 + 16000 = 30250 -> 0.03025
    (
        "realtime cached audio",
        "gpt-4o-realtime-preview-2024-12-17",
        "openai",
        usage(
            1000,
            200,
            audio_input_tokens=700,
            cache_read_input_tokens=500,
            audio_cache_read_input_tokens=400,
            audio_output_tokens=200,
        ),
        None,
        None,
        None,
        "0.03025",
    ),
    # (1000 - 400) x 0.30 + 400 x 1.00 + 500 x 2.50 = 180 + 400 + 1250 = 1830 -> 0.00183
    (
        "audio gemini flash",
        "gemini-2.5-flash",
        "gcp.gemini",
        usage(1000, 500, audio_input_tokens=400),
        None,
        None,
        None,
        "0.00183",
    ),
    # --- image ---------------------------------------------------------------------------
    # (1000 - 800) x 5 + 800 x 10 + 4160 x 40 = 1000 + 8000 + 166400 = 175400 -> 0.1754
    (
        "image in and out",
        "gpt-image-1",
        "openai",
        usage(1000, 4160, image_input_tokens=800, image_output_tokens=4160),
        None,
        None,
        None,
        "0.1754",
    ),
    # no image rate for gpt-4o: image tokens at the text rate:
    # (1000 - 765) x 2.50 + 765 x 2.50 + 100 x 10 = 587.5 + 1912.5 + 1000 = 3500 -> 0.0035
    (
        "image in at text rate",
        "gpt-4o",
        "openai",
        usage(1000, 100, image_input_tokens=765),
        None,
        None,
        None,
        "0.0035",
    ),
    # --- long-context tiers ----------------------------------------------------------------
    # above 272k: (300000 - 100000) x 5 + 100000 x 0.50 + 2000 x 22.50 = 1000000 + 50000 + 45000
    #   = 1095000 -> 1.095
    (
        "long context gpt-5.4",
        "gpt-5.4",
        "openai",
        usage(300_000, 2_000, cache_read_input_tokens=100_000),
        None,
        None,
        None,
        "1.095",
    ),
    # exactly 272000 is not above the threshold: 272000 x 2.50 = 680000 -> 0.68
    ("at the tier threshold", "gpt-5.4", "openai", usage(272_000, 0), None, None, None, "0.68"),
    # 250000 x 6 + 1000 x 22.50 = 1500000 + 22500 = 1522500 -> 1.5225
    (
        "long context claude",
        "claude-sonnet-4-20250514",
        "anthropic",
        usage(250_000, 1_000),
        None,
        None,
        None,
        "1.5225",
    ),
    # above 200k: (250000 - 50000) x 2.50 + 50000 x 0.25 + 10000 x 15 = 500000 + 12500 + 150000
    #   = 662500 -> 0.6625
    (
        "long context gemini",
        "gemini-2.5-pro",
        "gcp.gemini",
        usage(250_000, 10_000, cache_read_input_tokens=50_000),
        None,
        None,
        None,
        "0.6625",
    ),
    # above 128k: 200000 x 6 + 1000 x 30 = 1200000 + 30000 = 1230000 -> 1.23
    ("long context grok-4", "grok-4", "x_ai", usage(200_000, 1_000), None, None, None, "1.23"),
    # --- service tiers ---------------------------------------------------------------------
    # batch x0.5: 1000000 x 1.25 + 100000 x 5 = 1250000 + 500000 = 1750000 -> 1.75
    ("batch gpt-4o", "gpt-4o", "openai", usage(1_000_000, 100_000), "batch", None, None, "1.75"),
    # flex x0.5: 8000 x 0.625 + 2000 x 0.0625 + 5000 x 5 = 5000 + 125 + 25000 = 30125 -> 0.030125
    (
        "flex gpt-5",
        "gpt-5",
        "openai",
        usage(10_000, 5_000, cache_read_input_tokens=2_000),
        "flex",
        None,
        None,
        "0.030125",
    ),
    # priority x2: 1000 x 2.50 + 1000 x 20 = 2500 + 20000 = 22500 -> 0.0225
    ("priority gpt-5", "gpt-5-2025-08-07", "openai", usage(1000, 1000), "priority", None, None, "0.0225"),
    # priority x1.8: 1000 x 0.45 + 1000 x 3.60 = 450 + 3600 = 4050 -> 0.00405
    ("priority gpt-5-mini", "gpt-5-mini", "openai", usage(1000, 1000), "priority", None, None, "0.00405"),
    # priority x1.75: 1000 x 3.50 + 1000 x 14 = 3500 + 14000 = 17500 -> 0.0175
    ("priority gpt-4.1", "gpt-4.1", "openai", usage(1000, 1000), "priority", None, None, "0.0175"),
    # explicit priority rates: 1000 x 0.25 + 1000 x 0.125 + 1000 x 1.00 = 250 + 125 + 1000 = 1375
    #   -> 0.001375
    (
        "priority gpt-4o-mini explicit",
        "gpt-4o-mini",
        "openai",
        usage(2000, 1000, cache_read_input_tokens=1000),
        "priority",
        None,
        None,
        "0.001375",
    ),
    # explicit priority rates: 1000 x 2.00 + 1000 x 8.00 = 10000 -> 0.01
    ("priority o4-mini explicit", "o4-mini", "openai", usage(1000, 1000), "priority", None, None, "0.01"),
    # "default" is the standard tier: 1000 x 0.15 + 1000 x 0.60 = 750 -> 0.00075
    ("default tier", "gpt-4o-mini", "openai", usage(1000, 1000), "default", None, None, "0.00075"),
    # long context and batch: 1095000 x 0.5 = 547500 -> 0.5475
    (
        "long context batch",
        "gpt-5.4",
        "openai",
        usage(300_000, 2_000, cache_read_input_tokens=100_000),
        "batch",
        None,
        None,
        "0.5475",
    ),
    # Gemini batch keeps the cache-read rate: 6000 x 0.15 + 4000 x 0.03 + 1000 x 1.25
    #   = 900 + 120 + 1250 = 2270 -> 0.00227
    (
        "batch gemini cache exempt",
        "gemini-2.5-flash",
        "gcp.gemini",
        usage(10_000, 1_000, cache_read_input_tokens=4_000),
        "batch",
        None,
        None,
        "0.00227",
    ),
    # priority x1.8: 1000 x 2.25 + 1000 x 18 = 2250 + 18000 = 20250 -> 0.02025
    ("priority gemini", "gemini-2.5-pro", "gcp.gemini", usage(1000, 1000), "priority", None, None, "0.02025"),
    # batch x0.5: 10000 x 0.50 + 2000 x 2.50 = 5000 + 5000 = 10000 -> 0.01
    (
        "batch claude haiku",
        "claude-haiku-4-5",
        "anthropic",
        usage(10_000, 2_000),
        "batch",
        None,
        None,
        "0.01",
    ),
    # batch x0.5: 1000000 x 0.065 = 0.065
    (
        "batch embedding",
        "text-embedding-3-large",
        "openai",
        usage(1_000_000, None),
        "batch",
        None,
        None,
        "0.065",
    ),
    # --- fine-tunes --------------------------------------------------------------------------
    # 500 x 0.30 + 500 x 0.15 + 1000 x 1.20 = 150 + 75 + 1200 = 1425 -> 0.001425
    (
        "fine-tune gpt-4o-mini",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "openai",
        usage(1000, 1000, cache_read_input_tokens=500),
        None,
        None,
        None,
        "0.001425",
    ),
    # batch: 1000000 x 3.75 x 0.5 = 1.875
    (
        "fine-tune batch",
        "ft:gpt-4o-2024-08-06:acme:support:xyz",
        "openai",
        usage(1_000_000, 0),
        "batch",
        None,
        None,
        "1.875",
    ),
    # family fine-tune name: 1000 x 0.30 + 1000 x 1.20 = 1500 -> 0.0015
    ("fine-tune family", "ft:gpt-4o-mini:acme::id", "openai", usage(1000, 1000), None, None, None, "0.0015"),
    # --- aliases and name rules ----------------------------------------------------------------
    # my-azure-deployment -> gpt-4o-2024-08-06: 500 x 2.50 + 100 x 10 = 1250 + 1000 = 2250 -> 0.00225
    ("azure alias", "my-azure-deployment", "azure.ai.openai", usage(500, 100), None, None, None, "0.00225"),
    # gpt-35-turbo is Azure's gpt-3.5-turbo: 1000 x 0.50 + 500 x 1.50 = 500 + 750 = 1250 -> 0.00125
    ("azure model name", "gpt-35-turbo", "azure.ai.openai", usage(1000, 500), None, None, None, "0.00125"),
    # -latest -> family: 1000 x 3 + 1000 x 15 = 18000 -> 0.018
    ("latest name", "claude-3-5-sonnet-latest", "anthropic", usage(1000, 1000), None, None, None, "0.018"),
    # Vertex AI snapshot name: 2000 x 3 + 100 x 15 = 6000 + 1500 = 7500 -> 0.0075
    (
        "vertex claude",
        "claude-sonnet-4@20250514",
        "gcp.vertex_ai",
        usage(2000, 100),
        None,
        None,
        None,
        "0.0075",
    ),
    # glob family gemini-2.0-flash-00?: 1000 x 0.10 + 1000 x 0.40 = 500 -> 0.0005
    ("pattern gemini", "gemini-2.0-flash-001", "gcp.gemini", usage(1000, 1000), None, None, None, "0.0005"),
    # --- historic prices ------------------------------------------------------------------
    # o3 before the 2025-06-10 cut: 1000 x 10 + 1000 x 40 = 50000 -> 0.05
    ("historic o3", "o3", "openai", usage(1000, 1000), None, day("2025-05-01"), None, "0.05"),
    # o3 after the cut: 1000 x 2 + 1000 x 8 = 10000 -> 0.01
    ("current o3", "o3-2025-04-16", "openai", usage(1000, 1000), None, day("2025-07-01"), None, "0.01"),
    # DeepSeek V3.1 (2025-09-05 .. 2025-09-29): 1000 x 0.56 + 1000 x 1.68 = 2240 -> 0.00224
    (
        "historic deepseek",
        "deepseek-chat",
        "deepseek",
        usage(1000, 1000),
        None,
        day("2025-09-15"),
        None,
        "0.00224",
    ),
    # --- per-request fee ---------------------------------------------------------------------
    # 1000 x 1.00 + 1000 x 2.00 = 3000 -> 0.003, plus 0.005 per request = 0.008
    ("per-request fee", "acme-metered", None, usage(1000, 1000), None, None, None, "0.008"),
    # --- GPU-hour ------------------------------------------------------------------------
    # 2.16 x 8 = 17.28/h; (1500 + 300) tokens / 1000 tok/s = 1.8 s; 17.28 x 1.8 / 3600 = 31.104 / 3600
    #   = 0.00864
    ("gpu throughput", "acme-llama-70b", "vllm", usage(1500, 300), None, None, None, "0.00864"),
    # 2.00 x 2 = 4/h; measured 4.5 s; 4 x 4.5 / 3600 = 18 / 3600 = 0.005
    ("gpu measured", "acme-llama-8b", "vllm", usage(100, 50), None, None, 4.5, "0.005"),
    # 2.49 x 4 = 9.96/h; 7.2 s busy / 4 concurrent = 1.8 s; 9.96 x 1.8 / 3600 = 17.928 / 3600 = 0.00498
    ("gpu measured concurrency", "acme-qwen-32b", "vllm", usage(100, 50), None, None, 7.2, "0.00498"),
    # 1.80/h; 900 output tokens / 90 tok/s = 10 s; 1.80 x 10 / 3600 = 18 / 3600 = 0.005
    ("gpu output throughput", "acme-mistral-7b", "vllm", usage(5000, 900), None, None, None, "0.005"),
]


@pytest.mark.parametrize(
    ("model", "provider", "call_usage", "service_tier", "at", "duration_s", "expected"),
    [case[1:] for case in GOLDEN],
    ids=[case[0] for case in GOLDEN],
)
def test_golden_cost_matches_hand_computed_amount(
    registry: PricingRegistry,
    model: str,
    provider: str | None,
    call_usage: Usage,
    service_tier: str | None,
    at: dt.datetime | None,
    duration_s: float | None,
    expected: str,
) -> None:
    cost = registry.cost(
        call_usage, model=model, provider=provider, at=at, service_tier=service_tier, duration_s=duration_s
    )
    assert cost is not None
    assert cost.amount == Decimal(expected)
    assert sum(cost.components.values(), Decimal(0)) == cost.amount
    assert cost.currency == "USD"
    assert cost.source == "registry"


def test_golden_table_has_at_least_forty_cases() -> None:
    assert len(GOLDEN) >= 40


def test_breakdown_bills_each_token_kind_once_at_its_own_rate(registry: PricingRegistry) -> None:
    # Realtime call: every input token lands in exactly one component.
    cost = registry.cost(
        usage(
            1000,
            200,
            audio_input_tokens=700,
            cache_read_input_tokens=500,
            audio_cache_read_input_tokens=400,
            audio_output_tokens=200,
        ),
        model="gpt-4o-realtime-preview-2024-12-17",
    )
    assert cost is not None
    assert cost.components == {
        "input": Decimal("0.001"),  # 200 x 5
        "cached_input": Decimal("0.00025"),  # 100 x 2.50
        "cached_audio_input": Decimal("0.001"),  # 400 x 2.50
        "audio_input": Decimal("0.012"),  # 300 x 40
        "audio_output": Decimal("0.016"),  # 200 x 80
    }


def test_reasoning_is_its_own_component_and_not_billed_twice(registry: PricingRegistry) -> None:
    cost = registry.cost(usage(11, 228, reasoning_output_tokens=192), model="gpt-5-nano-2025-08-07")
    assert cost is not None
    assert cost.components == {
        "input": Decimal("0.00000055"),  # 11 x 0.05
        "output": Decimal("0.0000144"),  # 36 x 0.40
        "reasoning": Decimal("0.0000768"),  # 192 x 0.40
    }


def test_price_ref_names_the_price_and_the_tiers_applied(registry: PricingRegistry) -> None:
    cost = registry.cost(usage(300_000, 10), model="gpt-5.4-2026-03-05", service_tier="batch")
    assert cost is not None
    assert cost.price_ref == "bundled:openai/gpt-5.4-2026-03-05;input_tokens>272000;service_tier=batch"


# -- models added from the reference copies (issue 15) ------------------------------------------------
# Rates are the list prices the bundled entry cites (`llmmeter prices show MODEL` prints its source),
# USD per million tokens; each amount below is worked out by hand from them.

# (case id, model, provider, usage, service tier, expected USD, price ref)
NEW_MODELS = [
    # gpt-5.5: 5.00 in, 0.50 cached, 30.00 out.
    # (10000 - 4000) x 5 + 4000 x 0.50 + 2000 x 30 = 30000 + 2000 + 60000 = 92000 -> 0.092
    ("gpt-5.5 cached", "gpt-5.5", "openai", usage(10_000, 2000, cache_read_input_tokens=4000), None, "0.092",
     "bundled:openai/gpt-5.5"),
    # gpt-5.5 above 272k input tokens: the whole request at 10.00 in, 45.00 out.
    # 300000 x 10 + 1000 x 45 = 3000000 + 45000 = 3045000 -> 3.045
    ("gpt-5.5 long context", "gpt-5.5", "openai", usage(300_000, 1000), None, "3.045",
     "bundled:openai/gpt-5.5;input_tokens>272000"),
    # gpt-5.4-nano: 0.20 in, 1.25 out. 1000 x 0.20 + 1000 x 1.25 = 200 + 1250 = 1450 -> 0.00145
    ("gpt-5.4-nano", "gpt-5.4-nano", "openai", usage(1000, 1000), None, "0.00145",
     "bundled:openai/gpt-5.4-nano"),
    # gpt-5.4-pro: 30.00 in, 180.00 out. 1000 x 30 + 500 x 180 = 30000 + 90000 = 120000 -> 0.12
    ("gpt-5.4-pro", "gpt-5.4-pro", "openai", usage(1000, 500), None, "0.12", "bundled:openai/gpt-5.4-pro"),
    # gpt-5.3-codex: 1.75 in, 14.00 out. 2000 x 1.75 + 1000 x 14 = 3500 + 14000 = 17500 -> 0.0175
    ("gpt-5.3-codex", "gpt-5.3-codex", "openai", usage(2000, 1000), None, "0.0175",
     "bundled:openai/gpt-5.3-codex"),
    # claude-opus-4-7: 5.00 in, 0.50 cache read, 6.25 5-minute write, 10.00 1-hour write, 25.00 out.
    # input 10000 = 5000 plain + 2000 read + 3000 written (1000 of them for an hour):
    # 5000 x 5 + 2000 x 0.50 + 2000 x 6.25 + 1000 x 10 + 1000 x 25 = 25000 + 1000 + 12500 + 10000 + 25000
    #   = 73500 -> 0.0735
    ("claude-opus-4-7 caching", "claude-opus-4-7", "anthropic",
     usage(10_000, 1000, cache_read_input_tokens=2000, cache_write_input_tokens=3000,
           cache_write_1h_input_tokens=1000),
     None, "0.0735", "bundled:anthropic/claude-opus-4-7"),
    # claude-opus-4-7 through the Batch API: 50% of every rate. (1000 x 5 + 1000 x 25) x 0.5 = 15000 -> 0.015
    ("claude-opus-4-7 batch", "claude-opus-4-7", "anthropic", usage(1000, 1000), "batch", "0.015",
     "bundled:anthropic/claude-opus-4-7;service_tier=batch"),
    # claude-sonnet-4-7: 3.00 in, 15.00 out. 1000 x 3 + 1000 x 15 = 18000 -> 0.018
    ("claude-sonnet-4-7", "claude-sonnet-4-7", "anthropic", usage(1000, 1000), None, "0.018",
     "bundled:anthropic/claude-sonnet-4-7"),
    # gemini-3-flash: 0.50 in, 3.00 out. 1000 x 0.50 + 1000 x 3 = 3500 -> 0.0035
    ("gemini-3-flash", "gemini-3-flash", "gcp.gemini", usage(1000, 1000), None, "0.0035",
     "bundled:google/gemini-3-flash"),
    # gemini-3.1-flash-lite: 0.25 in, 0.50 audio in, 1.50 out.
    # (4000 - 1000 audio) x 0.25 + 1000 x 0.50 + 1000 x 1.50 = 750 + 500 + 1500 = 2750 -> 0.00275
    ("gemini-3.1-flash-lite audio", "gemini-3.1-flash-lite", "gcp.gemini",
     usage(4000, 1000, audio_input_tokens=1000), None, "0.00275", "bundled:google/gemini-3.1-flash-lite"),
    # gemini-3.5-flash: 1.50 in, 9.00 out and thinking. 1000 x 1.50 + (600 + 400 thinking) x 9 = 1500 + 9000
    #   = 10500 -> 0.0105
    ("gemini-3.5-flash thinking", "gemini-3.5-flash", "gcp.gemini",
     usage(1000, 1000, reasoning_output_tokens=400), None, "0.0105", "bundled:google/gemini-3.5-flash"),
    # grok-4.3: 1.25 in, 2.50 out; batch 20% off.
    # (1000 x 1.25 + 1000 x 2.50) x 0.8 = 3750 x 0.8 = 3000 -> 0.003
    ("grok-4.3 batch", "grok-4.3", "x_ai", usage(1000, 1000), "batch", "0.003",
     "bundled:xai/grok-4.3;service_tier=batch"),
    # Llama 3.2 90B on Bedrock through the US profile: 0.72 in and out. 1000 x 0.72 + 1000 x 0.72 = 1440
    #   -> 0.00144
    ("bedrock us.meta llama", "us.meta.llama3-2-90b-instruct-v1:0", "aws.bedrock", usage(1000, 1000), None,
     "0.00144", "bundled:bedrock/meta.llama3-2-90b-instruct-v1:0;via=bedrock-region"),
    # gpt-4o-transcribe-diarize: 2.50 text in, 6.00 audio in, 10.00 out.
    # 100 x 2.50 + 1000 x 6 + 200 x 10 = 250 + 6000 + 2000 = 8250 -> 0.00825
    ("gpt-4o-transcribe-diarize", "gpt-4o-transcribe-diarize", "openai",
     usage(1100, 200, audio_input_tokens=1000), None, "0.00825", "bundled:openai/gpt-4o-transcribe-diarize"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "provider", "call_usage", "service_tier", "expected", "price_ref"),
    [case[1:] for case in NEW_MODELS],
    ids=[case[0] for case in NEW_MODELS],
)
def test_new_models_cost_what_their_list_prices_give(
    registry: PricingRegistry,
    model: str,
    provider: str,
    call_usage: Usage,
    service_tier: str | None,
    expected: str,
    price_ref: str,
) -> None:
    cost = registry.cost(call_usage, model=model, provider=provider, service_tier=service_tier)
    assert cost is not None
    assert cost.amount == Decimal(expected)
    assert cost.price_ref == price_ref
    assert sum(cost.components.values(), Decimal(0)) == cost.amount


def test_a_dozen_new_models_have_golden_costs() -> None:
    assert len({case[1] for case in NEW_MODELS}) >= 12
