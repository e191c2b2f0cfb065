#!/usr/bin/env python3
"""The Python side of scripts/bench.sh: the same jobs as `embtune bench`, run with
sentence-transformers, one JSON line on stdout each. Run by scripts/bench.py inside the venv
that scripts/setup-python.sh makes; never imported by embtune itself.

Jobs (on --model as the Hub cache holds it, HF_HUB_OFFLINE=1; default all-MiniLM-L6-v2, the
driver passes --model sentence-transformers/all-mpnet-base-v2 for its mpnet-* jobs and for that
model's token counts):
  encode --data sts-test.csv --batch-size B     unique sentences, normalized; sentences/s
  train  --data sts-train.csv --loss L -b B --steps N
                                                the real SentenceTransformerTrainer, dropout on,
                                                3 warm-up steps then N timed ones; pairs/s
  cold   --text T --output F.npy                import, load, encode one text, save (timed by
                                                the driver from launch to exit)
  matmul --n N                                  f32 N×N·N×N GFLOP/s (the hardware yardstick)
  tokens --data sts-test.csv --train-data sts-train.csv --batch-sizes 32,128
                                                token counts for the driver's FLOP accounting,
                                                per --model (its tokenizer.json through the tokenizers
                                                package; no torch, nothing timed)
"""

import argparse
import json
import os
import sys
import time

WARM_STEPS = 3  # as embtune's train::WARM_STEPS


