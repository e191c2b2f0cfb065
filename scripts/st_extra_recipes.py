#!/usr/bin/env python3
"""The Python side of scripts/compare-extra-recipes.sh: sentence-transformers 6.2 trains
all-MiniLM-L6-v2 with the same recipe as data/recipes/<recipe>.toml on the same rows, then prints
STS-B dev/test Spearman ×100 as one JSON line. Common settings (embtune's defaults): 1 epoch,
batch 16, warmup ratio 0.1, linear decay, max_seq_length 128, weight decay 0.01, clipping 1.0,
plain random batches. Recipes:
  angle    AnglELoss on STS-B train (score / 5), lr 2e-5
  multi    {sts: CosineSimilarityLoss on STS-B train, pairs: MNRL on the mnrl recipe's rows}, lr 2e-5,
           proportional multi-dataset sampling
  distill  MSELoss(projection_dim=768) against all-mpnet-base-v2's embedding of each column, lr 1e-4
  lora     CosineSimilarityLoss with a PEFT LoRA adapter (r 8, alpha 16, query,value), lr 1e-4
Run inside the venv of scripts/setup-python.sh:
  python scripts/st_extra_recipes.py --recipe lora --seed 42 [--pairs out/reproduce-stsb/data/mnrl.jsonl]
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_recipe import stsb  # noqa: E402  (the STS-B reader, score / 5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipe", choices=["angle", "multi", "distill", "lora"], required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--stsb", default="data/stsbenchmark")
    ap.add_argument("--pairs", default="out/reproduce-stsb/data/mnrl.jsonl")
    a = ap.parse_args()

    import numpy as np
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
    s1, s2, score = stsb(os.path.join(a.stsb, "sts-train.csv"))
    sts = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": score})
    model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    model.max_seq_length = 128
    lr = 2e-5
    if a.recipe == "angle":
        train, loss = sts, losses.AnglELoss(model)
    elif a.recipe == "multi":
        rows = [json.loads(l) for l in open(a.pairs, encoding="utf-8") if l.strip()]
        pairs = Dataset.from_dict({"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]})
        train = {"sts": sts, "pairs": pairs}
        loss = {"sts": losses.CosineSimilarityLoss(model), "pairs": losses.MultipleNegativesRankingLoss(model)}
    elif a.recipe == "distill":
        teacher = SentenceTransformer("sentence-transformers/all-mpnet-base-v2", device="cpu")
        teacher.max_seq_length = 128
        t1 = teacher.encode(s1, batch_size=32, convert_to_numpy=True)
        t2 = teacher.encode(s2, batch_size=32, convert_to_numpy=True)
        train = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "label": np.stack([t1, t2], axis=1).tolist()})
        loss, lr = losses.MSELoss(model, projection_dim=t1.shape[1]), 1e-4
    else:
        from peft import LoraConfig, TaskType, get_peft_model
        # PEFT's own wrapper around the transformers model: sentence-transformers' add_adapter
        # goes through transformers 5.24, which asks for peft >= 0.22, not on PyPI yet (0.21.2).
        cfg = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=8, lora_alpha=16, lora_dropout=0.0,
                         target_modules=["query", "value"])
        model[0].auto_model = get_peft_model(model[0].auto_model, cfg)
        train, loss, lr = sts, losses.CosineSimilarityLoss(model), 1e-4
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, num_train_epochs=1, per_device_train_batch_size=16, learning_rate=lr,
            warmup_ratio=0.1, weight_decay=0.01, seed=a.seed, save_strategy="no", logging_strategy="no",
            report_to="none", use_cpu=True, disable_tqdm=True,
        )
        SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    out = {"recipe": a.recipe, "seed": a.seed}
    for split in ("dev", "test"):
        e1, e2, sc = stsb(os.path.join(a.stsb, f"sts-{split}.csv"))
        r = EmbeddingSimilarityEvaluator(e1, e2, sc, name=split)(model)
        out[split] = 100 * next(v for k, v in r.items() if k.endswith("spearman_cosine"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
