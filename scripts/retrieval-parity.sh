#!/usr/bin/env bash
# Retrieval metric parity: `embtune eval --task retrieval` and sentence-transformers'
# InformationRetrievalEvaluator (scripts/retrieval_st.py, the venv of scripts/setup-python.sh)
# on the same model and data — dbpedia-entity-5k, msmarco-dl19-5k and pubmedqa-pqal test — every
# metric side by side, with the largest difference. Writes results/retrieval-parity.{md,json}.
# Quality only: speed is claimed from scripts/bench.sh, not from here.
# Usage: [MODEL=…] [MAX_SEQ_LENGTH=256] scripts/retrieval-parity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-sentence-transformers/all-MiniLM-L6-v2}"
MAXLEN="${MAX_SEQ_LENGTH:-256}"
DATA=../shared/data/retrieval
SETS=(dbpedia-entity-5k msmarco-dl19-5k pubmedqa-pqal)
ST_PYTHON="${ST_PYTHON:-$(bash scripts/setup-python.sh | tail -1)}"
cargo build --release --locked --bin embtune
bash scripts/fetch-model.sh
export HF_HUB_OFFLINE=1
mkdir -p results
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for s in "${SETS[@]}"; do
  echo "== $s: embtune" >&2
  XDG_CACHE_HOME="$tmp/cache" target/release/embtune eval --task retrieval -m "$MODEL" \
    --max-seq-length "$MAXLEN" -d "$DATA/$s" --json -q > "$tmp/$s.embtune.json"
  echo "== $s: sentence-transformers" >&2
  "$ST_PYTHON" scripts/retrieval_st.py "$MODEL" "$DATA/$s" test "$MAXLEN" 2>/dev/null > "$tmp/$s.st.json"
done
python3 - "$tmp" "$MODEL" "$MAXLEN" "${SETS[@]}" <<'PY'
import json, sys, datetime
tmp, model, maxlen, sets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
out, md_rows, worst = {}, [], 0.0
for s in sets:
    e = json.load(open(f"{tmp}/{s}.embtune.json"))
    st = json.load(open(f"{tmp}/{s}.st.json"))
    keys = [k for k in st if k.startswith(("cosine_", "dot_"))]
    diff = max(abs(e[k] - st[k]) for k in keys)
    worst = max(worst, diff)
    out[s] = {"embtune": e, "sentence_transformers": st, "metrics_compared": len(keys),
              "max_abs_diff": diff}
    for k in ["cosine_ndcg@10", "cosine_mrr@10", "cosine_map@100", "cosine_recall@100", "dot_ndcg@10"]:
        md_rows.append(f"| {s} | {k} | {e[k]:.4f} | {st[k]:.4f} |")
    md_rows.append(f"| {s} | max \\|diff\\| over {len(keys)} metrics | {diff:.1e} | |")
md = f"""# Retrieval metrics: embtune vs sentence-transformers

`scripts/retrieval-parity.sh`: {model} (max_seq_length {maxlen}) on the BEIR-layout sets of
`../shared/data/retrieval/`, test split; sentence-transformers {st['version']}'s
InformationRetrievalEvaluator (cosine and dot, precision/recall also @100) beside
`embtune eval --task retrieval`. Generated {datetime.date.today().isoformat()}.

| data | metric | embtune | sentence-transformers |
|---|---|---:|---:|
""" + "\n".join(md_rows) + "\n"
open("results/retrieval-parity.md", "w").write(md)
json.dump({"model": model, "max_seq_length": int(maxlen), "sets": out, "max_abs_diff": worst},
          open("results/retrieval-parity.json", "w"), indent=1)
print(md)
print(f"largest difference over all metrics: {worst:.2e}", "(ok: ≤ 1e-4)" if worst <= 1e-4 else "(FAILS 1e-4)")
sys.exit(0 if worst <= 1e-4 else 1)
PY
