#!/usr/bin/env python3
"""How exactly llmmeter's TTFT, TTFC and TPOT match a server with known pacing.

The real ``openai`` client streams chat completions from :class:`llmmeter.testing.LocalOpenAIServer`
(a real HTTP server on 127.0.0.1, in this process) that writes the role chunk at once, the first
token chunk ``ttft_ms`` after receiving the request and every further token chunk ``itl_ms``
after the previous one, and records ``time.perf_counter()`` after flushing each event
(``event_times``) -- the clock llmmeter uses. Records come from ``configure(on_record=...)``.

For every run it compares llmmeter's numbers with

* the pacing: TTFT vs ``ttft_ms``; TPOT vs the pacing's time per token,
  ``(chunks - 1) * itl_ms / (tokens - 1)``;
* the server's actual write times: TTFT vs (first token chunk written - the call's start), TTFC vs
  (role chunk written - start), TPOT vs (last token chunk written - first) / (tokens - 1). The
  call's start on the perf_counter clock is the record's ``start_time_unix_ns`` converted with a
  wall/perf clock offset taken just before the call. The difference is what llmmeter adds to the
  truth: delivery through the socket, HTTP and SSE parsing in the SDK, and its own bookkeeping.

The pacing clock starts when the server has parsed the request, llmmeter's when the SDK is called
(the latency contract: TTFT includes building and sending the request). So the report also gives
that *request delivery* (call start -> the server's ``received_at``), the comparison with "pacing +
this call's delivery", and, for a user's view, a stopwatch on the *uninstrumented* client in the
same run: ``perf_counter()`` before ``create()`` to the first chunk carrying content in the
user's loop, paired with the instrumented call that follows it.

Case ``tokens_per_chunk=4`` shows that TPOT is per *token* (from the usage's token count), not per
chunk: 32 tokens in 8 chunks 10 ms apart give 70 ms / 31 = 2.26 ms, not 10 ms.

    python benchmarks/ttft_accuracy.py [--runs 20] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "count to thirty-two"}]


@dataclass
class Case:
    """One pacing to test."""

    name: str
    ttft_ms: float
    itl_ms: float
    tokens: int
    tokens_per_chunk: int = 1

    @property
    def chunks(self) -> int:
        """Token chunks the server writes."""
        return -(-self.tokens // self.tokens_per_chunk)

    @property
    def paced_tpot_ms(self) -> float:
        """Time per output token implied by the pacing."""
        return (self.chunks - 1) * self.itl_ms / (self.tokens - 1)


@dataclass
class Run:
    """llmmeter's numbers and the server's truth for one streamed call, in ms."""

    ttft: float
    ttfc: float
    tpot: float
    true_ttft: float
    true_ttfc: float
    true_tpot: float
    delivery: float
    """Call start -> the server has parsed the request (when its pacing clock starts)."""
    stopwatch_ttft: float = 0.0
    """The uninstrumented client, timed by the caller, in the pair's other call."""


def measure(case: Case, runs: int) -> list[Run]:
    import openai

    import llmmeter
    from llmmeter.testing import LocalOpenAIServer, Pacing

    records: list[llmmeter.CallRecord] = []
    telemetry = _bench.make_telemetry()
    _bench.configure_llmmeter(telemetry, on_record=records.append, pricing=None)  # timing only
    pacing = Pacing(
        ttft_ms=case.ttft_ms, itl_ms=case.itl_ms, tokens=case.tokens, tokens_per_chunk=case.tokens_per_chunk
    )
    out: list[Run] = []
    with LocalOpenAIServer(pacing=pacing) as server:
        options: dict[str, Any] = {"base_url": server.base_url, "api_key": "sk-local", "max_retries": 0}
        plain = openai.OpenAI(**options)
        client = llmmeter.instrument(openai.OpenAI(**options))
        for i in range(runs + 1):  # the first run warms up the connections and imports
            stopwatch_ttft = _stopwatch_ttft(plain)
            records.clear()
            offset_ns = time.time_ns() - time.perf_counter_ns()
            for _ in client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            ):
                pass
            request = server.last_request()  # event_times: role, token chunks..., finish, usage, [DONE]
            if i == 0:
                continue
            llmmeter.flush()  # callbacks run on llmmeter's pipeline thread
            (record,) = records
            run = _compare(record, request.event_times, request.received_at, offset_ns, case)
            run.stopwatch_ttft = stopwatch_ttft
            out.append(run)
        client.close()
        plain.close()
    telemetry.shutdown()
    return out


