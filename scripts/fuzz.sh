#!/usr/bin/env bash
# fuzz.sh — run each cargo-fuzz (libFuzzer) target for a fixed time: the dataset readers, the
# sentence-transformers config readers and the checked safetensors loader.
#
#   bash scripts/fuzz.sh                 # every target, 600 s each (SECS=...), one after another
#   bash scripts/fuzz.sh readers 60      # one target, 60 s
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain (`rustup toolchain
# install nightly`); without nightly, RUSTC_BOOTSTRAP=1 lets stable build it. Crashes are saved
# in fuzz/artifacts/<target>/ and turn into regression tests in tests/it/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${2:-${SECS:-600}}"
targets=("${1:-readers}")
[ -z "${1:-}" ] && targets=(readers st_config safetensors_header)
tc=""
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then tc="+nightly"; else export RUSTC_BOOTSTRAP=1; fi

# Seed corpora from real files (kept out of git; rebuilt when missing).
seed() { mkdir -p "fuzz/corpus/$1"; }
seed readers
if [ -z "$(ls -A fuzz/corpus/readers)" ]; then
  head -c 2000 data/stsbenchmark/sts-dev.csv | { printf '\004'; cat; } > fuzz/corpus/readers/stsb
  { printf '\001'; printf 'sentence1,sentence2,score\n"a, b",c,0.5\nx,y,1\n'; } > fuzz/corpus/readers/csv
  { printf '\003'; printf '{"text": "a", "label": 1}\n{"text": "b\\u00e9", "label": 0}\n'; } > fuzz/corpus/readers/jsonl
fi
seed st_config
if [ -z "$(ls -A fuzz/corpus/st_config)" ]; then
  bash scripts/fetch-model.sh >/dev/null
  cache="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
  snap="$cache/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/$(cat "$cache/models--sentence-transformers--all-MiniLM-L6-v2/refs/main")"
  for f in modules.json sentence_bert_config.json 1_Pooling/config.json config_sentence_transformers.json config.json; do
    cat "$snap/$f"; printf '\377'
  done > fuzz/corpus/st_config/minilm
fi
seed safetensors_header
if [ -z "$(ls -A fuzz/corpus/safetensors_header)" ]; then
  python3 - <<'PY'
import json, struct
h = {"embeddings.word_embeddings.weight": {"dtype": "F32", "shape": [16, 8], "data_offsets": [0, 512]}}
b = json.dumps(h).encode()
open("fuzz/corpus/safetensors_header/one", "wb").write(struct.pack("<Q", len(b)) + b + bytes(512))
PY
fi

for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  cargo $tc fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 \
    -max_len=65536 -print_final_stats=1 2>&1 | tail -n 12
done
