#!/usr/bin/env bash
# Interop check: a model directory written by `embtune train` loads in Python
# sentence-transformers unchanged and gives the same embeddings as `embtune embed` — for each
# model given, by default the real all-MiniLM-L6-v2 and every family fixture
# (tests/fixtures/<family>/model: bert, roberta, xlm-roberta, camembert, distilbert, mpnet,
# modernbert, nomic_bert, gte).
#
#   scripts/check-interop.sh [MODEL ...]          (results in results/interop.json)
#   STEPS=epoch scripts/check-interop.sh sentence-transformers/all-mpnet-base-v2
#
# Per model:
# 1. `embtune train`: STEPS (default 30) CoSENT steps on STS-B train (dropout on, so the weights
#    really move; STEPS=epoch trains one whole epoch), batch 16, max_seq_length 128 (the
#    fixtures keep their own);
# 2. `embtune embed` of 300 STS-B test sentences with the trained model;
# 3. Python: SentenceTransformer(<trained dir>) — no arguments besides the path — encodes the
#    same sentences; passes when every component is within 1e-5 of embtune's, the module stack
#    is the base model's, and the trained embeddings differ from the base model's (so the
#    comparison is not of an untouched copy).
# OUT_DIR (default out/interop) holds the trained models. Not part of .ci/run: the venv pulls
# ~3 GB of torch/CUDA wheels from PyPI. Results in README.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT_DIR:-out/interop}"
STEPS="${STEPS:-30}"
RESULTS="${RESULTS:-results/interop.json}"
mkdir -p "$OUT" "$(dirname "$RESULTS")"
PY="$(bash scripts/setup-python.sh | tail -n 1)"
bash scripts/fetch-model.sh >&2
cargo build --release --locked --bin embtune
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
STS=data/stsbenchmark

if [[ $# -eq 0 ]]; then
  set -- sentence-transformers/all-MiniLM-L6-v2 \
    $(for f in bert roberta xlm-roberta camembert distilbert mpnet modernbert nomic_bert gte; do echo "tests/fixtures/$f/model"; done)
fi
head -n 300 "$STS/sts-test.csv" | cut -f6 > "$OUT/sentences.txt"
steps=(--max-steps "$STEPS")
[[ "$STEPS" == epoch ]] && steps=(--epochs 1)

lines=()
for model in "$@"; do
  name=$(echo "$model" | sed 's|tests/fixtures/||; s|/model$||; s|.*/||')
  dir="$OUT/$name"
  rm -rf "$dir"
  echo "check-interop: $model → $dir (${STEPS} steps)" >&2
  start=$(date +%s)
  # max_seq_length 128 as the reference recipes (the tiny fixtures have 40 positions: their own).
  maxlen=(--max-seq-length 128); [[ "$model" == tests/fixtures/* ]] && maxlen=()
  $BIN train --model "$model" --data "$STS/sts-train.csv" --format stsb --loss cosent \
    --batch-size 16 "${steps[@]}" "${maxlen[@]}" --output "$dir" -q
  train_s=$(( $(date +%s) - start ))
  $BIN embed --model "$dir" --input "$OUT/sentences.txt" --output "$dir.embtune.npy" -q
  line=$("$PY" - "$model" "$dir" "$OUT/sentences.txt" "$train_s" <<'EOF'
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np
from sentence_transformers import SentenceTransformer

base_id, trained, sentences, train_s = sys.argv[1:5]
texts = [l.rstrip("\n") for l in open(sentences, encoding="utf-8")]
ours = np.load(f"{trained}.embtune.npy")
model = SentenceTransformer(trained, device="cpu")
theirs = model.encode(texts, batch_size=32, convert_to_numpy=True)
base_model = SentenceTransformer(base_id, device="cpu")
base = base_model.encode(texts, batch_size=32, convert_to_numpy=True)
stack = [type(m).__name__ for m in model]
diff = float(np.abs(ours - theirs).max())
moved = float(np.abs(theirs - base).max())
r = {
    "model": base_id,
    "family": model[0].auto_model.config.model_type,
    "sentences": len(texts),
    "dim": int(theirs.shape[1]),
    "modules": stack,
    "max_seq_length": model.max_seq_length,
    "train_seconds": int(train_s),
    "max_abs_diff_embtune_vs_sentence_transformers": diff,
    "max_abs_diff_trained_vs_base": moved,
}
r["pass"] = (ours.shape == theirs.shape and diff <= 1e-5 and moved > 1e-4
             and stack == [type(m).__name__ for m in base_model])
print(json.dumps(r))
EOF
)
  echo "$line" >&2
  lines+=("$line")
done
printf '%s\n' "${lines[@]}" | "$PY" -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
json.dump(rows, open(sys.argv[1], "w"), indent=2)
bad = [r["model"] for r in rows if not r["pass"]]
print("check-interop: " + ("FAILED for " + ", ".join(bad) if bad else f"all {len(rows)} passed") + f" ({sys.argv[1]})")
sys.exit(1 if bad else 0)' "$RESULTS"
