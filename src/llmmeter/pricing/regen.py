"""Regenerate the bundled table's ``reference-*.json`` files from the reference price tables.

Maintainers run it when a new copy of the references arrives (never at run time, never over the
network)::

    python -m llmmeter.pricing.regen --reference ../shared/pricing-reference            # write
    python -m llmmeter.pricing.regen --reference ../shared/pricing-reference --check    # compare only

Every chat, embedding, image, speech, transcription and realtime model that LiteLLM's table or
OpenLIT's lists for the providers llmmeter prices is resolved the way a call would resolve it
(``gen_ai.provider.name`` and model id as the reference spells them) against the curated
``*.yaml`` files:

* not resolved, or only as an unknown snapshot's family: an entry is generated for it, with the
  reference's richer fields (long-context tiers, batch / flex / priority tiers, cache writes,
  audio and image token rates, per-image / per-minute / per-character fees) and its provenance;
* resolved through a Bedrock spelling of another entry (a geographic profile, a model id of the
  maker) whose reference price differs: the Bedrock id gets an entry of its own (the uplift);
* resolved to an entry: the rates both give are compared. A difference above ``--tolerance``
  that ``reference_disagreements.yaml`` does not list (with the reason the curated price is
  kept) fails the run, and nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import fnmatch
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmmeter.pricing.models import ModelPrice
from llmmeter.pricing.registry import PricingRegistry
from llmmeter.pricing.sources import (
    GENERATED_PREFIX,
    BundledSource,
    PriceEntry,
    ResolvedPrice,
    TableSource,
)

__all__ = [
    "Disagreement",
    "Outcome",
    "ReferencePrice",
    "Skipped",
    "compare_with_references",
    "generated_documents",
    "main",
    "reference_prices",
]

LITELLM_FILE = "litellm_model_prices.json"
OPENLIT_FILE = "openlit_pricing.json"
LITELLM_LABEL = "LiteLLM 1.110.2"
OPENLIT_LABEL = "OpenLIT ad20b7b"
LITELLM_URL = "https://github.com/BerriAI/litellm/blob/main/model_prices_and_context_window.json"
OPENLIT_URL = "https://github.com/openlit/openlit/blob/main/assets/pricing.json"
REFERENCE_DATE = dt.date(2026, 11, 27)
"""The day the reference copies were taken (their README); generated entries' ``checked_on``."""
DEFAULT_TOLERANCE = Decimal("0.01")
"""A rate more than 1% away from the reference's is a disagreement."""

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1000)
_AT = dt.datetime.combine(REFERENCE_DATE, dt.time(12), tzinfo=dt.UTC)

# litellm_provider -> (table provider, gen_ai.provider.name of a call, key prefixes to drop)
_LITELLM_PROVIDERS: Mapping[str, tuple[str, str, tuple[str, ...]]] = {
    "openai": ("openai", "openai", ("openai/",)),
    "text-completion-openai": ("openai", "openai", ("text-completion-openai/",)),
    "anthropic": ("anthropic", "anthropic", ("anthropic/",)),
    "gemini": ("google", "gcp.gemini", ("gemini/",)),
    "mistral": ("mistral", "mistral_ai", ("mistral/",)),
    "deepseek": ("deepseek", "deepseek", ("deepseek/",)),
    "xai": ("xai", "x_ai", ("xai/",)),
    "groq": ("groq", "groq", ("groq/",)),
    "together_ai": ("together", "together_ai", ("together_ai/",)),
    "fireworks_ai": ("fireworks", "fireworks_ai", ("fireworks_ai/",)),
    "fireworks_ai-embedding-models": ("fireworks", "fireworks_ai", ("fireworks_ai/",)),
    "openrouter": ("openrouter", "openrouter", ("openrouter/",)),
    # Clouds after the makers: their ids are resolved against the makers' entries first.
    "azure": ("openai", "azure.ai.openai", ("azure/",)),
    "azure_text": ("openai", "azure.ai.openai", ("azure_text/",)),
    "vertex_ai-language-models": ("google", "gcp.vertex_ai", ("vertex_ai/",)),
    "vertex_ai": ("google", "gcp.vertex_ai", ("vertex_ai/",)),
    "vertex_ai-anthropic_models": ("anthropic", "gcp.vertex_ai", ("vertex_ai/",)),
    "vertex_ai-embedding-models": ("google", "gcp.vertex_ai", ("vertex_ai/",)),
    "bedrock": ("bedrock", "aws.bedrock", ("bedrock/",)),
    "bedrock_converse": ("bedrock", "aws.bedrock", ("bedrock/",)),
    "bedrock_mantle": ("bedrock", "aws.bedrock", ("bedrock_mantle/",)),
}
_VERTEX_PARTNERS = re.compile(r"vertex_ai-\w+_models")
"""Vertex AI's partner models (Llama, Mistral, DeepSeek... on Vertex): Google bills them."""

