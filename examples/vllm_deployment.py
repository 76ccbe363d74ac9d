"""Metering a vLLM deployment end to end: client-side latency, vLLM's own numbers, GPU-hour cost.

A team serves ``tiny-llama`` on its own vLLM (1x H100 at $2.49/h, sustaining 2,500 tokens/s)
next to an API model. This script sends traffic to both through instrumented ``openai``
clients and prints each call's client-side and server-side timings, then ``llmmeter report``
with the self-hosted calls priced by the GPU-hour beside the API-priced ones.

    python examples/vllm_deployment.py                                   # offline stand-ins
    python examples/vllm_deployment.py --base-url http://127.0.0.1:8000/v1 --model my-model

Without ``--base-url`` (or ``$LLMMETER_VLLM_URL``) a local stand-in that answers like vLLM
(``llmmeter.testing.LocalOpenAIServer(flavor="vllm")``) plays the deployment; with it, run vLLM
with ``--enable-per-request-metrics --enable-prompt-tokens-details`` to see the server-side
timings and prefix-cache hits. The API model is always a local stand-in (no key, no network).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import openai

import llmmeter
from llmmeter.cli import main as llmmeter_cli
from llmmeter.pricing import GpuHourPrice, GpuHourSource, PricingRegistry
from llmmeter.record import CallRecord
from llmmeter.testing import LocalOpenAIServer, Pacing

QUESTION = "Summarise the incident report in one sentence."


@contextlib.contextmanager
def vllm_endpoint(base_url: str | None, model: str) -> Iterator[str]:
    """The deployment's ``/v1`` URL: the given one, or a local vLLM stand-in for the run."""
    if base_url:
        yield base_url
        return
    pacing = Pacing(ttft_ms=40, itl_ms=5, tokens=24)
    with LocalOpenAIServer(flavor="vllm", served_model=model, pacing=pacing) as server:
        yield server.base_url


def gpu_hour_pricing(model: str, usd_per_gpu_hour: str, gpus: int, tokens_per_second: int) -> PricingRegistry:
    """Bundled API prices, plus the self-hosted model priced by what its GPUs cost per hour."""
    registry = PricingRegistry.default()
    price = GpuHourPrice(
        usd_per_gpu_hour=usd_per_gpu_hour, gpu_count=gpus, tokens_per_second=tokens_per_second
    )
    registry.add_source(GpuHourSource({model: price}, provider="vllm"))
    return registry


def self_hosted_traffic(client: openai.OpenAI, model: str) -> None:
    """What an application sends its own vLLM: streamed chat, plain chat, a completion."""
    messages = [{"role": "user", "content": QUESTION}]
    with llmmeter.attributes(team="support", feature="summaries"):
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=24,
            stream=True,
            # vLLM: running totals on every chunk, so a stream cut short still has exact usage.
            stream_options={"include_usage": True, "continuous_usage_stats": True},
        )
        for _ in stream:
            pass
        client.chat.completions.create(model=model, messages=messages, max_tokens=24)
    with llmmeter.attributes(team="search", feature="autocomplete"):
        client.completions.create(model=model, prompt="def parse_report(path):", max_tokens=16)


def api_traffic(client: openai.OpenAI) -> None:
    """The same question to an API model, for comparison."""
    with llmmeter.attributes(team="support", feature="summaries"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}])


def describe(record: CallRecord) -> str:
    """One line per call: tokens, client-side latency, the server's own view, cost."""
    usage = record.usage
    tokens = f"{usage.input_tokens}->{usage.output_tokens} tok" if usage else "usage unknown"
    client_side = f"client {record.timings.duration_s * 1000:.0f} ms" if record.timings.duration_s else ""
    if record.timings.ttft_s is not None:
        client_side += f", TTFT {record.timings.ttft_s * 1000:.0f} ms"
    server = record.timings.server
    server_side = (
        f" | server: queue {_ms(server.queue_s)}, TTFT {_ms(server.ttft_s)}, TPOT {_ms(server.tpot_s)}"
        if server is not None
        else ""
    )
    cost = f"${record.cost.amount:.8f}" if record.cost is not None else record.cost_status.value
    model = record.response_model or record.request_model
    return f"{record.provider:>6} {model:<12} {tokens:<16} {client_side}{server_side} | {cost}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default=os.environ.get("LLMMETER_VLLM_URL"), help="the vLLM /v1 URL")
    parser.add_argument("--model", default="tiny-llama", help="the served model name (--served-model-name)")
    parser.add_argument("--gpu-hour-price", default="2.49", help="USD per GPU-hour (default: 2.49)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs serving the model (default: 1)")
    parser.add_argument("--tokens-per-second", type=int, default=2500, help="sustained deployment throughput")
    parser.add_argument("--store", type=Path, help="SQLite store to write (default: a temporary file)")
    args = parser.parse_args(argv)
    store = args.store or Path(tempfile.mkdtemp(prefix="llmmeter-vllm-")) / "records.sqlite3"

    records: list[CallRecord] = []
    pricing = gpu_hour_pricing(args.model, args.gpu_hour_price, args.gpus, args.tokens_per_second)
    llmmeter.configure(store=store, pricing=pricing, on_record=records.append)
    with (
        vllm_endpoint(args.base_url, args.model) as vllm_url,
        LocalOpenAIServer(pacing=Pacing(ttft_ms=60, itl_ms=8, tokens=24)) as api,
    ):
        print(f"vLLM deployment: {vllm_url}   API stand-in: {api.base_url}\n")
        # provider="vllm": recorded as vLLM whatever the host is called, and llmmeter may ask the
        # server for the stream's usage chunk (vLLM accepts stream_options).
        vllm_client = llmmeter.instrument(openai.OpenAI(base_url=vllm_url, api_key="EMPTY"), provider="vllm")
        api_client = llmmeter.instrument(
            openai.OpenAI(base_url=api.base_url, api_key="demo"), provider="openai"
        )
        self_hosted_traffic(vllm_client, args.model)
        api_traffic(api_client)
    llmmeter.flush()
    for record in records:
        print(describe(record))

    print(f"\n$ llmmeter report --store {store} --by model,provider\n")
    return llmmeter_cli(["report", "--store", str(store), "--by", "model,provider"])


if __name__ == "__main__":
    raise SystemExit(main())
