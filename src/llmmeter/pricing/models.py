"""Price models: what one model costs, validated by pydantic, exact as ``Decimal``.

Rates are USD (or ``currency``) per million tokens, written as strings in price files so that
``"0.60"`` stays exactly ``0.60``; YAML/JSON floats are converted through their shortest
``repr`` (``0.15`` -> ``Decimal("0.15")``), never through their binary value. Media models add
fees per image (by quality and size), per minute of audio and per million characters.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "MODEL_KINDS",
    "RATE_NAMES",
    "GpuHourPrice",
    "ModelPrice",
    "PromptTier",
    "ServiceTierPrice",
    "kind_of",
]


def _exact_decimal(value: Any) -> Any:
    """Turn floats into the ``Decimal`` of their shortest repr; reject booleans."""
    if isinstance(value, bool):
        raise ValueError("a price must be a number, not a boolean")
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


Rate = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(ge=0, allow_inf_nan=False)]
"""A non-negative price, exact."""

PositiveDecimal = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(gt=0, allow_inf_nan=False)]


def _image_size(value: str) -> str:
    if not _IMAGE_SIZE.fullmatch(value):
        raise ValueError("an image size is WIDTHxHEIGHT in pixels, e.g. 1024x1792")
    return value


def _image_quality(value: str) -> str:
    if not _IMAGE_QUALITY.fullmatch(value):
        raise ValueError("an image quality is a lower-case word, e.g. standard, hd, low, medium, high")
    return value


_IMAGE_SIZE = re.compile(r"[1-9]\d*x[1-9]\d*")
_IMAGE_QUALITY = re.compile(r"[a-z][a-z0-9_-]*")
ImageSize = Annotated[str, AfterValidator(_image_size)]
"""``WIDTHxHEIGHT`` in pixels, as the images API spells a size: ``1024x1792``."""
ImageQuality = Annotated[str, AfterValidator(_image_quality)]
"""A quality as the images API spells it: ``standard``, ``hd``, ``low``, ``medium``, ``high``."""

_ImageTable = dict[str, dict[str, Decimal]]

ModelKind = Literal["chat", "embedding", "image", "speech", "transcription", "moderation", "realtime"]
"""What a model does, as ``llmmeter prices list`` shows it and the table's pattern test checks it."""
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
_MEDIA_RATES = ("per_image", "per_image_by_quality_size", "per_audio_minute", "per_million_characters")
_AUTO = "auto"  # the images API's default size and quality, whatever the model's default is

RateName = Literal[
    "input_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
    "audio_input_per_mtok",
    "cached_audio_input_per_mtok",
    "audio_output_per_mtok",
    "image_input_per_mtok",
    "image_output_per_mtok",
]

RATE_NAMES: tuple[str, ...] = get_args(RateName)
"""Every per-million-token rate a :class:`ModelPrice` can carry."""


_Card = tuple[dict[str, Decimal], tuple[str, ...]]
# Rate cards by (id(price), prompt tier, service tier). The entry keeps its price alive, so an
# id is never reused while its entry exists; pydantic private attributes are too slow here.
_CARDS: dict[tuple[int, int | None, str | None], tuple[ModelPrice, _Card]] = {}
_CARDS_LIMIT = 8192


class _Strict(BaseModel):
    # extra="forbid": a misspelt field in a price file is an error, never a silently ignored rate.
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RateOverrides(_Strict):
    """Optional replacements for the base rates (used by prompt-size and service tiers)."""

    input_per_mtok: Rate | None = None
    cached_input_per_mtok: Rate | None = None
    cache_write_per_mtok: Rate | None = None
    cache_write_1h_per_mtok: Rate | None = None
    output_per_mtok: Rate | None = None
    reasoning_per_mtok: Rate | None = None
    audio_input_per_mtok: Rate | None = None
    cached_audio_input_per_mtok: Rate | None = None
    audio_output_per_mtok: Rate | None = None
    image_input_per_mtok: Rate | None = None
    image_output_per_mtok: Rate | None = None

    def overrides(self) -> dict[str, Decimal]:
        """The rates this tier sets, by rate name."""
        return {name: value for name in RATE_NAMES if (value := getattr(self, name)) is not None}


