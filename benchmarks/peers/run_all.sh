#!/usr/bin/env bash
# COPY of ../shared/bench-peers/run_all.sh (shared project material). llmmeter copy: results
# go to benchmarks/results/peers-<UTC time>/ by default (gitignored), not next to this script.
# Run every available variant of overhead.py, interleaved over several rounds
# (round r runs the variants in an order rotated by r: A B C, B C A, C A B, ...),
# then the 20k-call leak check once per variant, then AB_ROUNDS rounds of the in-process
# A/B mode (instrumentation switched off/on in alternating blocks inside one process,
# the noise-robust estimate), then print medians, overhead = variant - baseline and
# ratio variant / baseline (summarize.py).
#
#   PY=path/to/venv/bin/python bench/run_all.sh          # or activate the venv first
#   ROUNDS=5 SCALE=1 VARIANTS="baseline otel-v2" bench/run_all.sh
#   EXTRA="--processor simple" bench/run_all.sh           # extra overhead.py flags
#   LEAK=0 AB_ROUNDS=0 bench/run_all.sh                   # skip the leak / A/B passes
#   ROUNDS=0 LEAK=0 AB_ROUNDS=3 OUT=bench/results/x bench/run_all.sh   # A/B only
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python3}
ROUNDS=${ROUNDS:-5}
SCALE=${SCALE:-1}
LEAK=${LEAK:-1}
AB_ROUNDS=${AB_ROUNDS:-3}
ORDER=${ORDER:-rotate}            # rotate | fixed
EXTRA=${EXTRA:-}
VARIANTS=${VARIANTS:-"baseline otel-v2 openllmetry openinference langfuse openlit llmmeter"}
OUT=${OUT:-$HERE/../results/peers-$(date -u +%Y%m%dT%H%M%SZ)}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)   # absolute: the script cd-s to $HERE below
mkdir -p "$OUT"
cd "$HERE"

echo "# results -> $OUT (rounds=$ROUNDS scale=$SCALE order=$ORDER extra='$EXTRA')"
"$PY" -m pip list --format=freeze > "$OUT/pip-freeze.txt" 2>/dev/null || true

avail=()
for v in $VARIANTS; do
  "$PY" overhead.py --variant "$v" --check $EXTRA > "$OUT/check-$v.jsonl" 2> "$OUT/check-$v.err"
  rc=$?
  if [ $rc -eq 0 ]; then
    avail+=("$v")
    echo "check $v: ok"
  else
    echo "check $v: SKIPPED (rc=$rc): $(grep -h -o '"reason": "[^"]*"' "$OUT/check-$v.jsonl" | head -1)$(tail -n 1 "$OUT/check-$v.err")"
  fi
done
n=${#avail[@]}
[ "$n" -gt 0 ] || { echo "no variant available" >&2; exit 1; }

for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    if [ "$ORDER" = rotate ]; then j=$(( (i + r - 1) % n )); else j=$i; fi
    v=${avail[$j]}
    t0=$(date +%s)
    "$PY" overhead.py --variant "$v" --round "$r" --scale "$SCALE" $EXTRA \
      >> "$OUT/results.jsonl" 2>> "$OUT/stderr.log"
    rc=$?
    echo "round $r $v: rc=$rc $(( $(date +%s) - t0 ))s"
  done
done

if [ "$LEAK" = 1 ]; then
  for v in "${avail[@]}"; do
    "$PY" overhead.py --variant "$v" --scenarios leak $EXTRA >> "$OUT/leak.jsonl" 2>> "$OUT/stderr.log"
    echo "leak $v: rc=$?"
  done
fi

for r in $(seq 1 "$AB_ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    j=$(( (i + r - 1) % n )); v=${avail[$j]}
    [ "$v" = baseline ] && continue          # every A/B process measures its own baseline
    t0=$(date +%s)
    "$PY" overhead.py --variant "$v" --ab --round "$r" --scale "$SCALE" $EXTRA \
      >> "$OUT/ab.jsonl" 2>> "$OUT/stderr.log"
    echo "ab round $r $v: rc=$? $(( $(date +%s) - t0 ))s"
  done
done

files=()
for f in results leak ab; do [ -f "$OUT/$f.jsonl" ] && files+=("$OUT/$f.jsonl"); done
"$PY" summarize.py "${files[@]}" --json "$OUT/summary.json" | tee "$OUT/summary.md"
