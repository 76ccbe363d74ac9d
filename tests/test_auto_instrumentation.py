"""``opentelemetry-instrument python app.py`` measures an app that has no llmmeter code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llmmeter import Outcome
from llmmeter.store import read_records
from llmmeter.testing import LocalOpenAIServer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "auto_instrumented_app.py"


def test_opentelemetry_instrument_measures_every_openai_call(tmp_path: Path) -> None:
    store = tmp_path / "auto.sqlite3"
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    with LocalOpenAIServer() as server:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": server.base_url,
            "LLMMETER_STORE": str(store),
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
        result = subprocess.run(
            [str(instrument), sys.executable, str(EXAMPLE)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    records = read_records(store)
    assert [(r.operation, r.streaming, r.outcome) for r in records] == [
        ("chat", False, Outcome.OK),
        ("chat", True, Outcome.OK),
    ]
    assert all(r.usage is not None and r.usage.output_tokens for r in records)
