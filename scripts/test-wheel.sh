#!/usr/bin/env bash
# test-wheel.sh — builds the wheel (scripts/build-wheel.sh), installs it into a fresh venv with
# pip (no index, no dependencies: the wheel is the whole install) and runs the installed
# command: `embtune --version`, then `embtune eval` of all-MiniLM-L6-v2 on STS-B test, which
# must give sentence-transformers' 82.0325 (Spearman of cosine). Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel="$(bash scripts/build-wheel.sh | tail -n 1)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --no-index --no-deps "$wheel"
bin="$tmp/venv/bin/embtune"
[[ -x "$bin" ]] || { echo "test-wheel: the wheel installed no $bin" >&2; exit 1; }
version="$("$bin" --version)"
want="embtune $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
[[ "$version" == "$want" ]] || { echo "test-wheel: --version printed '$version', expected '$want'" >&2; exit 1; }
bash scripts/fetch-model.sh minilm >&2
score="$(HF_HUB_OFFLINE=1 "$bin" eval -m sentence-transformers/all-MiniLM-L6-v2 \
  -d ../shared/data/stsbenchmark/sts-test.csv --format stsb --json -q \
  | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["spearman_cosine"])')"
[[ "$score" == "82.0325" ]] || { echo "test-wheel: STS-B test spearman_cosine $score, expected 82.0325" >&2; exit 1; }
echo "test-wheel: $(basename "$wheel") installs; '$version'; STS-B test $score" >&2
