#!/usr/bin/env bash
# Same data, both systems: trains embtune and Python sentence-transformers on the SAME generated
# training file (scripts/reproduce-stsb.sh's data for a recipe, seed 42 draw), each with several
# training seeds, and writes the STS-B test Spearman of every run to results/compare-<recipe>.md.
# Separates "the data draw differs" from "the training differs" (issue 3's Triplet gap).
#   scripts/compare-recipe.sh [recipe=triplet] [seeds="42 1 2"]
set -euo pipefail
cd "$(dirname "$0")/.."
R="${1:-triplet}"; SEEDS="${2:-42 1 2}"
case "$R" in triplet) B=16 ;; mnrl) B=32 ;; contrastive) B=16 ;; *) echo "recipe: triplet|mnrl|contrastive" >&2; exit 2 ;; esac
PY="$(bash scripts/setup-python.sh | tail -n 1)"
cargo build --release --locked --bin embtune --example stsb_recipes
bash scripts/fetch-model.sh >&2
export HF_HUB_OFFLINE=1
OUT=out/compare-$R; mkdir -p "$OUT" results
target/release/examples/stsb_recipes data/stsbenchmark/sts-train.csv "$OUT/data" 42
D="$OUT/data/$R.jsonl"
rows=()
for s in $SEEDS; do
  py=$("$PY" scripts/st_recipe.py --data "$D" --loss "$R" --seed "$s" --batch-size "$B" 2>/dev/null | tail -n 1)
  rm -rf "$OUT/embtune-$s"
  target/release/embtune train --config "data/recipes/$R.toml" --seed "$s" --data "$D" --output "$OUT/embtune-$s" --overwrite -q
  ours=$(target/release/embtune eval --model "$OUT/embtune-$s" --data data/stsbenchmark/sts-test.csv \
    --format stsb --task sts --json -q)
  rows+=("$s|$(python3 -c "import json,sys;print('%.2f'%json.loads(sys.argv[1])['spearman_cosine'])" "$ours")|$(python3 -c "import json,sys;print('%.2f'%json.loads(sys.argv[1])['test'])" "$py")")
done
{
  echo "# $R: embtune vs sentence-transformers on the same training file"
  echo
  echo "\`scripts/compare-recipe.sh $R \"$SEEDS\"\` ($(git rev-parse --short HEAD), $(date -u +%F)): $(wc -l < "$D") rows from"
  echo "examples/stsb_recipes (seed 42 draw), the recipe of data/recipes/$R.toml on both sides; STS-B test Spearman."
  echo
  echo "| training seed | embtune | sentence-transformers |"
  echo "|---:|---:|---:|"
  for r in "${rows[@]}"; do IFS='|' read -r s a b <<< "$r"; echo "| $s | $a | $b |"; done
} > "results/compare-$R.md"
cat "results/compare-$R.md"
