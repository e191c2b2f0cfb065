#!/usr/bin/env bash
# gpu-on-device.sh — what to run ON a lent GPU machine after scripts/gpu-prepare.sh packed .gpu/
# here (carry .gpu with the call): unpacks the CUDA binary and runs scripts/gpu-check.sh on the
# carried model, results under $OUT (or gpu-check-out).
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
xz -dc .gpu/embtune-cuda.xz > dist/embtune-cuda 2>/dev/null \
  || python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.open('.gpu/embtune-cuda.xz').read())" > dist/embtune-cuda
chmod +x dist/embtune-cuda
export PYTHONUNBUFFERED=1
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
MODEL=.gpu/model REF=.gpu/gpu_anchor.json OUT="$out" bash scripts/gpu-check.sh 2>&1 | tee "$out/log.txt"
