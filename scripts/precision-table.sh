#!/usr/bin/env bash
# Quality kept at each embedding precision: `embtune eval --precision P` on STS-B test for
# float32, float16, int8, uint8, binary and ubinary, written to results/precision.md (and .json):
# bytes per embedding, spearman_cosine and its share of float32's. When a Python with
# sentence-transformers is found (ST_PYTHON, default ~/.cache/embtune/py-venv/bin/python), its
# EmbeddingSimilarityEvaluator(precision=…) runs on the same data for a side-by-side column
# (ST_PYTHON=none skips it). Usage: [MODEL=...] scripts/precision-table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-sentence-transformers/all-MiniLM-L6-v2}"
DATA=data/stsbenchmark/sts-test.csv
PRECISIONS=(float32 float16 int8 uint8 binary ubinary)
ST_PYTHON="${ST_PYTHON:-$HOME/.cache/embtune/py-venv/bin/python}"
cargo build --release --locked --bin embtune
bash scripts/fetch-model.sh
export HF_HUB_OFFLINE=1
mkdir -p results
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for p in "${PRECISIONS[@]}"; do
  echo "== $p" >&2
  target/release/embtune eval -m "$MODEL" -d "$DATA" --format stsb --task sts --precision "$p" --json -q > "$tmp/$p.json"
done
if [[ "$ST_PYTHON" != none && -x "$ST_PYTHON" ]] && "$ST_PYTHON" -c 'import sentence_transformers' 2>/dev/null; then
  echo "== sentence-transformers" >&2
  "$ST_PYTHON" scripts/precision_st.py "$MODEL" "$DATA" "${PRECISIONS[@]}" 2>/dev/null > "$tmp/st.json"
fi
python3 - "$tmp" "$MODEL" "$DATA" "${PRECISIONS[@]}" <<'PY'
import json, os, sys, datetime
tmp, model, data, precisions = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
res = {p: json.load(open(f"{tmp}/{p}.json")) for p in precisions}
st = json.load(open(f"{tmp}/st.json")) if os.path.exists(f"{tmp}/st.json") else None
base = res["float32"]["spearman_cosine"]
head = "| precision | bytes per embedding | spearman_cosine | % of float32 |"
rule = "|---|---:|---:|---:|"
if st:
    head += f" sentence-transformers {st['version']} |"
    rule += "---:|"
rows = []
for p in precisions:
    s = res[p]["spearman_cosine"]
    row = f"| {p} | {res[p]['bytes_per_embedding']:,} | {s:.2f} | {100 * s / base:.1f} % |"
    if st:
        row += f" {st[p]:.2f} |" if p in st else " — |"
    rows.append(row)
md = f"""# Quality at each embedding precision

`scripts/precision-table.sh`: `embtune eval --precision P` with {model} on STS-B test
(`{data}`, 1,379 pairs), spearman_cosine ×100. Embeddings are L2-normalised, quantized as
sentence-transformers' `quantize_embeddings` (int8/uint8: per-dimension ranges over all the
evaluated sentences) and scored on the values cast to float (binary unpacked to 0/1 bits), as its
EmbeddingSimilarityEvaluator(precision=…) does. float16 is not a sentence-transformers precision.
Generated {datetime.date.today().isoformat()}.

{head}
{rule}
""" + "\n".join(rows) + "\n"
open("results/precision.md", "w").write(md)
json.dump({"model": model, "data": data, "embtune": res, "sentence_transformers": st},
          open("results/precision.json", "w"), indent=1)
print(md)
PY
