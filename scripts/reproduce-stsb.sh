#!/usr/bin/env bash
# Fine-tunes all-MiniLM-L6-v2 on STS-B train with each recipe of ../shared/reference/cpu_finetune_runs.json
# (seed 42, 1 epoch, batch 16 (MNRL 32), lr 2e-5, 10 % warmup, linear decay, max_seq_length 128,
# dropout 0.1, plain random batches as the reference), evaluates on STS-B dev and test, and writes
# results/stsb.md (and .json). Usage: [SEED=42] scripts/reproduce-stsb.sh [OUT_DIR] [recipe ...]
# Another SEED (shuffle, dropout and the drawn triplet negatives) writes results/stsb-seed<SEED>.md.
# REUSE=1 keeps recipes whose result.json already exists in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/reproduce-stsb}"; shift || true
RECIPES=("$@"); [[ ${#RECIPES[@]} -gt 0 ]] || RECIPES=(cosent cosine mnrl contrastive triplet)
SEED="${SEED:-42}"
RESULT=results/stsb; [[ "$SEED" == 42 ]] || RESULT="results/stsb-seed$SEED"
cargo build --release --locked --bin embtune --example stsb_recipes
bash scripts/fetch-model.sh
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
MODEL=sentence-transformers/all-MiniLM-L6-v2
STS=data/stsbenchmark
mkdir -p "$OUT" results
target/release/examples/stsb_recipes "$STS/sts-train.csv" "$OUT/data" "$SEED"

# The recipes live in data/recipes/<name>.toml (embtune train --config); here only the seed, the
# place of the generated data and the output change.
for r in "${RECIPES[@]}"; do
  # REUSE=1: keep recipes already finished in OUT_DIR (e.g. to rebuild the table).
  if [[ -n "${REUSE:-}" && -f "$OUT/$r/result.json" ]]; then echo "== $r (reused)"; continue; fi
  [[ -f "data/recipes/$r.toml" ]] || { echo "unknown recipe $r (no data/recipes/$r.toml)" >&2; exit 2; }
  args=(--config "data/recipes/$r.toml" --seed "$SEED")
  case "$r" in mnrl|contrastive|triplet) args+=(--data "$OUT/data/$r.jsonl") ;; esac
  echo "== $r"
  start=$(date +%s.%N)
  $BIN train "${args[@]}" --output "$OUT/$r" --overwrite
  end=$(date +%s.%N)
  for split in dev test; do
    $BIN eval --model "$OUT/$r" --data "$STS/sts-$split.csv" --format stsb --task sts --json -q > "$OUT/$r/eval-$split.json"
  done
  python3 - "$OUT/$r" "$start" "$end" <<'PY'
import json, sys
d = sys.argv[1]
m = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if '"loss"' in l]
res = {"steps": m[-1]["step"], "train_seconds": float(sys.argv[3]) - float(sys.argv[2]),
       "dev": json.load(open(f"{d}/eval-dev.json"))["spearman_cosine"],
       "test": json.load(open(f"{d}/eval-test.json"))["spearman_cosine"]}
json.dump(res, open(f"{d}/result.json", "w"))
PY
done

python3 - "$OUT" "../shared/reference/cpu_finetune_runs.json" "$RESULT" "$SEED" "${RECIPES[@]}" <<'PY'
import json, os, sys, platform
out, ref_path, result, seed, recipes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
ref = json.load(open(ref_path)) if os.path.exists(ref_path) else {}
rows, js = [], {}
for r in recipes:
    res = json.load(open(f"{out}/{r}/result.json"))
    p = ref.get(r, {}).get("stsb_eval", {})
    pd, pt = p.get("stsb_dev", {}).get("spearman"), p.get("stsb_test", {}).get("spearman")
    fmt = lambda x: "—" if x is None else f"{x:.2f}"
    delta = "—" if pt is None else f"{res['test'] - pt:+.2f}"
    rows.append(f"| {r} | {res['steps']} | {res['dev']:.2f} | {fmt(pd)} | {res['test']:.2f} | {fmt(pt)} | {delta} | {res['train_seconds']:.0f} |")
    js[r] = {**res, "python_dev": pd, "python_test": pt}
md = ["# STS-B fine-tuning: embtune vs Python sentence-transformers", "",
      f"all-MiniLM-L6-v2, seed {seed}, 1 epoch, lr 2e-5, 10 % warmup, linear decay, max_seq_length 128, dropout 0.1;",
      "Spearman ×100 of cosine similarity on STS-B (base model: dev 86.72, test 82.03).",
      "Produced by `scripts/reproduce-stsb.sh`; Python numbers from `../shared/reference/cpu_finetune_runs.json`.", "",
      "| recipe | steps | dev | dev (Python) | test | test (Python) | test Δ | train s (incl. load) |",
      "|---|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
      f"Machine: {platform.machine()}, {os.cpu_count()} cores. Training seconds are wall time on a possibly shared machine: not a speed claim."]
# The other comparisons are kept below the table, so a rerun does not drop them: the recipes
# run by scripts/compare-extra-recipes.sh (results/stsb-extra.md) and the trainer comparison
# (results/trainer-parity.md, written by hand from its tests).
for extra in ("results/stsb-extra.md", "results/stsb-best.md", "results/trainer-parity.md"):
    if os.path.exists(extra):
        md += ["", open(extra).read().rstrip()]
open(f"{result}.md", "w").write("\n".join(md) + "\n")
json.dump(js, open(f"{result}.json", "w"), indent=2)
print("\n".join(md))
PY
