"""A real Prometheus on 127.0.0.1 scraping a small fleet of instrumented processes.

Shared by the Prometheus, Grafana-dashboard and fleet-report tests (one stack per test session):

* two processes of ``examples/prometheus/app.py`` (teams ``search`` and ``support``), each
  driving paced traffic through the real ``openai`` client, serving llmmeter's metrics on a
  loopback port and keeping its records in a local store (the ground truth);
* a replay of a real vLLM ``/metrics`` page (``vllm-samples/pm_metrics.prom.txt``), so the
  dashboard's vLLM panels have series. Scrape number *n* serves every counter, histogram bucket,
  sum and count of the capture multiplied by *n*: the captured traffic repeating at a steady
  rate, so ``rate()`` and ``histogram_quantile`` over it have the capture's own distribution;
* Debian's ``prometheus`` binary with ``examples/prometheus/prometheus.yml``, its targets pointed
  at the above and a 1 s scrape interval.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmmeter.record import CallKind, CallRecord
from llmmeter.store import read_records

from .conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "prometheus" / "app.py"
PROMETHEUS_YML = ROOT / "examples" / "prometheus" / "prometheus.yml"
VLLM_METRICS = SHARED / "vllm-samples" / "pm_metrics.prom.txt"
TEAMS = ("search", "support")
SCRAPE_INTERVAL_S = 0.25
"""Shorter than any paced call: a scrape falls between two calls of one series, so ``rate()``
over the traffic sees every call after a series' first sample."""
PROMETHEUS_BINARY = shutil.which("prometheus")

requires_prometheus = pytest.mark.skipif(
    PROMETHEUS_BINARY is None,
    reason="Debian's prometheus binary is not installed (apt-get install prometheus; .ci/run does)",
)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the vLLM /metrics replay --------------------------------------------------------------------
_CUMULATIVE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*(?:_total|_bucket|_sum|_count))(?P<rest>(?:\{.*\})? )(?P<value>\S+)$"
)


def scaled_exposition(text: str, factor: int) -> str:
    """The exposition with every cumulative sample (``*_total``, ``_bucket``, ``_sum``, ``_count``)
    multiplied by ``factor``; gauges (``*_created`` included) unchanged."""
    lines = []
    for line in text.splitlines():
        match = _CUMULATIVE.match(line)
        if match and not line.startswith("#"):
            value = float(match["value"]) * factor
            line = f"{match['name']}{match['rest']}{value!r}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class VllmMetricsReplay:
    """``GET /metrics`` serving the captured vLLM page, its counters growing with each scrape."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.scrapes = 0
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                replay.scrapes += 1
                body = scaled_exposition(replay.text, replay.scrapes).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Prometheus ----------------------------------------------------------------------------------
class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error (bad PromQL, ...)."""


class Prometheus:
    """A Prometheus process on 127.0.0.1 and its HTTP query API."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        assert PROMETHEUS_BINARY is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                PROMETHEUS_BINARY,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=30, what="Prometheus to be ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}; see {self.log.name}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """``GET /api/v1/query``: the instant vector's samples (``metric`` labels, ``value``)."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                document = json.load(response)
        except urllib.error.HTTPError as exc:
            document = json.load(exc)
        if document.get("status") != "success":
            raise PrometheusError(f"{document.get('errorType')}: {document.get('error')} in {expr!r}")
        result: list[dict[str, Any]] = document["data"]["result"]
        return result

    def value(self, expr: str, at: float | None = None) -> float:
        """The single value of a query that must return exactly one sample."""
        result = self.query(expr, at)
        assert len(result) == 1, f"{expr!r} returned {result}"
        return float(result[0]["value"][1])

    def by_labels(
        self, expr: str, labels: tuple[str, ...], at: float | None = None
    ) -> dict[tuple[str, ...], float]:
        """The samples of ``expr`` keyed by the values of ``labels``."""
        return {
            tuple(sample["metric"].get(label, "") for label in labels): float(sample["value"][1])
            for sample in self.query(expr, at)
        }

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


