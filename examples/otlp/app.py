"""llmmeter exporting its spans and metrics over OTLP to a collector, with no other OTel set-up.

Offline: a paced OpenAI-compatible server on 127.0.0.1 stands in for api.openai.com.

    pip install "llmmeter[otlp,openai]"
    otelcol-contrib --config examples/otlp/otel-collector.yaml &
    python examples/otlp/app.py --endpoint http://127.0.0.1:4318
    python examples/otlp/app.py --endpoint http://127.0.0.1:4317 --protocol grpc

Without ``--endpoint`` the standard variables decide (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``...). If
the application had installed its own OTel providers, llmmeter would use those instead and log
that the endpoint is ignored: the application's exporters then decide where telemetry goes.
"""

from __future__ import annotations

import argparse

import openai

import llmmeter
from llmmeter.testing import LocalOpenAIServer, Pacing

QUESTION = [{"role": "user", "content": "Summarize the quarterly cost report in two sentences."}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", help="collector base URL (default: $OTEL_EXPORTER_OTLP_ENDPOINT)")
    parser.add_argument(
        "--protocol", choices=("http/protobuf", "grpc"), help="default: $OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    parser.add_argument("--service-name", default="llmmeter-otlp-example")
    args = parser.parse_args(argv)

    llmmeter.configure(
        store=None,  # this example only exports over OTLP
        otlp_endpoint=args.endpoint or True,
        otlp_protocol=args.protocol,
        service_name=args.service_name,
    )
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=120, itl_ms=15, tokens=12)) as server:
        client = llmmeter.instrument(
            openai.OpenAI(base_url=server.base_url, api_key="local"), provider="openai"
        )
        with llmmeter.attributes(team="search", feature="summaries"):
            for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True):
                print(chunk.choices[0].delta.content or "", end="", flush=True)
            print()
            reply = client.chat.completions.create(model="gpt-4.1", messages=QUESTION)
            print(reply.choices[0].message.content)
    # Spans are batched and metrics exported every 60 s (OTEL_METRIC_EXPORT_INTERVAL): send now.
    exported = llmmeter.flush()
    print(f"exported to the collector: {exported}")
    return 0 if exported else 1


if __name__ == "__main__":
    raise SystemExit(main())
