"""Reference values of sentence-transformers losses that loss_reference.json (in ../shared) does
not hold: AnglELoss (CoSENT on pairwise_angle_sim, scale 20) on fixed pseudo-random embeddings,
an even and an odd dimension. Writes tests/fixtures/losses/angle.json; run with the venv of
scripts/setup-python.sh:  $(scripts/setup-python.sh --python) scripts/make-loss-reference.py"""
import json, os
import torch
import sentence_transformers
from sentence_transformers import util
from sentence_transformers.sentence_transformer import losses


def rows(seed, b, d):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((b, d), generator=g, dtype=torch.float64) * 2 - 1)


class Fixed(torch.nn.Module):
    """A stand-in model: the loss only calls it on the features it is given."""

    def forward(self, f):
        return {"sentence_embedding": f["e"]}


cases = []
for seed, (b, d) in enumerate([(6, 8), (6, 7), (16, 384)]):
    e1, e2 = rows(2 * seed, b, d), rows(2 * seed + 1, b, d)
    labels = torch.linspace(0.0, 1.0, b, dtype=torch.float64)[torch.randperm(b, generator=torch.Generator().manual_seed(99 + seed))]
    loss = losses.AnglELoss(Fixed(), scale=20.0)
    value = loss([{"e": e1}, {"e": e2}], labels).item()
    sims = util.pairwise_angle_sim(e1, e2).tolist()
    cases.append({"b": b, "d": d, "e1": e1.tolist(), "e2": e2.tolist(), "labels": labels.tolist(), "angle_sim": sims, "loss": value})
os.makedirs("tests/fixtures/losses", exist_ok=True)
json.dump({"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__, "cases": cases},
          open("tests/fixtures/losses/angle.json", "w"), indent=1)
print("wrote tests/fixtures/losses/angle.json")
