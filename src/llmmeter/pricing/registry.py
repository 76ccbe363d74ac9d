"""The pricing registry: finds the price of a call and turns its usage into an exact cost.

Layers, highest precedence first (each layer is asked with every candidate name before the
next layer is asked at all):

1. user registrations (:meth:`PricingRegistry.register`);
2. user price files (:meth:`PricingRegistry.load`), the most recently loaded first;
3. plugged :class:`~llmmeter.pricing.sources.PriceSource` objects
   (:meth:`PricingRegistry.add_source`), the most recently added first;
4. the bundled table (:meth:`PricingRegistry.default`);
5. fallback sources (``add_source(source, fallback=True)``, e.g. ``genai-prices``).

Nothing here touches the network. :meth:`PricingRegistry.price` never raises.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping
from decimal import Context, Decimal
from functools import cache, reduce

from pydantic import ValidationError

from llmmeter.pricing.models import GpuHourPrice, ModelPrice
from llmmeter.pricing.sources import (
    AnyPrice,
    BundledSource,
    FileSource,
    PriceEntry,
    PriceSource,
    ResolvedPrice,
    TableSource,
)
from llmmeter.record import CallKind, CallRecord, Cost, CostStatus, MediaUnits, Usage, UsageSource

__all__ = [
    "CacheRates",
    "CacheTokens",
    "PricingRegistry",
    "UsageInconsistentError",
    "cache_figures",
    "cache_parts_fit",
    "cache_rates",
    "is_self_hosted",
    "normalize_provider",
]

_log = logging.getLogger("llmmeter.pricing")

_MILLION = Decimal(1_000_000)
# Token x rate products and their sum stay exact at this precision (no user context involved);
# only GPU time divides by 3600 and is rounded, to 60 significant digits.
_EXACT = Context(prec=60)
_SECONDS_PER_HOUR = Decimal(3600)
_ZERO = Decimal(0)
_add, _multiply, _divide = _EXACT.add, _EXACT.multiply, _EXACT.divide
_CACHE_LIMIT = 4096
_ALIAS_DEPTH = 16

_ANY_PROVIDER = ""
"""Marks a multi-vendor platform: its calls match every provider's prices."""

_PROVIDER_KEYS: Mapping[str, str] = {
    "openai": "openai",
    "azure.ai.openai": "openai",
    "azure": "openai",
    "azure_openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": _ANY_PROVIDER,  # hosts Gemini and Claude at their makers' list prices
    "google": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "mistral_ai": "mistral",
    "mistral": "mistral",
    "mistralai": "mistral",
    "deepseek": "deepseek",
    "x_ai": "xai",
    "xai": "xai",
    "x-ai": "xai",
    "groq": "groq",
    "together": "together",
    "together_ai": "together",
    "togetherai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "aws.bedrock": "bedrock",
    "aws_bedrock": "bedrock",
    "bedrock": "bedrock",
}
"""``gen_ai.provider.name`` values and model-name prefixes -> the bundled table's provider keys.

Other names stay as they are. A self-hosted runtime (``vllm``, ``ollama``...) matches only prices
registered for it, never a hosted API's price; a gateway or an unknown host (``openai_compatible``,
``openrouter``, ``unknown``...) is priced as the model's maker when the model name names one
(:data:`_INFERABLE`), and the price ref says so.

Azure OpenAI maps to OpenAI's prices: Azure's global deployments bill OpenAI's list prices
(regional/data-zone deployments cost more: load a file or register them).
"""

_KNOWN_PROVIDERS = frozenset(_PROVIDER_KEYS.values()) - {_ANY_PROVIDER}

_SELF_HOSTED = frozenset(
    {
        "vllm", "hosted_vllm", "sglang", "ollama", "ollama_chat", "llama.cpp", "llama_cpp", "llamacpp",
        "llamafile", "lmstudio", "lm_studio", "localai", "tgi", "huggingface_tgi",
        "text-generation-inference", "triton", "tensorrt_llm", "mlx", "xinference",
    }
)  # fmt: skip
"""Runtimes you host yourself: a model they serve is never priced at a hosted API's list price."""

_INFERABLE = frozenset({"openai", "anthropic", "google", "mistral", "deepseek", "xai", "bedrock"})
"""Providers whose model names are their own (one price per name): a call whose provider is not
known is priced at their entry, marked ``inferred-provider``. Hosts of open-weight models (Groq,
Together, Fireworks) are not here: the same weights cost something else on every host, and on a
server you run yourself."""

_GATEWAY_PREFIXES = frozenset(
    {"openrouter", "litellm_proxy", "bedrock", "bedrock_converse", "converse", "invoke", "vertex_ai",
     "vertex_ai-anthropic_models", "vertex_ai-language-models"}
)  # fmt: skip
"""Model-name prefixes of routers and clouds (LiteLLM's spelling) that say nothing about the maker."""

_ROUTER_VARIANTS = (":thinking", ":beta", ":extended")
"""OpenRouter suffixes billed at the base model's price (``:free``, ``:online``, ``:nitro`` and
``:floor`` change the price: such names stay unpriced unless you price them)."""

_BEDROCK_ID = re.compile(
    r"(?:(?P<region>[a-z]{2,6}(?:-gov)?)\.)?anthropic\.(?P<model>claude-[a-z0-9.-]*?)(?:-v\d+(?::\d+)?)?(?P<vertex>@\d+)?"
)
"""``us.anthropic.claude-3-5-sonnet-20241022-v2:0`` -> ``claude-3-5-sonnet-20241022`` (Bedrock bills
Anthropic's list price; its regional ids of newer models cost more and have entries of their own)."""
_RESOURCE_NAME = re.compile(
    r"arn:aws[\w-]*:bedrock:[\w-]*:\d*:(?:foundation-model|inference-profile)/(?P<bedrock>[^/]+)"
    r"|(?:projects/[^/]+/locations/[^/]+/)?publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/]+)"
)
"""``arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-...`` (and system inference
profiles) -> the Bedrock id; ``projects/p/locations/l/publishers/anthropic/models/claude-...@...``
-> ``anthropic/claude-...@...``. Application inference profiles are opaque ids: unpriced."""
_BEDROCK_GEO = re.compile(r"(?:us|eu|apac|jp|au|ca|us-gov)\.(?=[a-z0-9-]+\.)")
"""The geographic cross-region prefix of a Bedrock id (``us.meta.llama3-2-90b-instruct-v1:0``):
other makers' profiles bill the in-region price; Claude's have entries of their own."""
_VERTEX_ALIAS_VERSION = re.compile(r"@(?:default|latest)$")
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")
_VERTEX_VERSION = re.compile(r"(?:-v\d+)?@")
_MAX_NAME = 512
"""Longer model names are unpriced without a lookup (no price table has such names)."""

