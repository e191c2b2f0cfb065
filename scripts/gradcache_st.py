#!/usr/bin/env python3
"""The sentence-transformers side of scripts/bench-gradcache.py: trains all-MiniLM-L6-v2 with
MultipleNegativesRankingLoss or CachedMultipleNegativesRankingLoss (mini_batch_size 32) on a
JSONL file of (anchor, positive) rows for --steps optimizer steps at --batch-size, max_seq_length
128, and prints one JSON line with the seconds per step. Peak memory is measured by the caller
(ru_maxrss of this process). Run inside the venv of scripts/setup-python.sh.
"""
import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--loss", choices=["mnrl", "cached-mnrl"], required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--mini-batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from transformers import TrainerCallback

    torch.set_num_threads(a.threads)
    rows = [json.loads(l) for l in open(a.data, encoding="utf-8") if l.strip()]
    rows = rows[: a.batch_size * a.steps]
    ds = Dataset.from_dict({"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]})
    model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    model.max_seq_length = 128
    if a.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model)
    else:
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=a.mini_batch_size)

    class Clock(TrainerCallback):
        def __init__(self):
            self.t = []

        def on_step_begin(self, args, state, control, **kw):
            self.t.append(time.time())

        def on_step_end(self, args, state, control, **kw):
            self.t[-1] = time.time() - self.t[-1]

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, max_steps=a.steps, per_device_train_batch_size=a.batch_size,
            learning_rate=2e-5, warmup_ratio=0.1, save_strategy="no", logging_strategy="no",
            report_to="none", use_cpu=True, disable_tqdm=True, dataloader_drop_last=True,
        )
        SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss, callbacks=[clock]).train()
    print(json.dumps({"loss": a.loss, "batch_size": a.batch_size, "steps": a.steps,
                      "seconds_per_step": sum(clock.t) / max(len(clock.t), 1)}))


if __name__ == "__main__":
    main()