_KINDS: Mapping[str, str] = {
    "chat": "chat",
    "responses": "chat",
    "completion": "chat",
    "embedding": "embedding",
    "image_generation": "image",
    "audio_speech": "speech",
    "audio_transcription": "transcription",
    "realtime": "realtime",
    "moderation": "moderation",
}
"""LiteLLM's ``mode`` -> llmmeter's kind; other modes (video, rerank, OCR, search...) are skipped."""

_TOKEN_FIELDS: Mapping[str, str] = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cached_input_per_mtok",
    "cache_creation_input_token_cost": "cache_write_per_mtok",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h_per_mtok",
    "output_cost_per_reasoning_token": "reasoning_per_mtok",
    "input_cost_per_audio_token": "audio_input_per_mtok",
    "cache_read_input_audio_token_cost": "cached_audio_input_per_mtok",
    "output_cost_per_audio_token": "audio_output_per_mtok",
    "input_cost_per_image_token": "image_input_per_mtok",
    "output_cost_per_image_token": "image_output_per_mtok",
}
_SERVICE_TIERS: Mapping[str, str] = {"_batches": "batch", "_flex": "flex", "_priority": "priority"}
_PROMPT_TIER = re.compile(r"(?P<base>.+)_above_(?P<thousands>\d+)k_tokens$")

COMPARED_FIELDS: tuple[str, ...] = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "audio_input_per_mtok",
    "audio_output_per_mtok",
    "per_image",
    "per_audio_minute",
    "per_million_characters",
)
"""The rates compared between a bundled entry and a reference (both must give the rate)."""

_OPENLIT_MAKERS: tuple[tuple[str, str, str], ...] = (
    # (name prefix, table provider, gen_ai.provider.name); first match wins
    ("azure_", "openai", "azure.ai.openai"),
    ("anthropic.", "bedrock", "aws.bedrock"),
    ("amazon.", "bedrock", "aws.bedrock"),
    ("meta.", "bedrock", "aws.bedrock"),
    ("mistral.", "bedrock", "aws.bedrock"),
    ("cohere.", "bedrock", "aws.bedrock"),
    ("ai21.", "bedrock", "aws.bedrock"),
    ("gpt-", "openai", "openai"),
    ("o1", "openai", "openai"),
    ("o3", "openai", "openai"),
    ("o4", "openai", "openai"),
    ("text-embedding-", "openai", "openai"),
    ("ada", "openai", "openai"),
    ("text-ada", "openai", "openai"),
    ("dall-e", "openai", "openai"),
    ("tts-", "openai", "openai"),
    ("claude-", "anthropic", "anthropic"),
    ("gemini-", "google", "gcp.gemini"),
    ("text-bison", "google", "gcp.vertex_ai"),
    ("text-unicorn", "google", "gcp.vertex_ai"),
    ("chat-bison", "google", "gcp.vertex_ai"),
    ("textembedding-gecko", "google", "gcp.vertex_ai"),
    ("mistral-", "mistral", "mistral_ai"),
    ("open-mistral", "mistral", "mistral_ai"),
    ("open-mixtral", "mistral", "mistral_ai"),
    ("grok-", "xai", "x_ai"),
    ("deepseek-chat", "deepseek", "deepseek"),
    ("deepseek-reasoner", "deepseek", "deepseek"),
    ("llama3-", "groq", "groq"),
    ("mixtral-8x7b-32768", "groq", "groq"),
    ("gemma-7b-it", "groq", "groq"),
    ("whisper-large-v3", "groq", "groq"),
    ("canopylabs/", "groq", "groq"),
    ("moonshotai/kimi-k2-instruct", "groq", "groq"),
    ("openai/gpt-oss-", "groq", "groq"),
    ("meta-llama/", "together", "together_ai"),
    ("qwen/", "together", "together_ai"),
    ("codellama/", "together", "together_ai"),
    ("databricks/", "together", "together_ai"),
    ("deepseek-ai/", "together", "together_ai"),
    ("google/gemma", "together", "together_ai"),
    ("gryphe/", "together", "together_ai"),
    ("nvidia/", "together", "together_ai"),
    ("black-forest-labs/", "together", "together_ai"),
    ("stabilityai/", "together", "together_ai"),
)
"""OpenLIT keys name no provider: the makers and hosts its names belong to (lower-case prefixes)."""
_OPENLIT_SECTIONS: Mapping[str, str] = {"chat": "chat", "embeddings": "embedding", "images": "image"}


