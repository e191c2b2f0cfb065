#!/usr/bin/env bash
# End to end on the bundled STS-B data: build, seed the model into the Hub cache, evaluate
# all-MiniLM-L6-v2 on STS-B test, and export embeddings of the test sentences.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/quickstart}"
mkdir -p "$OUT"
cargo build --release --locked
bash scripts/fetch-model.sh
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
MODEL=sentence-transformers/all-MiniLM-L6-v2
echo "== eval: $MODEL on STS-B test"
$BIN eval --model "$MODEL" --data data/stsbenchmark/sts-test.csv --format stsb --task sts | tee "$OUT/eval-stsb-test.txt"
echo "== embed: the STS-B test sentence1 column"
cut -f6 data/stsbenchmark/sts-test.csv > "$OUT/sentences.txt"
$BIN embed --model "$MODEL" --input "$OUT/sentences.txt" --output "$OUT/sentences.npy"
echo "quickstart: results in $OUT/"
