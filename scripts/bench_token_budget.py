#!/usr/bin/env python3
"""Which default for `--max-tokens-per-batch` (the packing issue): `embtune embed` of
all-MiniLM-L6-v2 on short texts (STS-B test sentences) and passages (the MS MARCO corpus of
../shared/data/retrieval, its first --passages), at --batch-size 32 (sentence-transformers'
default) and 128, with each token budget, in interleaved rounds. Reports sentences/s (median
of the rounds, the whole command: load, tokenize, encode, write) and peak RSS (max of the
rounds), and writes results/token-budget.{json,md}.

    python3 scripts/bench_token_budget.py [--rounds 3] [--passages 2000]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "embtune")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUDGETS = [None, 8192, 4096, 2048, 1024]
BATCHES = [32, 128]


def inputs(tmp, passages):
    """Two text files, one text per line: short sentences and passages."""
    sts = os.path.join(ROOT, "data", "stsbenchmark", "sts-test.csv")
    seen, short = set(), []
    with open(sts, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            for t in cols[5:7]:
                t = t.replace("\n", " ").strip()
                if t and t not in seen:
                    seen.add(t)
                    short.append(t)
    corpus = os.path.join(ROOT, "..", "shared", "data", "retrieval", "msmarco-dl19-5k", "corpus.jsonl")
    long = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            t = (d.get("title", "") + " " + d["text"]).replace("\n", " ").strip()
            if t:
                long.append(t)
            if len(long) >= passages:
                break
    out = {}
    for name, texts in [("sts-test sentences", short), ("msmarco passages", long)]:
        p = os.path.join(tmp, name.split()[0] + ".txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        out[name] = (p, len(texts))
    return out


def run_rss(path, batch, budget, out):
    """One run in a child that reports its own child's peak RSS (KiB) and seconds."""
    code = (
        "import resource,subprocess,sys,time,json,os;"
        "t=time.perf_counter();p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "d=time.perf_counter()-t;"
        "print(json.dumps({'rc':p.returncode,'s':d,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,'err':p.stderr[-2000:]}))"
    )
    cmd = [BIN, "embed", "-m", MODEL, "-d", path, "--format", "text", "-o", out, "-b", str(batch), "-q"]
    # 0: no budget (without the flag, packed batches get the 2048-token default).
    cmd += ["--max-tokens-per-batch", str(budget or 0)]
    p = subprocess.run([sys.executable, "-c", code] + cmd, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    r = json.loads(p.stdout)
    if r["rc"] != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r['err']}")
    return r["s"], r["rss"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passages", type=int, default=2000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = inputs(tmp, a.passages)
        cells = [(d, b, m) for d in data for b in BATCHES for m in BUDGETS]
        secs = {c: [] for c in cells}
        rss = {c: 0 for c in cells}
        for r in range(a.rounds):
            for c in cells:
                d, b, m = c
                s, k = run_rss(data[d][0], b, m, os.path.join(tmp, f"out-{r}.npy"))
                secs[c].append(s)
                rss[c] = max(rss[c], k)
                print(f"round {r + 1}: {d} b{b} budget {m}: {data[d][1] / s:.1f} sentences/s, {k / 1024:.0f} MiB", flush=True)
    rows = []
    for c in cells:
        d, b, m = c
        med = statistics.median(secs[c])
        rows.append({"data": d, "texts": data[d][1], "batch_size": b, "max_tokens": m,
                     "sentences_per_sec": data[d][1] / med, "peak_rss_mib": rss[c] / 1024})
    os.makedirs(os.path.join(ROOT, "results"), exist_ok=True)
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    meta = {"commit": rev, "rounds": a.rounds, "model": MODEL, "load": os.getloadavg(), "rows": rows}
    with open(os.path.join(ROOT, "results", "token-budget.json"), "w") as f:
        json.dump(meta, f, indent=1)
    lines = [f"# `embed --max-tokens-per-batch` (all-MiniLM-L6-v2, {a.rounds} interleaved rounds, commit {rev})", "",
             "Whole `embtune embed` commands (load, tokenize, encode, write), packed batches, this 2-core machine.", "",
             "| texts | --batch-size | --max-tokens-per-batch | sentences/s | peak RSS MiB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['data']} ({r['texts']}) | {r['batch_size']} | {r['max_tokens'] or 'none'} | "
                     f"{r['sentences_per_sec']:.1f} | {r['peak_rss_mib']:.0f} |")
    with open(os.path.join(ROOT, "results", "token-budget.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