@dataclasses.dataclass(frozen=True, slots=True)
class ReferencePrice:
    """One model's price as a reference table gives it, in llmmeter's price-file fields."""

    reference: str
    """``LiteLLM 1.110.2`` or ``OpenLIT ad20b7b``."""
    key: str
    """The reference's own key (``xai/grok-4.3``)."""
    provider: str
    """The bundled table's provider key the price belongs to."""
    call_provider: str
    """The ``gen_ai.provider.name`` of a call to this model (``azure.ai.openai``, ``aws.bedrock``...)."""
    model: str
    """The model id as a call names it (the key without the reference's provider prefix)."""
    fields: Mapping[str, Any]
    """Price-file fields (rates per million tokens as exact strings, ``kind``, ``notes``...)."""
    source_url: str

    @property
    def label(self) -> str:
        """``litellm:xai/grok-4.3``: how disagreements and the accepted list name the key."""
        return f"{self.reference.split()[0].lower()}:{self.key}"


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    """A reference key that yields no entry, and why."""

    label: str
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Disagreement:
    """A rate of a bundled entry that differs from a reference's by more than the tolerance."""

    label: str
    price_ref: str
    field: str
    reference_value: Decimal
    bundled_value: Decimal

    @property
    def relative(self) -> Decimal:
        """``|reference - bundled| / max(reference, bundled)``."""
        high = max(self.reference_value, self.bundled_value)
        return abs(self.reference_value - self.bundled_value) / high if high else Decimal(0)

    def __str__(self) -> str:
        return (
            f"{self.label} -> {self.price_ref}: {self.field} reference {self.reference_value} "
            f"bundled {self.bundled_value} ({self.relative:.1%})"
        )


@dataclasses.dataclass(slots=True)
class Outcome:
    """What comparing the curated table with the references found."""

    generated: list[ReferencePrice] = dataclasses.field(default_factory=list)
    agreed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(reference label, price ref) of every reference model an existing entry prices within tolerance."""
    disagreements: list[Disagreement] = dataclasses.field(default_factory=list)
    """Above the tolerance and not accepted: the run fails."""
    accepted: list[tuple[Disagreement, str]] = dataclasses.field(default_factory=list)
    """Above the tolerance, with the reason the bundled price is kept."""
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    checked_entries: set[tuple[str, str | None]] = dataclasses.field(default_factory=set)
    """(model, provider) of every bundled entry some reference key resolved to."""
    unused_acceptances: list[str] = dataclasses.field(default_factory=list)
    aliases: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    """Snapshot -> (provider, curated family) where the reference's snapshot rates are a known error."""


# -- reading the references ---------------------------------------------------------------------


def reference_prices(reference_dir: Path) -> tuple[list[ReferencePrice], list[Skipped]]:
    """Every price the two reference tables give for the providers llmmeter prices, in order
    (makers before clouds and routers, LiteLLM before OpenLIT), and the keys skipped."""
    litellm = json.loads((reference_dir / LITELLM_FILE).read_text(encoding="utf-8"))
    openlit = json.loads((reference_dir / OPENLIT_FILE).read_text(encoding="utf-8"))
    prices: list[ReferencePrice] = []
    skipped: list[Skipped] = []
    for item in (*_litellm_prices(litellm), *_openlit_prices(openlit)):
        if isinstance(item, ReferencePrice):
            prices.append(item)
        else:
            skipped.append(item)
    return prices, skipped


def _litellm_prices(data: Mapping[str, Any]) -> Iterator[ReferencePrice | Skipped]:
    order = {name: position for position, name in enumerate(_LITELLM_PROVIDERS)}
    rows = []
    for key, entry in data.items():
        if not isinstance(entry, dict):
            continue
        litellm_provider = entry.get("litellm_provider")
        route = _LITELLM_PROVIDERS.get(litellm_provider or "")
        if route is None and _VERTEX_PARTNERS.fullmatch(litellm_provider or ""):
            route = ("google", "gcp.vertex_ai", ("vertex_ai/",))
        if route is None:
            continue
        rows.append((order.get(litellm_provider or "", len(order)), key, entry, route))
    rows.sort(key=lambda row: row[0])
    for _, key, entry, (provider, call_provider, prefixes) in rows:
        yield _litellm_price(key, entry, provider, call_provider, prefixes)


def _litellm_price(
    key: str, entry: Mapping[str, Any], provider: str, call_provider: str, prefixes: tuple[str, ...]
) -> ReferencePrice | Skipped:
    label = f"litellm:{key}"
    kind = _KINDS.get(str(entry.get("mode")))
    if kind is None:
        return Skipped(label, f"mode {entry.get('mode')!r}: not a chat, embedding, image or audio model")
    model = next((key.removeprefix(prefix) for prefix in prefixes if key.startswith(prefix)), key)
    source = str(entry.get("source") or LITELLM_URL)
    if not source.startswith("http"):  # "OpenAI needs to add pricing for this ft model..."
        return Skipped(label, f"a placeholder, not a published price: {source[:60]!r}")
    reason = _unmodelled_key(model, provider, call_provider)
    if reason is not None:
        return Skipped(label, reason)
    try:
        fields = _litellm_fields(entry, kind)
    except (ValueError, InvalidOperation) as exc:
        return Skipped(label, str(exc))
    return _checked(
        ReferencePrice(
            reference=LITELLM_LABEL,
            key=key,
            provider=provider,
            call_provider=call_provider,
            model=model,
            fields=fields,
            source_url=source,
        )
    )


