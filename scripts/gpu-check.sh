#!/usr/bin/env bash
# gpu-check.sh — the prepared check for a machine with an NVIDIA GPU (driver >= 580). One
# command, a few minutes, a table last:
#   1. check-device: CPU vs CUDA embeddings (f32 ≤ 1e-4, bf16/f16 ≤ 1e-2), every loss and its
#      gradients (≤ 1e-4), three fused-AdamW steps (≤ 1e-4), seeded dropout, packed = padded
#      (the variable-length attention kernels: embeddings, loss, gradients) — with embtune's
#      CUDA kernels, then with candle's composed ops (EMBTUNE_CUDA_FUSED=0, which pads);
#      step 4's --no-packing row times packed against padded training;
#   2. a real fine-tune on the GPU (CosineSimilarityLoss, 1 epoch of STS-B train, the recipe of
#      ../shared/reference/cpu_finetune_runs.json) whose STS-B dev score must rise; then 20 MNRL
#      steps through the data-parallel path at world size 1 (`--devices cuda:0`: NCCL), whose
#      losses must follow the plain run's;
#   3. throughput of the jobs in ../shared/reference/gpu/ (train MNRL/CoSENT at batch 32/128/512,
#      f32 and bf16; encode at batch 256), next to the Python numbers when REF points at them;
#   4. what each CUDA change does (CoSENT f32 at batch 32 and 512 with one switch off at a time:
#      EMBTUNE_CUDA_FUSED, EMBTUNE_CUDA_ALLOC, EMBTUNE_JOINT_FORWARD; all off = GPU run 1's code
#      path) and where a step's time goes (`bench train --phases`: host issue vs device time).
#
#   bash scripts/gpu-check.sh
# Settings: BIN (default dist/embtune-cuda, else target/release/embtune), MODEL (Hub id or local
# dir, default sentence-transformers/all-MiniLM-L6-v2), REF (gpu_anchor.json of the Python run),
# OUT (results folder, default gpu-check-out), STEPS (timed train steps, default 20),
# QUICK=1 (batch 32 only). Exit status: 1 if a check or the fine-tune failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-dist/embtune-cuda}"; [ -x "$BIN" ] || BIN=target/release/embtune
MODEL="${MODEL:-sentence-transformers/all-MiniLM-L6-v2}"
REF="${REF:-../shared/reference/gpu/gpu_anchor.json}"
OUT="${OUT:-gpu-check-out}"
STEPS="${STEPS:-20}"
DATA=data/stsbenchmark
mkdir -p "$OUT"

# The binary links the CUDA 13 runtime, cuBLAS and cuRAND (and loads libnccl for --devices): take
# them from a toolkit or from the NVIDIA wheels of a PyTorch install, and the driver's libcuda.so.1 from its usual places.
libs=""
for d in "${CUDA_ROOT:-/nonexistent}/lib64" /usr/local/cuda/lib64 \
         $(python3 -c 'import site; print(" ".join(p + s for p in site.getsitepackages() for s in ("/nvidia/cu13/lib", "/nvidia/nccl/lib")))' 2>/dev/null) \
         /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && libs="$libs:$d"
done
# libnccl.so.2 wherever a wheel put it (nvidia/nccl/lib in the nvidia-nccl-cu13 wheel).
for so in $(python3 -c 'import glob, site; print(" ".join(f for p in site.getsitepackages() for f in glob.glob(p + "/nvidia/**/libnccl.so*", recursive=True)))' 2>/dev/null); do
  libs="$libs:$(dirname "$so")"
done
export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export HF_HUB_OFFLINE=1

status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
"$BIN" --version

echo "== 1. CPU vs CUDA (embtune's CUDA kernels; then EMBTUNE_CUDA_FUSED=0: candle's composed ops)"
"$BIN" check-device --model "$MODEL" --device cuda --data "$DATA/sts-train.csv" | tee "$OUT/check.txt" || status=1
EMBTUNE_CUDA_FUSED=0 "$BIN" check-device --model "$MODEL" --device cuda --data "$DATA/sts-train.csv" | tee -a "$OUT/check.txt" || status=1

echo "== 2. fine-tune on the GPU (CosineSimilarityLoss, 1 epoch, batch 16; Python: dev 86.72 -> 89.27)"
ev() { "$BIN" eval --model "$1" --device cuda --data "$DATA/sts-dev.csv" --format stsb --task sts --json 2>/dev/null \
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["spearman_cosine"])'; }
before=$(ev "$MODEL")
tuned="${TMPDIR:-/tmp}/embtune-gpu-check-finetuned"
rm -rf "$tuned"
t0=$(date +%s.%N)
"$BIN" train --model "$MODEL" --device cuda --data "$DATA/sts-train.csv" --format stsb --loss cosine \
  --batch-size 16 --epochs 1 --output "$tuned" --quiet 2> "$OUT/train.log" || { status=1; tail -5 "$OUT/train.log"; }
