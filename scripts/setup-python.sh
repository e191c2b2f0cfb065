#!/usr/bin/env bash
# Creates (or updates) the Python virtual environment that holds the *reference* side of the CPU
# benchmark, scripts/bench.sh: sentence-transformers on torch, run by scripts/bench_st.py. embtune
# itself never needs Python; nothing here is imported by it.
#
#   scripts/setup-python.sh            make/update the venv; the last line of stdout is its python
#   scripts/setup-python.sh --python   only print the venv's python path (exit 1 if not set up)
#
# Location: $EMBTUNE_PY_VENV, else ~/.cache/embtune/py-venv. Interpreter used to create it:
# $PYTHON, else python3.
#
# The requirement set below is pinned (torch 2.15, sentence-transformers 6.2, transformers 5.24,
# and the datasets/accelerate/psutil versions the benchmark was first run with). A stamp file in
# the venv records the requirement set and the interpreter version of the last successful install;
# when it matches, pip is not run at all, so a second call takes well under a second.
#
# Size and time: PyPI's Linux torch wheel depends on the CUDA runtime wheels (nvidia-*), so the
# first install downloads roughly 3 GB and the venv ends up around 6 GB (about 2 minutes on a fast
# link). That is expected: only the CPU is used, and this is only the reference side of the
# comparison. To use the smaller CPU-only wheels instead, export
# PIP_INDEX_URL=https://download.pytorch.org/whl/cpu and PIP_EXTRA_INDEX_URL=https://pypi.org/simple
# before the first run (pip reads them from the environment).
set -euo pipefail

VENV="${EMBTUNE_PY_VENV:-$HOME/.cache/embtune/py-venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.embtune-requirements"

if [[ "${1:-}" == "--python" ]]; then
  if [[ -x "$PY" ]]; then echo "$PY"; exit 0; fi
  echo "setup-python: no venv at $VENV (run scripts/setup-python.sh first)" >&2
  exit 1
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/setup-python.sh [--python]" >&2
  exit 2
fi

REQUIREMENTS='torch==2.15.*
sentence-transformers==6.2.*
transformers==5.24.*
datasets==5.2.0
accelerate==1.15.0
psutil==7.2.2
peft==0.21.2'

log() { echo "setup-python: $*" >&2; }

BASE_PY="${PYTHON:-python3}"
command -v "$BASE_PY" >/dev/null || { log "no $BASE_PY on PATH (set PYTHON=...)"; exit 1; }

# (Re)create the venv when its interpreter is missing or does not run (e.g. the base Python it was
# made from is gone). `python -m venv` on an existing, working venv is left alone.
if ! "$PY" -c 'import sys' >/dev/null 2>&1; then
  log "creating $VENV with $("$BASE_PY" --version 2>&1)"
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PY" -m venv --clear "$VENV"
fi

WANT="$(printf '%s\n# python %s\n' "$REQUIREMENTS" "$("$PY" -c 'import sys; print(sys.version.split()[0])')")"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  log "requirements unchanged (stamp $STAMP); pip skipped"
else
  log "installing into $VENV (first time: ~3 GB of torch + CUDA runtime wheels, ~2 min)"
  REQ_FILE="$(mktemp)"
  trap 'rm -f "$REQ_FILE"' EXIT
  printf '%s\n' "$REQUIREMENTS" > "$REQ_FILE"
  # pip's progress to stderr: stdout carries only the python path.
  "$PY" -m pip install -r "$REQ_FILE" >&2
  "$PY" -c 'import torch, sentence_transformers, transformers, datasets, accelerate, psutil' >&2
  printf '%s' "$WANT" > "$STAMP.tmp" && mv -f "$STAMP.tmp" "$STAMP"
  log "done: torch $("$PY" -c 'import torch; print(torch.__version__)'), sentence-transformers $("$PY" -c 'import sentence_transformers as s; print(s.__version__)')"
fi
echo "$PY"
