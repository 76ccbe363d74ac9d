"""Shared machinery of llmmeter's benchmarks (not part of the package).

* :func:`make_telemetry` -- the real OpenTelemetry SDK pipeline every benchmark measures with:
  TracerProvider + BatchSpanProcessor into an exporter that counts spans and drops them,
  MeterProvider + InMemoryMetricReader. Nothing leaves the process.
* :func:`ab_blocks` -- in-process A/B: blocks of calls without (A) and with (B) llmmeter,
  alternated A B B A ..., so both sides see the same machine state. On a shared VM the speed of a
  whole process drifts by tens of percent, which swamps comparisons between processes.
* :func:`callgrind_segments` / :class:`Segments` -- noise-free instruction counts: the child
  process brackets each measured segment with ``os.getsid(0)`` markers and valgrind's
  ``--dump-before=os_getsid`` dumps the counters at every marker, so one valgrind run yields the
  exact instruction count of every segment (no client requests / CALLGRIND_TOGGLE needed).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
MARKER_FUNCTION = "os_getsid"  # the C function behind os.getsid(): nothing else calls it


# --- telemetry pipeline ---------------------------------------------------------------------------
@dataclass
class Telemetry:
    """The SDK providers llmmeter is configured with, and what they received."""

    tracer_provider: Any
    meter_provider: Any
    reader: Any
    exporter: Any

    def flush(self) -> None:
        """Wait for llmmeter's pipeline thread (span ends, metric points), then export every ended
        span now (the batch processor's worker thread does the work)."""
        from llmmeter.pipeline import get_pipeline

        get_pipeline().drain(60.0)
        self.tracer_provider.force_flush()

    def spans(self) -> int:
        """Spans exported so far."""
        return int(self.exporter.count)

    def drain(self) -> None:
        """Flush spans, drop metric points collected so far, zero the span count."""
        self.flush()
        self.reader.get_metrics_data()
        self.exporter.count = 0

    def shutdown(self) -> None:
        """Stop the providers' background threads."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def make_telemetry() -> Telemetry:
    """TracerProvider + BatchSpanProcessor (counting exporter), MeterProvider + InMemoryMetricReader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class CountingSpanExporter(SpanExporter):
        """Counts exported spans and drops them."""

        def __init__(self) -> None:
            self.count = 0

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    resource = Resource.create({"service.name": "llmmeter-bench"})
    exporter = CountingSpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    return Telemetry(tracer_provider, meter_provider, reader, exporter)


def configure_llmmeter(telemetry: Telemetry, **extra: Any) -> str:
    """Spans + metrics into ``telemetry``, store off, bundled pricing if it loads. Returns a note."""
    import llmmeter

    pricing_note = "bundled prices"
    try:
        import llmmeter.pricing
    except ImportError as exc:
        pricing_note = f"pricing off ({exc})"
        extra.setdefault("pricing", None)
    llmmeter.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        store=None,
        **extra,
    )
    return pricing_note


# --- in-process A/B ---------------------------------------------------------------------------------
BlockRunner = Callable[[int], None]
"""Runs ``m`` calls of one side (A or B) of a scenario."""


@dataclass
class ABResult:
    """Per-block µs per call of both sides, paired in the order they ran."""

    wall_a: list[float] = field(default_factory=list)
    wall_b: list[float] = field(default_factory=list)
    cpu_a: list[float] = field(default_factory=list)
    cpu_b: list[float] = field(default_factory=list)
    spans_a: int = 0
    spans_b: int = 0

    @staticmethod
    def _delta(a: list[float], b: list[float]) -> float:
        return statistics.median(y - x for x, y in zip(a, b, strict=True))

    def summary(self) -> dict[str, float]:
        """Medians of A, B and of the paired deltas (B - A), wall and process CPU, µs per call."""
        med = statistics.median
        return {
            "wall_a": med(self.wall_a),
            "wall_b": med(self.wall_b),
            "wall_delta": self._delta(self.wall_a, self.wall_b),
            "cpu_a": med(self.cpu_a),
            "cpu_b": med(self.cpu_b),
            "cpu_delta": self._delta(self.cpu_a, self.cpu_b),
        }


