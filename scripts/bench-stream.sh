#!/usr/bin/env bash
# Streaming `embed` benchmark: scripts/bench-stream.py (see its header) — peak RSS and throughput
# on 2,000,000 lines vs 50,000, and the whole-file reader of the last release before streaming
# (commit 30c5965, built once into dist/embtune-wholefile through a git worktree) on the same
# input for comparison. Writes results/stream-bench.{json,md}. About 70 minutes on 2 cores.
#   scripts/bench-stream.sh [--lines N] [--small N] [--whole-file-seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin embtune
if [[ ! -x dist/embtune-wholefile ]]; then
  wt="$(mktemp -d)/wholefile"
  OLDPWD="$PWD"
  git worktree add --detach "$wt" 30c5965 >&2
  # The same target directory: the dependencies are shared, only embtune itself is rebuilt.
  (cd "$wt" && cargo build --release --locked --bin embtune --target-dir "$OLDPWD/target") >&2
  mkdir -p dist
  cp target/release/embtune dist/embtune-wholefile
  git worktree remove --force "$wt"
  # Put this checkout's binary back in place.
  touch src/main.rs
  cargo build --release --locked --bin embtune
fi
bash scripts/fetch-model.sh minilm >&2
python3 scripts/bench-stream.py "$@"
