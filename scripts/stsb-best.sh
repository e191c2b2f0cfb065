#!/usr/bin/env bash
# The recipes issue's STS-B search, reproducibly: every candidate recipe (data/recipes/<name>.toml
# for the shipped one-epoch recipes cosine, angle, multi, distill, lora, and
# data/recipes/stsb-search/*.toml) is trained once with seed 42 from STS-B train alone and scored
# on STS-B dev and test; the candidate with the best dev score is the pick (test is not looked at
# for choosing), trained with two more seeds (1, 2), and data/recipes/stsb-best.toml must be that
# candidate (the script checks). Writes results/stsb-best.md; scripts/reproduce-stsb.sh folds it
# into results/stsb.md. REUSE=1 keeps candidates already trained in out/stsb-search/.
# MODEL=sentence-transformers/all-mpnet-base-v2 SEEDS=42 also scores the pick with MPNet.
#   scripts/stsb-best.sh [candidate ...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/stsb-search
CANDS=("$@")
if [[ ${#CANDS[@]} -eq 0 ]]; then
  CANDS=(cosine angle multi distill lora)
  for f in data/recipes/stsb-search/*.toml; do CANDS+=("stsb-search/$(basename "$f" .toml)"); done
fi
cargo build --release --locked --bin embtune --example stsb_recipes
bash scripts/fetch-model.sh >&2
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
STS=data/stsbenchmark
mkdir -p "$OUT" results
target/release/examples/stsb_recipes "$STS/sts-train.csv" out/reproduce-stsb/data 42 >&2

# train NAME RECIPE SEED [extra flags…]: trains and scores one run into $OUT/NAME.
train() {
  local name=$1 recipe=$2 seed=$3; shift 3
  local d="$OUT/$name"
  if [[ -n "${REUSE:-}" && -f "$d/result.json" ]]; then echo "== $name (reused)" >&2; return; fi
  echo "== $name" >&2
  $BIN train --config "data/recipes/$recipe.toml" --seed "$seed" --output "$d" --overwrite "$@"
  for split in dev test; do
    $BIN eval --model "$d" --data "$STS/sts-$split.csv" --format stsb --task sts --json -q > "$d/eval-$split.json"
  done
  python3 - "$d" "$recipe" "$seed" <<'PY'
import json, sys
d, recipe, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if '"loss"' in l]
json.dump({"recipe": recipe, "seed": seed, "steps": m[-1]["step"],
           "dev": json.load(open(f"{d}/eval-dev.json"))["spearman_cosine"],
           "test": json.load(open(f"{d}/eval-test.json"))["spearman_cosine"]}, open(f"{d}/result.json", "w"))
PY
}

for c in "${CANDS[@]}"; do train "$(basename "$c")-s42" "$c" 42; done
best=$(python3 - "$OUT" "${CANDS[@]}" <<'PY'
import json, os, sys
out, cands = sys.argv[1], sys.argv[2:]
r = {c: json.load(open(f"{out}/{os.path.basename(c)}-s42/result.json")) for c in cands}
print(max(cands, key=lambda c: r[c]["dev"]))
PY
)
echo "stsb-best: the best dev score is $best's" >&2
# The shipped recipe is the pick, key for key (comments and the seed aside).
python3 - "data/recipes/$best.toml" data/recipes/stsb-best.toml <<'PY'
import os, sys, tomllib
def norm(path):
    t = tomllib.load(open(path, "rb"))
    here = os.path.dirname(os.path.abspath(path))
    fix = lambda d: {k: (os.path.normpath(os.path.join(here, v)) if k == "data" else v) for k, v in d.items()}
    t = fix(t)
    if "datasets" in t:
        t["datasets"] = [fix(d) for d in t["datasets"]]
    t.pop("seed", None)
    return t
a, b = norm(sys.argv[1]), norm(sys.argv[2])
if a != b:
    sys.exit(f"data/recipes/stsb-best.toml differs from the pick {sys.argv[1]}: {a} vs {b}")
PY
for s in 1 2; do train "stsb-best-s$s" stsb-best "$s"; done
train "stsb-best-s42" stsb-best 42
if [[ -n "${MODEL:-}" ]]; then
  for s in ${SEEDS:-42}; do train "stsb-best-$(basename "$MODEL")-s$s" stsb-best "$s" -m "$MODEL"; done
fi
python3 - "$OUT" "$best" "${MODEL:-}" "${CANDS[@]}" <<'PY'
import glob, json, os, subprocess, sys
out, best, model, cands = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
load = lambda n: json.load(open(f"{out}/{n}/result.json"))
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
md = ["## The best STS-B recipe from STS-B train alone", "",
      f"`scripts/stsb-best.sh` (report at {rev}; runs kept with REUSE=1 were trained by the code of their day): all-MiniLM-L6-v2; every candidate trained once (seed 42), "
      "chosen by STS-B **dev**; the pick then trained with seeds 1 and 2. Spearman ×100 of cosine "
      "(base model: dev 86.72, test 82.03; the shipped one-epoch cosine recipe in Python: test 85.16).", "",
      "| candidate (data/recipes/…) | steps | dev | test |", "|---|---:|---:|---:|"]
for c in cands:
    r = load(f"{os.path.basename(c)}-s42")
    mark = " **(pick)**" if c == best else ""
    md.append(f"| {c}{mark} | {r['steps']} | {r['dev']:.2f} | {r['test']:.2f} |")
seeds = [load(f"stsb-best-s{s}") for s in (42, 1, 2)]
mean = lambda k: sum(r[k] for r in seeds) / len(seeds)
md += ["", f"data/recipes/stsb-best.toml (= {best}), three seeds:", "",
       "| seed | dev | test |", "|---:|---:|---:|"]
md += [f"| {r['seed']} | {r['dev']:.2f} | {r['test']:.2f} |" for r in seeds]
md += [f"| **mean** | **{mean('dev'):.2f}** | **{mean('test'):.2f}** |", "",
       f"Target: STS-B test ≥ 86.0 as the mean of three seeds — **{'met' if mean('test') >= 86.0 else 'missed'}** ({mean('test'):.2f})."]
mp = sorted(glob.glob(f"{out}/stsb-best-all-mpnet-base-v2-s*/result.json"))
if mp:
    md += ["", "The same recipe with all-mpnet-base-v2 (base model: test 83.42, results/mpnet.json):", "",
           "| seed | dev | test |", "|---:|---:|---:|"]
    md += [f"| {json.load(open(p))['seed']} | {json.load(open(p))['dev']:.2f} | {json.load(open(p))['test']:.2f} |" for p in mp]
open("results/stsb-best.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
