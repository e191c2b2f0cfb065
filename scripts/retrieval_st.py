#!/usr/bin/env python3
"""sentence-transformers' InformationRetrievalEvaluator on a BEIR folder, for
scripts/retrieval-parity.sh. Prints every metric (cosine and dot; accuracy@1/3/5/10,
precision/recall@1/3/5/10/100, MRR@10, nDCG@10, MAP@100) as JSON on stdout.

    python scripts/retrieval_st.py MODEL BEIR_DIR [SPLIT] [MAX_SEQ_LENGTH]

Document text = (title + " " + text).strip(), relevant = qrels score > 0, queries without a
relevant document skipped — the rules of embtune's loader (src/eval/retrieval/data.rs).
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.util import cos_sim, dot_score  # noqa: E402
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator  # noqa: E402


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    model_id, folder = sys.argv[1], sys.argv[2]
    split = sys.argv[3] if len(sys.argv) > 3 else "test"
    max_len = int(sys.argv[4]) if len(sys.argv) > 4 else None
    corpus = {str(d["_id"]): ((d.get("title") or "") + " " + (d.get("text") or "")).strip()
              for d in read_jsonl(os.path.join(folder, "corpus.jsonl"))}
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(os.path.join(folder, "queries.jsonl"))}
    relevant = {}
    with open(os.path.join(folder, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 3:
                continue
            try:
                score = float(parts[2])
            except ValueError:
                if i == 0:
                    continue
                raise
            if score > 0 and parts[0] in queries and parts[1] in corpus:
                relevant.setdefault(parts[0], set()).add(parts[1])
    queries = {q: t for q, t in queries.items() if q in relevant}
    model = SentenceTransformer(model_id, device="cpu")
    if max_len:
        model.max_seq_length = max_len
    ev = InformationRetrievalEvaluator(
        queries, corpus, relevant, name="", precision_recall_at_k=[1, 3, 5, 10, 100],
        score_functions={"cosine": cos_sim, "dot": dot_score},
        show_progress_bar=False, batch_size=32,
    )
    t = time.time()
    res = ev(model)
    out = {k.lstrip("_"): float(v) for k, v in res.items()}
    out["seconds"] = time.time() - t
    out["version"] = sentence_transformers.__version__
    out["queries"] = len(queries)
    out["docs"] = len(corpus)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
