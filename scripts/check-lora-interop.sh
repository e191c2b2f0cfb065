#!/usr/bin/env bash
# LoRA interop (the recipes issue): `embtune train --lora-rank … --save-adapter` on the real
# all-MiniLM-L6-v2 (STEPS CoSENT steps on STS-B train, default 30, lr 1e-4 so the adapters
# move), then in Python, for each target set (PEFT's default query,value, and
# query,key,value,dense):
# 1. the merged output loads in sentence-transformers unchanged and encodes 300 STS-B test
#    sentences as `embtune embed` does (max abs difference ≤ 1e-5);
# 2. the base model with the PEFT adapter (`SentenceTransformer(base).load_adapter(<out>/adapter)`)
#    encodes them the same way (≤ 1e-5), and peft reports no missing or unexpected adapter keys;
# 3. the trained embeddings differ from the base model's (the adapters really moved).
# Results in results/interop-lora.json. Not part of .ci/run (the venv pulls torch from PyPI).
#   scripts/check-lora-interop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT_DIR:-out/interop-lora}"
STEPS="${STEPS:-30}"
mkdir -p "$OUT" results
PY="$(bash scripts/setup-python.sh | tail -n 1)"
bash scripts/fetch-model.sh >&2
cargo build --release --locked --bin embtune
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
BASE=sentence-transformers/all-MiniLM-L6-v2
head -n 300 data/stsbenchmark/sts-test.csv | cut -f6 > "$OUT/sentences.txt"
lines=()
for targets in query,value query,key,value,dense; do
  dir="$OUT/$targets"
  rm -rf "$dir"
  $BIN train -m "$BASE" -d data/stsbenchmark/sts-train.csv --format stsb --loss cosent -b 16 \
    --max-steps "$STEPS" --lr 1e-4 --max-seq-length 128 --lora-rank 8 --lora-alpha 16 \
    --lora-targets "$targets" --save-adapter -o "$dir" -q
  $BIN embed -m "$dir" -i "$OUT/sentences.txt" -o "$dir.npy" -q
  lines+=("$("$PY" - "$BASE" "$dir" "$OUT/sentences.txt" "$targets" <<'PY'
import json, os, sys, warnings
os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np
from sentence_transformers import SentenceTransformer

base_id, trained, sentences, targets = sys.argv[1:5]
texts = [l.rstrip("\n") for l in open(sentences, encoding="utf-8")]
ours = np.load(f"{trained}.npy")
merged = SentenceTransformer(trained, device="cpu", model_kwargs={})
merged_emb = merged.encode(texts, batch_size=32, convert_to_numpy=True)
with_adapter = SentenceTransformer(base_id, device="cpu")
base_emb = with_adapter.encode(texts, batch_size=32, convert_to_numpy=True)
with_adapter.max_seq_length = merged.max_seq_length
import logging
logged = []
class Keep(logging.Handler):
    def emit(self, rec):
        logged.append(rec.getMessage())
for name in ("transformers", "peft", "sentence_transformers"):
    logging.getLogger(name).addHandler(Keep())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with_adapter.load_adapter(os.path.join(trained, "adapter"))
key_warnings = [m for m in [str(w.message) for w in caught] + logged if "key" in m.lower()]
adapter_emb = with_adapter.encode(texts, batch_size=32, convert_to_numpy=True)
r = {
    "model": base_id,
    "lora_targets": targets.split(","),
    "sentences": len(texts),
    "max_abs_diff_merged_vs_embtune": float(np.abs(merged_emb - ours).max()),
    "max_abs_diff_base_plus_peft_adapter_vs_embtune": float(np.abs(adapter_emb - ours).max()),
    "max_abs_diff_trained_vs_base": float(np.abs(ours - base_emb).max()),
    "peft_key_warnings": key_warnings,
}
r["pass"] = (r["max_abs_diff_merged_vs_embtune"] <= 1e-5
             and r["max_abs_diff_base_plus_peft_adapter_vs_embtune"] <= 1e-5
             and r["max_abs_diff_trained_vs_base"] > 1e-3 and not key_warnings)
print(json.dumps(r))
PY
)")
  echo "${lines[-1]}" >&2
done
printf '%s\n' "${lines[@]}" | python3 -c "import json,sys; json.dump([json.loads(l) for l in sys.stdin], open('results/interop-lora.json','w'), indent=1)"
python3 -c "import json,sys; r=json.load(open('results/interop-lora.json')); sys.exit(0 if all(x['pass'] for x in r) else 1)"
