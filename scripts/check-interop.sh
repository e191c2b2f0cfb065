#!/usr/bin/env bash
# Interop check: a model directory written by `embtune train` loads in Python
# sentence-transformers unchanged and gives the same embeddings as `embtune embed`.
#
#   scripts/check-interop.sh [OUT_DIR]      (default out/interop)
#
# 1. the reference venv (scripts/setup-python.sh: torch + sentence-transformers, cached),
# 2. all-MiniLM-L6-v2 into the Hub cache, the release binary,
# 3. `embtune train`: 30 CoSENT steps on STS-B train (dropout on, so the weights really move),
# 4. `embtune embed` of 300 STS-B test sentences with the trained model,
# 5. Python: SentenceTransformer(OUT_DIR/model) — no arguments besides the path — encodes the same
#    sentences; passes when every component is within 1e-5 of embtune's, the module stack is
#    Transformer → Pooling → Normalize, and the trained embeddings differ from the base model's
#    (so the comparison is not of an untouched copy). Writes OUT_DIR/interop.json.
# Not part of .ci/run: the venv pulls ~3 GB of torch/CUDA wheels from PyPI. Result in README.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/interop}"
mkdir -p "$OUT"
PY="$(bash scripts/setup-python.sh | tail -n 1)"
bash scripts/fetch-model.sh >&2
cargo build --release --locked --bin embtune
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
STS=data/stsbenchmark

rm -rf "$OUT/model"
$BIN train --model sentence-transformers/all-MiniLM-L6-v2 --data "$STS/sts-train.csv" \
  --format stsb --loss cosent --batch-size 16 --max-steps 30 --max-seq-length 128 \
  --output "$OUT/model" -q
head -n 300 "$STS/sts-test.csv" | cut -f6 > "$OUT/sentences.txt"
$BIN embed --model "$OUT/model" --input "$OUT/sentences.txt" --output "$OUT/embtune.npy" -q

"$PY" - "$OUT" <<'EOF'
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer

out = sys.argv[1]
texts = [l.rstrip("\n") for l in open(f"{out}/sentences.txt", encoding="utf-8")]
ours = np.load(f"{out}/embtune.npy")
model = SentenceTransformer(f"{out}/model", device="cpu")
theirs = model.encode(texts, batch_size=32, convert_to_numpy=True)
base = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu").encode(
    texts, batch_size=32, convert_to_numpy=True)
stack = [type(m).__name__ for m in model]
diff = float(np.abs(ours - theirs).max())
moved = float(np.abs(theirs - base).max())
result = {
    "sentences": len(texts),
    "dim": int(theirs.shape[1]),
    "modules": stack,
    "max_seq_length": model.max_seq_length,
    "max_abs_diff_embtune_vs_sentence_transformers": diff,
    "max_abs_diff_trained_vs_base": moved,
}
ok = (ours.shape == theirs.shape and diff <= 1e-5 and moved > 1e-3
      and stack == ["Transformer", "Pooling", "Normalize"])
result["pass"] = ok
json.dump(result, open(f"{out}/interop.json", "w"), indent=2)
print(json.dumps(result, indent=2))
sys.exit(0 if ok else 1)
EOF
echo "check-interop: passed (details in $OUT/interop.json)"