_OPENAI_MODEL = re.compile(
    r"(?:gpt|o\d|chatgpt|codex|computer-use|text-embedding|ada|babbage|davinci|dall-e|tts|whisper|sora"
    r"|omni-moderation|text-moderation)"
)
"""The names of OpenAI's models: Azure OpenAI bills those at OpenAI's prices; LiteLLM's other
``azure/`` keys are models of other makers hosted on Azure."""


def _unmodelled_key(model: str, provider: str, call_provider: str) -> str | None:
    """Why a key prices something no model name of a call can say, if it does."""
    if re.search(r"(?:^|/)\d+-x-\d+/", model):
        return "a price per image size and quality (curated per model where it is billed)"
    if model.startswith(("together-ai-", "fireworks-ai-")):
        return "a price band by model size, not a model id"
    if "/" in model and call_provider == "azure.ai.openai":
        return "an Azure deployment type or region (data zone, regional, US Gov): not in the model name"
    if call_provider == "azure.ai.openai" and not _OPENAI_MODEL.match(model):
        return "another maker's model hosted on Azure (not Azure OpenAI): not bundled"
    if "/" in model and provider == "bedrock":
        return "a region-specific Bedrock price: the model id does not say the region"
    return None


def _litellm_fields(entry: Mapping[str, Any], kind: str) -> dict[str, Any]:
    base: dict[str, Decimal] = {}
    tiers: dict[int, dict[str, Decimal]] = {}
    services: dict[str, dict[str, Decimal]] = {}
    for name, value in entry.items():
        target = _classify(name)
        if target is None or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        field, threshold, service = target
        rate = _decimal(value) * _MILLION
        if service is not None:
            if threshold is None:
                services.setdefault(service, {})[field] = rate
        elif threshold is None:
            base[field] = rate
        else:
            tiers.setdefault(threshold, {})[field] = rate
    fields: dict[str, Any] = {"kind": kind}
    fees = _litellm_fees(entry, kind, has_tokens="input_per_mtok" in base)
    if "output_per_mtok" not in base and "image_output_per_mtok" in base:
        base["output_per_mtok"] = base["image_output_per_mtok"]  # an image model's output is the image
    if "input_per_mtok" in base and "output_per_mtok" not in base:
        if kind not in ("embedding", "moderation") and not fees:
            raise ValueError("an input rate without an output rate")
        base["output_per_mtok"] = Decimal(0)
    if "input_per_mtok" not in base and not fees:
        raise ValueError("no rate llmmeter's schema can express (per second of video, per query...)")
    fields.update({name: _text(rate) for name, rate in base.items()})
    fields.update(fees)
    if tiers and "input_per_mtok" in base:
        fields["tiers"] = [
            {"above_input_tokens": threshold, **{name: _text(rate) for name, rate in rates.items()}}
            for threshold, rates in sorted(tiers.items())
        ]
    service_tiers = _service_tiers(base, services, has_prompt_tiers="tiers" in fields)
    if service_tiers:
        fields["service_tiers"] = service_tiers
    return fields


def _classify(name: str) -> tuple[str, int | None, str | None] | None:
    """``input_cost_per_token_above_272k_tokens_priority`` -> (``input_per_mtok``, 272000, ``priority``)."""
    service = None
    for suffix, tier_name in _SERVICE_TIERS.items():
        if name.endswith(suffix):
            name, service = name.removesuffix(suffix), tier_name
            break
    threshold = None
    tier = _PROMPT_TIER.fullmatch(name)
    if tier is not None and tier["base"] in _TOKEN_FIELDS:
        name, threshold = tier["base"], int(tier["thousands"]) * 1000
    field = _TOKEN_FIELDS.get(name)
    return None if field is None else (field, threshold, service)


def _litellm_fees(entry: Mapping[str, Any], kind: str, *, has_tokens: bool) -> dict[str, str]:
    """Per-unit fees of a model billed by units rather than tokens (tokens win when both are given:
    OpenAI's per-minute and per-image figures for token-billed models are estimates)."""
    if has_tokens:
        return {}
    per_image = entry.get("output_cost_per_image")
    per_second = entry.get("input_cost_per_second")
    per_character = entry.get("input_cost_per_character")
    if kind == "image" and isinstance(per_image, int | float):
        return {"per_image": _text(_decimal(per_image))}
    if kind == "transcription" and isinstance(per_second, int | float):
        return {"per_audio_minute": _text(_significant(_decimal(per_second) * 60, 4))}
    if kind == "speech" and isinstance(per_character, int | float):
        return {"per_million_characters": _text(_decimal(per_character) * _MILLION)}
    return {}


