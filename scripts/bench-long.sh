#!/usr/bin/env bash
# Long-context encoding benchmark: scripts/bench_long.py (see its header) — 2,048-token texts
# through a base-size ModernBERT-shaped random model, embtune vs sentence-transformers, same run.
#   scripts/bench-long.sh [--texts N] [--seq S] [--batch B] [--rounds R]
# Writes results/long-context.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(bash scripts/setup-python.sh | tail -n 1)"
cargo build --release --locked --bin embtune
"$PY" scripts/bench_long.py "$@"
