#!/usr/bin/env bash
# setup-cuda.sh — make `cargo build --features cuda` possible on a machine without a GPU or a
# CUDA toolkit: installs the CUDA 13.0 compiler, headers and libraries that NVIDIA publishes on
# PyPI into a prefix (no root needed), adds what the wheels cannot carry (unversioned .so names,
# a link-time libcuda stub), and prints the environment for the build.
#
#   bash scripts/setup-cuda.sh            # install (idempotent), then print the exports
#   eval "$(bash scripts/setup-cuda.sh --env)"
#
# With a normal CUDA toolkit installed (nvcc on PATH, CUDA_ROOT set) you do not need this script.
#
# Settings (environment):
#   EMBTUNE_CUDA_PREFIX  install prefix        (default ~/.cache/embtune/cuda-13.0)
#   CUDA_COMPUTE_CAP     GPU architecture      (default 90: H100/H200; 80: A100; 89: L4/4090)
#   PYTHON               python with pip       (default python3)
#
# The versions are pinned to 13.0.x on purpose: PTX from a newer nvcc is refused by a driver of
# an older CUDA version (CUDA_ERROR_UNSUPPORTED_PTX_VERSION); driver 580 is CUDA 13.0. The
# binary built here runs with driver >= 580 and the CUDA 13 runtime, cuBLAS, cuRAND and NCCL 2
# libraries.
set -euo pipefail

prefix="${EMBTUNE_CUDA_PREFIX:-$HOME/.cache/embtune/cuda-13.0}"
py="${PYTHON:-python3}"
cap="${CUDA_COMPUTE_CAP:-90}"
only_env=0
[ "${1:-}" = "--env" ] && only_env=1
say() { echo "setup-cuda: $*" >&2; }

wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)
site="$prefix/site"
tree="$site/nvidia/cu13"          # the wheels unpack into a toolkit-shaped tree
stamp="$prefix/installed.txt"
want="$(printf '%s\n' "${wheels[@]}")"

if [ ! -x "$tree/bin/nvcc" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing ${#wheels[@]} CUDA 13.0 wheels into $site"
  rm -rf "$site" "$stamp"
  mkdir -p "$prefix"
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps --target "$site" "${wheels[@]}" >&2
  echo "$want" > "$stamp"
fi

ln -sfn lib "$tree/lib64"
# Linker names (-lcudart, -lcublas, ...) that wheels cannot ship as symlinks.
for so in "$tree"/lib/lib*.so.[0-9]*; do
  base="${so##*/}"
  ln -sfn "$base" "$tree/lib/${base%%.so.*}.so"
done

# The driver library (libcuda.so.1) is not on PyPI. Linking only needs its symbols, so build a
# stub with every cu* function that cuda.h declares; at run time the real driver is loaded.
stub="$tree/lib/stubs/libcuda.so"
if [ ! -f "$stub" ]; then
  say "building the libcuda link stub"
  mkdir -p "$tree/lib/stubs"
  work="$(mktemp -d)"
  { gcc -E -P -I"$tree/include" "$tree/include/cuda.h"
    gcc -E -P -D__CUDA_API_VERSION_INTERNAL -I"$tree/include" "$tree/include/cuda.h"
  } | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u \
    | sed 's/.*/int &(void){return 999;}/' > "$work/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$work/stub.c"
  ln -sfn libcuda.so "$tree/lib/stubs/libcuda.so.1"
  rm -rf "$work"
fi

# NCCL (multi-GPU training) is linked too. Its 344 MB wheel is not needed to build: a stub with
# the entry points cudarc 0.19's bindings declare (its src/nccl/sys/mod.rs) carries the soname,
# and the real libnccl.so.2 (the nvidia-nccl-cu13 wheel PyTorch installs, or a system NCCL) is
# loaded at run time.
nccl_stub="$tree/lib/stubs/libnccl.so"
if [ ! -f "$nccl_stub" ]; then
  say "building the libnccl link stub"
  mkdir -p "$tree/lib/stubs"
  work="$(mktemp -d)"
  for f in \
  ncclAllGather ncclAllReduce ncclAlltoAll ncclBcast ncclBroadcast ncclCommAbort ncclCommCount \
  ncclCommCuDevice ncclCommDeregister ncclCommDestroy ncclCommFinalize ncclCommGetAsyncError \
  ncclCommGetUniqueId ncclCommGrow ncclCommInitAll ncclCommInitRank ncclCommInitRankConfig \
  ncclCommInitRankScalable ncclCommMemStats ncclCommRegister ncclCommResume ncclCommRevoke \
  ncclCommShrink ncclCommSplit ncclCommSuspend ncclCommUserRank ncclCommWindowDeregister \
  ncclCommWindowRegister ncclGather ncclGetErrorString ncclGetLastError ncclGetUniqueId \
  ncclGetVersion ncclGroupEnd ncclGroupSimulateEnd ncclGroupStart ncclMemAlloc ncclMemFree \
  ncclParamBind ncclParamDumpAll ncclParamGet ncclParamGetAllParameterKeys ncclParamGetI16 \
  ncclParamGetI32 ncclParamGetI64 ncclParamGetI8 ncclParamGetParameter ncclParamGetStr \
  ncclParamGetU16 ncclParamGetU32 ncclParamGetU64 ncclParamGetU8 ncclPutSignal ncclRecv \
  ncclRedOpCreatePreMulSum ncclRedOpDestroy ncclReduce ncclReduceScatter ncclResetDebugInit \
  ncclScatter ncclSend ncclSignal ncclWaitSignal ncclWinGetUserPtr; do
    echo "int $f(void){return 1;}"
  done > "$work/nccl.c"
  gcc -shared -fPIC -Wl,-soname,libnccl.so.2 -o "$nccl_stub" "$work/nccl.c"
  rm -rf "$work"
fi

if [ "$only_env" = 0 ]; then
  "$tree/bin/nvcc" --version | tail -1 >&2
  say "ready; add these to the build environment:"
fi
cat <<ENV
export CUDA_ROOT="$tree"
export CUDA_HOME="$tree"
export CUDA_PATH="$tree"
export PATH="$tree/bin:\$PATH"
export CUDA_COMPUTE_CAP="$cap"
export CUDARC_CUDA_VERSION=13000
ENV