def _service_tiers(
    base: Mapping[str, Decimal], services: Mapping[str, Mapping[str, Decimal]], *, has_prompt_tiers: bool
) -> dict[str, dict[str, Any]]:
    """A service tier as a factor when every rate it gives is the same multiple of the base
    rate, else as explicit rates (not combinable with prompt tiers: then it is left out)."""
    result: dict[str, dict[str, Any]] = {}
    for name, rates in sorted(services.items()):
        ratios = {rate / base[field] for field, rate in rates.items() if base.get(field)}
        clean = len(ratios) == 1 and _significant(next(iter(ratios)), 4) == next(iter(ratios))
        if clean and all(field in base for field in rates):
            result[name] = {"factor": _text(ratios.pop())}
        elif not has_prompt_tiers:
            result[name] = {field: _text(rate) for field, rate in rates.items()}
    return result


def _openlit_prices(data: Mapping[str, Any]) -> Iterator[ReferencePrice | Skipped]:
    for section, kind in _OPENLIT_SECTIONS.items():
        for key, value in (data.get(section) or {}).items():
            yield _openlit_price(key, value, kind)
    for key, value in (data.get("audio") or {}).items():
        yield _openlit_price(key, value, "speech")


def _openlit_price(key: str, value: Any, kind: str) -> ReferencePrice | Skipped:
    label = f"openlit:{key}"
    maker = next((row for row in _OPENLIT_MAKERS if key.lower().startswith(row[0])), None)
    if maker is None:
        return Skipped(label, "a provider llmmeter does not bundle (Cohere, Reka, AI21, ElevenLabs...)")
    prefix, provider, call_provider = maker
    model = key.removeprefix(prefix) if prefix == "azure_" else key
    try:
        fields = _openlit_fields(value, kind, key)
    except (ValueError, InvalidOperation, TypeError, AttributeError) as exc:
        return Skipped(label, str(exc))
    return _checked(
        ReferencePrice(
            reference=OPENLIT_LABEL,
            key=key,
            provider=provider,
            call_provider=call_provider,
            model=model,
            fields=fields,
            source_url=OPENLIT_URL,
        )
    )


def _openlit_fields(value: Any, kind: str, key: str) -> dict[str, Any]:
    """OpenLIT's prices are per 1,000 tokens (chat, embeddings) or characters (audio)."""
    if kind == "chat":
        fields: dict[str, Any] = {
            "kind": "chat",
            "input_per_mtok": _text(_decimal(value["promptPrice"]) * _THOUSAND),
            "output_per_mtok": _text(_decimal(value["completionPrice"]) * _THOUSAND),
        }
        if "cacheReadPrice" in value:
            fields["cached_input_per_mtok"] = _text(_decimal(value["cacheReadPrice"]) * _THOUSAND)
        if "cacheCreationPrice" in value:
            fields["cache_write_per_mtok"] = _text(_decimal(value["cacheCreationPrice"]) * _THOUSAND)
        return fields
    if kind == "embedding":
        return {
            "kind": "embedding",
            "input_per_mtok": _text(_decimal(value) * _THOUSAND),
            "output_per_mtok": "0",
        }
    if kind == "image":
        table = {
            quality: {size: _text(_decimal(fee)) for size, fee in sizes.items()}
            for quality, sizes in value.items()
        }
        return {"kind": "image", "per_image_by_quality_size": table}
    if "whisper" in key:
        raise ValueError("a transcription model in OpenLIT's per-character audio table: unit unclear")
    return {"kind": "speech", "per_million_characters": _text(_decimal(value) * _THOUSAND)}


def _checked(price: ReferencePrice) -> ReferencePrice | Skipped:
    """The price if llmmeter's schema accepts it, else why not."""
    try:
        ModelPrice.model_validate(dict(price.fields))
    except ValidationError as exc:
        return Skipped(price.label, f"not a valid price: {exc.errors()[0]['msg']}")
    return price


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite() or number < 0:
        raise ValueError(f"not a price: {value!r}")
    return number


def _significant(value: Decimal, digits: int) -> Decimal:
    """``value`` to ``digits`` significant digits: a per-minute rate from a per-second figure the
    reference rounded (0.0018498 from Groq's 0.111 per hour is 0.00185)."""
    if not value:
        return value
    return value.quantize(Decimal(1).scaleb(value.adjusted() - digits + 1))


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