def _stopwatch_ttft(plain: Any) -> float:
    """What a user timing the uninstrumented client sees: call -> first chunk with content, ms."""
    start = time.perf_counter()
    first = None
    for chunk in plain.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    if first is None:
        raise SystemExit("the server's stream carried no content")
    return (first - start) * 1e3


def _compare(record: Any, sent: list[float], received_at: float, offset_ns: int, case: Case) -> Run:
    timings = record.timings
    if record.usage is None or record.usage.output_tokens != case.tokens:
        raise SystemExit(f"expected {case.tokens} output tokens from the server, got {record.usage}")
    start = (timings.start_time_unix_ns - offset_ns) / 1e9  # perf_counter seconds
    first_token, last_token = sent[1], sent[case.chunks]
    return Run(
        ttft=timings.ttft_s * 1e3,
        ttfc=timings.ttfc_s * 1e3,
        tpot=timings.tpot_s * 1e3,
        true_ttft=(first_token - start) * 1e3,
        true_ttfc=(sent[0] - start) * 1e3,
        true_tpot=(last_token - first_token) / (case.tokens - 1) * 1e3,
        delivery=(received_at - start) * 1e3,
    )


def _err(values: list[float]) -> tuple[str, str]:
    return f"{statistics.median(values):+.3f}", f"{max(values, key=abs):+.3f}"


def report(case: Case, runs: list[Run]) -> list[list[str]]:
    """Rows: metric, llmmeter median, reference median, median error, max |error| (ms)."""
    rows = []
    comparisons = [
        ("TTFT vs pacing", [r.ttft for r in runs], [case.ttft_ms] * len(runs)),
        (
            "TTFT vs pacing + request delivery",
            [r.ttft for r in runs],
            [case.ttft_ms + r.delivery for r in runs],
        ),
        ("TTFT vs server write", [r.ttft for r in runs], [r.true_ttft for r in runs]),
        ("TTFT vs stopwatch on the plain client", [r.ttft for r in runs], [r.stopwatch_ttft for r in runs]),
        ("TTFC vs server write", [r.ttfc for r in runs], [r.true_ttfc for r in runs]),
        ("TPOT vs pacing", [r.tpot for r in runs], [case.paced_tpot_ms] * len(runs)),
        ("TPOT vs server write", [r.tpot for r in runs], [r.true_tpot for r in runs]),
    ]
    for label, measured, truth in comparisons:
        errors = [m - t for m, t in zip(measured, truth, strict=True)]
        median_err, max_err = _err(errors)
        rows.append(
            [
                f"{case.name}: {label}",
                f"{statistics.median(measured):.3f}",
                f"{statistics.median(truth):.3f}",
                median_err,
                max_err,
            ]
        )
    return rows


def delivery_line(case: Case, runs: list[Run]) -> str:
    """Where TTFT's clock and the pacing's differ: the request's way to the server."""
    return (
        f"{case.name}: request delivery (call start -> server has parsed the request) "
        f"median {statistics.median(r.delivery for r in runs):.3f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 runs, short pacing")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs = 2
        cases = [
            Case("ttft 20 ms, itl 2 ms, 8 tokens", 20, 2, 8),
            Case("same, 4 tokens/chunk", 20, 2, 8, tokens_per_chunk=4),
        ]
    else:
        cases = [
            Case("ttft 80 ms, itl 10 ms, 32 tokens", 80, 10, 32),
            Case("same, 4 tokens/chunk", 80, 10, 32, tokens_per_chunk=4),
        ]
    rows, deliveries = [], []
    for case in cases:
        runs = measure(case, args.runs)
        rows += report(case, runs)
        deliveries.append(delivery_line(case, runs))
    print("## TTFT / TTFC / TPOT accuracy against a paced local server (ms)\n")
    print(
        f"{_bench.machine_line()}; {args.runs} streamed calls per case through the real openai client "
        "to LocalOpenAIServer on 127.0.0.1 (same process); error = llmmeter - reference\n"
    )
    print(
        _bench.table(
            ["case: comparison", "llmmeter median", "reference median", "median error", "max |error|"], rows
        )
    )
    print()
    for line in deliveries:
        print(f"* {line}")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
