#!/usr/bin/env bash
# The retrieval recipe (data/recipes/retrieval.toml) on both systems, same data: mines one hard
# negative per pubmedqa-pqal train pair with embtune (the base model, relative margin 0.05), then
# fine-tunes all-MiniLM-L6-v2 on that file with embtune and with Python sentence-transformers
# (scripts/st_retrieval.py: CachedMultipleNegativesRankingLoss, the same hyperparameters), and
# scores the base model and both results on pubmedqa-pqal test and dbpedia-entity-5k with each
# system's own retrieval evaluator (embtune eval --task retrieval; ST's
# InformationRetrievalEvaluator, scripts/retrieval_st.py). Writes results/retrieval-recipe.{md,json}.
#   scripts/retrieval-recipe.sh [seeds="42"]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-42}"
MODEL=sentence-transformers/all-MiniLM-L6-v2
DATA=../shared/data/retrieval
OUT=out/retrieval-recipe
PY="$(bash scripts/setup-python.sh | tail -n 1)"
cargo build --release --locked --bin embtune
bash scripts/fetch-model.sh minilm >&2
export HF_HUB_OFFLINE=1
E=target/release/embtune
mkdir -p "$OUT" results
$E pairs --from pairs -d "$DATA/pubmedqa-pqal/train_pairs.jsonl" --columns anchor=query,positive=positive \
  --mine -m "$MODEL" --max-seq-length 256 --num-negatives 1 --relative-margin 0.05 \
  --output-format n-tuple -o "$OUT/pubmed-hard.jsonl" -q
ev() { XDG_CACHE_HOME="$OUT/cache" $E eval --task retrieval -m "$1" --max-seq-length 256 -d "$DATA/$2" --json -q; }
evst() { "$PY" scripts/retrieval_st.py "$1" "$DATA/$2" test 256 2>/dev/null; }
{
  echo "{\"base\": {\"pubmedqa\": $(ev "$MODEL" pubmedqa-pqal), \"dbpedia\": $(ev "$MODEL" dbpedia-entity-5k)},"
  echo "\"runs\": ["
  first=1
  for s in $SEEDS; do
    $E train --config data/recipes/retrieval.toml --seed "$s" --data "$OUT/pubmed-hard.jsonl" \
      --output "$OUT/embtune-$s" --overwrite >&2
    "$PY" scripts/st_retrieval.py --data "$OUT/pubmed-hard.jsonl" --output "$OUT/st-$s" --seed "$s" >&2
    [[ $first == 1 ]] || echo ","
    first=0
    echo "{\"seed\": $s,"
    echo " \"embtune\": {\"pubmedqa\": $(ev "$OUT/embtune-$s" pubmedqa-pqal), \"dbpedia\": $(ev "$OUT/embtune-$s" dbpedia-entity-5k)},"
    echo " \"sentence_transformers\": {\"pubmedqa\": $(evst "$OUT/st-$s" pubmedqa-pqal), \"dbpedia\": $(evst "$OUT/st-$s" dbpedia-entity-5k)}}"
  done
  echo "]}"
} > "$OUT/results.json"
python3 - "$OUT/results.json" "$(wc -l < "$OUT/pubmed-hard.jsonl")" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys, datetime
r = json.load(open(sys.argv[1]))
rows, rev = sys.argv[2], sys.argv[3]
k = "cosine_ndcg@10"
lines = [
    "# Retrieval recipe: embtune vs sentence-transformers on the same data",
    "",
    f"`scripts/retrieval-recipe.sh` ({rev}, {datetime.date.today().isoformat()}): data/recipes/retrieval.toml — all-MiniLM-L6-v2,",
    f"pubmedqa-pqal train pairs with one hard negative each mined by the base model ({rows.strip()} rows),",
    "cached MNRL (batch 64, mini-batch 32), 1 epoch, lr 2e-5, max_seq_length 256 — on both systems;",
    "nDCG@10 (cosine) on pubmedqa-pqal test (in domain) and dbpedia-entity-5k (out of domain), each",
    "system's model scored by its own evaluator (the evaluators agree to 1e-15: results/retrieval-parity.md).",
    "",
    "| model | pubmedqa test nDCG@10 | dbpedia-entity-5k nDCG@10 |",
    "|---|---:|---:|",
    f"| base all-MiniLM-L6-v2 | {r['base']['pubmedqa'][k]:.4f} | {r['base']['dbpedia'][k]:.4f} |",
]
for run in r["runs"]:
    s = run["seed"]
    lines.append(f"| embtune, seed {s} | {run['embtune']['pubmedqa'][k]:.4f} | {run['embtune']['dbpedia'][k]:.4f} |")
    lines.append(f"| sentence-transformers 6.2, seed {s} | {run['sentence_transformers']['pubmedqa'][k]:.4f} | {run['sentence_transformers']['dbpedia'][k]:.4f} |")
md = "\n".join(lines) + "\n"
open("results/retrieval-recipe.md", "w").write(md)
json.dump(r, open("results/retrieval-recipe.json", "w"), indent=1)
print(md)
PY