def ab_blocks(
    run_a: BlockRunner,
    run_b: BlockRunner,
    *,
    calls_per_block: int,
    pairs: int,
    telemetry: Telemetry | None = None,
) -> ABResult:
    """Alternate blocks A B, B A, A B ... and time each (wall: perf_counter, CPU: process_time).

    The span flush is inside the timed block, so the exporter thread's work for B's spans is
    charged to B. ``gc.collect()`` runs between blocks, outside the timing.
    """
    result = ABResult()
    for side in (run_a, run_b, run_b, run_a):  # warm-up, both sides
        side(calls_per_block)
    if telemetry is not None:
        telemetry.drain()
    for pair in range(pairs):
        order = ("A", "B") if pair % 2 == 0 else ("B", "A")
        for side in order:
            gc.collect()
            runner = run_a if side == "A" else run_b
            c0, t0 = time.process_time_ns(), time.perf_counter_ns()
            runner(calls_per_block)
            if telemetry is not None:
                telemetry.flush()
            t1, c1 = time.perf_counter_ns(), time.process_time_ns()
            wall, cpu = (t1 - t0) / calls_per_block / 1e3, (c1 - c0) / calls_per_block / 1e3
            if side == "A":
                result.wall_a.append(wall)
                result.cpu_a.append(cpu)
            else:
                result.wall_b.append(wall)
                result.cpu_b.append(cpu)
            if telemetry is not None:
                if side == "A":
                    result.spans_a += telemetry.spans()
                else:
                    result.spans_b += telemetry.spans()
                telemetry.drain()
    return result


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares t(N) = a + b·N; returns (a, b)."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


# --- callgrind ------------------------------------------------------------------------------------
class Segments:
    """Child side of the callgrind protocol: ``with segments.measure(label): ...``.

    Every segment is bracketed by two markers; the dump at the opening marker holds the gap since
    the previous segment (ignored), the dump at the closing marker holds the segment itself. The
    labels are printed to stdout as JSON lines so the parent can name the dumps.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def measure(self, label: str) -> _Segment:
        """Context manager counting one segment (a no-op when not under callgrind)."""
        return _Segment(self, label)


def count_ab(
    segments: Segments,
    label: str,
    run_a: Callable[[int], None],
    run_b: Callable[[int], None],
    k: int,
    telemetry: Telemetry,
    warmup: int,
) -> None:
    """Warm both sides up, then count segments ``label/A@K``, ``label/B@K``, ``@2K`` (for
    :func:`per_call`); each segment ends with a span flush, so B pays for its export."""
    for runner in (run_a, run_b, run_a, run_b):
        runner(warmup)
    telemetry.drain()
    for m in (k, 2 * k):
        for side, runner in (("A", run_a), ("B", run_b)):
            with segments.measure(f"{label}/{side}@{m}"):
                runner(m)
                telemetry.flush()


class _Segment:
    def __init__(self, owner: Segments, label: str) -> None:
        self.owner = owner
        self.label = label

    def __enter__(self) -> None:
        if self.owner.enabled:
            gc.collect()
            print(json.dumps({"type": "segment", "label": self.label}), flush=True)
            os.getsid(0)

    def __exit__(self, *exc: object) -> None:
        if self.owner.enabled:
            os.getsid(0)


def valgrind_available() -> bool:
    """True when ``valgrind`` is on PATH."""
    return shutil.which("valgrind") is not None


def callgrind_segments(argv: Sequence[str], timeout: float = 3600) -> dict[str, int]:
    """Run ``argv`` under callgrind; return the instruction count of every labelled segment."""
    with tempfile.TemporaryDirectory(prefix="llmmeter-callgrind-") as tmp:
        out = Path(tmp) / "cg.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            f"--dump-before={MARKER_FUNCTION}",
            *argv,
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"callgrind run failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
        labels = [
            json.loads(line)["label"]
            for line in proc.stdout.splitlines()
            if line.startswith('{"type": "segment"')
        ]
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        counts = [_total_instructions(p) for p in dumps]
        if len(counts) < 2 * len(labels):
            raise RuntimeError(f"expected {2 * len(labels)} callgrind dumps, got {len(counts)}")
        return {label: counts[2 * i + 1] for i, label in enumerate(labels)}


def _total_instructions(dump: Path) -> int:
    with dump.open() as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {dump}")


def per_call(counts: dict[str, int], label: str, k: int) -> float:
    """Instructions per call from segments ``label@K`` and ``label@2K`` (constant costs cancel)."""
    return (counts[f"{label}@{2 * k}"] - counts[f"{label}@{k}"]) / k


# --- reporting ----------------------------------------------------------------------------------
def machine_line() -> str:
    """One line naming the machine and the versions a table was measured with."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "-"

    return (
        f"python {platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}), "
        f"llmmeter {v('llmmeter')}, openai {v('openai')}, httpx2 {v('httpx2')}, "
        f"opentelemetry-sdk {v('opentelemetry-sdk')}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (first column left-aligned, the rest right-aligned)."""
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 1, signed: bool = False) -> str:
    """Format a number, or ``-`` for None."""
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def self_command(script: Path, *args: str) -> list[str]:
    """Command line re-running ``script`` with this interpreter."""
    return [sys.executable, str(script), *args]


