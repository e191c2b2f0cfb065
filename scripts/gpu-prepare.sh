#!/usr/bin/env bash
# gpu-prepare.sh — pack what scripts/gpu-check.sh needs on a lent GPU machine that has no Rust,
# no network and a 64 MiB transfer limit, into .gpu/ (git-ignored):
#   .gpu/embtune-cuda.xz   the CUDA build, stripped and xz-compressed (~9 MB)
#   .gpu/model/            all-MiniLM-L6-v2 with float16 weights (45 MB; loaded back as f32)
#   .gpu/gpu_anchor.json   the Python reference numbers
# Then, on the GPU machine, from the repository root (carry .gpu): bash scripts/gpu-on-device.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-cuda.sh
bash scripts/fetch-model.sh
mkdir -p .gpu
strip -o .gpu/embtune-cuda dist/embtune-cuda
xz -T0 -6 -f .gpu/embtune-cuda
cache="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
repo="$cache/models--sentence-transformers--all-MiniLM-L6-v2"
python3 scripts/pack-model-f16.py "$repo/snapshots/$(cat "$repo/refs/main")" .gpu/model
cp ../shared/reference/gpu/gpu_anchor.json .gpu/ 2>/dev/null || echo "gpu-prepare: no ../shared reference; the table will lack Python numbers" >&2
du -sh .gpu
