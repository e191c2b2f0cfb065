"""Trainer parity reference (recipes issue): 20 CoSENT steps of sentence-transformers 6.2's own
SentenceTransformerTrainer on all-MiniLM-L6-v2 — the first 320 rows of STS-B train in file order
(a sequential batch sampler: the same batch order embtune's --no-shuffle gives), batch 16,
lr 2e-5, warmup ratio 0.1, linear decay, max_seq_length 128, dropout off (every nn.Dropout
p = 0), every other setting the trainer's default (weight decay 0.0, AdamW eps 1e-8, gradient
clipping 1.0). Writes tests/fixtures/trainer/cosent-20.json: per tensor, 64 values at fixed
positions (before and after), the sum and the L2 norm after. Run with the venv of
scripts/setup-python.sh:  $(scripts/setup-python.sh --python) scripts/make-trainer-reference.py"""
import json, os, tempfile

import torch
from datasets import Dataset
from torch.utils.data import BatchSampler, SequentialSampler

import sentence_transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

ROWS, STEPS, BATCH = 320, 20, 16


def positions(n, k=64, seed=12345):
    """k distinct flat indices of a tensor of n elements (an LCG; stored beside the values)."""
    out, x = [], seed
    while len(out) < min(k, n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        i = (x >> 11) % n
        if i not in out:
            out.append(i)
    return out


class Sequential(SentenceTransformerTrainer):
    def get_batch_sampler(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        return BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last)


def stsb_train(rows=None):
    """STS-B train in file order (the first `rows`), scores / 5, as a Dataset."""
    s1, s2, score = [], [], []
    with open("../shared/data/stsbenchmark/sts-train.csv", encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").rstrip("\r").split("\t")
            if len(p) < 7 or not line.strip():
                continue
            s1.append(p[5]); s2.append(p[6]); score.append(float(p[4]) / 5.0)
            if len(s1) == rows:
                break
    return Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": score})


def main():
    torch.set_num_threads(2)
    ds = stsb_train(ROWS)
    model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    model.max_seq_length = 128
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    auto = model[0].auto_model
    before = {n: p.detach().flatten().clone() for n, p in auto.named_parameters()}
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, max_steps=STEPS, per_device_train_batch_size=BATCH, learning_rate=2e-5,
            warmup_ratio=0.1, seed=42, save_strategy="no", logging_strategy="no", report_to="none",
            use_cpu=True, disable_tqdm=True, dataloader_drop_last=False,
        )
        tr = Sequential(model=model, args=args, train_dataset=ds, loss=losses.CoSENTLoss(model))
        tr.train()
        settings = {k: getattr(args, k) for k in ["weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "lr_scheduler_type", "warmup_ratio"]}
        settings["lr_scheduler_type"] = str(settings["lr_scheduler_type"])
    tensors = {}
    for n, p in auto.named_parameters():
        flat = p.detach().flatten()
        pos = positions(flat.numel())
        tensors[n] = {
            "numel": flat.numel(), "positions": pos,
            "before": [before[n][i].item() for i in pos], "after": [flat[i].item() for i in pos],
            "sum": flat.double().sum().item(), "norm": flat.double().norm().item(),
            "max_change": (flat - before[n]).abs().max().item(),
        }
    os.makedirs("tests/fixtures/trainer", exist_ok=True)
    json.dump({"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__,
               "rows": ROWS, "steps": STEPS, "batch_size": BATCH, "trainer_defaults": settings, "tensors": tensors},
              open("tests/fixtures/trainer/cosent-20.json", "w"))
    print("wrote tests/fixtures/trainer/cosent-20.json", settings)


if __name__ == "__main__":
    main()
