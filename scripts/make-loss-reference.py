"""Reference values of sentence-transformers losses that loss_reference.json (in ../shared) does
not hold, on fixed pseudo-random embeddings: AnglELoss (CoSENT on pairwise_angle_sim, scale 20),
an even and an odd dimension (tests/fixtures/losses/angle.json); MSELoss, MarginMSELoss and
SoftmaxLoss (tests/fixtures/losses/distill.json, see the second half). Run with the venv of
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

    def get_embedding_dimension(self):
        return 8

    @property
    def device(self):
        return torch.device("cpu")


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

# Distillation and classification losses (tests/fixtures/losses/distill.json): MSELoss with
# one teacher embedding for every column ([B, D]) and one per column ([B, C, D]), MSELoss with a
# projection into a wider teacher space (fixed weights), MarginMSELoss with one and two
# negatives (margins) and with raw scores ([B, k + 1]), SoftmaxLoss with a fixed classifier.
torch.manual_seed(0)
b, d, wide, k = 6, 8, 12, 3
cols = [rows(100 + c, b, d) for c in range(4)]
feats = lambda n: [{"e": e} for e in cols[:n]]
t2, t3 = rows(200, b, d), torch.stack([rows(201 + c, b, d) for c in range(2)], dim=1)
mse = losses.MSELoss(Fixed())
proj = losses.MSELoss(Fixed(), projection_dim=wide)
proj.projection.double()
with torch.no_grad():
    proj.projection.weight.copy_(rows(300, wide, d)); proj.projection.bias.copy_(rows(301, 1, wide)[0])
tw = rows(302, b, wide)
m1, m2, s3 = rows(400, 1, b)[0], rows(401, b, 2), rows(402, b, 3)
mm = losses.MarginMSELoss(Fixed())
sm = losses.SoftmaxLoss(Fixed(), embedding_dimension=d, num_labels=k)
sm.classifier.double()
with torch.no_grad():
    sm.classifier.weight.copy_(rows(500, k, 3 * d)); sm.classifier.bias.copy_(rows(501, 1, k)[0])
classes = torch.tensor([0, 2, 1, 1, 0, 2])
T = lambda x: x.tolist()
distill = {
    "embeddings": [T(c) for c in cols],
    "mse_broadcast": {"columns": 2, "labels": T(t2), "loss": mse(feats(2), t2).item()},
    "mse_per_column": {"columns": 2, "labels": T(t3), "loss": mse(feats(2), t3).item()},
    "mse_projection": {"columns": 1, "labels": T(tw), "weight": T(proj.projection.weight), "bias": T(proj.projection.bias),
                       "loss": proj(feats(1), tw).item()},
    "margin_one": {"columns": 3, "labels": T(m1), "loss": mm(feats(3), m1).item()},
    "margin_two": {"columns": 4, "labels": T(m2), "loss": mm(feats(4), m2).item()},
    "margin_scores": {"columns": 4, "labels": T(s3), "loss": mm(feats(4), s3).item()},
    "softmax": {"columns": 2, "labels": T(classes), "weight": T(sm.classifier.weight), "bias": T(sm.classifier.bias),
                "loss": sm(feats(2), classes).item()},
}
json.dump(distill, open("tests/fixtures/losses/distill.json", "w"), indent=1)
print("wrote tests/fixtures/losses/distill.json")
