"""Markdown table of `embtune bench` JSON lines beside the Python sentence-transformers
reference (gpu_anchor.json), with ratios embtune / Python. Used by gpu-check.sh.
With ABLATION.jsonl (gpu-check.sh step 4): pairs/s with each CUDA switch off, and the
per-phase step times of `bench train --phases`.
usage: gpu_table.py BENCH.jsonl [REF.json] [GPU.txt] [ABLATION.jsonl]"""
import json
import os
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
ref = {}
if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
    for r in json.load(open(sys.argv[2]))["runs"]:
        if r.get("long_text"):
            continue
        if "loss" in r:
            ref[("train", r["loss"], r["batch"], "bf16" if r["bf16_autocast"] else "f32")] = r["pairs_per_s"]
        else:
            ref[("encode", "", r["encode_batch"], "bf16" if r["fp16"] else "f32")] = r["sentences_per_s"]
gpu = open(sys.argv[3]).read().strip() if len(sys.argv) > 3 and os.path.exists(sys.argv[3]) else "GPU"
print(f"GPU: {gpu}\n")
print("| job | loss | batch | embtune precision | embtune /s | Python /s (same precision) | ratio |")
print("|---|---|---:|---|---:|---:|---:|")
for r in rows:
    mode = r["dtype"] + ("+tf32" if r.get("tf32") else "")
    if (r.get("cuda") or {}).get("kernels") is False:
        mode += " (candle ops: embtune's kernels failed)"
    if r["job"] == "train":
        key = ("train", r["loss"], r["batch_size"], "bf16" if r["dtype"] == "bf16" else "f32")
        ours, unit = r["pairs_per_sec"], "pairs"
    else:
        key = ("encode", "", r["batch_size"], "bf16" if r["dtype"] in ("bf16", "f16") else "f32")
        ours, unit = r["sentences_per_sec"], "sentences"
    py = ref.get(key)
    ratio = f"{ours / py:.2f}×" if py else "–"
    pys = f"{py:,.0f}" if py else "–"
    print(f"| {r['job']} | {r.get('loss', '')} | {r['batch_size']} | {mode} | {ours:,.0f} {unit} | {pys} | {ratio} |")
print("\nPython reference: sentence-transformers 6.0.1, torch 2.11 (fp32 = plain f32; bf16 = autocast; "
      "encode bf16 row compared with its fp16 run). tf32 rows are compared with Python's f32.")

if len(sys.argv) > 4 and os.path.exists(sys.argv[4]):
    abl = [json.loads(l) for l in open(sys.argv[4]) if l.strip().startswith("{")]

    def knobs(r):
        c = r.get("cuda") or {}
        off = [name for name, on in (("kernels", c.get("kernels", True)), ("alloc", c.get("alloc", True)),
                                     ("joint forward", c.get("joint_forward", "auto") != "0")) if not on]
        pad = [] if r.get("packed", True) or "kernels" in off else ["packing"]
        off += pad
        return "all on" if not off else ("run-1 path (all off)" if len(off) == 3 else "off: " + ", ".join(off))

    print("\n### What each CUDA change does (CoSENT, f32; pairs/s)\n")
    print("| batch | settings | pairs/s | vs all on |")
    print("|---:|---|---:|---:|")
    plain = [r for r in abl if "phases" not in r]
    for b in sorted({r["batch_size"] for r in plain}):
        rs = [r for r in plain if r["batch_size"] == b]
        base = next((r["pairs_per_sec"] for r in rs if knobs(r) == "all on"), None)
        for r in rs:
            rel = f"{r['pairs_per_sec'] / base:.2f}×" if base else "–"
            print(f"| {b} | {knobs(r)} | {r['pairs_per_sec']:,.0f} | {rel} |")
    phased = [r for r in abl if "phases" in r]
    if phased:
        print("\n### Where a step goes (`bench train --phases`, ms per step: host issue / device finished)\n")
        names = ["upload" if p["phase"] == "batch" else p["phase"] for p in phased[0]["phases"]["phases"]]
        print("| batch | settings | " + " | ".join(names) + " | step |")
        print("|---:|---|" + "---:|" * (len(names) + 1))
        for r in phased:
            ps = r["phases"]["phases"]
            cells = [f"{p['issue_ms']:.1f} / {p['finished_ms']:.1f}" for p in ps]
            step = sum(p["finished_ms"] for p in ps)
            print(f"| {r['batch_size']} | {knobs(r)} | " + " | ".join(cells) + f" | {step:.1f} |")
        print("\nIssue ≈ finished: the host is the limit (launch and bookkeeping); finished ≫ issue: the kernels are.")
