#!/usr/bin/env bash
# Peak memory of MNRL vs cached MNRL (GradCache), embtune and sentence-transformers side by side:
# scripts/bench-gradcache.py (see its header). Writes results/gradcache.{json,md}.
#   scripts/bench-gradcache.sh [--budget-mib 4096] [--plain 64,128,…] [--cached 256,512,…]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(bash scripts/setup-python.sh | tail -n 1)"
cargo build --release --locked --bin embtune
bash scripts/fetch-model.sh minilm >&2
python3 scripts/bench-gradcache.py --python "$PY" "$@"
