"""The real-vLLM tier: a tiny model built locally and a real vLLM server on 127.0.0.1.

Session fixtures, each made once:

* ``tiny_model_dir`` -- the tiny random-weight Llama of ``make_model.py`` (copied from
  ``shared/vllm-samples/scripts``), built into a cache folder when missing (a few seconds, no
  download). ``LLMMETER_VLLM_MODEL_DIR`` picks the folder.
* ``vllm_server`` -- ``python -m vllm.entrypoints.openai.api_server`` serving it as
  ``tiny-llama`` with ``--enable-per-request-metrics --enable-prompt-tokens-details``; started
  on a free port, ready when ``/health`` answers, stopped at the end of the session.
  ``LLMMETER_VLLM_URL`` points the tests at a server that is already running instead.

Without vLLM installed every test here is skipped. ``LLMMETER_VLLM_REQUIRED=1`` (set by
``.ci/vllm_tier.sh``) turns "vLLM missing / the server did not start" into a failure, so CI
cannot pass by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

SERVED_MODEL = "tiny-llama"
MAX_MODEL_LEN = 1024
HERE = Path(__file__).resolve().parent

# What every vLLM process of the tier runs with: loopback only, nothing fetched, small KV cache.
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_LOOPBACK_IP": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
for _name, _value in VLLM_ENV.items():
    os.environ.setdefault(_name, _value)  # the in-process engines of test_vllm_python_api too


def unavailable(reason: str) -> NoReturn:
    """Skip -- or fail, when this run must exercise vLLM (``LLMMETER_VLLM_REQUIRED=1``)."""
    if os.environ.get("LLMMETER_VLLM_REQUIRED") == "1":
        pytest.fail(f"vLLM tier required but unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def require_vllm() -> None:
    """Skip (or fail, see :func:`unavailable`) unless vLLM can be imported here."""
    if importlib.util.find_spec("vllm") is None:
        unavailable("vllm is not installed in this environment (see .ci/vllm_tier.sh)")


# --- the model ----------------------------------------------------------------------------------
def _model_cache_dir() -> Path:
    configured = os.environ.get("LLMMETER_VLLM_MODEL_DIR")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "llmmeter" / "vllm-tests" / SERVED_MODEL


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Llama's folder, built locally on first use (``make_model.py``, seconds)."""
    require_vllm()
    folder = _model_cache_dir()
    if not (folder / "model.safetensors").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        built = subprocess.run(
            [sys.executable, str(HERE / "make_model.py"), str(folder)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **VLLM_ENV},
        )
        if built.returncode != 0 or not (folder / "model.safetensors").exists():
            unavailable(f"building the tiny model failed:\n{built.stdout[-2000:]}\n{built.stderr[-2000:]}")
    return folder


# --- the server ---------------------------------------------------------------------------------
@dataclass
class VllmServer:
    """A running vLLM OpenAI-compatible server."""

    root_url: str
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return f"{self.root_url}/v1"

    def metrics_text(self) -> str:
        """``GET /metrics``: vLLM's Prometheus exposition."""
        with urllib.request.urlopen(f"{self.root_url}/metrics", timeout=10) as response:
            return str(response.read().decode("utf-8"))

    def counter(self, name: str) -> float:
        """A Prometheus counter of the served model, summed over its other labels."""
        pattern = re.compile(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", re.MULTILINE)
        total = 0.0
        for labels, value in pattern.findall(self.metrics_text()):
            if f'model_name="{SERVED_MODEL}"' in labels:
                total += float(value)
        return total

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(root_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{root_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def server_command(model_dir: Path, port: int) -> list[str]:
    """The vLLM server the tier runs (``vllm serve`` needs a metadata shim with vllm-cpu)."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", SERVED_MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32",
        "--max-model-len", str(MAX_MODEL_LEN),
        "--enforce-eager",
        "--max-num-seqs", "8",
        "--enable-per-request-metrics",
        "--enable-prompt-tokens-details",
    ]  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server we started: its own process group, SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def vllm_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """A real vLLM server for the whole session (or the one at ``LLMMETER_VLLM_URL``)."""
    external = os.environ.get("LLMMETER_VLLM_URL")
    if external:
        server = VllmServer(root_url=external.rstrip("/").removesuffix("/v1"))
        if not _healthy(server.root_url):
            unavailable(f"no healthy vLLM server at {external}")
        yield server
        return
    model_dir: Path = request.getfixturevalue("tiny_model_dir")  # only when starting our own
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    server = VllmServer(root_url=f"http://127.0.0.1:{port}", log_path=log_path)
    timeout = float(os.environ.get("LLMMETER_VLLM_START_TIMEOUT", "420"))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(model_dir, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **VLLM_ENV},
            start_new_session=True,  # its engine-core child is stopped with it
        )
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(server.root_url):
            if process.poll() is not None:
                unavailable(f"the vLLM server exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                unavailable(f"the vLLM server was not healthy after {timeout:.0f} s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)
