#!/usr/bin/env bash
# The side-by-side CPU benchmark, embtune vs Python sentence-transformers, in one command:
#
#   scripts/bench.sh [bench.py options]      e.g. --rounds 5, --only encode, --threads 4
#   QUICK=1 scripts/bench.sh                 smoke test: 1 round, 5 timed training steps
#
# 1. scripts/setup-python.sh — the reference venv (torch + sentence-transformers; skipped when
#    its stamp matches), 2. scripts/fetch-model.sh — all-MiniLM-L6-v2 and all-mpnet-base-v2
#    into the Hub cache,
# 3. cargo build --release --locked — the embtune binary, 4. scripts/bench.py (system python3,
# stdlib only) — runs the jobs and writes results/bench-cpu.json and the bench-cpu section of
# BENCHMARKS.md. Options after the script name go to bench.py (see python3 scripts/bench.py -h).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="$(bash scripts/setup-python.sh | tail -n 1)"
bash scripts/fetch-model.sh >&2
cargo build --release --locked --bin embtune

QUICK_ARGS=()
CMD="scripts/bench.sh"
if [[ "${QUICK:-0}" != "0" && -n "${QUICK:-}" ]]; then
  QUICK_ARGS=(--quick --rounds 1 --cold-rounds 1 --train-steps 5 --mpnet-train-steps 3)
  CMD="QUICK=1 $CMD"
fi
# The command as typed, for the report (quoted the way a shell would need it).
for arg in "$@"; do CMD+=" $(printf '%q' "$arg")"; done
export EMBTUNE_BENCH_COMMAND="$CMD"

exec python3 scripts/bench.py --python "$PY" "${QUICK_ARGS[@]}" "$@"