t1=$(date +%s.%N)
after=$(ev "$tuned")
echo "STS-B dev spearman: base $before -> fine-tuned $after ($(python3 -c "print(round($t1-$t0,1))") s wall for 1 epoch)" | tee "$OUT/finetune.txt"
python3 -c "import sys; sys.exit(0 if float('$after') > float('$before') else 1)" || { echo "FAIL: dev score did not rise"; status=1; }

echo "== 2b. data parallelism at world size 1 (--devices cuda:0: launcher, rendezvous, NCCL all-reduce of every step)"
dp="${TMPDIR:-/tmp}/embtune-gpu-check-ddp"; one="${TMPDIR:-/tmp}/embtune-gpu-check-one"
rm -rf "$dp" "$one"
common=(--model "$MODEL" --data "$DATA/sts-train.csv" --format stsb --loss mnrl --batch-size 32 --max-steps 20 --dropout 0 --log-steps 1 --quiet)
"$BIN" train "${common[@]}" --device cuda --output "$one" 2> "$OUT/ddp.log" || status=1
"$BIN" train "${common[@]}" --devices cuda:0 --output "$dp" 2>> "$OUT/ddp.log" || { status=1; tail -5 "$OUT/ddp.log"; }
python3 - "$one" "$dp" <<'PY' | tee "$OUT/ddp.txt" || status=1
import json, sys
def losses(d):
    return [json.loads(l)["loss"] for l in open(d + "/metrics.jsonl") if '"loss"' in l]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
worst = max(abs(x - y) for x, y in zip(a, b))
print(f"--devices cuda:0 (NCCL, world 1) vs --device cuda: {len(b)} steps, losses differ by at most {worst:.2e}")
sys.exit(0 if len(a) == len(b) == 20 and worst <= 1e-3 else 1)
PY

echo "== 3. throughput"
: > "$OUT/bench.jsonl"
batches="32 128 512"; [ "${QUICK:-0}" = 1 ] && batches=32
for loss in mnrl cosent; do
  for b in $batches; do
    for mode in f32 bf16 tf32; do
      flags="--dtype f32"; [ "$mode" = bf16 ] && flags="--dtype bf16"; [ "$mode" = tf32 ] && flags="--dtype f32 --tf32"
      # If embtune's kernels fail here, the row is measured on candle's ops instead (marked).
      timeout 120 "$BIN" bench train --model "$MODEL" --device cuda $flags --data "$DATA/sts-train.csv" \
        --loss "$loss" --batch-size "$b" --steps "$STEPS" 2>>"$OUT/bench.log" >> "$OUT/bench.jsonl" \
        || { status=1; EMBTUNE_CUDA_FUSED=0 timeout 120 "$BIN" bench train --model "$MODEL" --device cuda $flags \
               --data "$DATA/sts-train.csv" --loss "$loss" --batch-size "$b" --steps "$STEPS" \
               2>>"$OUT/bench.log" >> "$OUT/bench.jsonl"; }
    done
  done
done
for mode in f32 bf16 tf32; do
  flags="--dtype f32"; [ "$mode" = bf16 ] && flags="--dtype bf16"; [ "$mode" = tf32 ] && flags="--dtype f32 --tf32"
  timeout 120 "$BIN" bench encode --model "$MODEL" --device cuda $flags --data "$DATA/sts-train.csv" \
    --batch-size 256 --n 80000 2>>"$OUT/bench.log" >> "$OUT/bench.jsonl" || status=1
done
echo "== 4. ablation and phases (CoSENT f32)"
: > "$OUT/ablation.jsonl"
for b in 32 512; do
  for knobs in "" "EMBTUNE_JOINT_FORWARD=0" "EMBTUNE_CUDA_ALLOC=0" "EMBTUNE_CUDA_FUSED=0" \
               "EMBTUNE_CUDA_FUSED=0 EMBTUNE_CUDA_ALLOC=0 EMBTUNE_JOINT_FORWARD=0"; do
    for ph in "" "--phases"; do
      [ -n "$ph" ] && [ -n "$knobs" ] && [ "${knobs#* * }" = "$knobs" ] && continue  # phases: all on / all off only
      env $knobs timeout 120 "$BIN" bench train --model "$MODEL" --device cuda --dtype f32 --data "$DATA/sts-train.csv" \
        --loss cosent --batch-size "$b" --steps "$STEPS" $ph 2>>"$OUT/bench.log" >> "$OUT/ablation.jsonl" || status=1
    done
  done
  # Packed (the default, variable-length attention) against padded batches.
  timeout 120 "$BIN" bench train --model "$MODEL" --device cuda --dtype f32 --data "$DATA/sts-train.csv" \
    --loss cosent --batch-size "$b" --steps "$STEPS" --no-packing 2>>"$OUT/bench.log" >> "$OUT/ablation.jsonl" || status=1
done
python3 scripts/gpu_table.py "$OUT/bench.jsonl" "$REF" "$OUT/gpu.txt" "$OUT/ablation.jsonl" | tee "$OUT/table.md"
[ "$status" = 0 ] && echo "gpu-check: all checks passed" || echo "gpu-check: FAILED (see above)"
exit $status
