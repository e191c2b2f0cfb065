"""Markdown table of `embtune bench` JSON lines beside the Python sentence-transformers
reference (gpu_anchor.json), with ratios embtune / Python. Used by gpu-check.sh.
usage: gpu_table.py BENCH.jsonl [REF.json] [GPU.txt]"""
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
