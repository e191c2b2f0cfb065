#!/usr/bin/env bash
# all-mpnet-base-v2 (the MPNet family on real weights) side by side with sentence-transformers,
# on this machine, into results/mpnet.json:
#   1. STS-B test spearman_cosine: `embtune eval` vs sentence-transformers' own
#      EmbeddingSimilarityEvaluator on the same file (must agree to 1e-4);
#   2. embeddings of every STS-B test sentence (both columns, 2,758 texts): `embtune embed` vs
#      SentenceTransformer.encode (max abs difference must be ≤ 1e-5);
#   3. one epoch of CoSENT on STS-B train with embtune (batch 16, max_seq_length 128), then
#      sentence-transformers loads the trained folder with identical embeddings
#      (scripts/check-interop.sh with STEPS=epoch → results/interop-mpnet-epoch.json), and both
#      systems' STS-B test score of the trained model.
# Cost: ~8× MiniLM per token; step 3 is the long one (≈ 40 min on 2 cores). SKIP_EPOCH=1 skips
# it. Needs the reference venv (scripts/setup-python.sh). Not part of .ci/run (CI runs a few
# mpnet embeddings and one training step: tests/it/real_mpnet.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=sentence-transformers/all-mpnet-base-v2
OUT="${OUT_DIR:-out/mpnet-parity}"
mkdir -p "$OUT" results
PY="$(bash scripts/setup-python.sh | tail -n 1)"
bash scripts/fetch-model.sh mpnet >&2
cargo build --release --locked --bin embtune
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
TEST=data/stsbenchmark/sts-test.csv

echo "mpnet-parity: STS-B test with embtune" >&2
$BIN eval -m "$MODEL" --data "$TEST" --format stsb --task sts --json > "$OUT/embtune-eval.json"
cut -f6,7 "$TEST" | tr '\t' '\n' | awk 'length > 0' > "$OUT/texts.txt"
$BIN embed -m "$MODEL" -i "$OUT/texts.txt" -o "$OUT/embtune.npy" -q

epoch_ours=""
if [[ -z "${SKIP_EPOCH:-}" ]]; then
  echo "mpnet-parity: one epoch of CoSENT (scripts/check-interop.sh)" >&2
  OUT_DIR="$OUT" STEPS=epoch RESULTS=results/interop-mpnet-epoch.json \
    bash scripts/check-interop.sh "$MODEL"
  $BIN eval -m "$OUT/all-mpnet-base-v2" --data "$TEST" --format stsb --task sts --json \
    > "$OUT/embtune-eval-trained.json"
  epoch_ours="$OUT/all-mpnet-base-v2"
fi

echo "mpnet-parity: sentence-transformers side" >&2
"$PY" - "$MODEL" "$TEST" "$OUT" "$epoch_ours" <<'EOF'
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np
import torch
import sentence_transformers
from sentence_transformers import SentenceTransformer
try:
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
except ImportError:  # sentence-transformers < 6
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

model_id, test, out, trained = sys.argv[1:5]
torch.set_num_threads(2)
s1, s2, scores = [], [], []
with open(test, encoding="utf-8") as f:
    for line in f:
        p = line.rstrip("\n").split("\t")
        s1.append(p[5]); s2.append(p[6]); scores.append(float(p[4]) / 5)

def st_score(path):
    m = SentenceTransformer(path, device="cpu")
    return EmbeddingSimilarityEvaluator(s1, s2, scores, batch_size=32)(m)["spearman_cosine"] * 100, m

st, model = st_score(model_id)
ours = json.load(open(f"{out}/embtune-eval.json"))["spearman_cosine"]
texts = [l.rstrip("\n") for l in open(f"{out}/texts.txt", encoding="utf-8")]
theirs = model.encode(texts, batch_size=32, convert_to_numpy=True)
emb = np.load(f"{out}/embtune.npy")
r = {
    "model": model_id,
    "sentence_transformers": sentence_transformers.__version__,
    "stsb_test_spearman_cosine": {"embtune": ours, "sentence_transformers": st,
                                  "abs_diff": abs(ours - st)},
    "embeddings": {"texts": len(texts), "dim": int(theirs.shape[1]),
                   "max_abs_diff": float(np.abs(emb - theirs).max())},
}
ok = r["stsb_test_spearman_cosine"]["abs_diff"] <= 1e-4 and r["embeddings"]["max_abs_diff"] <= 1e-5
if trained:
    t_st, _ = st_score(trained)
    t_ours = json.load(open(f"{out}/embtune-eval-trained.json"))["spearman_cosine"]
    inter = json.load(open("results/interop-mpnet-epoch.json"))[0]
    r["one_epoch_cosent"] = {"stsb_test_spearman_cosine_embtune_eval": t_ours,
                             "stsb_test_spearman_cosine_sentence_transformers_eval": t_st,
                             "train_seconds": inter["train_seconds"],
                             "interop_max_abs_diff": inter["max_abs_diff_embtune_vs_sentence_transformers"],
                             "interop_pass": inter["pass"]}
    ok = ok and inter["pass"] and abs(t_ours - t_st) <= 1e-4
r["pass"] = ok
json.dump(r, open("results/mpnet.json", "w"), indent=2)
print(json.dumps(r, indent=2))
sys.exit(0 if ok else 1)
EOF
echo "mpnet-parity: results/mpnet.json" >&2
