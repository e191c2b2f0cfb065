"""Dropout reference (recipes issue, the out-of-domain gap hunt): how much train-mode dropout
moves all-MiniLM-L6-v2's embeddings in sentence-transformers 6.2 / torch — the mean over 300
draws of 1 − cos(train-mode embedding, eval-mode embedding) of the first 16 STS-B train
sentence1 texts (max_seq_length 128). tests/it/dropout_stats.rs draws the same statistic from
embtune's masks: a missing or misplaced dropout site, or a wrong rate or scale, moves it.
Writes tests/fixtures/trainer/dropout-stats.json. Run with the venv of scripts/setup-python.sh:
  $(scripts/setup-python.sh --python) scripts/make-dropout-reference.py"""
import json

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

DRAWS = 300


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    m.max_seq_length = 128
    rows = [l.rstrip("\n").split("\t") for l in open("../shared/data/stsbenchmark/sts-train.csv", encoding="utf-8")][:16]
    feats = m.preprocess([r[5] for r in rows])
    m.eval()
    with torch.no_grad():
        ev = m(dict(feats))["sentence_embedding"]
    m.train()
    d = []
    with torch.no_grad():
        for _ in range(DRAWS):
            e = m(dict(feats))["sentence_embedding"]
            d.append((1 - torch.nn.functional.cosine_similarity(e, ev, dim=-1)).numpy())
    d = np.array(d)
    out = {"draws": DRAWS, "sentences": 16, "mean_one_minus_cos": float(d.mean()),
           "sem": float(d.mean(1).std() / np.sqrt(DRAWS))}
    json.dump(out, open("tests/fixtures/trainer/dropout-stats.json", "w"), indent=1)
    print(out)


if __name__ == "__main__":
    main()