# -- comparing -----------------------------------------------------------------------------------


class _GrowingTable(TableSource):
    """The entries generated so far, asked below the curated table (exact names only)."""

    def __init__(self) -> None:
        super().__init__((), label="generated")

    def add(self, entry: PriceEntry) -> None:
        """Add an entry (exact name)."""
        self._exact.setdefault(entry.model, []).append(entry)

    def lookup_all(self, model: str) -> list[PriceEntry]:
        """Every entry of exactly ``model``, whatever its provider."""
        return self._exact.get(model, [])


@dataclasses.dataclass(frozen=True, slots=True)
class Acceptance:
    """A known disagreement: the reference keys it covers, the fields, and why the bundled price stands."""

    key: str
    fields: tuple[str, ...]
    why: str
    untrusted: bool = False
    """The reference's prices for these keys are known to be wrong: no entry is generated from them."""

    def covers(self, disagreement: Disagreement) -> bool:
        """Whether this acceptance names the disagreement's key (a glob) and field."""
        return fnmatch.fnmatchcase(disagreement.label, self.key) and (
            not self.fields or disagreement.field in self.fields
        )


def acceptances() -> list[Acceptance]:
    """The disagreements ``reference_disagreements.yaml`` accepts, with their reasons."""
    text = (resources.files("llmmeter.pricing") / "reference_disagreements.yaml").read_text(encoding="utf-8")
    rows = yaml.safe_load(text) or []
    return [
        Acceptance(
            str(row["key"]), tuple(row.get("fields") or ()), str(row["why"]), bool(row.get("untrusted"))
        )
        for row in rows
    ]


def compare_with_references(
    reference_dir: Path, *, tolerance: Decimal = DEFAULT_TOLERANCE, accepted: list[Acceptance] | None = None
) -> Outcome:
    """Resolve every reference price against the curated table; see the module docstring."""
    prices, skipped = reference_prices(reference_dir)
    comparison = _Comparison(acceptances() if accepted is None else accepted, tolerance)
    comparison.outcome.skipped = skipped
    for price in prices:
        comparison.file(price)
    comparison.outcome.unused_acceptances = [
        item.key for item in comparison.accepted if item.key not in comparison.used
    ]
    return comparison.outcome


class _Comparison:
    """The curated table, the entries generated so far, and what comparing found."""

    def __init__(self, accepted: list[Acceptance], tolerance: Decimal) -> None:
        self.accepted = accepted
        self.tolerance = tolerance
        self.outcome = Outcome()
        self.used: set[str] = set()
        self.generated = _GrowingTable()
        self.registry = PricingRegistry()
        self.registry._bundled = BundledSource(include_generated=False)
        self.registry.add_source(self.generated, fallback=True)

    def file(self, price: ReferencePrice) -> None:
        """Resolve one reference price as a call would; generate, alias or compare it."""
        resolved = self.registry.lookup(price.model, provider=price.call_provider, at=_AT)
        if resolved is None:
            self._generate(price)
            return
        differences = _differences(price, resolved, self.tolerance)
        own_id = _own_price_id(price, resolved, differences)
        curated_family = resolved.snapshot_inferred and resolved.source == "bundled"
        if curated_family and differences and not own_id and self._judge(differences):
            # The curated family's rates stand for this snapshot too: an alias, not an entry.
            self.outcome.aliases[price.model] = (price.provider, resolved.model)
            self.registry.alias(price.model, resolved.model)
        elif resolved.snapshot_inferred or own_id:
            self._generate(price)
        else:
            self.outcome.checked_entries.add((resolved.model, resolved.provider))
            if not differences:
                self.outcome.agreed.append((price.label, resolved.price_ref))
            self._judge(differences)

    def _generate(self, price: ReferencePrice) -> None:
        distrust = next(
            (item for item in self.accepted if item.untrusted and fnmatch.fnmatchcase(price.label, item.key)),
            None,
        )
        if distrust is not None:
            self.used.add(distrust.key)
            self.outcome.skipped.append(Skipped(price.label, f"not trusted: {distrust.why}"))
        elif _own_entry(price, self.generated):
            self.outcome.generated.append(price)
            self.registry.clear_cache()

    def _judge(self, differences: list[Disagreement]) -> bool:
        """File each difference as accepted or not; whether all of them were accepted."""
        all_accepted = True
        for difference in differences:
            acceptance = next((item for item in self.accepted if item.covers(difference)), None)
            if acceptance is None:
                self.outcome.disagreements.append(difference)
                all_accepted = False
            else:
                self.used.add(acceptance.key)
                self.outcome.accepted.append((difference, acceptance.why))
        return all_accepted


