"""sentence-transformers' side of scripts/precision-table.sh: EmbeddingSimilarityEvaluator with
precision=… on an STS-B file (tab-separated, score/5). Prints one JSON object
{"version": ..., "<precision>": spearman_cosine×100, ...}. float16 is not a sentence-transformers
precision and is skipped. Usage: python precision_st.py MODEL STS_FILE PRECISION..."""
import json
import sys

import sentence_transformers
from sentence_transformers import SentenceTransformer

try:
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
except ImportError:  # sentence-transformers < 6
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

model_id, path, precisions = sys.argv[1], sys.argv[2], sys.argv[3:]
model = SentenceTransformer(model_id, device="cpu")
s1, s2, scores = [], [], []
with open(path, encoding="utf-8") as f:
    for line in f:
        p = line.rstrip("\n").split("\t")
        s1.append(p[5])
        s2.append(p[6])
        scores.append(float(p[4]) / 5)
out = {"version": sentence_transformers.__version__}
for prec in precisions:
    if prec == "float16":
        continue
    r = EmbeddingSimilarityEvaluator(s1, s2, scores, precision=prec, batch_size=32)(model)
    out[prec] = r["spearman_cosine"] * 100
print(json.dumps(out))
