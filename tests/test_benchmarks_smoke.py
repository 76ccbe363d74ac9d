"""The benchmark scripts keep running: each one, in its tiny ``--quick`` mode, exits 0 and prints
its tables. Nothing here asserts a timing (that is what the benchmarks themselves report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_quick(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_metered_overhead_prints_its_per_call_table_for_every_variant() -> None:
    out = run_quick("metered_overhead.py")
    assert "## @llmmeter.metered: µs added per call (in-process A/B)" in out
    assert "| variant | A µs/call (cpu) | B µs/call (cpu) | Δ cpu µs/call |" in out
    for variant in ("sync-llm", "async-llm", "sync-step", "rollup"):
        assert f"| {variant} |" in out


def test_openai_overhead_prints_per_call_and_per_chunk_tables() -> None:
    out = run_quick("openai_overhead.py")
    assert "## openai client: µs llmmeter adds per call (in-process A/B)" in out
    assert "## openai client: per streamed chunk" in out
    scenarios = ("chat-sync", "chat-async", "stream-sync/1", "stream-async/8", "embed-sync", "embed-async")
    for scenario in scenarios:
        assert f"| {scenario} |" in out
    assert "| stream sync |" in out and "| stream async |" in out


def test_ttft_accuracy_compares_with_pacing_and_server_write_times() -> None:
    out = run_quick("ttft_accuracy.py")
    assert "## TTFT / TTFC / TPOT accuracy against a paced local server (ms)" in out
    for comparison in (
        "TTFT vs pacing",
        "TTFT vs pacing + request delivery",
        "TTFT vs server write",
        "TTFT vs stopwatch on the plain client",
        "TTFC vs server write",
        "TPOT vs pacing",
        "TPOT vs server write",
    ):
        assert comparison in out
    assert "same, 4 tokens/chunk: TPOT vs pacing" in out
    assert "request delivery (call start -> server has parsed the request) median" in out


def test_sdk_floor_prints_the_cost_of_one_metric_point_and_one_span() -> None:
    out = run_quick("sdk_floor.py")
    assert "histogram point, 7 attributes" in out
    assert "span start + 30 attributes + end" in out


def test_chunk_overhead_prints_the_isolated_per_chunk_cost() -> None:
    out = run_quick("chunk_overhead.py")
    assert "## Per streamed chunk, isolated from the client's parsing" in out
    assert "| cpu |" in out and "| wall |" in out


def test_generator_overhead_prints_the_per_chunk_cost_of_every_measured_generator() -> None:
    out = run_quick("generator_overhead.py")
    assert "## Measured generators: µs per chunk (CPU, slope N = 64 -> 512)" in out
    variants = ("MeteredGenerator", "AsyncMeteredGenerator", "@metered generator", "@metered async generator")
    for variant in variants:
        assert f"| {variant} |" in out


def test_provider_chunk_overhead_prints_the_ollama_and_gemini_per_chunk_cost() -> None:
    out = run_quick("provider_chunk_overhead.py")
    assert "## Per streamed chunk of the Ollama and Gemini adapters" in out
    for stream in ("ollama generate", "ollama chat", "gemini generate_content_stream"):
        assert f"| {stream} |" in out


def test_import_sensitivity_prints_the_per_chunk_cost_of_the_same_loops_with_and_without_other_sdks() -> None:
    for extra in ((), ("--import-sdks",)):
        out = run_quick("import_sensitivity.py", *extra)
        assert "| feed |" in out and "| observe + reader |" in out