_SNAPSHOT_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # gpt-4o-2024-08-06
    re.compile(r"-\d{8}$"),  # claude-sonnet-4-20250514
    re.compile(r"@[\w.-]+$"),  # claude-sonnet-4@20250514 (Vertex AI)
    re.compile(r"-(?:0[1-9]|1[0-2])\d{2}$"),  # gpt-4-0613, gpt-3.5-turbo-0125 (MMDD)
    re.compile(r"-exp(?:-(?:0[1-9]|1[0-2])\d{2})?$"),  # gemini-2.0-flash-exp: an experimental release
)
_STANDARD_TIERS = frozenset({"default", "standard", "auto", "on_demand"})

# Enum members are slow to reach through their class on the per-call path.
_STEP = CallKind.STEP
_PRICED = CostStatus.PRICED
_NO_USAGE = CostStatus.NO_USAGE

_Candidate = tuple[str, str | None, str, str | None]
"""(name, provider, how the name was derived, the dated snapshot a family name stands for)."""
_Match = tuple[ResolvedPrice, str, str | None, int]
"""(price found, how its name was derived, the snapshot a family price was found for, layer index)."""

_CallKey = tuple[str | None, str | None, str | None, int]
"""(response model, request model, provider, UTC day number) of a call."""


class UsageInconsistentError(ValueError):
    """The parts of a usage exceed its totals (e.g. more cached tokens than input tokens)."""


def normalize_provider(provider: str | None) -> str | None:
    """The bundled table's provider key for a ``gen_ai.provider.name`` (unknown names unchanged)."""
    if provider is None:
        return None
    key = _PROVIDER_KEYS.get(provider.lower(), provider.lower())
    return key or None


@cache
def _bundled() -> BundledSource:
    return BundledSource()


