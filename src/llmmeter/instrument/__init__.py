"""Instrumentation: wrap a call, start a Measurement, proxy the result, finish exactly once.

:data:`INTEGRATIONS` is the one table of what :func:`llmmeter.instrument` can measure: a row per
client family, with the predicate that recognises a client and the functions that (un)hook one
client or every client of the process. Adding an SDK is one adapter module in ``providers/`` and
one row here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Integration:
    """One client family llmmeter can measure."""

    name: str
    """The SDK's name, as in ``llmmeter.instrument_<name>()`` and the package extra."""
    accepts: Callable[[Any], bool]
    """True for a client object of this family."""
    instrument: Callable[..., Any]
    """``instrument(client, *, provider, model)`` -> the same client, measured."""
    uninstrument: Callable[[Any], Any]
    install: Callable[[], None] | None = None
    """Measure every client of the process (``None``: per-object only, as vLLM's engines)."""
    uninstall: Callable[[], None] | None = None


def _stainless(sdk_module: str, adapter_path: str) -> Integration:
    """A row for a Stainless-generated SDK (``openai``, ``anthropic``): the generic request() hook."""

    def adapter() -> Any:
        module_name, attribute = adapter_path.rsplit(":", 1)
        return getattr(importlib.import_module(module_name), attribute)

    def accepts(obj: Any) -> bool:
        return any(
            cls.__name__ in ("SyncAPIClient", "AsyncAPIClient")
            and cls.__module__.split(".", 1)[0] == sdk_module
            for cls in type(obj).__mro__
        )

    def instrument(client: Any, *, provider: str | None = None, model: str | None = None) -> Any:
        from llmmeter.instrument.sdk import instrument_client

        return instrument_client(client, adapter(), provider=provider)

    def uninstrument(client: Any) -> Any:
        from llmmeter.instrument.sdk import uninstrument_client

        return uninstrument_client(client)

    def install() -> None:
        from llmmeter.instrument.sdk import install as install_sdk

        install_sdk(adapter())

    def uninstall() -> None:
        from llmmeter.instrument.sdk import uninstall as uninstall_sdk

        uninstall_sdk(adapter())

    return Integration(sdk_module, accepts, instrument, uninstrument, install, uninstall)


def _per_method(sdk_name: str, adapter_path: str, client_classes: tuple[str, ...]) -> Integration:
    """A row for an SDK hooked method by method (``ollama``, ``google-genai``): the generic
    per-method hook of :mod:`llmmeter.instrument.methods` driven by the adapter's table.
    ``client_classes``: ``"module:Class"`` of the client objects it accepts."""

    def adapter() -> Any:
        module_name, attribute = adapter_path.rsplit(":", 1)
        return getattr(importlib.import_module(module_name), attribute)

    def accepts(obj: Any) -> bool:
        return any(f"{cls.__module__}:{cls.__qualname__}" in client_classes for cls in type(obj).__mro__)

    def instrument(client: Any, *, provider: str | None = None, model: str | None = None) -> Any:
        from llmmeter.instrument.methods import instrument_client

        return instrument_client(client, adapter(), provider=provider)

    def uninstrument(client: Any) -> Any:
        from llmmeter.instrument.methods import uninstrument_client

        return uninstrument_client(client, adapter())

    def install() -> None:
        from llmmeter.instrument.methods import install as install_methods

        install_methods(adapter())

    def uninstall() -> None:
        from llmmeter.instrument.methods import uninstall as uninstall_methods

        uninstall_methods(adapter())

    return Integration(sdk_name, accepts, instrument, uninstrument, install, uninstall)


def _vllm() -> Integration:
    def accepts(obj: Any) -> bool:
        from llmmeter.instrument.vllm import is_vllm_engine

        return is_vllm_engine(obj)

    def instrument(engine: Any, *, provider: str | None = None, model: str | None = None) -> Any:
        from llmmeter.instrument.vllm import instrument_vllm

        return instrument_vllm(engine, model=model)

    def uninstrument(engine: Any) -> Any:
        from llmmeter.instrument.vllm import uninstrument_vllm

        return uninstrument_vllm(engine)

    return Integration("vllm", accepts, instrument, uninstrument)


INTEGRATIONS: tuple[Integration, ...] = (
    _stainless("openai", "llmmeter.providers.openai_request:OPENAI"),
    _stainless("anthropic", "llmmeter.providers.anthropic:ANTHROPIC"),
    _vllm(),
    _per_method(
        "ollama", "llmmeter.providers.ollama:OLLAMA", ("ollama._client:Client", "ollama._client:AsyncClient")
    ),
    _per_method("google_genai", "llmmeter.providers.gemini:GOOGLE_GENAI", ("google.genai.client:Client",)),
)


def integration_for(client: Any) -> Integration | None:
    """The row that measures ``client``, or ``None``."""
    for row in INTEGRATIONS:
        if row.accepts(client):
            return row
    return None


def integration_named(name: str) -> Integration:
    """The row called ``name`` (``"openai"``, ``"anthropic"``...)."""
    for row in INTEGRATIONS:
        if row.name == name:
            return row
    raise KeyError(name)