def _own_price_id(price: ReferencePrice, resolved: ResolvedPrice, differences: list[Disagreement]) -> bool:
    """Whether a Bedrock id resolved through another entry's name has a price of its own."""
    derived = any(step not in ("exact", "pattern", "alias") for step in resolved.matched_via.split("+"))
    return bool(differences) and price.provider == "bedrock" and derived


def _own_entry(price: ReferencePrice, generated: _GrowingTable) -> bool:
    """Add the reference's model as a generated entry (``False``: an earlier key already gave it)."""
    if any(entry.provider == price.provider for entry in generated.lookup_all(price.model)):
        return False
    fields = {name: value for name, value in _entry(price).items() if name != "model"}
    price_ = ModelPrice.model_validate({**fields, "checked_on": REFERENCE_DATE})
    generated.add(PriceEntry(price.model, price_, price.provider))
    return True


def _differences(price: ReferencePrice, resolved: ResolvedPrice, tolerance: Decimal) -> list[Disagreement]:
    bundled = resolved.price
    if not isinstance(bundled, ModelPrice):
        return []
    given = bundled.model_dump(exclude_none=True)
    found = []
    for field in COMPARED_FIELDS:
        if field not in price.fields or field not in given:
            continue
        difference = Disagreement(
            label=price.label,
            price_ref=resolved.price_ref,
            field=field,
            reference_value=Decimal(price.fields[field]),
            bundled_value=Decimal(given[field]),
        )
        if difference.relative > tolerance:
            found.append(difference)
    return found


# -- evaluating genai-prices ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SourceEvaluation:
    """How a fallback source compares with the bundled table, over the references' models."""

    reference_models: int
    """Distinct (provider, model) the references list for the providers llmmeter prices."""
    bundled_priced: int
    source_priced: int
    only_source: int
    """Priced by the source and not by the bundled table."""
    both: int
    agree: int
    """Of ``both``: every rate both give within the tolerance."""
    examples: tuple[str, ...]
    """A few disagreements, ``model: field bundled -> source``."""
    source_models: int = 0
    """Models the source lists for the providers llmmeter prices (its own ids)."""
    source_models_unbundled: int = 0
    """Of those, the ones the bundled table does not price."""


def evaluate_source(
    reference_dir: Path, source: Any, *, tolerance: Decimal = DEFAULT_TOLERANCE
) -> SourceEvaluation:
    """Coverage and agreement of ``source`` (asked alone) against the bundled table (alone)."""
    prices, _ = reference_prices(reference_dir)
    models = {(price.call_provider, price.model): price for price in prices}
    bundled = PricingRegistry.default()
    alone = PricingRegistry()
    alone.add_source(source)
    counts = {"bundled": 0, "source": 0, "only": 0, "both": 0, "agree": 0}
    examples: list[str] = []
    for (call_provider, model), price in models.items():
        ours = bundled.lookup(model, provider=call_provider, at=_AT)
        theirs = alone.lookup(model, provider=call_provider, at=_AT)
        counts["bundled"] += ours is not None
        counts["source"] += theirs is not None
        counts["only"] += theirs is not None and ours is None
        if ours is None or theirs is None:
            continue
        counts["both"] += 1
        as_reference = dataclasses.replace(price, fields=theirs.price.model_dump(exclude_none=True))
        differences = _differences(as_reference, ours, tolerance)
        counts["agree"] += not differences
        examples += [f"{model}: {d.field} {d.bundled_value} -> {d.reference_value}" for d in differences[:1]]
    own = list(getattr(source, "models", list)())
    unbundled = sum(bundled.lookup(model, provider=provider, at=_AT) is None for provider, model in own)
    return SourceEvaluation(
        source_models=len(own),
        source_models_unbundled=unbundled,
        reference_models=len(models),
        bundled_priced=counts["bundled"],
        source_priced=counts["source"],
        only_source=counts["only"],
        both=counts["both"],
        agree=counts["agree"],
        examples=tuple(examples[:12]),
    )


def _print_evaluation(evaluation: SourceEvaluation) -> None:
    total = evaluation.reference_models
    share = f"{evaluation.bundled_priced / total:.1%}"
    print(f"reference models (provider, id): {total}")
    print(f"priced by the bundled table:   {evaluation.bundled_priced} ({share})")
    print(
        f"priced by genai-prices alone:  {evaluation.source_priced} ({evaluation.source_priced / total:.1%})"
    )
    print(f"priced by genai-prices only:   {evaluation.only_source}")
    print(f"priced by both: {evaluation.both}, agreeing within tolerance: {evaluation.agree}")
    print(
        f"genai-prices' own models for these providers: {evaluation.source_models}, "
        f"not priced by the bundled table: {evaluation.source_models_unbundled}"
    )
    for example in evaluation.examples:
        print(f"  differs: {example}")


# -- writing -------------------------------------------------------------------------------------


