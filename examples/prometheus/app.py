"""One instrumented process of a fleet, serving llmmeter's metrics for Prometheus to scrape.

Offline: it starts a paced OpenAI-compatible server on 127.0.0.1 (standing in for
api.openai.com), sends streamed and non-streamed chat calls through the real ``openai`` client
for one team, then keeps serving ``/metrics`` until stdin closes (or ``--serve-seconds`` pass).

    pip install "llmmeter[prometheus,openai]"
    python examples/prometheus/app.py --metrics-port 9464 --team search &
    python examples/prometheus/app.py --metrics-port 9465 --team support &
    prometheus --config.file=examples/prometheus/prometheus.yml   # scrapes both
    llmmeter report --prometheus http://127.0.0.1:9090 --by model,team --since 15m

Two models are paced differently, so their latency percentiles land in known buckets:
``gpt-4o-mini`` (TTFT 150 ms, 30 ms between tokens) and ``gpt-4.1`` (TTFT 400 ms, 60 ms).
Each team also makes one failing call and one call to a model with no price; every call goes
through a route (``llmmeter.route``), which escalates three times and falls back once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import openai

import llmmeter
from llmmeter.testing import LocalOpenAIServer, pacing_headers

QUESTION = [{"role": "user", "content": "Summarize the quarterly cost report in two sentences."}]
PACING: dict[str, dict[str, Any]] = {
    "gpt-4o-mini": {"ttft_ms": 150, "itl_ms": 30, "tokens": 8, "cached_tokens": 4},
    "gpt-4.1": {"ttft_ms": 400, "itl_ms": 60, "tokens": 6},
}
UNPRICED_MODEL = "acme-private-7b"
ROUTE = "summaries-router"


def chat(client: openai.OpenAI, model: str, *, stream: bool, **pacing: Any) -> None:
    """One chat call paced as ``PACING[model]`` (plus overrides); a stream is read to its end."""
    headers = pacing_headers(**{**PACING.get(model, {"ttft_ms": 50, "itl_ms": 10}), **pacing})
    if stream:
        for _chunk in client.chat.completions.create(
            model=model, messages=QUESTION, stream=True, extra_headers=headers
        ):
            pass
    else:
        client.chat.completions.create(model=model, messages=QUESTION, extra_headers=headers)


def traffic(client: openai.OpenAI, team: str) -> None:
    """Per model: two streamed calls and one non-streamed; then a failing and an unpriced call.

    Each goes through a router (``llmmeter.route``), so the routing metrics have series: three
    requests it keeps on ``gpt-4o-mini``, three it classifies as complex and escalates to
    ``gpt-4.1``, and one whose failed call falls back to the unpriced model.
    """
    with llmmeter.attributes(team=team, feature="summaries"):
        for model in PACING:
            for stream in (True, True, False):
                with llmmeter.route(ROUTE) as route:
                    if model != "gpt-4o-mini":
                        route.escalate("complex_request")
                    chat(client, model, stream=stream)
        with llmmeter.route(ROUTE):
            with contextlib.suppress(openai.BadRequestError):
                chat(client, "gpt-4o-mini", stream=False, error_status=400)
            chat(client, UNPRICED_MODEL, stream=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metrics-port", type=int, default=9464, help="scrape endpoint port (0: any)")
    parser.add_argument("--team", default="search")
    parser.add_argument("--store", type=Path, help="also keep the records in this local store")
    parser.add_argument(
        "--serve-seconds", type=float, help="stop serving after this long (default: stdin EOF)"
    )
    parser.add_argument(
        "--hold", action="store_true", help="print the scrape URL, then wait for a line on stdin to start"
    )
    args = parser.parse_args(argv)

    settings = llmmeter.configure(
        store=args.store,
        prometheus_port=args.metrics_port,
        service_name=f"llmmeter-example-{args.team}",
    )
    assert settings.exporters is not None and settings.exporters.prometheus_url is not None
    if args.hold:  # e.g. a test waits until Prometheus scrapes us before any series exists
        print(json.dumps({"metrics_url": settings.exporters.prometheus_url, "ready": True}), flush=True)
        sys.stdin.readline()
    with LocalOpenAIServer() as server:
        # max_retries=0: the failing call fails once, so every process counts the same calls.
        client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0)
        traffic(llmmeter.instrument(client, provider="openai"), args.team)
    llmmeter.flush()
    print(json.dumps({"metrics_url": settings.exporters.prometheus_url, "done": True}), flush=True)

    if args.serve_seconds is not None:
        time.sleep(args.serve_seconds)
    else:
        sys.stdin.read()  # keep serving /metrics until the parent closes our stdin
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
