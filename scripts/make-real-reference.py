#!/usr/bin/env python3
"""The Python reference for the real all-mpnet-base-v2 in the CI tests
(tests/it/real_mpnet.rs), like ../shared/reference/embed_reference.json is for MiniLM: the
first 16 sentence1 of STS-B test, tokenized and embedded by sentence-transformers (eval mode,
its max_seq_length 384, mean pooling + Normalize), and the gradient of a fixed scalar loss
with respect to a few parameters. Needs the model in the Hub cache (scripts/fetch-model.sh)
and the reference venv:

    "$(scripts/setup-python.sh)" scripts/make-real-reference.py
"""
import csv
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
import sentence_transformers  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "real-mpnet"
STSB = ROOT.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv"
# Parameters whose gradient is kept (small ones, so the file stays small; the word embeddings'
# gradient only at the rows of a few used token ids, in `grad_rows.<name>` with `grad_row_ids`).
GRADS = [
    "embeddings.LayerNorm.weight",
    "encoder.relative_attention_bias.weight",
    "encoder.layer.0.attention.attn.q.bias",
    "encoder.layer.11.output.LayerNorm.bias",
]
WORDS = "embeddings.word_embeddings.weight"


def main():
    with open(STSB, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [r[5] for r in rows[:16]]
    torch.set_num_threads(2)
    st = SentenceTransformer("sentence-transformers/all-mpnet-base-v2", device="cpu")
    st.eval()
    feats = st[0].preprocess(texts)
    out = st(dict(feats))
    emb = out["sentence_embedding"]
    weights = torch.randn(emb.shape, generator=torch.Generator().manual_seed(7))
    (emb * weights).sum().backward()
    named = dict(st[0].model.named_parameters())
    tensors = {
        "input_ids": feats["input_ids"].to(torch.int64).contiguous(),
        "attention_mask": feats["attention_mask"].to(torch.int64).contiguous(),
        "embeddings": emb.detach().contiguous(),
        "weights": weights.contiguous(),
    }
    for n in GRADS:
        tensors[f"grad.{n}"] = named[n].grad.detach().contiguous()
    ids = feats["input_ids"][0, :4].to(torch.int64).clone()
    tensors["grad_row_ids"] = ids.contiguous()
    tensors[f"grad_rows.{WORDS}"] = named[WORDS].grad.detach()[ids].contiguous()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "reference.safetensors"))
    meta = {
        "model": "sentence-transformers/all-mpnet-base-v2 (eval mode, fp32, CPU)",
        "texts": texts,
        "max_seq_length": st.max_seq_length,
        "loss": "sum(embeddings * weights), eval mode",
        "versions": {"transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__,
                     "torch": torch.__version__},
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{len(texts)} texts, {tuple(feats['input_ids'].shape)} tokens -> {OUT}")


if __name__ == "__main__":
    main()
