"""The Python side of scripts/trainer-epoch-parity.sh: one full CoSENT epoch of
sentence-transformers 6.2's SentenceTransformerTrainer on all-MiniLM-L6-v2 over STS-B train in
file order (a sequential batch sampler, as embtune's --no-shuffle), batch 16, lr 2e-5, warmup
ratio 0.1, linear decay, max_seq_length 128, weight decay 0.01, clipping 1.0, dropout off (every
nn.Dropout p = 0). Saves the model to OUT.   python scripts/trainer_epoch_st.py OUT"""
import importlib.util
import os
import sys

import torch

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

# The 20-step reference's data reader and sequential trainer.
_spec = importlib.util.spec_from_file_location(
    "make_trainer_reference", os.path.join(os.path.dirname(__file__), "make-trainer-reference.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def main():
    out = sys.argv[1]
    torch.set_num_threads(2)
    ds = ref.stsb_train()
    model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    model.max_seq_length = 128
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    args = SentenceTransformerTrainingArguments(
        output_dir=out + ".tmp", num_train_epochs=1, per_device_train_batch_size=16, learning_rate=2e-5,
        warmup_ratio=0.1, weight_decay=0.01, seed=42, save_strategy="no", logging_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, dataloader_drop_last=False,
    )
    tr = ref.Sequential(model=model, args=args, train_dataset=ds, loss=losses.CoSENTLoss(model))
    tr.train()
    model.save(out)
    print("steps", tr.state.global_step)


if __name__ == "__main__":
    main()