# --- the fleet -----------------------------------------------------------------------------------
@dataclass
class Fleet:
    """The stack after its traffic: query Prometheus ``at`` the moment everything was scraped."""

    prometheus: Prometheus
    records: list[CallRecord]
    """Every record the instrumented processes wrote to their local stores: the ground truth."""
    started_at: float
    at: float
    """Unix time at which every call has been scraped: evaluate queries here."""

    @property
    def window(self) -> str:
        """A PromQL range covering all the traffic, as seen from :attr:`at`."""
        return f"{math.ceil(self.at - self.started_at) + 60}s"


def _prometheus_config(app_ports: list[int], vllm_port: int) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    interval = f"{round(SCRAPE_INTERVAL_S * 1000)}ms"
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    targets = {"llmmeter": [f"127.0.0.1:{p}" for p in app_ports], "vllm": [f"127.0.0.1:{vllm_port}"]}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return config


def _start_app(team: str, port: int, store: Path, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(APP),
            "--metrics-port",
            str(port),
            "--team",
            team,
            "--store",
            str(store),
            "--hold",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


def _read_status(app: subprocess.Popen[str], log: Path) -> dict[str, Any]:
    assert app.stdout is not None
    line = app.stdout.readline()
    if not line:
        raise RuntimeError(f"example app exited early:\n{log.read_text()}")
    status: dict[str, Any] = json.loads(line)
    return status


def _targets_up(prometheus: Prometheus, job: str, count: int) -> bool:
    return len(prometheus.query(f'up{{job="{job}"}} == 1')) == count


def _go(app: subprocess.Popen[str]) -> None:
    assert app.stdin is not None
    app.stdin.write("go\n")
    app.stdin.flush()


def _scraped_everything(prometheus: Prometheus, records: list[CallRecord], replay: VllmMetricsReplay) -> bool:
    result = prometheus.query('sum(gen_ai_client_operation_duration_seconds_count{job="llmmeter"})')
    calls = float(result[0]["value"][1]) if result else 0.0
    return calls == len(records) and replay.scrapes >= 3


@contextlib.contextmanager
def running_fleet(workdir: Path) -> Iterator[Fleet]:
    """Start the stack, drive the traffic, wait until Prometheus has scraped all of it."""
    replay = VllmMetricsReplay(VLLM_METRICS.read_text())
    ports = [free_port() for _ in TEAMS]
    started_at = time.time()
    prometheus = Prometheus(_prometheus_config(ports, replay.port), workdir)
    stores = [workdir / f"{team}.sqlite3" for team in TEAMS]
    logs = [workdir / f"app-{team}.log" for team in TEAMS]
    apps = [_start_app(t, p, s, log) for t, p, s, log in zip(TEAMS, ports, stores, logs, strict=True)]
    try:
        for app, log in zip(apps, logs, strict=True):
            assert _read_status(app, log)["ready"] is True
        # Traffic only once Prometheus scrapes every app: a series is then first seen one call in.
        wait_until(lambda: _targets_up(prometheus, "llmmeter", len(apps)), timeout=30, what="scrapes")
        for app in apps:
            _go(app)
        for app, log in zip(apps, logs, strict=True):
            assert _read_status(app, log)["done"] is True
        records = [record for store in stores for record in read_records(store, kind=CallKind.LLM)]
        wait_until(
            lambda: _scraped_everything(prometheus, records, replay), timeout=60, what="Prometheus scrapes"
        )
        time.sleep(3 * SCRAPE_INTERVAL_S)  # a few more samples: rate() needs two per series
        yield Fleet(prometheus=prometheus, records=records, started_at=started_at, at=time.time())
    finally:
        for app in apps:
            with contextlib.suppress(OSError):
                assert app.stdin is not None
                app.stdin.close()
            try:
                app.wait(timeout=10)
            except subprocess.TimeoutExpired:
                app.kill()
        prometheus.close()
        replay.close()


_shared: dict[str, Fleet] = {}


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Fleet:
    """The running stack, after its traffic (skips when the prometheus binary is missing).

    Test modules import this fixture; the stack is started once per session whichever module asks
    first, and stopped when the session ends.
    """
    if PROMETHEUS_BINARY is None:
        pytest.skip("Debian's prometheus binary is not installed (apt-get install prometheus; .ci/run does)")
    if "fleet" not in _shared:
        stack = contextlib.ExitStack()
        _shared["fleet"] = stack.enter_context(running_fleet(tmp_path_factory.mktemp("prometheus-fleet")))
        request.addfinalizer(stack.close)
    return _shared["fleet"]
