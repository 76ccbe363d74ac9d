"""What routes and budgets cost an instrumented ``openai`` chat call (callgrind, all threads).

The call-start hook of :mod:`llmmeter.routing` is ``None`` until a route or a budget is first
used; after that every call runs it. This counts the instructions of one chat call (the openai
client over a mock transport, spans and metrics into SDK providers, bundled pricing, store off)
in five states of one process, in this order:

* ``no hook (as before)``: no route or budget used yet;
* ``hook idle``: a route was used once; the call is outside any route, no budgets;
* ``budget not matching``: a ``raise`` budget for another team;
* ``inside a route``: the call is an attempt of a route (tagging plus the roll-up into it);
* ``budget matching``: a ``raise`` budget covering the call (the check plus counting its cost).

Per call = (I(2K) - I(K)) / K; differences within ±10 k instructions are noise.

    python benchmarks/routing_overhead.py     # needs valgrind; ≈ 5 min
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _bench

K = 30
MODES = ("no hook (as before)", "hook idle", "budget not matching", "inside a route", "budget matching")


def child() -> None:
    from openai_overhead import Clients

    import llmmeter
    from llmmeter import measure

    telemetry = _bench.make_telemetry()
    _bench.configure_llmmeter(telemetry)
    clients = Clients()
    run = clients.runner(clients.b, "chat-sync")
    segments = _bench.Segments(enabled=True)
    for mode in MODES:
        _enter(mode, telemetry)
        assert (measure.call_start_hook is None) == (mode == MODES[0])

        def go(m: int, mode: str = mode) -> None:
            if mode == "inside a route":
                with llmmeter.route("bench"):
                    run(m)
            else:
                run(m)

        go(20)
        telemetry.drain()
        for m in (K, 2 * K):
            with segments.measure(f"{mode}@{m}"):
                go(m)
                telemetry.flush()
    telemetry.shutdown()


def _enter(mode: str, telemetry: _bench.Telemetry) -> None:
    import llmmeter

    if mode == "hook idle":
        with llmmeter.route("warm-up"):
            pass
    elif mode == "budget not matching":
        budget = llmmeter.Budget(limit_usd="1000", match={"team": "other"}, action="raise")
        _bench.configure_llmmeter(telemetry, budgets=[budget])
    elif mode == "inside a route":
        _bench.configure_llmmeter(telemetry)
    elif mode == "budget matching":
        _bench.configure_llmmeter(telemetry, budgets=[llmmeter.Budget(limit_usd="1000", action="raise")])


def main() -> int:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    if not _bench.valgrind_available():
        print("valgrind is not installed", file=sys.stderr)
        return 1
    counts = _bench.callgrind_segments(_bench.self_command(Path(__file__), "--child"))
    base = _bench.per_call(counts, MODES[0], K)
    print(
        f"## routes and budgets: instructions per openai chat call (all threads)\n\n{_bench.machine_line()}\n"
    )
    rows = []
    for mode in MODES:
        per = _bench.per_call(counts, mode, K)
        rows.append([mode, f"{per:,.0f}", f"{per - base:+,.0f}", f"{100 * (per - base) / base:+.2f} %"])
    print(_bench.table(["state", "instructions/call", "vs no hook", "%"], rows))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        child()
    else:
        raise SystemExit(main())
