#!/usr/bin/env python3
"""What sentence-transformers 6.2 makes of prompts, on the tiny fixture models, for
tests/it/prompts.rs. Run with the reference venv (scripts/setup-python.sh):

    "$(scripts/setup-python.sh)" scripts/make-prompt-reference.py

For bert (WordPiece, [CLS] … [SEP]) and xlm-roberta (SentencePiece, <s> … </s>), with mean and
cls pooling, include_prompt true and false, and two prompts, it writes the embeddings of the
fixture's texts as `model.encode(texts, prompt=…)` gives them, and ST's prompt length, to
tests/fixtures/prompts/reference.json. Never a quality claim: tiny random models.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
PROMPTS = ["query: ", "Represent this sentence for searching relevant passages: "]


def main():
    cases = []
    for family in ["bert", "xlm-roberta"]:
        texts = json.loads((FIX / family / "reference.json").read_text())["texts"]
        for pooling in ["mean", "cls"]:
            for include_prompt in [True, False]:
                with tempfile.TemporaryDirectory() as tmp:
                    m = Path(tmp) / "m"
                    shutil.copytree(FIX / family / "model", m)
                    cfg = json.loads((m / "1_Pooling" / "config.json").read_text())
                    cfg["pooling_mode"] = pooling
                    cfg["include_prompt"] = include_prompt
                    (m / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
                    model = SentenceTransformer(str(m), device="cpu")
                    model.eval()
                    for prompt in PROMPTS:
                        with torch.no_grad():
                            emb = model.encode(texts, prompt=prompt, convert_to_numpy=True)
                        cases.append({
                            "family": family,
                            "pooling": pooling,
                            "include_prompt": include_prompt,
                            "prompt": prompt,
                            "prompt_length": model[0]._get_prompt_length(prompt),
                            "texts": texts,
                            "embeddings": emb.tolist(),
                        })
    out = FIX / "prompts"
    out.mkdir(exist_ok=True)
    (out / "reference.json").write_text(json.dumps({
        "cases": cases,
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    }, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {out / 'reference.json'}")


if __name__ == "__main__":
    main()
