#!/usr/bin/env bash
# End to end on the bundled STS-B data: build, seed all-MiniLM-L6-v2 into the Hub cache, evaluate
# it on STS-B test, fine-tune it with CoSENT on STS-B train (1 epoch, evaluated on dev), evaluate
# the result on STS-B test, and export embeddings with it.
# Usage: scripts/quickstart.sh [OUT_DIR]   (QUICK=1: 40 training steps instead of a full epoch)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/quickstart}"
mkdir -p "$OUT"
cargo build --release --locked
bash scripts/fetch-model.sh minilm
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
MODEL=sentence-transformers/all-MiniLM-L6-v2
STS=data/stsbenchmark
steps=(); [[ -n "${QUICK:-}" ]] && steps=(--max-steps 40)

echo "== 1/4 eval: $MODEL on STS-B test"
$BIN eval --model "$MODEL" --data "$STS/sts-test.csv" --format stsb --task sts | tee "$OUT/eval-base.txt"
echo "== 2/4 train: CoSENT on STS-B train, evaluated on STS-B dev"
$BIN train --model "$MODEL" --data "$STS/sts-train.csv" --format stsb --loss cosent \
  --max-seq-length 128 --eval-data "$STS/sts-dev.csv" --eval-format stsb "${steps[@]}" --output "$OUT/model" \
  --overwrite
echo "== 3/4 eval: the fine-tuned model on STS-B test"
$BIN eval --model "$OUT/model" --data "$STS/sts-test.csv" --format stsb --task sts | tee "$OUT/eval-finetuned.txt"
echo "== 4/4 embed: the STS-B test sentence1 column with the fine-tuned model"
cut -f6 "$STS/sts-test.csv" > "$OUT/sentences.txt"
$BIN embed --model "$OUT/model" --data "$OUT/sentences.txt" --output "$OUT/sentences.npy"
echo "quickstart: model in $OUT/model (sentence-transformers layout), results in $OUT/"
