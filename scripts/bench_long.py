"""Long-context encoding benchmark (the families II issue): 2,048-token texts through a
ModernBERT-shaped model at base size (hidden 768, 22 layers, 12 heads, GeGLU 1152, local window
128 every layer but each third, RoPE 160000/10000; random weights — speed only, never a quality
claim), `embtune embed` against sentence-transformers 6.2 + transformers 5.24 (sdpa attention,
torch's default) on the same folder and texts, interleaved rounds, 2 threads each.
tokens/s = texts × 2048 / seconds: embtune's whole process (model load and tokenization
included), ST's `encode` call alone (its import and load excluded) — the ratio favours ST.
Peak RSS = ru_maxrss of each process (os.wait4). Run by scripts/bench-long.sh with the venv of
scripts/setup-python.sh; writes results/long-context.{json,md}."""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["HF_HUB_OFFLINE"] = "1"


def build_model(out, seq):
    import torch
    from transformers import ModernBertConfig, ModernBertModel, AutoTokenizer
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    tok_dir = ROOT / "tests/fixtures/modernbert/model"
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = ModernBertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.cls_token_id, cls_token_id=tok.cls_token_id,
                           eos_token_id=tok.sep_token_id, sep_token_id=tok.sep_token_id)
    torch.manual_seed(0)
    raw = out / "raw"
    ModernBertModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    tr = Transformer(str(raw), max_seq_length=seq)
    st = SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "mean")], device="cpu")
    st.save(str(out / "model"))
    shutil.rmtree(raw)
    return tok


def make_texts(tok, n, seq, path):
    sents = []
    with open(ROOT.parent / "shared/data/stsbenchmark/sts-train.csv", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            sents += [p for p in parts[5:7] if p.strip()]
    texts, i = [], 0
    for _ in range(n):
        words = []
        while len(tok(" ".join(words))["input_ids"]) < seq + 16:
            words.append(sents[i % len(sents)])
            i += 1
        texts.append(" ".join(words))
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return texts


ST_RUN = r"""
import json, sys, time, torch
torch.set_num_threads(2)
from sentence_transformers import SentenceTransformer
m = SentenceTransformer(sys.argv[1], device="cpu")
texts = open(sys.argv[2], encoding="utf-8").read().splitlines()
t = time.time()
e = m.encode(texts, batch_size=int(sys.argv[3]), convert_to_numpy=True)
s = time.time() - t
import numpy as np
np.save(sys.argv[4], e.astype("float32"))
print(json.dumps({"encode_s": s}))
"""


def run(argv, env):
    """(stdout, wall seconds, peak RSS MiB) of a child, its ru_maxrss from wait4."""
    t = time.time()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read().decode()
    err = p.stderr.read().decode()
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed: {err[-2000:]}")
    return out, time.time() - t, ru.ru_maxrss / 1024.0


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--texts", type=int, default=8)
    a.add_argument("--seq", type=int, default=2048)
    a.add_argument("--batch", type=int, default=4)
    a.add_argument("--rounds", type=int, default=2)
    a.add_argument("--out", default="out/bench-long")
    a.add_argument("--bin", default="target/release/embtune")
    a.add_argument("--results", default="results/long-context")
    args = a.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model"
    if not (model / "model.safetensors").exists():
        tok = build_model(out, args.seq)
    else:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(str(model))
    texts_path = out / "texts.txt"
    make_texts(tok, args.texts, args.seq, texts_path)
    env = dict(os.environ, RAYON_NUM_THREADS="2", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2",
               TOKENIZERS_PARALLELISM="false")
    tokens = args.texts * args.seq
    rows = {"embtune": [], "sentence-transformers": []}
    for r in range(args.rounds):
        npy = out / "st.npy"
        o, wall, rss = run([sys.executable, "-c", ST_RUN, str(model), str(texts_path), str(args.batch), str(npy)], env)
        s = json.loads(o.strip().splitlines()[-1])["encode_s"]
        rows["sentence-transformers"].append({"seconds": s, "wall_s": wall, "peak_rss_mib": rss})
        print(f"round {r}: sentence-transformers encode {s:.1f} s, peak {rss:.0f} MiB", flush=True)
        ours = out / "embtune.npy"
        _, wall, rss = run([str(ROOT / args.bin), "embed", "-m", str(model), "-i", str(texts_path),
                            "-o", str(ours), "-b", str(args.batch), "--max-seq-length", str(args.seq), "-q"], env)
        rows["embtune"].append({"seconds": wall, "wall_s": wall, "peak_rss_mib": rss})
        print(f"round {r}: embtune {wall:.1f} s, peak {rss:.0f} MiB", flush=True)
    import numpy as np
    a_, b_ = np.load(out / "embtune.npy"), np.load(out / "st.npy")
    diff = float(np.abs(a_ - b_).max())
    med = lambda xs: sorted(xs)[len(xs) // 2] if len(xs) % 2 else sum(sorted(xs)[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2
    summary = {}
    for k, v in rows.items():
        summary[k] = {"tokens_per_s": tokens / med([x["seconds"] for x in v]),
                      "peak_rss_mib": med([x["peak_rss_mib"] for x in v])}
    e, s = summary["embtune"], summary["sentence-transformers"]
    report = {"texts": args.texts, "seq": args.seq, "batch": args.batch, "rounds": rows,
              "summary": summary, "speed_ratio": e["tokens_per_s"] / s["tokens_per_s"],
              "rss_ratio": e["peak_rss_mib"] / s["peak_rss_mib"], "max_abs_embedding_diff": diff,
              "machine": os.uname().machine, "nproc": os.cpu_count()}
    res = ROOT / args.results
    Path(str(res) + ".json").write_text(json.dumps(report, indent=2) + "\n")
    md = f"""# Long-context encoding: {args.texts} texts × {args.seq} tokens, ModernBERT base shape

Made by `scripts/bench-long.sh` ({args.rounds} interleaved rounds, medians, 2 threads each, batch {args.batch}).
Random weights (speed only). embtune's time is its whole `embed` process; sentence-transformers'
is its `encode` call alone (import and load excluded).

| system | tokens/s | peak RSS (MiB) |
|---|---|---|
| embtune (cpu-fused) | {e['tokens_per_s']:.0f} | {e['peak_rss_mib']:.0f} |
| sentence-transformers 6.2 + transformers 5.24 (sdpa) | {s['tokens_per_s']:.0f} | {s['peak_rss_mib']:.0f} |
| ratio embtune / ST | {report['speed_ratio']:.2f}× | {report['rss_ratio']:.2f}× |

Largest embedding difference between the two: {diff:.1e}.
"""
    Path(str(res) + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
