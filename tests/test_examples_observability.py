"""Every observability example runs, offline, and delivers what its docstring promises.

* local store: ``examples/demo.py`` writes records and prints ``llmmeter report``;
* OTLP: ``examples/otlp/app.py`` exports to an OTLP receiver (the collector's role), over HTTP
  and gRPC; ``examples/otlp/otel-collector.yaml`` is a consistent collector pipeline on loopback;
* Prometheus: ``examples/prometheus/app.py`` serves llmmeter's metrics for scraping (the real
  Prometheus + Grafana dashboard run is in ``test_prometheus.py`` / ``test_grafana_dashboard.py``);
* ``opentelemetry-instrument``: ``examples/auto_instrumented_app.py``, unmodified, exports
  llmmeter's spans and metrics through the providers the OTel distro configured from ``OTEL_*``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from llmmeter import semconv as sc
from llmmeter.report_prometheus import prometheus_metric_name
from llmmeter.store import read_records
from llmmeter.testing import LocalOpenAIServer

from .test_otlp_export import OtlpGrpcReceiver, OtlpHttpReceiver, attributes, histogram_points

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_local_store_example_writes_records_and_prints_the_report(tmp_path: Path) -> None:
    store = tmp_path / "demo.sqlite3"
    done = run_example(str(EXAMPLES / "demo.py"), "--store", str(store))

    records = read_records(store)
    assert len(records) >= 10 and {r.attributes.get("team") for r in records} >= {
        "search",
        "support",
        "research",
    }
    assert f"$ llmmeter report --store {store} --by model,team" in done.stdout
    assert "Tokens and cost" in done.stdout and "Latency" in done.stdout


def test_otlp_example_exports_spans_and_metrics_over_http() -> None:
    receiver = OtlpHttpReceiver()
    try:
        done = run_example(str(EXAMPLES / "otlp" / "app.py"), "--endpoint", receiver.url)
    finally:
        receiver.close()

    assert "exported to the collector: True" in done.stdout
    spans = receiver.received.spans()
    assert sorted(span.name for _, _, span in spans) == ["chat gpt-4.1", "chat gpt-4o-mini"]
    assert {resource["service.name"] for resource, _, _ in spans} == {"llmmeter-otlp-example"}
    assert all(attributes(span.attributes)["team"] == "search" for _, _, span in spans)
    durations = histogram_points(receiver.received, "duration")
    assert sum(point.count for point in durations) == 2


def test_otlp_example_exports_over_grpc_with_the_endpoint_from_the_environment() -> None:
    receiver = OtlpGrpcReceiver()
    try:
        run_example(
            str(EXAMPLES / "otlp" / "app.py"),
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        )
    finally:
        receiver.close()

    assert len(receiver.received.spans()) == 2
    assert sc.METRICS["cost"].name in receiver.received.last_metrics()


def test_collector_config_is_a_loopback_pipeline_from_otlp_to_prometheus() -> None:
    config = yaml.safe_load((EXAMPLES / "otlp" / "otel-collector.yaml").read_text())

    protocols = config["receivers"]["otlp"]["protocols"]
    assert (
        protocols["grpc"]["endpoint"] == "127.0.0.1:4317"
        and protocols["http"]["endpoint"] == "127.0.0.1:4318"
    )
    assert config["exporters"]["prometheus"]["endpoint"].startswith("127.0.0.1:")
    pipelines = config["service"]["pipelines"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(config[kind]), (kind, pipeline[kind])


def test_prometheus_example_serves_llmmeter_metrics_for_scraping(tmp_path: Path) -> None:
    app = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "prometheus" / "app.py"), "--metrics-port", "0", "--team", "search"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        status = json.loads(app.stdout.readline())
        with urllib.request.urlopen(status["metrics_url"], timeout=5) as response:
            text = response.read().decode()
    finally:
        assert app.stdin is not None
        app.stdin.close()
        app.wait(timeout=30)

    assert status["done"] is True and status["metrics_url"].startswith("http://127.0.0.1:")
    assert app.returncode == 0
    for key in ("duration", "time_to_first_token", "time_per_output_token", "cost", "token_usage"):
        assert f"{prometheus_metric_name(sc.METRICS[key])}_bucket{{" in text, key
    assert 'team="search"' in text and 'service_name="llmmeter-example-search"' in text
    assert 'error_type="openai.BadRequestError"' in text
    assert (
        "llmmeter_client_token_unpriced_total{" in text and 'gen_ai_request_model="acme-private-7b"' in text
    )


def test_prometheus_example_config_scrapes_llmmeter_and_vllm_on_loopback() -> None:
    config = yaml.safe_load((EXAMPLES / "prometheus" / "prometheus.yml").read_text())

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"llmmeter", "vllm"}
    targets = [t for job in jobs.values() for group in job["static_configs"] for t in group["targets"]]
    assert targets and all(t.startswith("127.0.0.1:") for t in targets)


def test_opentelemetry_instrument_example_exports_over_otlp_through_the_distro(tmp_path: Path) -> None:
    receiver = OtlpHttpReceiver()
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    try:
        with LocalOpenAIServer() as server:
            done = subprocess.run(
                [str(instrument), sys.executable, str(EXAMPLES / "auto_instrumented_app.py")],
                env={
                    **os.environ,
                    "OPENAI_BASE_URL": server.base_url,
                    "LLMMETER_STORE": str(tmp_path / "auto.sqlite3"),
                    "OTEL_SERVICE_NAME": "auto-app",
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_METRICS_EXPORTER": "otlp",
                    "OTEL_LOGS_EXPORTER": "none",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                },
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
    finally:
        receiver.close()

    assert done.returncode == 0, done.stderr
    llmmeter_spans = [(r, span) for r, scope, span in receiver.received.spans() if scope == "llmmeter"]
    assert [span.name for _, span in llmmeter_spans] == ["chat gpt-4o-mini", "chat gpt-4o-mini"]
    assert {r["service.name"] for r, _ in llmmeter_spans} == {"auto-app"}
    # The distro's meter provider exported llmmeter's metrics at shutdown.
    durations = histogram_points(receiver.received, "duration")
    assert sum(point.count for point in durations) == 2
    assert len(read_records(tmp_path / "auto.sqlite3")) == 2
