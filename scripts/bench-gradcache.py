#!/usr/bin/env python3
"""GradCache memory benchmark: peak RSS of one training step of MNRL and of cached MNRL (mini-batch
32) at growing batch sizes, embtune and sentence-transformers side by side, and the largest batch
each reaches within a memory budget (default 4 GiB). Standard library only; run through
scripts/bench-gradcache.sh (which builds embtune, fetches the model and sets up the venv).

Data: (title, abstract) pairs of ../shared/data/retrieval/dbpedia-entity-5k/corpus.jsonl
(5,000 real rows, abstracts ~55 words), all-MiniLM-L6-v2 at max_seq_length 128, one optimizer
step (--steps), 2 threads each. Peak RSS is ru_maxrss of each process (os.wait4). A batch size is
"within the budget" when the whole process peaked at or under it; the series of a system stops
at its first batch over the budget (from batch 256 on, the headline: MNRL b256 vs cached b256). Writes results/gradcache.json and results/gradcache.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measured(argv, env):
    """Runs argv; (exit status, peak RSS MiB, wall s, stdout, stderr)."""
    t = time.time()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Read pipes while waiting: wait4 reaps the child and gives its rusage.
    import threading
    bufs = {}

    def drain(name, f):
        bufs[name] = f.read()

    th = [threading.Thread(target=drain, args=(n, f)) for n, f in (("out", p.stdout), ("err", p.stderr))]
    for x in th:
        x.start()
    _, status, ru = os.wait4(p.pid, 0)
    for x in th:
        x.join()
    return os.waitstatus_to_exitcode(status), ru.ru_maxrss / 1024.0, time.time() - t, bufs["out"], bufs["err"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embtune", default=str(ROOT / "target/release/embtune"))
    ap.add_argument("--python", required=True)
    ap.add_argument("--budget-mib", type=float, default=4096)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--plain", default="64,128,256,512,1024")
    ap.add_argument("--cached", default="256,512,1024,2048,4096")
    ap.add_argument("--systems", default="embtune,sentence-transformers",
                    help="run only these systems")
    # --merge: keep the runs of results/gradcache.json that this invocation does not repeat
    # (same system, loss and batch), e.g. to add one batch size to an earlier run.
    ap.add_argument("--merge", action="store_true")
    a = ap.parse_args()
    systems = a.systems.split(",")
    corpus = ROOT.parent / "shared/data/retrieval/dbpedia-entity-5k/corpus.jsonl"
    work = ROOT / "out/bench-gradcache"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "pairs.jsonl"
    with open(corpus, encoding="utf-8") as f, open(data, "w", encoding="utf-8") as o:
        for line in f:
            d = json.loads(line)
            o.write(json.dumps({"anchor": d["title"], "positive": d["text"]}) + "\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAYON_NUM_THREADS="2")
    old = []
    if a.merge and (ROOT / "results/gradcache.json").is_file():
        old = json.loads((ROOT / "results/gradcache.json").read_text())["runs"]
    results = []
    for system in systems:
        for loss, sizes in (("mnrl", a.plain), ("cached-mnrl", a.cached)):
            for b in [int(x) for x in sizes.split(",") if x]:
                if system == "embtune":
                    argv = [a.embtune, "train", "-m", "sentence-transformers/all-MiniLM-L6-v2", "-d", str(data),
                            "--loss", loss, "-b", str(b), "--max-steps", str(a.steps), "--max-seq-length", "128",
                            "-o", str(work / "out"), "--overwrite", "-q", "--allow-duplicates"]
                    if loss == "cached-mnrl":
                        argv += ["--mini-batch-size", "32"]
                else:
                    argv = [a.python, str(ROOT / "scripts/gradcache_st.py"), "--data", str(data), "--loss", loss,
                            "--batch-size", str(b), "--steps", str(a.steps)]
                code, rss, wall, out, err = measured(argv, env)
                row = {"system": system, "loss": loss, "batch_size": b, "exit": code, "peak_rss_mib": round(rss, 1),
                       "wall_s": round(wall, 1)}
                if code != 0:
                    row["stderr_tail"] = err.decode(errors="replace")[-400:]
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                # Past the budget the series stops — but not before the headline batch, 256.
                if code != 0 or (rss > a.budget_mib and b >= 256):
                    break
    redone = {(r["system"], r["loss"], r["batch_size"]) for r in results}
    results = [r for r in old if (r["system"], r["loss"], r["batch_size"]) not in redone] + results
    results.sort(key=lambda r: (r["system"] != "embtune", r["loss"], r["batch_size"]))
    within = {}
    for r in results:
        k = (r["system"], r["loss"])
        if r["exit"] == 0 and r["peak_rss_mib"] <= a.budget_mib:
            within[k] = max(within.get(k, 0), r["batch_size"])
    out = {"budget_mib": a.budget_mib, "steps": a.steps, "data": str(corpus), "runs": results,
           "largest_batch_within_budget": {f"{s} {l}": v for (s, l), v in within.items()}}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results/gradcache.json").write_text(json.dumps(out, indent=1) + "\n")
    rss = {(r["system"], r["loss"], r["batch_size"]): r for r in results}
    lines = [
        "# GradCache: peak memory of one training step",
        "",
        "`scripts/bench-gradcache.sh`: all-MiniLM-L6-v2, max_seq_length 128, (title, abstract) pairs of",
        "dbpedia-entity-5k, one optimizer step, 2 threads; peak RSS of the whole process (MiB); cached = mini-batch 32.",
        "",
        "| batch | embtune mnrl | embtune cached-mnrl | sentence-transformers MNRL | sentence-transformers CachedMNRL |",
        "|---:|---:|---:|---:|---:|",
    ]
    sizes = sorted({r["batch_size"] for r in results})
    def cell(s, l, b):
        r = rss.get((s, l, b))
        if r is None:
            return "—"
        if r["exit"] != 0:
            return f"failed ({r['peak_rss_mib']:.0f})"
        return f"{r['peak_rss_mib']:.0f}"
    for b in sizes:
        lines.append(f"| {b} | {cell('embtune', 'mnrl', b)} | {cell('embtune', 'cached-mnrl', b)} | "
                     f"{cell('sentence-transformers', 'mnrl', b)} | {cell('sentence-transformers', 'cached-mnrl', b)} |")
    lines += ["", f"Largest batch within {a.budget_mib:.0f} MiB (of those tried):", ""]
    for k, v in out["largest_batch_within_budget"].items():
        lines.append(f"- {k}: {v}")
    (ROOT / "results/gradcache.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
