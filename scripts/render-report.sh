#!/usr/bin/env bash
# render-report.sh — render a training run's report.html to a PNG with headless Chromium
# (Debian's chromium package: `apt-get install chromium`), to look at it.
#   bash scripts/render-report.sh OUTPUT_DIR [PNG]     # default PNG: OUTPUT_DIR/report.png
set -euo pipefail
dir="${1:?usage: render-report.sh OUTPUT_DIR [PNG]}"
png="${2:-$dir/report.png}"
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "render-report: install Debian's chromium package first" >&2; exit 1; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=800,1700 \
  --screenshot="$(realpath -m "$png")" "file://$(realpath "$dir/report.html")" 2>/dev/null
echo "render-report: $png"
