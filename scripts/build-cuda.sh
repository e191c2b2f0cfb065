#!/usr/bin/env bash
# build-cuda.sh — build embtune with the `cuda` feature, on any Linux x86-64 machine (no GPU
# needed). Uses a system CUDA toolkit when nvcc is found (CUDA_ROOT/bin or PATH), else installs
# the PyPI toolchain with scripts/setup-cuda.sh. The build directory lives outside the checkout
# (EMBTUNE_CUDA_TARGET, default ~/.cache/embtune/target-cuda) so that rebuilds are incremental:
# the first build takes ~20 min on 2 cores (candle's kernels), later ones a few minutes.
#
#   bash scripts/build-cuda.sh            # → dist/embtune-cuda
#   bash scripts/build-cuda.sh --check    # compile only (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${EMBTUNE_CUDA_TARGET:-$HOME/.cache/embtune/target-cuda}"
if [ -n "${CUDA_ROOT:-}" ] && [ -x "$CUDA_ROOT/bin/nvcc" ]; then
  echo "build-cuda: using the CUDA toolkit in $CUDA_ROOT" >&2
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
elif command -v nvcc >/dev/null && [ -z "${EMBTUNE_PYPI_CUDA:-}" ]; then
  echo "build-cuda: using $(command -v nvcc)" >&2
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
else
  eval "$(bash scripts/setup-cuda.sh --env)"
fi
if [ "${1:-}" = "--check" ]; then
  cargo build --release --locked --features cuda --target-dir "$target" --lib --bins
  echo "build-cuda: the cuda feature compiles" >&2
  exit 0
fi
cargo build --release --locked --features cuda --target-dir "$target" --bin embtune
mkdir -p dist
cp "$target/release/embtune" dist/embtune-cuda
echo "build-cuda: dist/embtune-cuda ($(du -h dist/embtune-cuda | cut -f1))" >&2
