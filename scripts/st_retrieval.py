#!/usr/bin/env python3
"""The sentence-transformers side of scripts/retrieval-recipe.sh: fine-tunes a model on a JSONL
file of (anchor, positive, negative_1 …) rows with the recipe of data/recipes/retrieval.toml —
CachedMultipleNegativesRankingLoss (mini_batch_size 32) or MultipleNegativesRankingLoss, no
duplicate texts in a batch (BatchSamplers.NO_DUPLICATES, embtune's default for these losses),
AdamW lr 2e-5, 10 % warmup, linear decay — and saves it to --output. Run inside the venv of
scripts/setup-python.sh.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--loss", choices=["mnrl", "cached-mnrl"], default="cached-mnrl")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mini-batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=42)
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
    from sentence_transformers.base.sampler import BatchSamplers

    torch.set_num_threads(a.threads)
    rows = [json.loads(l) for l in open(a.data, encoding="utf-8") if l.strip()]
    cols = list(rows[0].keys())
    ds = Dataset.from_dict({c: [r[c] for r in rows] for c in cols})
    model = SentenceTransformer(a.model, device="cpu")
    model.max_seq_length = a.max_seq_length
    if a.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model)
    else:
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=a.mini_batch_size)
    args = SentenceTransformerTrainingArguments(
        output_dir=a.output + ".trainer", num_train_epochs=a.epochs, per_device_train_batch_size=a.batch_size,
        learning_rate=a.lr, warmup_ratio=0.1, seed=a.seed, save_strategy="no", logging_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, batch_sampler=BatchSamplers.NO_DUPLICATES,
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss).train()
    model.save(a.output)
    print(json.dumps({"rows": len(rows), "columns": cols, "output": a.output}))


if __name__ == "__main__":
    main()
