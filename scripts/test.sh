#!/usr/bin/env bash
# The whole test suite, as CI runs it: seeds the Hub cache with the real model (offline-capable),
# then runs every test in release mode (the real-model tests need optimised code) in one build,
# then (the whole suite only: no arguments) builds the wheel and tests it installed in a fresh
# venv (scripts/test-wheel.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust with rustup" >&2; exit 1; }
bash scripts/fetch-model.sh
export HF_HUB_OFFLINE=1
cargo test --release --locked "$@"
if [[ $# -eq 0 ]]; then
  bash scripts/test-wheel.sh
fi
