"""Gateways, routers, clouds and unknown snapshots: which price applies, and what the ref admits.

A call through a gateway, a proxy or any OpenAI-compatible host is recorded with a provider the
price table does not know (``openai_compatible``, ``openrouter``, ``unknown``...). A model name
only its maker sells (``gpt-4o-mini``, ``claude-...``, ``gemini-...``) is then priced at the
maker's list price, and ``Cost.price_ref`` carries ``;inferred-provider=<maker>``. A dated
snapshot no layer knows is priced as its family, with ``;inferred-snapshot=<family>``. How a
router's or a cloud's spelling was resolved is in ``;via=<steps>``.

Golden costs are computed by hand from the list prices in the comments (USD per million tokens).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmmeter
from llmmeter import CallRecord, CostStatus, Timings, Usage
from llmmeter.pricing import BundledSource, ModelPrice, PricingRegistry, UsageInconsistentError
from llmmeter.pricing import registry as registry_module
from llmmeter.pricing.cli import add_subcommand
from llmmeter.pricing.sources import INFERRED_MARK, compile_pattern, is_inferred_price, is_pattern
from llmmeter.testing import LocalOpenAIServer, Pacing

from .conftest import Telemetry

CALL_DAY_NS = int(dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC).timestamp() * 1_000_000_000)


@pytest.fixture
def registry() -> PricingRegistry:
    return PricingRegistry.default()


def call(
    model: str, provider: str, input_tokens: int = 1000, output_tokens: int = 1000, **usage: int
) -> CallRecord:
    return CallRecord(
        operation="chat",
        provider=provider,
        request_model=model,
        response_model=model,
        usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens, **usage),  # type: ignore[arg-type]
        timings=Timings(start_time_unix_ns=CALL_DAY_NS),
    )


def priced(registry: PricingRegistry, record: CallRecord) -> tuple[Decimal, str]:
    registry.price(record)
    assert record.cost_status is CostStatus.PRICED, record.cost_status
    assert record.cost is not None and record.cost.price_ref is not None
    return record.cost.amount, record.cost.price_ref


# -- a known model behind a gateway ----------------------------------------------------------


@pytest.mark.parametrize(
    "provider", ["openai_compatible", "unknown", "", "openrouter", "litellm", "acme-gateway"]
)
def test_a_known_model_behind_a_gateway_is_priced_at_its_list_price_and_marked_inferred(
    registry: PricingRegistry, provider: str
) -> None:
    # gpt-4o-mini: input 0.15, cached input 0.075, output 0.60.
    # 800 x 0.15 + 200 x 0.075 + 500 x 0.60 = 120 + 15 + 300 = 435 per million.
    record = call("gpt-4o-mini", provider, input_tokens=1000, output_tokens=500, cache_read_input_tokens=200)
    assert priced(registry, record) == (
        Decimal("0.000435"),
        "bundled:openai/gpt-4o-mini;inferred-provider=openai",
    )
    assert record.cost is not None
    assert record.cost.components == {
        "input": Decimal("0.00012"),
        "cached_input": Decimal("0.000015"),
        "output": Decimal("0.0003"),
    }


def test_a_known_provider_keeps_its_exact_price_and_an_unmarked_ref(registry: PricingRegistry) -> None:
    # The same call, recorded as OpenAI's own endpoint: same amount, no inference in the ref.
    record = call("gpt-4o-mini", "openai", input_tokens=1000, output_tokens=500, cache_read_input_tokens=200)
    assert priced(registry, record) == (Decimal("0.000435"), "bundled:openai/gpt-4o-mini")
    azure = call("gpt-4o-mini", "azure.ai.openai", input_tokens=1000, output_tokens=500)
    assert priced(registry, azure)[1] == "bundled:openai/gpt-4o-mini"


def test_the_inferred_price_is_prepared_once_and_every_call_carries_the_same_marked_ref(
    registry: PricingRegistry,
) -> None:
    refs = {priced(registry, call("gpt-4o-mini", "openai_compatible"))[1] for _ in range(3)}
    assert refs == {"bundled:openai/gpt-4o-mini;inferred-provider=openai"}


@pytest.mark.parametrize("provider", ["vllm", "ollama", "sglang", "llama.cpp", "lmstudio", "hosted_vllm"])
def test_a_server_you_run_is_never_priced_at_a_hosted_list_price(
    registry: PricingRegistry, provider: str
) -> None:
    record = call("gpt-4o-mini", provider)
    registry.price(record)
    assert record.cost is None and record.cost_status is CostStatus.UNPRICED


@pytest.mark.parametrize(
    "model",
    ["meta-llama/Llama-3.3-70B-Instruct-Turbo", "Qwen/Qwen2.5-Coder-32B-Instruct", "llama-3.3-70b-versatile"],
)
def test_open_weights_behind_a_gateway_are_not_priced_as_some_host(
    registry: PricingRegistry, model: str
) -> None:
    # Together's and Groq's names of open weights: another host (or your own vLLM) bills them otherwise.
    assert registry.lookup(model, provider="openai_compatible") is None


def test_a_host_named_in_the_model_name_prices_its_open_weights(registry: PricingRegistry) -> None:
    # LiteLLM's spelling names the host: Together's Llama 3.3 70B Turbo, 0.88 in and out.
    # 1000 x 0.88 + 1000 x 0.88 = 1760 per million.
    record = call("together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo", "openai_compatible")
    assert priced(registry, record) == (
        Decimal("0.00176"),
        "bundled:together/meta-llama/Llama-3.3-70B-Instruct-Turbo;via=provider-prefix;inferred-provider=together",
    )


def test_a_price_registered_for_the_gateway_wins_over_the_inferred_one(registry: PricingRegistry) -> None:
    registry.register(
        "gpt-4o-mini", ModelPrice(input_per_mtok="0.10", output_per_mtok="0.50"), provider="acme"
    )
    resolved = registry.lookup("gpt-4o-mini", provider="acme")
    assert resolved is not None and resolved.source == "user" and not resolved.inferred


# -- router and cloud spellings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "price_ref"),
    [
        (
            "openai/gpt-4o-mini",
            "openrouter",
            "bundled:openai/gpt-4o-mini;via=provider-prefix;inferred-provider=openai",
        ),
        (
            "openrouter/openai/gpt-4o-mini",
            "openai_compatible",
            "bundled:openai/gpt-4o-mini;via=router-prefix+provider-prefix;inferred-provider=openai",
        ),
        (
            "anthropic/claude-3-5-haiku-20241022",
            "openrouter",
            "bundled:anthropic/claude-3-5-haiku-20241022;via=provider-prefix;inferred-provider=anthropic",
        ),
        (
            "anthropic/claude-3.5-haiku",
            "openrouter",
            "bundled:anthropic/claude-3-5-haiku;via=provider-prefix+router-name;inferred-provider=anthropic",
        ),
        (
            "anthropic/claude-3.7-sonnet:thinking",
            "openrouter",
            "bundled:anthropic/claude-3-7-sonnet;via=router-variant+provider-prefix+router-name;"
            "inferred-provider=anthropic",
        ),
        (
            "google/gemini-2.0-flash",
            "openrouter",
            "bundled:google/gemini-2.0-flash;via=provider-prefix;inferred-provider=google",
        ),
        (
            "google/gemini-2.0-flash-001",
            "openrouter",
            "bundled:google/gemini-2.0-flash-00?;via=provider-prefix+pattern;inferred-provider=google",
        ),
        ("x-ai/grok-4", "openrouter", "bundled:xai/grok-4;via=provider-prefix;inferred-provider=xai"),
        (
            "groq/llama-3.3-70b-versatile",
            "litellm",
            "bundled:groq/llama-3.3-70b-versatile;via=provider-prefix;inferred-provider=groq",
        ),
        (
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "aws.bedrock",
            "bundled:anthropic/claude-3-5-sonnet-20241022;via=bedrock-id",
        ),
        (
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            "aws.bedrock",
            "bundled:anthropic/claude-3-5-haiku-20241022;via=bedrock-id",
        ),
        (
            "bedrock/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "openai_compatible",
            "bundled:anthropic/claude-3-5-sonnet-20241022;via=router-prefix+bedrock-id;inferred-provider=anthropic",
        ),
        (
            "claude-3-5-sonnet-v2@20241022",
            "gcp.vertex_ai",
            "bundled:anthropic/claude-3-5-sonnet-20241022;via=vertex-version",
        ),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-sonnet-20240620-v1:0",
            "aws.bedrock",
            "bundled:anthropic/claude-3-5-sonnet-20240620;via=resource-name+bedrock-id",
        ),
        (
            "bedrock/converse/anthropic.claude-3-5-haiku-20241022-v1:0",
            "openai_compatible",
            "bundled:anthropic/claude-3-5-haiku-20241022;via=router-prefix+bedrock-id;inferred-provider=anthropic",
        ),
        (
            "projects/p1/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022",
            "gcp.vertex_ai",
            "bundled:anthropic/claude-3-5-sonnet-20241022;via=resource-name+provider-prefix+vertex-version",
        ),
        (
            "publishers/google/models/gemini-2.0-flash-001",
            "gcp.vertex_ai",
            "bundled:google/gemini-2.0-flash-00?;via=resource-name+provider-prefix+pattern",
        ),
        (
            "vertex_ai/claude-3-5-haiku@20241022",
            "openai_compatible",
            "bundled:anthropic/claude-3-5-haiku-20241022;via=router-prefix+vertex-version;inferred-provider=anthropic",
        ),
    ],
)
def test_router_and_cloud_spellings_resolve_to_the_makers_entry_and_say_how(
    registry: PricingRegistry, model: str, provider: str, price_ref: str
) -> None:
    resolved = registry.lookup(model, provider=provider)
    assert resolved is not None
    assert resolved.price_ref == price_ref


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("openai/o4-mini-high", "bundled:openai/o4-mini"),
        ("openrouter/openai/o3-mini-high", "bundled:openai/o3-mini"),
        ("google/gemini-pro-1.5", "bundled:google/gemini-1.5-pro"),
        ("google/gemini-flash-1.5-8b", "bundled:google/gemini-1.5-flash-8b"),
        ("x-ai/grok-3-mini-beta", "bundled:xai/grok-3-mini"),
        ("x-ai/grok-4-fast", "bundled:xai/grok-4-fast-reasoning"),
        ("mistralai/mistral-medium-3", "bundled:mistral/mistral-medium-2505"),
    ],
)
def test_openrouter_ids_that_are_not_the_makers_name_are_aliases_of_its_entry(
    registry: PricingRegistry, model: str, entry: str
) -> None:
    resolved = registry.lookup(model, provider="openrouter")
    assert resolved is not None and resolved.matched_via == "alias"
    assert resolved.price_ref == f"{entry};via=alias;inferred-provider={resolved.provider}"


def test_openrouter_claude_is_billed_at_anthropics_list_price(registry: PricingRegistry) -> None:
    # claude-3-5-haiku: input 0.80, output 4.00. 2000 x 0.80 + 100 x 4.00 = 1600 + 400 = 2000 per million.
    amount, ref = priced(registry, call("anthropic/claude-3.5-haiku", "openrouter", 2000, 100))
    assert amount == Decimal("0.002") and ref.endswith(";inferred-provider=anthropic")


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "aws.bedrock"),
        ("claude-3-5-sonnet-v2@20241022", "gcp.vertex_ai"),
    ],
)
def test_claude_on_bedrock_and_vertex_is_billed_at_anthropics_list_price(
    registry: PricingRegistry, model: str, provider: str
) -> None:
    # claude-3-5-sonnet-20241022: input 3.00, cache write 3.75, output 15.00.
    # 600 x 3 + 400 x 3.75 + 1000 x 15 = 1800 + 1500 + 15000 = 18300 per million.
    amount, ref = priced(registry, call(model, provider, 1000, 1000, cache_write_input_tokens=400))
    assert amount == Decimal("0.0183")
    assert INFERRED_MARK not in ref


@pytest.mark.parametrize(
    ("model", "amount", "entry"),
    [
        # A geographic profile of Sonnet 4.5 costs 10% more: 3.30 in, 16.50 out -> 3300 + 16500 = 19800.
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "0.0198", "bundled:bedrock/re:"),
        ("bedrock/eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "0.0198", "bundled:bedrock/re:"),
        # The global profile and the in-region id bill Anthropic's list price: 3000 + 15000 = 18000.
        (
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "0.018",
            "bundled:anthropic/claude-sonnet-4-5-20250929",
        ),
        (
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            "0.018",
            "bundled:anthropic/claude-sonnet-4-5-20250929",
        ),
    ],
)
def test_bedrock_geographic_profiles_of_newer_claude_models_cost_ten_percent_more(
    registry: PricingRegistry, model: str, amount: str, entry: str
) -> None:
    got, ref = priced(registry, call(model, "aws.bedrock"))
    assert got == Decimal(amount) and ref.startswith(entry)
    assert INFERRED_MARK not in ref  # the provider is Bedrock, declared


def test_an_application_inference_profile_is_an_opaque_id_and_stays_unpriced(
    registry: PricingRegistry,
) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    assert registry.lookup(arn, provider="aws.bedrock") is None


def test_bedrock_serves_no_openai_model(registry: PricingRegistry) -> None:
    assert registry.lookup("gpt-4o-mini", provider="aws.bedrock") is None


def test_a_router_variant_that_changes_the_price_stays_unpriced(registry: PricingRegistry) -> None:
    # :free costs nothing and :online adds search fees: neither is the base model's price.
    assert registry.lookup("anthropic/claude-3.5-haiku:free", provider="openrouter") is None
    assert registry.lookup("openai/gpt-4o-mini:online", provider="openrouter") is None


def test_open_weights_through_openrouter_have_no_single_list_price(registry: PricingRegistry) -> None:
    # OpenRouter reports what it charged (usage.cost), which the record keeps; no table can know it.
    assert registry.lookup("meta-llama/llama-3.3-70b-instruct", provider="openrouter") is None


# -- unknown dated snapshots ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "amount", "price_ref"),
    [
        # gpt-4o: 2.50 in, 10.00 out -> 1000 x 2.5 + 1000 x 10 = 12500 per million.
        (
            "gpt-4o-2099-01-01",
            "openai",
            "0.0125",
            "bundled:openai/gpt-4o;via=snapshot;inferred-snapshot=gpt-4o",
        ),
        # claude-3-5-haiku: 0.80 in, 4.00 out -> 800 + 4000 = 4800 per million.
        (
            "claude-3-5-haiku-29991231",
            "anthropic",
            "0.0048",
            "bundled:anthropic/claude-3-5-haiku;via=snapshot;inferred-snapshot=claude-3-5-haiku",
        ),
        (
            "gpt-4o-2099-01-01",
            "openai_compatible",
            "0.0125",
            "bundled:openai/gpt-4o;via=snapshot;inferred-provider=openai;inferred-snapshot=gpt-4o",
        ),
    ],
)
def test_an_unknown_dated_snapshot_is_priced_as_its_family_and_marked_inferred(
    registry: PricingRegistry, model: str, provider: str, amount: str, price_ref: str
) -> None:
    assert priced(registry, call(model, provider)) == (Decimal(amount), price_ref)


@pytest.mark.parametrize(
    ("model", "amount", "price_ref"),
    [
        # gpt-4o-2024-05-13 has its own, higher price: 5.00 in, 15.00 out -> 5000 + 15000 = 20000.
        ("gpt-4o-2024-05-13", "0.02", "bundled:openai/gpt-4o-2024-05-13"),
        # claude-3-5-haiku-20241022: 0.80 / 4.00 -> 4800 per million.
        ("claude-3-5-haiku-20241022", "0.0048", "bundled:anthropic/claude-3-5-haiku-20241022"),
    ],
)
def test_a_known_snapshot_keeps_its_own_price(
    registry: PricingRegistry, model: str, amount: str, price_ref: str
) -> None:
    provider = "anthropic" if model.startswith("claude") else "openai"
    assert priced(registry, call(model, provider)) == (Decimal(amount), price_ref)


def test_a_family_price_you_register_covers_known_snapshots_without_an_inference(
    registry: PricingRegistry,
) -> None:
    registry.register("gpt-4o", ModelPrice(input_per_mtok="1.00", output_per_mtok="4.00"), provider="openai")
    known = registry.lookup("gpt-4o-2024-08-06", provider="openai")
    unknown = registry.lookup("gpt-4o-2099-01-01", provider="openai")
    assert known is not None and known.source == "user" and not known.snapshot_inferred
    assert unknown is not None and unknown.source == "user" and unknown.snapshot_inferred


def test_a_latest_alias_is_not_an_inference(registry: PricingRegistry) -> None:
    resolved = registry.lookup("claude-3-5-haiku-latest", provider="anthropic")
    assert resolved is not None and not resolved.inferred
    assert resolved.price_ref == "bundled:anthropic/claude-3-5-haiku;via=latest"


def test_a_report_finds_inferred_costs_by_their_ref() -> None:
    assert is_inferred_price("bundled:openai/gpt-4o-mini;inferred-provider=openai")
    assert is_inferred_price("bundled:openai/gpt-4o;via=snapshot;inferred-snapshot=gpt-4o;service_tier=batch")
    assert not is_inferred_price("bundled:openai/gpt-4o-mini;via=provider-prefix")
    assert not is_inferred_price("usage.cost")
    assert not is_inferred_price(None)


def test_tiers_follow_the_resolution_notes_in_the_ref(registry: PricingRegistry) -> None:
    record = call("gpt-4o-mini", "openai_compatible")
    record.service_tier = "batch"
    _, ref = priced(registry, record)
    assert ref == "bundled:openai/gpt-4o-mini;inferred-provider=openai;service_tier=batch"


# -- any string, never an exception -----------------------------------------------------------


ODD_NAMES = [
    "",
    "/",
    "@",
    "ft:",
    ":ft-",
    "openrouter/",
    "openrouter/openrouter/openrouter/openrouter/gpt-4o-mini",
    "anthropic.",
    "us.anthropic.-v1:0",
    "re:(a+)+$",
    "gpt-4o-mini\x00",
    "\x1b[31mred\nline",
    "\ud800",
    "x" * 10_000,
    "gpt-4o-" + "1" * 600,
    "claude-" + "9." * 300,
]


@pytest.mark.parametrize("model", ODD_NAMES, ids=range(len(ODD_NAMES)))
def test_an_odd_model_name_is_unpriced_or_priced_never_an_error(
    registry: PricingRegistry, model: str
) -> None:
    record = call(model, "openai_compatible")
    registry.price(record)
    assert record.cost_status in {CostStatus.UNPRICED, CostStatus.PRICED}


@settings(max_examples=300, deadline=None)
@given(model=st.text(max_size=200), provider=st.one_of(st.none(), st.text(max_size=30)))
def test_any_model_and_provider_string_gets_an_answer(model: str, provider: str | None) -> None:
    registry = PricingRegistry.default()
    resolved = registry.lookup(model, provider=provider)
    assert resolved is None or resolved.price_ref.startswith("bundled:")


def run_show(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="llmmeter")
    add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prices", "show", *argv])
    out = io.StringIO()
    return args.func(args, out), out.getvalue()


def test_prices_show_says_what_a_router_name_resolves_to_and_how() -> None:
    status, output = run_show("openai/gpt-4o-mini", "--provider", "openai_compatible")
    assert status == 0
    assert "priced as:  bundled:openai/gpt-4o-mini  (matched via provider-prefix)" in output
    assert "price ref:  bundled:openai/gpt-4o-mini;via=provider-prefix;inferred-provider=openai" in output
    assert (
        "resolved:   a provider prefix (openai/, anthropic/, azure/, groq/...) names the provider" in output
    )
    assert "inferred:   provider 'openai' from the model name" in output


def test_prices_show_without_a_provider_says_what_a_gateway_call_would_be_marked() -> None:
    status, output = run_show("openai/gpt-4o-mini")
    assert status == 0
    assert (
        "resolved:   a provider prefix (openai/, anthropic/, azure/, groq/...) names the provider" in output
    )
    assert "provider:   openai (through a gateway or an unknown host, the same price, marked" in output


def test_prices_show_says_when_a_snapshot_was_priced_as_its_family() -> None:
    status, output = run_show("gpt-4o-2099-01-01", "--provider", "openai")
    assert status == 0 and "inferred:   no price for this snapshot: priced as its family 'gpt-4o'" in output


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["x" * 10_000], "a 10000-character name"),
        ([""], "an empty model name"),
        (["\x1b[31mred\nline"], "register a price"),
        (["gpt-4o-mini", "--provider", "vllm"], "'vllm' is a server you run"),
        (["llama-3.3-70b-versatile", "--provider", "openai_compatible"], "priced for provider 'groq'"),
        (
            ["meta-llama/llama-3.3-70b-instruct", "--provider", "openrouter"],
            "OpenRouter reports what it charged",
        ),
        (["llama-3.3-70b-versatile", "--provider", "p" * 10_000], "(10000 characters)"),
    ],
)
def test_prices_show_answers_bad_input_in_one_line(argv: list[str], reason: str) -> None:
    status, output = run_show(*argv)
    assert status == 1
    assert output.count("\n") == 1 and reason in output and len(output) < 400


# -- end to end: the real openai client pointed at a gateway on this machine ---------------------


@pytest.fixture(scope="module")
def gateway() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=0, itl_ms=0, tokens=4), served_model="gpt-4o-mini") as srv:
        yield srv


def test_an_openai_client_pointed_at_a_gateway_records_a_priced_inferred_cost(
    gateway: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.OpenAI(base_url=gateway.base_url, api_key="test", max_retries=0))
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there friend"}]
    )
    llmmeter.flush()
    (record,) = telemetry.records
    assert record.usage is not None
    tokens_in, tokens_out = record.usage.input_tokens, record.usage.output_tokens
    assert record.provider == "openai_compatible" and record.cost_status is CostStatus.PRICED
    assert record.cost is not None
    assert record.cost.price_ref == "bundled:openai/gpt-4o-mini;inferred-provider=openai"
    # gpt-4o-mini: 0.15 per million input tokens, 0.60 per million output tokens.
    assert tokens_in is not None and tokens_out is not None
    assert record.cost.amount == (Decimal("0.15") * tokens_in + Decimal("0.60") * tokens_out) / 1_000_000


async def test_an_async_openai_client_pointed_at_a_gateway_records_a_priced_inferred_cost(
    gateway: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    client = llmmeter.instrument(openai.AsyncOpenAI(base_url=gateway.base_url, api_key="test", max_retries=0))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    async for _ in stream:
        pass
    llmmeter.flush()
    (record,) = telemetry.records
    assert record.cost is not None and is_inferred_price(record.cost.price_ref)
    assert record.cost.price_ref == "bundled:openai/gpt-4o-mini;inferred-provider=openai"


def test_inferred_cost_is_marked_on_the_cost_metric_and_the_span_so_a_dashboard_can_sum_it(
    gateway: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    gateway_client = llmmeter.instrument(
        openai.OpenAI(base_url=gateway.base_url, api_key="test", max_retries=0)
    )
    declared = llmmeter.instrument(
        openai.OpenAI(base_url=gateway.base_url, api_key="test", max_retries=0), provider="openai"
    )
    for client in (gateway_client, declared):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    points = telemetry.metric_points("gen_ai.client.operation.cost")
    inferred = {
        p.attributes["gen_ai.provider.name"]: p.attributes.get("llmmeter.cost.inferred")  # type: ignore[attr-defined]
        for p in points
    }
    assert inferred == {"openai_compatible": True, "openai": None}
    spans = {s.attributes["gen_ai.provider.name"]: s.attributes for s in telemetry.finished_spans()}  # type: ignore[index]
    assert spans["openai_compatible"]["llmmeter.cost.inferred"] is True
    assert "llmmeter.cost.inferred" not in spans["openai"]


# -- the bundled table's patterns ----------------------------------------------------------------

OTHER_KINDS = ("tts", "audio", "image", "embedding", "realtime", "transcribe", "live")


def test_no_bundled_pattern_captures_a_model_that_has_its_own_entry() -> None:
    entries = BundledSource().entries
    exact = [entry for entry in entries if not is_pattern(entry.model)]
    for pattern in (entry for entry in entries if is_pattern(entry.model)):
        regex = compile_pattern(pattern.model)
        captured = [
            entry.model
            for entry in exact
            if regex.fullmatch(entry.model) and pattern.provider in (entry.provider, None)
        ]
        assert captured == [], pattern.model


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_no_bundled_glob_prices_another_kind_of_model_at_its_family_rates(kind: str) -> None:
    # gemini-2.5-pro-preview-* priced gemini-2.5-pro-preview-tts at text rates (1.25 / 10, not 1.00 / 20).
    for entry in BundledSource().entries:
        if is_pattern(entry.model) and not entry.model.startswith("re:"):
            probe = entry.model.replace("*", kind).replace("?", kind)
            assert not compile_pattern(entry.model).fullmatch(probe), entry.model


def test_gemini_tts_previews_are_priced_as_speech() -> None:
    # gemini-2.5-pro-preview-tts: 1.00 per million text tokens in, 20.00 per million audio tokens out.
    # 100 x 1.00 + 1000 x 20.00 = 20100 per million.
    cost = PricingRegistry.default().cost(
        Usage(input_tokens=100, output_tokens=1000, audio_output_tokens=1000),
        model="gemini-2.5-pro-preview-tts",
        provider="gcp.gemini",
    )
    assert cost is not None and cost.amount == Decimal("0.0201")
    assert cost.price_ref == "bundled:google/gemini-2.5-pro-preview-tts"


# -- over the whole bundled table ------------------------------------------------------------------


def bundled_names(providers: frozenset[str]) -> list[tuple[str, str]]:
    return sorted(
        {
            (entry.model, entry.provider)
            for entry in BundledSource().entries
            if entry.provider in providers and not is_pattern(entry.model)
        }
    )


MAKERS = frozenset({"openai", "anthropic", "google", "mistral", "deepseek", "xai"})
HOSTS = frozenset({"groq", "together", "fireworks"})


def test_every_makers_model_behind_a_gateway_gets_the_makers_own_price_marked_inferred(
    registry: PricingRegistry,
) -> None:
    for model, maker in bundled_names(MAKERS):
        direct = registry.lookup(model, provider=maker)
        gateway = registry.lookup(model, provider="openai_compatible")
        assert direct is not None and gateway is not None, model
        assert gateway.price is direct.price, model
        assert gateway.price_ref == f"{direct.price_ref};inferred-provider={maker}", model


def test_no_hosts_open_weights_name_is_inferred_behind_a_gateway(registry: PricingRegistry) -> None:
    for model, host in bundled_names(HOSTS):
        resolved = registry.lookup(model, provider="openai_compatible")
        assert resolved is None or resolved.provider != host, model


def test_no_bundled_name_is_priced_on_a_server_you_run(registry: PricingRegistry) -> None:
    for model, _ in bundled_names(MAKERS | HOSTS):
        assert registry.lookup(model, provider="vllm") is None, model


# -- the plain-usage shortcut of the cost engine ----------------------------------------------------

maybe_count = st.one_of(st.none(), st.integers(min_value=-3, max_value=10**12))
zero_or_none = st.sampled_from([None, 0])


@settings(max_examples=300, deadline=None)
@given(
    input_tokens=maybe_count,
    output_tokens=maybe_count,
    parts=st.fixed_dictionaries(
        {
            name: zero_or_none
            for name in (
                "cache_read_input_tokens",
                "cache_write_input_tokens",
                "reasoning_output_tokens",
                "audio_input_tokens",
                "audio_output_tokens",
                "image_input_tokens",
            )
        }
    ),
)
def test_a_usage_without_parts_is_billed_exactly_as_the_general_formula_bills_it(
    input_tokens: int | None, output_tokens: int | None, parts: dict[str, int | None]
) -> None:
    rates = ModelPrice(input_per_mtok="0.15", output_per_mtok="0.60", cached_input_per_mtok="0.075").rates()
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, **parts)  # type: ignore[arg-type]
    outcomes = []
    for components in (registry_module._token_components, registry_module._all_token_components):
        try:
            outcomes.append(components(rates, usage))
        except UsageInconsistentError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
    assert list(outcomes[0]) == list(outcomes[1])  # same components, same order
