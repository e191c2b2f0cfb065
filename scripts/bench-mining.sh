#!/usr/bin/env bash
# Benchmark: mine hard negatives for all STS-B train pairs (sentence1 → sentence2) against the
# corpus of every STS-B sentence (train + dev + test), with all-MiniLM-L6-v2 — wall time and
# peak RSS (GNU time). Writes results/mining.json. Usage: scripts/bench-mining.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/bench-mining}"
mkdir -p "$OUT" results
cargo build --release --locked --bin embtune
bash scripts/fetch-model.sh
export HF_HUB_OFFLINE=1
BIN=target/release/embtune
STS=data/stsbenchmark
# Pairs file and corpus file from STS-B (JSONL: quotes in STS-B are literal text).
$BIN pairs -d "$STS/sts-train.csv" --format stsb --from scores -o "$OUT/scored.jsonl" 2>/dev/null
python3 - "$OUT" "$STS" <<'PY'
import json, sys
out, sts = sys.argv[1], sys.argv[2]
with open(f"{out}/pairs.jsonl", "w") as f:
    for l in open(f"{out}/scored.jsonl"):
        r = json.loads(l); f.write(json.dumps({"anchor": r["sentence1"], "positive": r["sentence2"]}) + "\n")
seen = set()
with open(f"{out}/corpus.jsonl", "w") as f:
    for split in ("train", "dev", "test"):
        for line in open(f"{sts}/sts-{split}.csv", encoding="utf-8"):
            for s in line.rstrip("\n").split("\t")[5:7]:
                if s not in seen:
                    seen.add(s); f.write(json.dumps({"text": s}) + "\n")
print(f"pairs: {sum(1 for _ in open(f'{out}/pairs.jsonl'))}, corpus texts: {len(seen)}")
PY
/usr/bin/time -v -o "$OUT/time.txt" $BIN pairs -d "$OUT/pairs.jsonl" --from pairs --mine -m sentence-transformers/all-MiniLM-L6-v2 \
  --corpus "$OUT/corpus.jsonl" --num-negatives 3 --mining-margin 0.05 -o "$OUT/mined.jsonl" -q
python3 - "$OUT" <<'PY' | tee results/mining.json
import json, os, sys
out = sys.argv[1]
t = dict(l.strip().rsplit(": ", 1) for l in open(f"{out}/time.txt") if ": " in l)
count = lambda f: sum(1 for _ in open(f"{out}/{f}"))
print(json.dumps({"pairs": count("pairs.jsonl"), "corpus": count("corpus.jsonl"), "output_rows": count("mined.jsonl"),
                  "wall": t["Elapsed (wall clock) time (h:mm:ss or m:ss)"], "peak_rss_mib": round(int(t["Maximum resident set size (kbytes)"]) / 1024),
                  "cores": os.cpu_count()}))
PY