def stsb(path):
    """STS-B rows: (score, sentence1, sentence2). Tab-separated, quotes are literal text."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            rows.append((float(parts[4]), parts[5], parts[6]))
    return rows


def unique_sentences(path):
    seen, out = set(), []
    for _, a, b in stsb(path):
        for s in (a, b):
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def load_model(name):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name, device="cpu")


def job_encode(a):
    import torch

    model = load_model(a.model)
    texts = unique_sentences(a.data)
    model.encode(texts[: 2 * a.batch_size], batch_size=a.batch_size, normalize_embeddings=True)
    t = time.perf_counter()
    emb = model.encode(texts, batch_size=a.batch_size, normalize_embeddings=True)
    seconds = time.perf_counter() - t
    assert emb.shape[0] == len(texts)
    return {
        "job": "encode",
        "batch_size": a.batch_size,
        "sentences": len(texts),
        "seconds": seconds,
        "sentences_per_sec": len(texts) / seconds,
        "threads": torch.get_num_threads(),
    }


def job_train(a):
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback

    model = load_model(a.model)
    model.max_seq_length = 128
    rows = stsb(a.data)
    if a.loss == "cosent":
        ds = Dataset.from_dict(
            {
                "sentence1": [r[1] for r in rows],
                "sentence2": [r[2] for r in rows],
                "score": [r[0] / 5.0 for r in rows],
            }
        )
        loss = losses.CoSENTLoss(model)
        sampler = BatchSamplers.BATCH_SAMPLER
    elif a.loss == "mnrl":
        ds = Dataset.from_dict(
            {"anchor": [r[1] for r in rows], "positive": [r[2] for r in rows]}
        )
        loss = losses.MultipleNegativesRankingLoss(model)
        # In-batch negatives: no text twice in a batch, embtune's default for this loss.
        sampler = BatchSamplers.NO_DUPLICATES
    else:
        raise SystemExit(f"bench_st.py: unknown loss {a.loss}")

    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    out = os.path.join(a.scratch, "st-train")
    args = SentenceTransformerTrainingArguments(
        output_dir=out,
        per_device_train_batch_size=a.batch_size,
        max_steps=WARM_STEPS + a.steps,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        seed=42,
        batch_sampler=sampler,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_drop_last=False,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds, loss=loss, callbacks=[Clock()]
    )
    trainer.train()
    timed = stamps[WARM_STEPS:]
    seconds = stamps[-1] - stamps[WARM_STEPS - 1]
    return {
        "job": "train",
        "loss": a.loss,
        "batch_size": a.batch_size,
        "steps": len(timed),
        "examples": len(timed) * a.batch_size,
        "seconds": seconds,
        "pairs_per_sec": len(timed) * a.batch_size / seconds,
        "threads": torch.get_num_threads(),
    }


def job_cold(a):
    import numpy as np

    model = load_model(a.model)
    emb = model.encode([a.text], normalize_embeddings=True)
    np.save(a.output, emb)
    return {"job": "cold", "dim": int(emb.shape[1])}


def job_tokens(a):
    """Token counts (special tokens included) for scripts/bench.py's FLOP accounting.

    encode: the unique sentences of --data, truncated at the model's max_seq_length; per batch
    size, the padded tokens and sum(len_i * S_batch) of length-sorted batches (longest first, as
    `embtune bench encode` counts them) for the attention term. train: mean tokens of
    sentence1 + sentence2 over the rows of --train-data, truncated at 128 (the max_seq_length
    job_train sets)."""
    from huggingface_hub import hf_hub_download
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(hf_hub_download(a.model, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    with open(hf_hub_download(a.model, "sentence_bert_config.json"), encoding="utf-8") as f:
        max_len = int(json.load(f)["max_seq_length"])

    def lengths(texts, cap):
        lens = [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=True)]
        return [min(n, cap) for n in lens], sum(n > cap for n in lens)

    texts = unique_sentences(a.data)
    lens, cut = lengths(texts, max_len)
    lens.sort(reverse=True)
    by_batch = {}
    for b in [int(x) for x in a.batch_sizes.split(",") if x]:
        padded = attn = 0
        for i in range(0, len(lens), b):
            chunk = lens[i : i + b]
            padded += chunk[0] * len(chunk)
            attn += chunk[0] * sum(chunk)
        by_batch[str(b)] = {"padded_tokens": padded, "real_x_padded_len": attn}
    out = {
        "job": "tokens",
        "encode": {
            "data": a.data,
            "sentences": len(texts),
            "max_seq_length": max_len,
            "truncated": cut,
            "real_tokens": sum(lens),
            "by_batch_size": by_batch,
        },
    }
    if a.train_data:
        rows = stsb(a.train_data)
        l1, c1 = lengths([r[1] for r in rows], 128)
        l2, c2 = lengths([r[2] for r in rows], 128)
        out["train"] = {
            "data": a.train_data,
            "pairs": len(rows),
            "max_seq_length": 128,
            "truncated": c1 + c2,
            "tokens_per_pair": (sum(l1) + sum(l2)) / len(rows),
        }
    return out


def job_matmul(a):
    import torch

    n = a.n
    x, y = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        x @ y
    reps, best = 10, float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            x @ y
        best = min(best, time.perf_counter() - t)
    return {
        "job": "matmul",
        "n": n,
        "gflops": 2 * n**3 * reps / best / 1e9,
        "threads": torch.get_num_threads(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("job", choices=["encode", "train", "cold", "matmul", "tokens"])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--data")
    p.add_argument("--train-data", help="tokens: STS-B train pairs for tokens per pair")
    p.add_argument("--batch-sizes", default="32,128", help="tokens: encode batch sizes")
    p.add_argument("--loss", default="cosent")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text", default="A man is playing a guitar.")
    p.add_argument("--output")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--scratch", default=os.environ.get("TMPDIR", "/tmp"))
    a = p.parse_args()
    if a.job not in ("cold", "tokens"):
        import torch

        # Thread counts equal on both sides: torch's intra-op pool = embtune's pool size.
        torch.set_num_threads(a.threads)
    jobs = {
        "encode": job_encode,
        "train": job_train,
        "cold": job_cold,
        "matmul": job_matmul,
        "tokens": job_tokens,
    }
    r = jobs[a.job](a)
    if a.job != "cold":
        json.dump(r, sys.stdout)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
