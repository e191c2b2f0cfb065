#!/usr/bin/env python3
"""The Python side of scripts/compare-recipe.sh: fine-tunes all-MiniLM-L6-v2 with
sentence-transformers on a JSONL training file that embtune also trains on (same rows), with the
reference recipe of ../shared/reference/cpu_finetune_runs.json (1 epoch, lr 2e-5, 10 % warmup,
linear decay, max_seq_length 128, plain random batches), then prints STS-B dev/test Spearman as
one JSON line. Run inside the venv of scripts/setup-python.sh.

  python scripts/st_recipe.py --data triplet.jsonl --loss triplet --seed 42 --batch-size 16
"""

import argparse
import json
import os
import tempfile


def stsb(path):
    s1, s2, score = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            score.append(float(p[4]) / 5.0)
            s1.append(p[5])
            s2.append(p[6])
    return s1, s2, score


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--loss", choices=["triplet", "mnrl", "contrastive"], required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--stsb", default="data/stsbenchmark")
    a = ap.parse_args()

    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    torch.set_num_threads(2)
    rows = [json.loads(l) for l in open(a.data, encoding="utf-8") if l.strip()]
    cols = list(rows[0].keys())
    ds = Dataset.from_dict({c: [r[c] for r in rows] for c in cols})
    model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    model.max_seq_length = 128
    loss = {
        "triplet": lambda: losses.TripletLoss(model),
        "mnrl": lambda: losses.MultipleNegativesRankingLoss(model),
        "contrastive": lambda: losses.ContrastiveLoss(model),
    }[a.loss]()
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=1,
            per_device_train_batch_size=a.batch_size,
            learning_rate=2e-5,
            warmup_ratio=0.1,
            seed=a.seed,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss).train()
    out = {"loss": a.loss, "seed": a.seed, "rows": len(rows)}
    for split in ("dev", "test"):
        s1, s2, score = stsb(os.path.join(a.stsb, f"sts-{split}.csv"))
        r = EmbeddingSimilarityEvaluator(s1, s2, score, name=split)(model)
        out[split] = 100 * next(v for k, v in r.items() if k.endswith("spearman_cosine"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