class PromptTier(_RateOverrides):
    """Rates that apply to the *whole* request when its prompt is larger than a threshold.

    ``above_input_tokens=200_000`` means: a request whose ``input_tokens`` (cached and cache
    writes included) exceed 200,000 is billed entirely at these rates (Anthropic, Gemini and
    OpenAI long-context pricing all work this way). Rates not given keep their base value.
    """

    above_input_tokens: int = Field(gt=0)


class ServiceTierPrice(_RateOverrides):
    """How a service tier (``batch``, ``flex``, ``priority``...) changes the rates.

    Every token rate in force is multiplied by ``factor`` (``0.5`` for a 50% batch discount),
    except the rates listed in ``exempt`` and the rates given explicitly here, which replace
    the base rate outright (for tiers whose prices are not a clean multiple). Fees (per request,
    per image, per audio minute, per million characters) are not affected.
    """

    factor: PositiveDecimal = Decimal(1)
    exempt: tuple[RateName, ...] = ()


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a whole number of days, not a boolean")
    return value


_MAX_AMORTIZE_DAYS = 36_600
"""A hundred years: any longer ``amortize_days`` is a typo."""


class _PriceBase(_Strict):
    effective_from: dt.date | None = None
    """First day (UTC) this price applies to, inclusive. ``None``: since forever."""
    effective_to: dt.date | None = None
    """First day (UTC) this price no longer applies to (exclusive). ``None``: still in force."""
    currency: str = Field(default="USD", min_length=3, max_length=3)
    source_url: str | None = None
    """Where the price was published."""
    checked_on: dt.date | None = None
    """When the price was last checked against its source."""
    notes: str | None = None
    training_cost: Rate | None = None
    """A fine-tune's one-off training cost (in :attr:`currency`), amortized evenly per day over
    :attr:`amortize_days` from :attr:`trained_on`; the report shows each window's share."""
    amortize_days: Annotated[int, BeforeValidator(_not_a_boolean)] | None = Field(
        default=None, gt=0, le=_MAX_AMORTIZE_DAYS
    )
    """Days the training cost is spread over (required with :attr:`training_cost`)."""
    trained_on: dt.date | None = None
    """First day (UTC) of the amortization; default :attr:`effective_from`."""

    @model_validator(mode="after")
    def _dates_in_order(self) -> _PriceBase:
        if (
            self.effective_from is not None
            and self.effective_to is not None
            and self.effective_to <= self.effective_from
        ):
            raise ValueError("effective_to must be after effective_from")
        return self

    @model_validator(mode="after")
    def _training_declared_whole(self) -> _PriceBase:
        if self.training_cost is None:
            if self.amortize_days is not None or self.trained_on is not None:
                raise ValueError("amortize_days and trained_on need a training_cost")
            return self
        if self.amortize_days is None:
            raise ValueError("training_cost needs amortize_days: the days to spread it over")
        if self.amortization_start is None:
            raise ValueError("training_cost needs trained_on (or effective_from): when amortization starts")
        return self

    @property
    def amortization_start(self) -> dt.date | None:
        """The first day of the training cost's amortization: :attr:`trained_on`, else
        :attr:`effective_from`; ``None`` without a training cost."""
        if self.training_cost is None:
            return None
        return self.trained_on or self.effective_from

    def in_force(self, day: dt.date) -> bool:
        """Whether this price applies to a call made on ``day`` (UTC)."""
        if self.effective_from is not None and day < self.effective_from:
            return False
        return self.effective_to is None or day < self.effective_to