def per_chunk_slopes(
    blocks: dict[int, tuple[Callable[[int], None], Callable[[int], None]]],
    streams_per_block: dict[int, int],
    pairs: int,
    scale: float,
    telemetry: Telemetry,
) -> dict[str, float]:
    """Median over interleaved A/B pairs of the per-chunk slope between the two stream sizes of
    ``blocks`` (``{chunks: (run_a, run_b)}``, each running ``m`` streams): µs per chunk for A and
    B, CPU and wall (``cpu_a``, ``wall_b``...), and the medians of the paired B - A
    (``cpu_delta``, ``wall_delta``)."""
    for run_a, run_b in blocks.values():
        run_a(2)
        run_b(2)
    telemetry.drain()
    slopes: dict[str, list[float]] = {"cpu_a": [], "cpu_b": [], "wall_a": [], "wall_b": []}
    small, large = sorted(blocks)
    for pair in range(pairs):
        per_stream: dict[tuple[str, int], tuple[float, float]] = {}
        order = ("a", "b") if pair % 2 == 0 else ("b", "a")
        for n, (run_a, run_b) in blocks.items():
            for side in order:
                run = run_a if side == "a" else run_b
                m = max(1, int(streams_per_block[n] * scale))
                cpu0, wall0 = time.process_time(), time.perf_counter()
                run(m)
                telemetry.flush()
                per_stream[side, n] = ((time.process_time() - cpu0) / m, (time.perf_counter() - wall0) / m)
        for side in ("a", "b"):
            for i, clock in enumerate(("cpu", "wall")):
                slope = (per_stream[side, large][i] - per_stream[side, small][i]) / (large - small)
                slopes[f"{clock}_{side}"].append(slope * 1e6)
    result = {key: statistics.median(values) for key, values in slopes.items()}
    for clock in ("cpu", "wall"):
        paired = zip(slopes[f"{clock}_a"], slopes[f"{clock}_b"], strict=True)
        result[f"{clock}_delta"] = statistics.median(b - a for a, b in paired)
    return result


def per_chunk_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every per-chunk benchmark takes (``--pairs``, ``--scale``, ``--callgrind``,
    ``--quick``); call :func:`per_chunk_args` to parse them."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--pairs", type=int, default=15, help="interleaved A/B pairs")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply streams per block")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions (valgrind)")
    ap.add_argument("--quick", action="store_true", help="smoke run (2 pairs, small blocks)")
    ap.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    return ap


def per_chunk_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, with ``--quick`` turned into its tiny settings (no valgrind)."""
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.scale, args.callgrind = 2, 0.2, False
    return args
