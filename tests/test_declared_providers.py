"""Declaring the provider behind a gateway or a self-hosted server llmmeter cannot recognise."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

import llmmeter
from llmmeter.instrument import sdk
from llmmeter.testing import LocalOpenAIServer, Pacing

from .conftest import Telemetry

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=1, itl_ms=0, tokens=2)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh_declarations(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sdk, "_declared", {})
    monkeypatch.setattr(sdk, "_env_read", False)
    sdk._server_cache.clear()
    yield
    sdk._server_cache.clear()
    llmmeter.uninstrument_openai()


def _chat(server: LocalOpenAIServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]


def test_an_unknown_host_is_recorded_as_openai_compatible(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    llmmeter.instrument_openai()
    _chat(server)
    assert telemetry.records[0].provider == "openai_compatible"


def test_instrument_openai_names_the_provider_of_a_declared_host(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    llmmeter.instrument_openai(providers={"127.0.0.1": "openai"})
    _chat(server)
    assert telemetry.records[0].provider == "openai"


def test_a_host_and_port_declaration_wins_over_the_bare_host(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    llmmeter.instrument_openai(providers={"127.0.0.1": "openai", f"127.0.0.1:{server.port}": "vllm"})
    _chat(server)
    assert telemetry.records[0].provider == "vllm"


def test_the_environment_variable_declares_providers_for_opentelemetry_instrument_users(
    server: LocalOpenAIServer, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMMETER_PROVIDERS", f"gateway.invalid=openai, 127.0.0.1:{server.port}=openai")
    llmmeter.instrument_openai()
    _chat(server)
    assert telemetry.records[0].provider == "openai"


def test_a_malformed_environment_entry_is_skipped_with_a_warning(
    server: LocalOpenAIServer,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("LLMMETER_PROVIDERS", "no-equals-sign,=openai,127.0.0.1=openai")
    llmmeter.instrument_openai()
    _chat(server)
    assert telemetry.records[0].provider == "openai"
    assert "ignoring 'no-equals-sign' in LLMMETER_PROVIDERS" in caplog.text


def test_an_explicit_provider_on_instrument_wins_over_declarations(
    server: LocalOpenAIServer, telemetry: Telemetry
) -> None:
    sdk.declare_providers({"127.0.0.1": "openai"})
    client = llmmeter.instrument(openai.OpenAI(base_url=server.base_url, api_key="t"), provider="vllm")
    client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert telemetry.records[0].provider == "vllm"


def test_a_declaration_that_is_not_a_mapping_of_strings_is_refused() -> None:
    with pytest.raises(TypeError, match="must map host names to provider names"):
        llmmeter.instrument_openai(providers={"gateway": 3})  # type: ignore[dict-item]