class ModelPrice(_PriceBase):
    """Per-token price of a hosted model (rates per million tokens, exact ``Decimal``), with its fees.

    Rates left out fall back as a provider bills them: cached input and cache writes at the
    input rate (no discount), one-hour cache writes at the 5-minute write rate, reasoning at the
    output rate, audio and image tokens at the text rate of their direction, cached audio at the
    audio rate. A price with a media fee (per image, per audio minute, per million characters)
    and no token rates bills no tokens: both token rates default to zero.

    >>> ModelPrice(input_per_mtok="0.60", output_per_mtok="2.40").input_per_mtok
    Decimal('0.60')
    """

    input_per_mtok: Rate
    output_per_mtok: Rate
    cached_input_per_mtok: Rate | None = None
    cache_write_per_mtok: Rate | None = None
    """Writing to the prompt cache (Anthropic: the default 5-minute TTL)."""
    cache_write_1h_per_mtok: Rate | None = None
    """Writing to the prompt cache with a one-hour TTL (Anthropic)."""
    reasoning_per_mtok: Rate | None = None
    audio_input_per_mtok: Rate | None = None
    cached_audio_input_per_mtok: Rate | None = None
    audio_output_per_mtok: Rate | None = None
    image_input_per_mtok: Rate | None = None
    image_output_per_mtok: Rate | None = None
    per_request: Rate | None = None
    """A fixed fee per request (e.g. a search or tool-call surcharge)."""
    per_image: Rate | None = None
    """A fixed fee per generated image, whatever its size and quality."""
    per_image_by_quality_size: dict[ImageQuality, dict[ImageSize, Rate]] | None = None
    """Fee per generated image by quality, then size (DALL·E): ``{"hd": {"1024x1792": "0.12"}}``."""
    default_image_quality: ImageQuality | None = None
    """The quality of an image whose request named none (or ``auto``)."""
    default_image_size: ImageSize | None = None
    """The size of an image whose request named none (or ``auto``)."""
    per_audio_minute: Rate | None = None
    """Fee per minute of audio transcribed or translated (``whisper-1``): rate x seconds / 60."""
    per_million_characters: Rate | None = None
    """Fee per million characters of text read aloud (``tts-1``)."""
    kind: ModelKind | None = None
    """What the model does (``chat``, ``embedding``, ``image``, ``speech``, ``transcription``...);
    ``None``: not given (see :func:`~llmmeter.pricing.models.kind_of`)."""
    tiers: tuple[PromptTier, ...] = ()
    """Long-context prices; the tier with the highest threshold below the prompt size applies."""
    service_tiers: dict[str, ServiceTierPrice] = Field(default_factory=dict)
    """By tier name as the response reports it (``batch``, ``flex``, ``priority``...)."""

    @model_validator(mode="before")
    @classmethod
    def _media_only_bills_no_tokens(cls, data: Any) -> Any:
        """A media price that gives no token rates bills no tokens (``tts-1``, ``dall-e-3``)."""
        if isinstance(data, dict) and any(data.get(name) is not None for name in _MEDIA_RATES):
            return {"input_per_mtok": Decimal(0), "output_per_mtok": Decimal(0), **data}
        return data

    @field_validator("per_image_by_quality_size")
    @classmethod
    def _one_image_fee(cls, table: _ImageTable | None, info: ValidationInfo) -> _ImageTable | None:
        if table is None:
            return None
        if info.data.get("per_image") is not None:
            raise ValueError("give per_image or per_image_by_quality_size, not both")
        if not table or not all(table.values()):
            raise ValueError("needs at least one quality with at least one size")
        return table

    @field_validator("default_image_quality", "default_image_size")
    @classmethod
    def _default_in_table(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        table = info.data.get("per_image_by_quality_size")
        if not table:
            raise ValueError("needs a valid per_image_by_quality_size")
        sizes = {size for by_size in table.values() for size in by_size}
        known = table if info.field_name == "default_image_quality" else sizes
        if value not in known:
            raise ValueError(f"{value!r} has no price in per_image_by_quality_size")
        return value

    @model_validator(mode="after")
    def _tiers_consistent(self) -> ModelPrice:
        thresholds = [tier.above_input_tokens for tier in self.tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError("two prompt-size tiers have the same above_input_tokens")
        if self.tiers:
            for name, service_tier in self.service_tiers.items():
                if service_tier.overrides():
                    raise ValueError(
                        f"service tier {name!r} sets explicit rates, which cannot be combined with "
                        "prompt-size tiers: give it a factor instead"
                    )
        return self

    @property
    def bills_images(self) -> bool:
        """Whether this price has a fee per image (flat or by quality and size)."""
        return self.per_image is not None or self.per_image_by_quality_size is not None

    @property
    def bills_media(self) -> bool:
        """Whether this price has any fee per image, per audio minute or per character."""
        per_unit = (self.per_audio_minute, self.per_million_characters)
        return self.bills_images or any(rate is not None for rate in per_unit)

    def bills_tokens(self) -> bool:
        """Whether any token rate, in any prompt-size or service tier, is above zero."""
        if any(self.rates().values()):
            return True
        tiers = (*self.tiers, *self.service_tiers.values())
        return any(any(tier.overrides().values()) for tier in tiers)

    def image_price(self, size: str | None, quality: str | None) -> Decimal | None:
        """The fee for one image of ``size`` and ``quality`` (``None``/``auto``: the defaults).

        ``None`` when the table has no price for that combination (the call is then unpriced).

        >>> ModelPrice(per_image_by_quality_size={"hd": {"1024x1792": "0.12"}}).image_price("1024x1792", "hd")
        Decimal('0.12')
        """
        if self.per_image is not None:
            return self.per_image
        table = self.per_image_by_quality_size
        if table is None:
            return None
        quality = _chosen(quality, self.default_image_quality)
        size = _chosen(size, self.default_image_size)
        if quality is None and len(table) == 1:  # one quality (DALL·E 2): nothing to choose
            quality = next(iter(table))
        by_size = table.get(quality) if quality is not None else None
        return by_size.get(size) if by_size is not None and size is not None else None

    def rates(self) -> dict[str, Decimal]:
        """Every base rate, with the documented fallbacks applied."""
        cached = _first(self.cached_input_per_mtok, self.input_per_mtok)
        cache_write = _first(self.cache_write_per_mtok, self.input_per_mtok)
        audio_input = _first(self.audio_input_per_mtok, self.input_per_mtok)
        return {
            "input_per_mtok": self.input_per_mtok,
            "cached_input_per_mtok": cached,
            "cache_write_per_mtok": cache_write,
            "cache_write_1h_per_mtok": _first(self.cache_write_1h_per_mtok, cache_write),
            "output_per_mtok": self.output_per_mtok,
            "reasoning_per_mtok": _first(self.reasoning_per_mtok, self.output_per_mtok),
            "audio_input_per_mtok": audio_input,
            "cached_audio_input_per_mtok": _first(
                self.cached_audio_input_per_mtok,
                audio_input if self.audio_input_per_mtok is not None else cached,
            ),
            "audio_output_per_mtok": _first(self.audio_output_per_mtok, self.output_per_mtok),
            "image_input_per_mtok": _first(self.image_input_per_mtok, self.input_per_mtok),
            "image_output_per_mtok": _first(self.image_output_per_mtok, self.output_per_mtok),
        }

    def rate_card(self, input_tokens: int | None, service_tier: str | None) -> _Card:
        """The per-million rates in force for one request, and notes on which tiers applied.

        Order: base rates, then the prompt-size tier (its rates replace the base ones), then the
        service tier (its explicit rates replace, its factor scales the rest). Cached per
        (prompt tier, service tier): a price is immutable.
        """
        tier = self.tier_for(input_tokens)
        service_name = service_tier if service_tier in self.service_tiers else None
        key = (id(self), None if tier is None else tier.above_input_tokens, service_name)
        cached = _CARDS.get(key)
        if cached is not None and cached[0] is self:
            return cached[1]
        card = self._build_card(tier, service_name)
        if len(_CARDS) >= _CARDS_LIMIT:
            _CARDS.clear()
        _CARDS[key] = (self, card)
        return card

    def _build_card(self, tier: PromptTier | None, service_name: str | None) -> _Card:
        notes: list[str] = []
        priced: ModelPrice = self
        if tier is not None:
            priced = priced.model_copy(update=tier.overrides())
            notes.append(f"input_tokens>{tier.above_input_tokens}")
        if service_name is None:
            return priced.rates(), tuple(notes)
        service = self.service_tiers[service_name]
        explicit = service.overrides()
        rates = priced.model_copy(update=explicit).rates()
        for name in RATE_NAMES:
            if name not in explicit and name not in service.exempt:
                rates[name] = rates[name] * service.factor
        notes.append(f"service_tier={service_name}")
        return rates, tuple(notes)

    def tier_for(self, input_tokens: int | None) -> PromptTier | None:
        """The prompt-size tier a request of ``input_tokens`` falls in, if any."""
        if input_tokens is None:
            return None
        applicable = [tier for tier in self.tiers if input_tokens > tier.above_input_tokens]
        return max(applicable, key=lambda tier: tier.above_input_tokens, default=None)


class GpuHourPrice(_PriceBase):
    """Price of a self-hosted model from what its GPUs cost per hour.

    ``hourly = usd_per_gpu_hour * gpu_count``. A request costs
    ``hourly * seconds / 3600`` where ``seconds`` is

    * ``tokens / tokens_per_second`` when a throughput is declared (``tokens`` counts input plus
      output tokens, or output tokens only with ``throughput_counts="output"``), else
    * the measured busy time of the request (``record.timings.duration_s``) divided by
      ``concurrency``, the average number of requests the deployment serves at once (vLLM
      batches requests, so one request does not occupy the GPUs alone).
    """

    usd_per_gpu_hour: Rate
    gpu_count: int = Field(default=1, gt=0)
    tokens_per_second: PositiveDecimal | None = None
    """Declared sustained throughput of the whole deployment."""
    throughput_counts: Literal["total", "output"] = "total"
    concurrency: PositiveDecimal = Decimal(1)

    @property
    def hourly(self) -> Decimal:
        """What the deployment costs per hour."""
        return self.usd_per_gpu_hour * self.gpu_count


def _first(value: Decimal | None, fallback: Decimal) -> Decimal:
    return fallback if value is None else value


def _chosen(requested: str | None, default: str | None) -> str | None:
    """A request's image size or quality as the table spells it (``auto`` or none: the default)."""
    if requested is None:
        return default
    requested = requested.strip().lower()
    return default if requested in ("", _AUTO) else requested


_KIND_WORDS: tuple[tuple[str, str], ...] = (
    ("moderation", "moderation"),
    ("embed", "embedding"),
    ("transcribe", "transcription"),
    ("whisper", "transcription"),
    ("tts", "speech"),
    ("realtime", "realtime"),
    ("dall-e", "image"),
    ("image", "image"),
    ("imagen", "image"),
)


def kind_of(model: str, price: ModelPrice | GpuHourPrice) -> str:
    """What a priced model does: its ``kind`` when given, else read from its fees and its name.

    >>> kind_of("tts-1", ModelPrice(per_million_characters="15"))
    'speech'
    """
    if isinstance(price, ModelPrice):
        if price.kind is not None:
            return price.kind
        if price.bills_images:
            return "image"
        if price.per_million_characters is not None:
            return "speech"
        if price.per_audio_minute is not None:
            return "transcription"
    lowered = model.lower()
    return next((kind for word, kind in _KIND_WORDS if word in lowered), "chat")
