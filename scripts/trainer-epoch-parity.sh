#!/usr/bin/env bash
# Trainer parity over a whole epoch (the recipes issue's out-of-domain gap hunt): one CoSENT
# epoch of STS-B train (360 steps) in file order with dropout off, in embtune and in
# sentence-transformers' trainer (scripts/trainer_epoch_st.py), then every weight compared and
# both models scored on STS-B dev/test by embtune's evaluator. Writes
# results/trainer-epoch-parity.md.   scripts/trainer-epoch-parity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(bash scripts/setup-python.sh | tail -n 1)"
cargo build --release --locked --bin embtune
bash scripts/fetch-model.sh >&2
export HF_HUB_OFFLINE=1
O=out/trainer-epoch; rm -rf "$O"; mkdir -p "$O" results
"$PY" scripts/trainer_epoch_st.py "$O/st" >&2
target/release/embtune train -m sentence-transformers/all-MiniLM-L6-v2 \
  -d ../shared/data/stsbenchmark/sts-train.csv --format stsb --loss cosent --batch-size 16 \
  --epochs 1 --lr 2e-5 --warmup-ratio 0.1 --max-seq-length 128 --no-shuffle --dropout 0 \
  --weight-decay 0.01 --max-grad-norm 1 --seed 42 -o "$O/embtune" -q
score() { target/release/embtune eval --model "$1" --data "../shared/data/stsbenchmark/sts-$2.csv" \
  --format stsb --task sts --json -q | python3 -c "import json,sys;print('%.2f'%json.load(sys.stdin)['spearman_cosine'])"; }
diff=$("$PY" - "$O" <<'PY'
import sys
from safetensors.numpy import load_file
o = sys.argv[1]
a, b = load_file(o + "/embtune/model.safetensors"), load_file(o + "/st/model.safetensors")
strip = lambda n: n[len("bert."):] if n.startswith("bert.") else n
a = {strip(k): v for k, v in a.items()}; b = {strip(k): v for k, v in b.items()}
worst = max(((abs(a[k].astype("float64") - b[k].astype("float64")).max(), k) for k in b if k in a))
print("%.2e|%s|%d" % (worst[0], worst[1], len([k for k in b if k in a])))
PY
)
IFS='|' read -r w wn nt <<< "$diff"
{
  echo "# One CoSENT epoch, dropout off, file order: embtune's trainer vs sentence-transformers'"
  echo
  echo "\`scripts/trainer-epoch-parity.sh\` ($(git rev-parse --short HEAD), $(date -u +%F)): all-MiniLM-L6-v2, STS-B train"
  echo "(5,749 rows, 360 steps of 16), lr 2e-5, warmup ratio 0.1, linear decay, weight decay 0.01,"
  echo "clipping 1.0, max_seq_length 128, dropout 0, no shuffling on either side."
  echo
  echo "- Largest weight difference after the epoch, over $nt tensors: **$w** ($wn)."
  echo
  echo "| trained by | STS-B dev | STS-B test |"
  echo "|---|---:|---:|"
  echo "| embtune | $(score "$O/embtune" dev) | $(score "$O/embtune" test) |"
  echo "| sentence-transformers | $(score "$O/st" dev) | $(score "$O/st" test) |"
} > results/trainer-epoch-parity.md
cat results/trainer-epoch-parity.md
