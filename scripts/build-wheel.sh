#!/usr/bin/env bash
# build-wheel.sh — the Python wheel of embtune (`pip install embtune` → the `embtune` command),
# built by maturin (`bindings = "bin"` in pyproject.toml, as ruff and uv ship their binaries).
# maturin comes from PyPI into its own venv ($EMBTUNE_WHEEL_VENV, default
# ~/.cache/embtune/wheel-venv). The wheel is tagged manylinux_2_X by maturin from the glibc
# symbols the binary uses (2.34 when built on this Debian 12 machine; build on an older glibc,
# e.g. in a manylinux container, for a lower tag). The last line of stdout is the wheel's path.
#
#   bash scripts/build-wheel.sh            # CPU wheel → dist/embtune-<version>-py3-none-manylinux_*.whl
#   bash scripts/build-wheel.sh --cuda     # CUDA wheel: the cuda feature, with the toolchain of
#                                          # scripts/build-cuda.sh (a ~20 min first build);
#                                          # needs an NVIDIA driver where it is installed
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EMBTUNE_WHEEL_VENV:-$HOME/.cache/embtune/wheel-venv}"
if [[ ! -x "$VENV/bin/maturin" ]]; then
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install -q 'maturin==1.16.*' >&2
fi
args=(build --release --locked --out dist)
if [[ "${1:-}" == "--cuda" ]]; then
  if [ -z "${CUDA_ROOT:-}" ] && ! command -v nvcc >/dev/null; then
    eval "$(bash scripts/setup-cuda.sh --env)"
  fi
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  args+=(--features cuda --target-dir "${EMBTUNE_CUDA_TARGET:-$HOME/.cache/embtune/target-cuda}")
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/build-wheel.sh [--cuda]" >&2
  exit 2
fi
mkdir -p dist
rm -f dist/embtune-*.whl
"$VENV/bin/maturin" "${args[@]}" >&2
ls dist/embtune-*.whl