class PricingRegistry:
    """Layered, offline price lookup and the cost engine.

    >>> reg = PricingRegistry.default()
    >>> reg.register("acme-llama-70b", ModelPrice(input_per_mtok="0.60", output_per_mtok="0.80"))
    >>> reg.alias("my-azure-deployment", "gpt-4o-2024-08-06")

    ``PricingRegistry()`` starts empty (only what you register, load or plug in);
    :meth:`default` starts from the bundled table.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._registered: list[PriceEntry] = []
        self._user = TableSource((), label="user")
        self._files: list[FileSource] = []
        self._plugged: list[PriceSource] = []
        self._fallbacks: list[PriceSource] = []
        self._bundled: BundledSource | None = None
        self._user_aliases: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self._layers: tuple[PriceSource, ...] = (self._user,)
        self._cache: dict[tuple[str, str | None, dt.date], ResolvedPrice | None] = {}
        self._plans: dict[_CallKey, _PricePlan | None] = {}
        self._warned: set[str] = set()
        self._failed: set[tuple[str, str]] = set()

    @classmethod
    def default(cls) -> PricingRegistry:
        """A registry over the bundled price table (parsed once per process, no network)."""
        registry = cls()
        registry._bundled = _bundled()
        registry._rebuild()
        return registry

    # -- configuration -------------------------------------------------------------------

    def register(
        self,
        model: str,
        price: ModelPrice | GpuHourPrice,
        *,
        provider: str | None = None,
        training_cost: Decimal | str | int | None = None,
        amortize_days: int | None = None,
        trained_on: dt.date | str | None = None,
    ) -> None:
        """Price ``model`` (a name, a glob such as ``acme-*`` or ``re:<regex>``) above every other layer.

        A registration replaces an earlier one for the same model and provider whose effective
        dates overlap. ``provider=None`` matches calls to any provider.

        ``training_cost`` (a fine-tune's one-off cost, in the price's currency) is amortized
        evenly per day over ``amortize_days`` from ``trained_on`` (default: the price's
        ``effective_from``): ``llmmeter report`` shows each window's share beside the usage cost
        of the model's groups. Bad values raise ``ValueError`` with one line.
        """
        if not isinstance(price, ModelPrice | GpuHourPrice):
            raise TypeError(f"price must be a ModelPrice or GpuHourPrice, not {type(price).__name__}")
        declared = {"training_cost": training_cost, "amortize_days": amortize_days, "trained_on": trained_on}
        if any(value is not None for value in declared.values()):
            price = _with_training(price, declared)
        entry = PriceEntry(model=model, price=price, provider=normalize_provider(provider))
        with self._lock:
            self._registered = [old for old in self._registered if not _same_slot(old, entry)] + [entry]
            self._user = TableSource(self._registered, label="user")
            self._rebuild()

    def entries(self) -> list[PriceEntry]:
        """Every price entry of the registrations, the loaded files and the bundled table, highest
        precedence first (plugged sources answer lookups but cannot list what they hold)."""
        with self._lock:
            tables = [self._user, *self._files, *([self._bundled] if self._bundled is not None else [])]
        return [entry for table in tables for entry in table.entries]

    def training_costs(self) -> list[PriceEntry]:
        """The entries of :meth:`entries` that declare a fine-tune's training cost."""
        return [entry for entry in self.entries() if entry.price.training_cost is not None]

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load a YAML or JSON price file above the bundled table (all-or-nothing).

        Raises :class:`~llmmeter.pricing.files.PriceFileError` listing every problem, in which
        case nothing from the file is used. Loading the same path again replaces it.
        """
        source = FileSource(path)
        with self._lock:
            self._files = [source] + [old for old in self._files if old.path != source.path]
            self._rebuild()

    def alias(self, name: str, target: str) -> None:
        """Price calls to ``name`` (an Azure deployment, a served model name) as ``target``."""
        if name == target:
            raise ValueError("an alias cannot target itself")
        with self._lock:
            candidate = {**self._aliases, **self._user_aliases, name: target}
            if _alias_chain(name, candidate) is None:
                raise ValueError(f"alias {name!r} -> {target!r} would create a cycle")
            self._user_aliases[name] = target
            self._rebuild()

    def add_source(self, source: PriceSource, *, fallback: bool = False) -> None:
        """Plug in a price source; it sits below user files and above the bundled table, or with
        ``fallback=True`` below the bundled table (asked only for what no other layer prices,
        e.g. :class:`~llmmeter.pricing.genai_prices.GenaiPricesSource`)."""
        if not callable(getattr(source, "lookup", None)):
            raise TypeError("a price source must have a lookup(model, provider, at) method")
        with self._lock:
            (self._fallbacks if fallback else self._plugged).insert(0, source)
            self._rebuild()

    def clear_cache(self) -> None:
        """Forget cached lookups (call it when a plugged source's prices changed)."""
        self._cache = {}
        self._plans = {}

    @property
    def unpriced_models(self) -> frozenset[str]:
        """Models seen without a price (one warning was logged for each)."""
        return frozenset(self._warned)

    def _rebuild(self) -> None:
        layers: list[PriceSource] = [self._user, *self._files, *self._plugged]
        aliases: dict[str, str] = {}
        if self._bundled is not None:
            layers.append(self._bundled)
            aliases.update(self._bundled.aliases)
        layers.extend(self._fallbacks)
        for file_source in reversed(self._files):
            aliases.update(file_source.aliases)
        aliases.update(self._user_aliases)
        self._aliases = aliases
        self._layers = tuple(layers)
        self._cache = {}
        self._plans = {}

    # -- lookup --------------------------------------------------------------------------

    def lookup(
        self, model: str, *, provider: str | None = None, at: dt.datetime | None = None
    ) -> ResolvedPrice | None:
        """The price in force for ``model`` at ``at`` (default: now), or ``None`` if unknown."""
        when = at or dt.datetime.now(dt.UTC)
        day = when.date() if when.tzinfo is dt.UTC or not when.tzinfo else when.astimezone(dt.UTC).date()
        key = (model, provider, day)
        cache_ = self._cache
        if key in cache_:
            return cache_[key]
        resolved = self._lookup_uncached(model, provider, when)
        if len(cache_) >= _CACHE_LIMIT:
            cache_.clear()
        cache_[key] = resolved
        return resolved

    def _lookup_uncached(
        self, model: str, provider_name: str | None, at: dt.datetime
    ) -> ResolvedPrice | None:
        if not model or len(model) > _MAX_NAME:
            return None
        if provider_name == "":  # a record that names no provider: unknown, not "any provider"
            provider_name = "unknown"
        provider = normalize_provider(provider_name)
        candidates = list(self._candidates(model, provider))
        match = self._first_match(candidates, at)
        if match is None and _infers_provider(provider):
            match = self._first_inferred(candidates, provider, at)
        if match is None:
            return None
        found, via, snapshot, depth = match
        if found.matched_via == "pattern":
            via = "pattern" if via == "exact" else f"{via}+pattern"
        provider_inferred = (
            _marks_inferred_provider(provider_name, provider)
            and found.provider is not None
            and found.provider != provider
        )
        snapshot_inferred = snapshot is not None and not self._known_below(
            depth, snapshot, found.provider, at
        )
        return dataclasses.replace(
            found,
            requested_model=model,
            matched_via=via,
            provider_inferred=provider_inferred,
            snapshot_inferred=snapshot_inferred,
        )

    def _first_match(self, candidates: list[_Candidate], at: dt.datetime) -> _Match | None:
        """The first price of any candidate name, layer by layer (today's rules, nothing inferred)."""
        for depth, layer in enumerate(self._layers):
            for name, candidate_provider, via, snapshot in candidates:
                found = layer.lookup(name, candidate_provider, at)
                if found is not None:
                    return found, via, snapshot, depth
        return None

    def _first_inferred(
        self, candidates: list[_Candidate], provider: str | None, at: dt.datetime
    ) -> _Match | None:
        """The maker's price of a name whose call went to a gateway or an unknown host."""
        for depth, layer in enumerate(self._layers):
            for name, candidate_provider, via, snapshot in candidates:
                if candidate_provider != provider:  # a prefix named the provider: tried already
                    continue
                found = _maker_price(layer, name, at)
                if found is not None:
                    return found, via, snapshot, depth
        return None

    def _known_below(self, depth: int, model: str, provider: str | None, at: dt.datetime) -> bool:
        """Whether a layer below ``depth`` has a price for exactly ``model`` (a snapshot's own
        entry, under a family price registered above it); the layers above were asked already."""
        return any(layer.lookup(model, provider, at) is not None for layer in self._layers[depth + 1 :])

    def _candidates(self, model: str, provider: str | None) -> Iterator[_Candidate]:
        """Every (name, provider, how, snapshot) a model can be priced under, most specific first.

        ``snapshot`` is the dated name a family name stands for (``None`` for other names).
        """
        seen: set[tuple[str, str | None]] = set()
        target = _alias_chain(model, self._aliases)
        starts = [(model, "exact")]
        if target is not None and target != model:
            starts.insert(0, (target, "alias"))
        for start, start_via in starts:
            for name, name_provider, via, snapshot in _name_variants(start, provider):
                if (name, name_provider) in seen:
                    continue
                seen.add((name, name_provider))
                if start_via == "alias":
                    via = "alias" if via == "exact" else f"alias+{via}"
                yield name, name_provider, via, snapshot

    # -- cost ----------------------------------------------------------------------------

    def cost(
        self,
        usage: Usage,
        *,
        model: str,
        provider: str | None = None,
        at: dt.datetime | None = None,
        service_tier: str | None = None,
        duration_s: float | None = None,
        images: int | None = None,
        media: MediaUnits | None = None,
    ) -> Cost | None:
        """What a call with ``usage`` (and ``media``: images, audio seconds, characters) cost, or
        ``None`` when the model has no price or nothing can be priced (no token counts, and for
        GPU-hour prices no duration either; a fee's unit not reported). ``images=n`` is
        ``media=MediaUnits(images=n)``.

        Unknown models are logged once per model. Raises :class:`UsageInconsistentError` when
        the usage parts exceed their totals.
        """
        resolved = self.lookup(model, provider=provider, at=at)
        if resolved is None:
            self._warn_unpriced(model, provider)
            return None
        return price_usage(
            resolved, usage, service_tier=service_tier, duration_s=duration_s, images=images, media=media
        )

    def price(self, record: CallRecord) -> None:
        """Set ``record.cost`` and ``record.cost_status``; never raises (errors are logged once)."""
        if record.kind is _STEP:
            return
        # One function, no helper on the way: this runs on the caller's thread for every call.
        try:
            if record.cost is not None and record.cost.source == "provider":
                record.cost_status = _PRICED
                return
            record.cost = None
            start_ns = record.timings.start_time_unix_ns
            if start_ns:  # plans are cached by (models, provider, UTC day number): no datetime on a hit
                plans = self._plans
                key = (record.response_model, record.request_model, record.provider, start_ns // _NS_PER_DAY)
                try:
                    plan = plans[key]
                except KeyError:
                    plan = self._remember_plan(plans, key, record)
            else:
                plan = self._resolve_plan(record, None)
            if plan is None:
                record.cost_status = CostStatus.UNPRICED
                self._warn_unpriced(record.response_model or record.request_model, record.provider)
                return
            usage = record.usage if record.usage is not None else Usage(source=UsageSource.MISSING)
            media = record.media
            if media is not None and plan.leaves_unbilled(media, usage):
                record.cost_status = CostStatus.UNPRICED
                self._warn_unbilled_media(record, media)
                return
            cost = plan.cost(usage, record.service_tier, record.timings.duration_s, media)
            record.cost = cost
            record.cost_status = _NO_USAGE if cost is None else _PRICED
        except Exception as exc:
            record.cost = None
            record.cost_status = CostStatus.ERROR
            self._log_failure(record, exc)

    def _remember_plan(
        self, plans: dict[_CallKey, _PricePlan | None], key: _CallKey, record: CallRecord
    ) -> _PricePlan | None:
        # ``plans`` was read before the lookup: if a rebuild swapped in a new cache meanwhile,
        # this plan lands in the discarded one.
        plan = self._resolve_plan(record, _call_time(record))
        if len(plans) >= _CACHE_LIMIT:
            plans.clear()
        plans[key] = plan
        return plan

    def _resolve_plan(self, record: CallRecord, at: dt.datetime | None) -> _PricePlan | None:
        for model in dict.fromkeys(m for m in (record.response_model, record.request_model) if m):
            resolved = self.lookup(model, provider=record.provider, at=at)
            if resolved is not None:
                return _plan_of(resolved)
        return None

    def _warn_unbilled_media(self, record: CallRecord, media: MediaUnits) -> None:
        name = record.response_model or record.request_model or "<no model name>"
        with self._lock:
            if name in self._warned:
                return
            self._warned.add(name)
        _log.warning(
            "llmmeter has no price for what model %r reported (%s) and no token counts for it: "
            "such calls are recorded with cost unknown (status 'unpriced'). Register a price with "
            "per_image_by_quality_size, per_audio_minute or per_million_characters.",
            name,
            _media_shown(media),
        )

    def _warn_unpriced(self, model: str | None, provider: str | None) -> None:
        name = model or "<no model name>"
        if name in self._warned:
            return
        with self._lock:
            if name in self._warned:
                return
            self._warned.add(name)
        _log.warning(
            "llmmeter has no price for model %r (provider %r): its calls are recorded with cost "
            "unknown (status 'unpriced'). Register a price, load a price file or add an alias.",
            name if len(name) <= _MAX_NAME else f"{name[:_MAX_NAME]}... ({len(name)} characters)",
            provider,
        )

    def _log_failure(self, record: CallRecord, exc: Exception) -> None:
        key = (record.response_model or record.request_model or "", type(exc).__name__)
        if key in self._failed:
            return
        self._failed.add(key)
        _log.warning("llmmeter could not price a call to %r: %s", key[0], exc, exc_info=True)


# -- name rules -------------------------------------------------------------------------


def _alias_chain(name: str, aliases: Mapping[str, str]) -> str | None:
    """Follow aliases from ``name``; ``None`` on a cycle."""
    current, seen = name, {name}
    for _ in range(_ALIAS_DEPTH):
        target = aliases.get(current)
        if target is None:
            return current
        if target in seen:
            return None
        seen.add(target)
        current = target
    return None


def is_self_hosted(provider: str | None) -> bool:
    """Whether ``provider`` (a ``gen_ai.provider.name``) is a runtime you host yourself (vLLM...)."""
    return provider is not None and provider.lower() in _SELF_HOSTED


def _infers_provider(provider: str | None) -> bool:
    """Whether a call to ``provider`` may be priced as the maker its model name names."""
    return provider is not None and provider not in _KNOWN_PROVIDERS and provider not in _SELF_HOSTED


def _marks_inferred_provider(provider_name: str | None, provider: str | None) -> bool:
    """Whether a price of another provider than the call's is an inference: not for a known
    provider, a multi-vendor cloud such as Vertex AI (it bills its makers' list prices), or a
    lookup that names no provider at all (it asks for any provider's price)."""
    return provider is not None and provider not in _KNOWN_PROVIDERS


def _maker_price(layer: PriceSource, name: str, at: dt.datetime) -> ResolvedPrice | None:
    found = layer.lookup(name, None, at)
    if found is None or found.provider is None or found.provider in _INFERABLE:
        return found
    for maker in sorted(_INFERABLE):  # a host's entry came first; the maker's may follow
        found = layer.lookup(name, maker, at)
        if found is not None:
            return found
    return None


def _name_variants(model: str, provider: str | None) -> Iterator[_Candidate]:
    if model.startswith("models/"):  # Gemini API resource names
        model = model.removeprefix("models/")
    base = _fine_tune_base(model)
    if base is not None:
        for name, name_provider, via, snapshot in _name_variants(base, provider):
            ft_via = "fine-tune" if via == "exact" else f"fine-tune+{via}"
            yield f"ft:{name}", name_provider, ft_via, None if snapshot is None else f"ft:{snapshot}"
        return
    for name, name_provider, via in _route_variants(model, provider):
        yield name, name_provider, via, None
        for family, family_via, snapshot in _family_names(name):
            yield family, name_provider, family_via if via == "exact" else f"{via}+{family_via}", snapshot


def _fine_tune_base(model: str) -> str | None:
    """``ft:gpt-4o-mini-2024-07-18:org::id`` and legacy ``davinci-002:ft-org-...`` -> the base model."""
    if model.startswith("ft:"):
        base = model[3:].split(":", 1)[0]
        return base or None
    if ":ft-" in model:
        return model.split(":ft-", 1)[0] or None
    return None


def _route_variants(model: str, provider: str | None) -> Iterator[tuple[str, str | None, str]]:
    """The name as given, then as routers and clouds spell it: ``openrouter/openai/gpt-4o-mini``,
    ``anthropic/claude-3.5-haiku:beta``, ``bedrock/us.anthropic.claude-...-v2:0``."""
    yield model, provider, "exact"
    name, via = model, ""
    resource = (
        _RESOURCE_NAME.fullmatch(model) if model.startswith(("arn:", "projects/", "publishers/")) else None
    )
    if resource is not None:  # a Bedrock ARN or a Vertex AI resource name around the model id
        name, via = resource["bedrock"] or f"{resource['publisher']}/{resource['model']}", "resource-name"
        yield name, provider, via
    for _ in range(3):
        prefix, slash, rest = name.partition("/")
        if not (slash and rest and prefix.lower() in _GATEWAY_PREFIXES):
            break
        name, via = rest, via if via.endswith("router-prefix") else _then(via, "router-prefix")
        yield name, provider, via
    for suffix in _ROUTER_VARIANTS:
        if name.endswith(suffix):
            name, via = name.removesuffix(suffix), _then(via, "router-variant")
            yield name, provider, via
            break
    yield from _maker_names(name, provider, via)


def _maker_names(name: str, provider: str | None, via: str) -> Iterator[tuple[str, str | None, str]]:
    """The maker's own name for a provider-prefixed, Bedrock or OpenRouter-dotted model name."""
    prefix, slash, rest = name.partition("/")
    prefix_provider = _PROVIDER_KEYS.get(prefix.lower()) or None if slash and rest else None
    # A prefix never overrides a different known provider: Groq serving "openai/gpt-oss-20b"
    # must not be priced at OpenAI's rates.
    if prefix_provider is not None and _may_be(prefix_provider, provider):
        name, provider, via = rest, prefix_provider, _then(via, "provider-prefix")
        yield name, provider, via
    bedrock = _BEDROCK_ID.fullmatch(name) if "anthropic." in name else None
    if bedrock is not None and _may_be("anthropic", provider):
        via = _then(via, "bedrock-id")
        if _may_be("bedrock", provider):  # Bedrock's own price for this id (regional uplift)
            yield name, "bedrock", via
        name, provider = bedrock["model"] + (bedrock["vertex"] or ""), "anthropic"
        yield name, provider, via
    elif "." in name and _may_be("bedrock", provider):
        geo = _BEDROCK_GEO.match(name)
        if geo is not None:
            yield name[geo.end() :], "bedrock", _then(via, "bedrock-region")
    if name.startswith("claude-") and _DOTTED_VERSION.search(name):  # OpenRouter: claude-3.5-haiku
        yield _DOTTED_VERSION.sub("-", name), provider, _then(via, "router-name")


def _may_be(named: str, provider: str | None) -> bool:
    """Whether a name may say its provider is ``named`` on a call to ``provider``."""
    if provider is None or provider == named or provider not in _KNOWN_PROVIDERS:
        return True
    return provider == "bedrock" and named == "anthropic"


def _then(via: str, step: str) -> str:
    return step if not via else f"{via}+{step}"


def _family_names(name: str) -> Iterator[tuple[str, str, str | None]]:
    """(name, how, snapshot): Azure's spelling, ``-latest``, Vertex ``@`` versions, then the family
    of a dated snapshot (``snapshot`` is the dated name; ``None`` for the other rules)."""
    if name.startswith("gpt-35-"):  # Azure spells gpt-3.5 without the dot
        dotted = "gpt-3.5-" + name.removeprefix("gpt-35-")
        yield dotted, "azure-name", None
        name = dotted
    if name.endswith("-latest"):
        yield name.removesuffix("-latest"), "latest", None
        return
    if _VERTEX_ALIAS_VERSION.search(name):  # claude-opus-4-7@default: the model's current version
        yield _VERTEX_ALIAS_VERSION.sub("", name), "vertex-version", None
        return
    via = "snapshot"
    if "@" in name:  # Vertex AI: claude-3-5-sonnet-v2@20241022 is Anthropic's claude-3-5-sonnet-20241022
        name = _VERTEX_VERSION.sub("-", name, count=1)
        yield name, "vertex-version", None
        via = "vertex-version+snapshot"
    for suffix in _SNAPSHOT_SUFFIXES:
        family = suffix.sub("", name)
        if family != name and family:
            yield family, via, name
            return


def _with_training(price: AnyPrice, declared: Mapping[str, object]) -> AnyPrice:
    """``price`` with a training cost declared (validated as a price file's fields are)."""
    fields = {**price.model_dump(exclude_unset=True), **{k: v for k, v in declared.items() if v is not None}}
    try:
        return type(price).model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{where + ': ' if where else ''}{message}") from None


def _same_slot(old: PriceEntry, new: PriceEntry) -> bool:
    if (old.model, old.provider) != (new.model, new.provider):
        return False
    a, b = old.price, new.price
    return (b.effective_to is None or a.effective_from is None or a.effective_from < b.effective_to) and (
        a.effective_to is None or b.effective_from is None or b.effective_from < a.effective_to
    )


_NS_PER_DAY = 86_400 * 10**9
_day_starts: dict[int, dt.datetime] = {}


def _call_time(record: CallRecord) -> dt.datetime | None:
    """The UTC day the call started on (prices change by the day; one datetime per day, cached)."""
    start_ns = record.timings.start_time_unix_ns
    if not start_ns:
        return None
    day = start_ns // _NS_PER_DAY
    when = _day_starts.get(day)
    if when is None:
        if len(_day_starts) > 64:
            _day_starts.clear()
        when = _day_starts[day] = dt.datetime.fromtimestamp(day * 86_400, tz=dt.UTC)
    return when


# -- cost engine ------------------------------------------------------------------------


def price_usage(
    resolved: ResolvedPrice,
    usage: Usage,
    *,
    service_tier: str | None = None,
    duration_s: float | None = None,
    images: int | None = None,
    media: MediaUnits | None = None,
) -> Cost | None:
    """Turn usage into a :class:`~llmmeter.record.Cost` at a resolved price (``None``: nothing to price)."""
    if media is None and images is not None:
        media = MediaUnits(images=images)
    return _plan_of(resolved).cost(usage, service_tier, duration_s, media)


@dataclasses.dataclass(frozen=True, slots=True)
class CacheTokens:
    """The prompt-cache parts of one call's (or a sum of calls') input tokens."""

    input_tokens: int
    """All input tokens (cache reads and writes included)."""
    cache_read: int = 0
    audio_cache_read: int = 0
    """The part of ``cache_read`` that is audio."""
    cache_write: int = 0
    cache_write_1h: int = 0
    """The part of ``cache_write`` written with a one-hour TTL."""


def cache_parts_fit(
    input_tokens: int, cache_read: int, audio_cache_read: int, cache_write: int, cache_write_1h: int
) -> bool:
    """Whether cache parts fit their totals: no part negative, the audio reads within the reads,
    the one-hour writes within the writes, reads and writes within the input (else what caching
    changed is unknown)."""
    return (
        0 <= audio_cache_read <= cache_read
        and 0 <= cache_write_1h <= cache_write
        and cache_read + cache_write <= input_tokens
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CacheRates:
    """What prompt caching changes per million tokens at one price, service tier and prompt-size
    tier: the rate card the cost engine bills with, exact. Token prices are linear, so the cache
    figures of a sum of calls priced alike are these rates times the summed counts."""

    currency: str
    text_read_savings: Decimal
    """Full input rate minus the cached input rate."""
    audio_read_savings: Decimal
    """Full audio input rate minus the cached audio input rate."""
    write_premium: Decimal
    """The (five-minute) cache write rate minus the full input rate."""
    write_1h_premium: Decimal
    """The one-hour cache write rate minus the full input rate."""


def cache_rates(
    resolved: ResolvedPrice, *, service_tier: str | None = None, prompt_tokens: int | None = None
) -> CacheRates | None:
    """The :class:`CacheRates` of ``resolved`` for requests of ``prompt_tokens`` input tokens
    (``None``: no prompt-size tier) under ``service_tier``; ``None`` for a price not per token
    (GPU time)."""
    price = resolved.price
    if not isinstance(price, ModelPrice):
        return None
    plan = _plan_of(resolved)
    if prompt_tokens is None or prompt_tokens <= plan.untiered_up_to:
        card = plan.cards.get(service_tier) or plan._untiered_card(price, service_tier)
    else:
        card = plan._card(price, prompt_tokens, service_tier)
    rates = card[0]
    full = rates["input_per_mtok"]
    return CacheRates(
        currency=price.currency,
        text_read_savings=full - rates["cached_input_per_mtok"],
        audio_read_savings=rates["audio_input_per_mtok"] - rates["cached_audio_input_per_mtok"],
        write_premium=rates["cache_write_per_mtok"] - full,
        write_1h_premium=rates["cache_write_1h_per_mtok"] - full,
    )


def cache_figures(
    resolved: ResolvedPrice,
    tokens: CacheTokens,
    *,
    service_tier: str | None = None,
    prompt_tokens: int | None = None,
) -> tuple[Decimal, Decimal] | None:
    """What prompt caching changed in the bill of ``tokens`` at ``resolved``: the cache reads at the
    full input rate minus at their cached rate, and the cache writes at their rate minus at the
    full input rate, exact (the rate card the cost engine bills with, so ``price_usage`` of the
    usage without its cache parts minus with them gives the same two amounts).

    ``prompt_tokens`` is one request's input size, which picks its prompt-size tier (``None``:
    no tier, for a sum of requests that are all below them). ``None`` for a price not per token
    (GPU time) and for cache parts larger than their totals (:func:`cache_parts_fit`).
    """
    rates = cache_rates(resolved, service_tier=service_tier, prompt_tokens=prompt_tokens)
    read, audio_read, write, write_1h = (
        tokens.cache_read,
        tokens.audio_cache_read,
        tokens.cache_write,
        tokens.cache_write_1h,
    )
    if rates is None or not cache_parts_fit(tokens.input_tokens, read, audio_read, write, write_1h):
        return None
    read_savings = _add(
        _multiply(read - audio_read, rates.text_read_savings),
        _multiply(audio_read, rates.audio_read_savings),
    )
    write_premium = _add(
        _multiply(write - write_1h, rates.write_premium), _multiply(write_1h, rates.write_1h_premium)
    )
    return _divide(read_savings, _MILLION), _divide(write_premium, _MILLION)


class _PricePlan:
    """What pricing a call at one resolved price needs, prepared once per resolved price.

    Lookups are cached, so the same :class:`ResolvedPrice` comes back call after call: its
    ``ref``, and its rate cards with their refs by the service tier a response names, are
    prepared here once (calls above a prompt-size tier get theirs from the price's own cache).
    """

    __slots__ = ("bills_tokens", "cards", "fees", "gpu", "ref", "resolved", "tokens", "untiered_up_to")

    def __init__(self, resolved: ResolvedPrice) -> None:
        price = resolved.price
        self.resolved = resolved
        self.ref = resolved.price_ref
        self.gpu = price if isinstance(price, GpuHourPrice) else None
        self.tokens = price if isinstance(price, ModelPrice) else None
        self.fees = isinstance(price, ModelPrice) and (price.per_request is not None or price.bills_media)
        # A price whose token rates are all zero (moderation, DALL·E, tts-1) needs no token counts.
        self.bills_tokens = not isinstance(price, ModelPrice) or price.bills_tokens()
        # Requests with at most this many input tokens fall in no prompt-size tier...
        self.untiered_up_to = _NO_PROMPT_TIER
        if isinstance(price, ModelPrice) and price.tiers:
            self.untiered_up_to = min(tier.above_input_tokens for tier in price.tiers)
        # ...and their (rate card, price ref) depends only on the service tier the response names.
        self.cards: dict[str | None, tuple[_RateCard, str]] = {}

    def cost(
        self, usage: Usage, service_tier: str | None, duration_s: float | None, media: MediaUnits | None
    ) -> Cost | None:
        """The cost of one call at this price (``None``: nothing to price)."""
        price = self.tokens
        if price is None:
            assert self.gpu is not None
            components = _gpu_components(self.gpu, usage, duration_s)
            if components is None:
                return None
            return Cost(_sum(components), self.gpu.currency, components, "registry", self.ref)
        input_tokens = usage.input_tokens
        if input_tokens is None and usage.output_tokens is None and not usage.counts():
            if self.bills_tokens:
                return None
            return self._fees_only(price, media)
        if input_tokens is None or input_tokens <= self.untiered_up_to:
            try:
                card, ref = self.cards[service_tier]
            except KeyError:
                card, ref = self._untiered_card(price, service_tier)
        else:
            card, ref = self._card(price, input_tokens, service_tier)
        components = _token_components(card, usage)
        amount = _sum(components)
        if self.fees:
            fees = _fee_components(price, media)
            if fees is None:
                return None
            components.update(fees)
            amount = _sum(fees, amount)
        return Cost(amount, price.currency, components, "registry", ref)

    def _fees_only(self, price: ModelPrice, media: MediaUnits | None) -> Cost | None:
        """The cost of a call to a price that bills no tokens: its fees (moderation: none, $0)."""
        fees = _fee_components(price, media)
        if fees is None:
            return None
        return Cost(_sum(fees), price.currency, fees, "registry", self.ref)

    def leaves_unbilled(self, media: MediaUnits, usage: Usage) -> bool:
        """Whether a call reported media units that neither a fee of this price nor its token
        counts bill (``gpt-4o-mini-tts`` speech: characters, no usage): unpriced, never $0."""
        price = self.tokens
        if price is None or usage.input_tokens is not None or usage.output_tokens is not None:
            return False
        if usage.counts():
            return False
        if media.images is not None and price.image_price(media.image_size, media.image_quality) is None:
            return True
        if media.audio_seconds is not None and price.per_audio_minute is None:
            return True
        return media.characters is not None and price.per_million_characters is None

    def _untiered_card(self, price: ModelPrice, service_tier: str | None) -> tuple[_RateCard, str]:
        card = self._card(price, None, service_tier)
        if len(self.cards) < 64:  # tier names come from responses: keep a bounded few
            self.cards[service_tier] = card
        return card

    def _card(
        self, price: ModelPrice, input_tokens: int | None, service_tier: str | None
    ) -> tuple[_RateCard, str]:
        """The rate card in force for a request, and the price ref naming the tiers applied."""
        rates, notes = price.rate_card(input_tokens, _service_tier_key(price, service_tier))
        return rates, ";".join([self.ref, *notes]) if notes else self.ref


_RateCard = Mapping[str, Decimal]
"""Per-million rates by rate name (``input_per_mtok``...), tiers applied."""
_NO_PROMPT_TIER = 2**63  # larger than any prompt: no size tier applies below it
_plans_by_id: dict[int, _PricePlan] = {}


def _plan_of(resolved: ResolvedPrice) -> _PricePlan:
    """The plan of a resolved price (cached by identity: the plan keeps its price alive)."""
    plan = _plans_by_id.get(id(resolved))
    if plan is None or plan.resolved is not resolved:
        if len(_plans_by_id) > 1024:
            _plans_by_id.clear()
        plan = _plans_by_id[id(resolved)] = _PricePlan(resolved)
    return plan


def _service_tier_key(price: ModelPrice, service_tier: str | None) -> str | None:
    """The price's service-tier entry for a response's tier name (standard names: none)."""
    if service_tier is None or not price.service_tiers:
        return None
    if service_tier in price.service_tiers:
        return service_tier
    lowered = service_tier.lower()
    if lowered in _STANDARD_TIERS or lowered not in price.service_tiers:
        return None
    return lowered


_COMPONENT_RATES: tuple[tuple[str, str], ...] = (
    ("input", "input_per_mtok"),
    ("cached_input", "cached_input_per_mtok"),
    ("cached_audio_input", "cached_audio_input_per_mtok"),
    ("cache_write", "cache_write_per_mtok"),
    ("cache_write_1h", "cache_write_1h_per_mtok"),
    ("audio_input", "audio_input_per_mtok"),
    ("image_input", "image_input_per_mtok"),
    ("output", "output_per_mtok"),
    ("reasoning", "reasoning_per_mtok"),
    ("audio_output", "audio_output_per_mtok"),
    ("image_output", "image_output_per_mtok"),
)
"""Cost components, in order, and the rate each is priced at."""


def _token_components(rates: Mapping[str, Decimal], usage: Usage) -> dict[str, Decimal]:
    """Each billable token exactly once at its own rate: component -> exact amount.

    Components without tokens are left out; the order is fixed (input side, then output side).
    """
    if (
        usage.cache_read_input_tokens
        or usage.cache_write_input_tokens
        or usage.audio_input_tokens
        or usage.image_input_tokens
        or usage.reasoning_output_tokens
        or usage.audio_output_tokens
        or usage.image_output_tokens
        or usage.cache_write_1h_input_tokens
        or usage.audio_cache_read_input_tokens
    ):
        return _all_token_components(rates, usage)
    # Most calls report input and output tokens only (their parts 0 or absent): same result, fewer steps.
    parts: dict[str, Decimal] = {}
    input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    if input_tokens:
        if input_tokens < 0:
            raise UsageInconsistentError(
                "cached, cache-write, audio and image input tokens exceed input_tokens"
            )
        parts["input"] = _divide(_multiply(rates["input_per_mtok"], input_tokens), _MILLION)
    if output_tokens:
        if output_tokens < 0:
            raise UsageInconsistentError("reasoning, audio and image output tokens exceed output_tokens")
        parts["output"] = _divide(_multiply(rates["output_per_mtok"], output_tokens), _MILLION)
    return parts


def _all_token_components(rates: Mapping[str, Decimal], usage: Usage) -> dict[str, Decimal]:
    """:func:`_token_components` of a usage with parts (cached, cache writes, audio, images, reasoning)."""
    cached = usage.cache_read_input_tokens or 0
    cached_audio = usage.audio_cache_read_input_tokens or 0
    writes = usage.cache_write_input_tokens or 0
    writes_1h = usage.cache_write_1h_input_tokens or 0
    audio_in = usage.audio_input_tokens or 0
    image_in = usage.image_input_tokens or 0
    if writes_1h > writes:
        raise UsageInconsistentError("cache_write_1h_input_tokens exceeds cache_write_input_tokens")
    if cached_audio > cached or cached_audio > audio_in:
        raise UsageInconsistentError("audio_cache_read_input_tokens exceeds its totals")
    cached_text = cached - cached_audio
    writes_5m = writes - writes_1h
    uncached_audio = audio_in - cached_audio
    plain_input = (usage.input_tokens or 0) - cached - writes - uncached_audio - image_in
    if plain_input < 0 and usage.input_tokens is not None:
        raise UsageInconsistentError("cached, cache-write, audio and image input tokens exceed input_tokens")
    reasoning = usage.reasoning_output_tokens or 0
    audio_out = usage.audio_output_tokens or 0
    image_out = usage.image_output_tokens or 0
    plain_output = (usage.output_tokens or 0) - reasoning - audio_out - image_out
    if plain_output < 0 and usage.output_tokens is not None:
        raise UsageInconsistentError("reasoning, audio and image output tokens exceed output_tokens")
    counts = (
        max(plain_input, 0), cached_text, cached_audio, writes_5m, writes_1h, uncached_audio, image_in,
        max(plain_output, 0), reasoning, audio_out, image_out,
    )  # fmt: skip
    parts: dict[str, Decimal] = {}
    for (component, rate_name), tokens in zip(_COMPONENT_RATES, counts, strict=True):
        if tokens:
            parts[component] = _divide(_multiply(rates[rate_name], tokens), _MILLION)
    return parts


def _sum(components: Mapping[str, Decimal], start: Decimal = _ZERO) -> Decimal:
    """``start + component + ...`` in ``_EXACT``, in component order."""
    return reduce(_add, components.values(), start)


def _fee_components(price: ModelPrice, media: MediaUnits | None) -> dict[str, Decimal] | None:
    """The per-request fee, then the fees per image, per audio minute and per million characters.

    ``None`` when the price has a fee whose unit the call did not report: its cost is unknown.
    """
    fees: dict[str, Decimal] = {}
    if price.per_request is not None:
        fees["request"] = price.per_request
    if not price.bills_media:
        return fees
    media = media or _NO_MEDIA
    if price.bills_images:
        per_image = price.image_price(media.image_size, media.image_quality)
        if per_image is None or media.images is None or media.images < 0:
            return None
        fees["image"] = _multiply(per_image, media.images)
    if price.per_audio_minute is not None:
        seconds = media.audio_seconds
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            return None
        billed = _multiply(price.per_audio_minute, Decimal(repr(seconds)))
        fees["audio_seconds"] = _divide(billed, _SECONDS_PER_MINUTE)
    if price.per_million_characters is not None:
        if media.characters is None or media.characters < 0:
            return None
        fees["characters"] = _divide(_multiply(price.per_million_characters, media.characters), _MILLION)
    return fees


_NO_MEDIA = MediaUnits()
_SECONDS_PER_MINUTE = Decimal(60)


def _media_shown(media: MediaUnits) -> str:
    """``images=1, image_size='256x256'``: the units a record reported, for a log line."""
    reported = dataclasses.asdict(media).items()
    return ", ".join(f"{name}={value!r}" for name, value in reported if value is not None)


def _gpu_components(price: GpuHourPrice, usage: Usage, duration_s: float | None) -> dict[str, Decimal] | None:
    """``hourly * seconds / 3600``; seconds from declared throughput, else measured busy time."""
    if price.tokens_per_second is not None:
        if price.throughput_counts == "output":
            tokens = usage.output_tokens
        elif usage.input_tokens is None and usage.output_tokens is None:
            tokens = None
        else:
            tokens = (usage.input_tokens or 0) + (usage.output_tokens or 0)
        if tokens is None:
            return None
        seconds = _EXACT.divide(Decimal(tokens), price.tokens_per_second)
    elif duration_s is not None and duration_s >= 0:
        seconds = _EXACT.divide(Decimal(repr(duration_s)), price.concurrency)
    else:
        return None
    return {"gpu_time": _EXACT.divide(_EXACT.multiply(price.hourly, seconds), _SECONDS_PER_HOUR)}