def generated_documents(outcome: Outcome) -> dict[str, dict[str, Any]]:
    """The ``reference-<provider>.json`` documents, by file name, in a stable order."""
    by_provider: dict[str, list[ReferencePrice]] = {}
    for price in outcome.generated:
        by_provider.setdefault(price.provider, []).append(price)
    aliases: dict[str, dict[str, str]] = {}
    for name, (provider, target) in outcome.aliases.items():
        aliases.setdefault(provider, {})[name] = target
        by_provider.setdefault(provider, [])
    documents = {}
    for provider, prices in sorted(by_provider.items()):
        document: dict[str, Any] = {
            "version": 1,
            "provider": provider,
            "defaults": {"checked_on": REFERENCE_DATE.isoformat()},
        }
        if provider in aliases:
            document["aliases"] = dict(sorted(aliases[provider].items()))
        document["models"] = [_entry(price) for price in sorted(prices, key=lambda item: item.model)]
        documents[f"{GENERATED_PREFIX}{provider}.json"] = document
    return documents


def _entry(price: ReferencePrice) -> dict[str, Any]:
    return {
        "model": price.model,
        **price.fields,
        "source_url": price.source_url,
        "notes": f"Generated from {price.reference} {price.key!r}.",
    }


def render(document: Mapping[str, Any]) -> str:
    """A generated document as the bundled file holds it (one entry per line, for readable diffs)."""
    head = {key: value for key, value in document.items() if key != "models"}
    lines = [json.dumps(entry, sort_keys=False) for entry in document["models"]]
    body = ",\n    ".join(lines)
    return json.dumps(head)[:-1] + ',\n  "models": [\n    ' + body + "\n  ]\n}\n"


def data_dir() -> Path:
    """Where the bundled price files live in this checkout."""
    return Path(str(resources.files("llmmeter.pricing") / "data"))


def stale_files(documents: Mapping[str, Mapping[str, Any]], directory: Path) -> list[str]:
    """Generated files that differ from what the references give now (or are missing or extra)."""
    present = {path.name for path in directory.glob(f"{GENERATED_PREFIX}*.json")}
    stale = sorted(present - set(documents))
    for name, document in documents.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(document):
            stale.append(name)
    return stale


def _write(documents: Mapping[str, Mapping[str, Any]], directory: Path) -> None:
    for path in directory.glob(f"{GENERATED_PREFIX}*.json"):
        if path.name not in documents:
            path.unlink()
    for name, document in documents.items():
        (directory / name).write_text(render(document), encoding="utf-8")


def _summary(outcome: Outcome, out: Any) -> None:
    print(
        f"generated {len(outcome.generated)} entries; {len(outcome.agreed)} reference prices agree with "
        f"an existing entry; {len(outcome.accepted)} known disagreements; {len(outcome.skipped)} keys "
        f"skipped; {len(outcome.disagreements)} new disagreements",
        file=out,
    )


def main(argv: Iterable[str] | None = None) -> int:
    """Compare, then write the generated files (``--check``: only say whether they are current)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmmeter.pricing.regen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--reference", type=Path, required=True, help="directory of the reference copies")
    parser.add_argument("--tolerance", type=Decimal, default=DEFAULT_TOLERANCE, help="relative, default 0.01")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if files are stale")
    parser.add_argument("--skipped", action="store_true", help="list the keys skipped and why")
    parser.add_argument(
        "--evaluate-genai-prices",
        action="store_true",
        help="compare genai-prices' coverage and rates with the bundled table's; write nothing",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.evaluate_genai_prices:
        from llmmeter.pricing.genai_prices import GenaiPricesSource

        _print_evaluation(evaluate_source(args.reference, GenaiPricesSource(), tolerance=args.tolerance))
        return 0
    try:
        outcome = compare_with_references(args.reference, tolerance=args.tolerance)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _summary(outcome, sys.stdout)
    if args.skipped:
        for item in outcome.skipped:
            print(f"skipped {item.label}: {item.reason}")
    for key in outcome.unused_acceptances:
        print(f"accepted disagreement no longer found (remove it): {key}", file=sys.stderr)
    if outcome.disagreements:
        for difference in outcome.disagreements:
            print(f"DISAGREEMENT {difference}", file=sys.stderr)
        print(
            f"{len(outcome.disagreements)} rate(s) differ from the references by more than "
            f"{args.tolerance:%}: fix the curated entry or accept it in reference_disagreements.yaml "
            "(and docs/pricing.md); nothing written",
            file=sys.stderr,
        )
        return 1
    documents = generated_documents(outcome)
    stale = stale_files(documents, data_dir())
    if args.check:
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        return 1 if stale else 0
    _write(documents, data_dir())
    print(f"wrote {len(documents)} files ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
