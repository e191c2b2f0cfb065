"""Streaming `embed` benchmark (the reach issue): peak RSS and throughput of `embtune embed` on a
2,000,000-line text file (STS-B sentences repeated) against a 50,000-line one (before and after),
and the same 2M-line job with the whole-file reader of the release before streaming (built from
git by scripts/bench-stream.sh), stopped after --whole-file-seconds because it would take as long
as the streamed run; its peak so far is a lower bound (at the end it also holds every embedding).
Peak RSS = ru_maxrss of each process (os.wait4). all-MiniLM-L6-v2, f32, .npy, batch 32, 2 threads.
Writes results/stream-bench.{json,md}."""
import argparse, datetime, json, os, signal, subprocess, sys, time

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def sentences():
    out, seen = [], set()
    for split in ["train", "dev", "test"]:
        with open(f"../shared/data/stsbenchmark/sts-{split}.csv", encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                for s in parts[5:7]:
                    s = s.strip()
                    if s and s not in seen:
                        seen.add(s)
                        out.append(s)
    return out


def make(path, n, sents):
    if os.path.exists(path):
        return
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(sents[i % len(sents)] + "\n")
    os.replace(path + ".tmp", path)


def measured(argv, limit=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAYON_NUM_THREADS="2")
    t = time.time()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stopped = False
    if limit:
        try:
            p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            stopped = True
    _, status, ru = os.wait4(p.pid, 0)
    err = p.stderr.read().decode(errors="replace")
    return {"exit": os.waitstatus_to_exitcode(status), "stopped_after_s": limit if stopped else None,
            "wall_s": round(time.time() - t, 2), "peak_rss_mib": round(ru.ru_maxrss / 1024.0, 1),
            "stderr_tail": err[-400:]}


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--lines", type=int, default=2_000_000)
    a.add_argument("--small", type=int, default=50_000)
    a.add_argument("--whole-file-bin", default="dist/embtune-wholefile")
    a.add_argument("--whole-file-seconds", type=int, default=150)
    a.add_argument("--out", default="out/stream-bench")
    a = a.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sents = sentences()
    big, small = f"{a.out}/lines-{a.lines}.txt", f"{a.out}/lines-{a.small}.txt"
    make(big, a.lines, sents)
    make(small, a.small, sents)
    E = "target/release/embtune"
    job = lambda exe, inp, out: [exe, "embed", "-m", MODEL, "-i", inp, "-o", out, "-q"]
    runs = []
    def run(name, argv, rows, limit=None):
        r = measured(argv, limit)
        r.update(name=name, rows=rows)
        if r["exit"] == 0:
            r["sentences_per_s"] = round(rows / r["wall_s"], 1)
        print(json.dumps(r), file=sys.stderr, flush=True)
        runs.append(r)
        for f in os.listdir(a.out):
            if f.endswith(".npy") or f.endswith(".parts"):
                p = os.path.join(a.out, f)
                subprocess.run(["rm", "-rf", p])
    run(f"streamed, {a.small:,} lines (before)", job(E, small, f"{a.out}/s.npy"), a.small)
    run(f"streamed, {a.lines:,} lines", job(E, big, f"{a.out}/b.npy"), a.lines)
    run(f"streamed, {a.small:,} lines (after)", job(E, small, f"{a.out}/s.npy"), a.small)
    if os.path.exists(a.whole_file_bin):
        run(f"whole-file reader, {a.lines:,} lines", job(a.whole_file_bin, big, f"{a.out}/w.npy"), a.lines,
            limit=a.whole_file_seconds)
    small_rate = [r["sentences_per_s"] for r in runs if r["rows"] == a.small and "sentences_per_s" in r]
    big_run = next(r for r in runs if r["name"].startswith("streamed") and r["rows"] == a.lines)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"date": datetime.date.today().isoformat(), "commit": rev, "model": MODEL, "lines": a.lines,
           "small": a.small, "runs": runs}
    if small_rate and "sentences_per_s" in big_run:
        res["throughput_ratio_big_vs_small_mean"] = round(big_run["sentences_per_s"] / (sum(small_rate) / len(small_rate)), 3)
    json.dump(res, open("results/stream-bench.json", "w"), indent=1)
    lines = ["# Streaming embed: memory and throughput on a 2,000,000-line input", "",
             f"`scripts/bench-stream.sh` ({rev}, {res['date']}): all-MiniLM-L6-v2, `embtune embed` of STS-B",
             "sentences repeated (one per line) to .npy float32, batch 32, 2 threads, chunks of 50,000 rows;",
             "peak RSS of the whole process. Throughput = rows / wall time (model load included).", "",
             "| run | rows | wall s | sentences/s | peak RSS MiB |", "|---|---:|---:|---:|---:|"]
    for r in runs:
        note = f" (stopped after {r['stopped_after_s']} s)" if r.get("stopped_after_s") else ""
        lines.append(f"| {r['name']}{note} | {r['rows']:,} | {r['wall_s']} | {r.get('sentences_per_s', '—')} | {r['peak_rss_mib']} |")
    if "throughput_ratio_big_vs_small_mean" in res:
        lines += ["", f"Throughput of the 2M-line run / mean of the 50k-line runs: **{res['throughput_ratio_big_vs_small_mean']}**."]
    open("results/stream-bench.md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
