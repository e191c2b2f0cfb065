#!/usr/bin/env bash
# Where embtune's CPU time goes: `perf record` of `embtune bench encode` (b32) and
# `embtune bench train` (CoSENT b16), the top symbols of each written to
# results/profile-encode.txt and results/profile-train.txt (BENCHMARKS.md quotes them).
# Needs `perf` (Debian: linux-perf) and a kernel that allows it; run after scripts/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin embtune
bash scripts/fetch-model.sh >&2
export HF_HUB_OFFLINE=1 RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
BIN=target/release/embtune
MODEL=sentence-transformers/all-MiniLM-L6-v2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
profile() {  # name, embtune args...
  local name=$1; shift
  perf record -q -o "$TMP/$name.data" "$BIN" "$@" --device cpu -m "$MODEL" > "$TMP/$name.json"
  { echo "# embtune $* ($(git rev-parse --short HEAD), $(date -u +%F), load $(cut -d' ' -f1-3 /proc/loadavg))"
    echo "# result: $(cat "$TMP/$name.json")"
    perf report -i "$TMP/$name.data" --no-children --sort symbol --stdio 2>/dev/null \
      | grep -E '^ +[0-9]+\.[0-9]+%' | sed -n '1,25p' | sed -E 's/ +- +- *$//; s/ +$//'
  } > "results/profile-$name.txt"
  echo "wrote results/profile-$name.txt"
}
profile encode bench encode -d data/stsbenchmark/sts-test.csv -b 32
profile train bench train -d data/stsbenchmark/sts-train.csv --loss cosent -b 16 --steps 20
