#!/usr/bin/env python3
"""Tiny random-weight models of every encoder family, and their Python reference, for the parity
tests (tests/it/families.rs). Run with the reference venv (scripts/setup-python.sh):

    "$(scripts/setup-python.sh)" scripts/make-fixtures.py            # all families
    "$(scripts/setup-python.sh)" scripts/make-fixtures.py mpnet      # one

Per family, tests/fixtures/<family>/ gets
  model/                 the model as sentence-transformers 6.2 saves it (Transformer + mean
                         Pooling, max_seq_length 24 — kept as tokenizer_config.json's
                         model_max_length, as ST 6 does), built offline with transformers 5.24:
                         AutoModel.from_config + a tokenizer trained here with `tokenizers`;
  reference.safetensors  input_ids and attention_mask [B, S] as ST tokenizes the texts,
                         hidden [B, S, H] (last hidden states), embeddings [B, H] (pooled),
                         weights [B, H] and `grad.<parameter>` for every parameter: the gradient of
                         the scalar loss sum(embeddings * weights) in eval mode;
  reference.json         the texts, max_seq_length, versions.
Sizes: hidden 32, 2 layers (ModernBERT 4, so both attention kinds occur), 4 heads, intermediate
37, vocabulary ~300, 40 positions. transformers 5.24 keeps some NomicBERT / GTE parameters under
other names in memory than in the checkpoint it writes; their gradients are stored under the
checkpoint's names (hub_grads), checked against the saved tensors' names and shapes. Every
parameter (LayerNorm and biases included) is drawn at random so that each one matters. Never a
quality claim: these models are for parity and mechanics tests only.
"""
import json
import os
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig, AutoModel, BertTokenizer, CamembertTokenizer, DistilBertTokenizer,
    MPNetTokenizer, RobertaTokenizer, XLMRobertaTokenizer,
)
import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.base.modules import Transformer  # noqa: E402
from sentence_transformers.sentence_transformer.modules import Pooling  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
VOCAB = 300
MAX_SEQ = 24
CORPUS = [
    "A man is playing a guitar on the street.",
    "The quick brown fox jumps over the lazy dog.",
    "Sentence embeddings are useful for semantic search.",
    "The cat sat on the mat and looked at the bird.",
    "Machine learning models learn from data.",
    "Paris is the capital of France.",
    "Le chat est sur la table et le chien dort déjà.",
    "Transformers use attention to mix information between tokens.",
    "She sells sea shells by the sea shore.",
    "Three dogs run across a snowy field.",
    "A woman is slicing an onion into thin rings.",
    "The stock market fell sharply on Monday.",
] * 20
# Different lengths (padding), one longer than MAX_SEQ tokens (truncation), one with accents.
TEXTS = [
    "A man is playing a guitar.",
    "Three dogs run across a snowy field while the cat sat on the mat and looked at the bird "
    "and the quick brown fox jumps over the lazy dog again and again.",
    "Le chat dort déjà.",
    "Sentence embeddings!",
    "The stock market fell sharply on Monday after the announcement.",
]
SPECIAL_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIAL_ROBERTA = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def wordpiece(specials, unk):
    tok = Tokenizer(models.WordPiece(unk_token=unk))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials))
    return tok.get_vocab()


def byte_bpe():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL_ROBERTA,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    m = json.loads(tok.to_str())["model"]
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    return m["vocab"], merges


def unigram():
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL_ROBERTA, unk_token="<unk>"))
    return [tuple(x) for x in json.loads(tok.to_str())["model"]["vocab"]]


LAYERS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def families():
    """family → (tokenizer factory, config overrides). Overrides differ from the defaults where
    the real checkpoints do (RoBERTa eps 1e-5 and one token type) so the config is really read."""
    roberta_like = dict(LAYERS, layer_norm_eps=1e-5, type_vocab_size=1)
    return {
        "bert": (lambda: BertTokenizer(vocab=wordpiece(SPECIAL_BERT, "[UNK]"), do_lower_case=True),
                 dict(LAYERS, type_vocab_size=2)),
        "roberta": (lambda: RobertaTokenizer(*byte_bpe()), roberta_like),
        "xlm-roberta": (lambda: XLMRobertaTokenizer(vocab=unigram()), roberta_like),
        # tanh-GELU here, so the other activation is covered too.
        "camembert": (lambda: CamembertTokenizer(vocab=unigram(), additional_special_tokens=[]),
                      dict(roberta_like, hidden_act="gelu_new")),
        "distilbert": (lambda: DistilBertTokenizer(vocab=wordpiece(SPECIAL_BERT, "[UNK]"), do_lower_case=True),
                       dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, sinusoidal_pos_embds=True)),
        "mpnet": (lambda: MPNetTokenizer(vocab=wordpiece(SPECIAL_ROBERTA, "<unk>"), do_lower_case=True,
                                         unk_token="<unk>"),
                  dict(LAYERS, layer_norm_eps=1e-5)),
        # The rotary families use BERT's uncased WordPiece tokenizer (nomic-embed-text and GTE do;
        # ModernBERT's own is a BPE with the same [CLS]/[SEP] framing — the model is what these
        # fixtures test). ModernBERT: 4 layers so both kinds occur (0 and 3 global, 1 and 2 local
        # with a window of |i-j| <= 4, narrower than the long text), two distinct rope bases so a
        # swapped table fails; bias-free as the Hub checkpoints. The special ids are set from the
        # tokenizer in make() (they must be below vocab_size).
        "modernbert": (bert_tok, dict(LAYERS, num_hidden_layers=4, local_attention=8,
                                      global_attn_every_n_layers=3, global_rope_theta=1000.0,
                                      local_rope_theta=50.0)),
        "nomic_bert": (bert_tok, dict(LAYERS, type_vocab_size=2)),
        # GTE with its Hub rotary scaling (ntk, factor 2 = transformers' linear type, θ·2 and
        # 2^(2/hd)) and no token types, as gte-base-en-v1.5.
        "gte": (bert_tok, dict(LAYERS, type_vocab_size=0, rope_parameters={
            "rope_type": "linear", "rope_theta": 2000.0, "factor": 2.0 ** (2 / 8)})),
    }


def bert_tok():
    return BertTokenizer(vocab=wordpiece(SPECIAL_BERT, "[UNK]"), do_lower_case=True)


# transformers 5.24 names some parameters of these families differently in memory than in the
# checkpoint it writes (its conversion mapping, reversed on save): the gradients are stored
# under the checkpoint's names, fused tensors concatenated as they are on disk.
def hub_grads(family, grads):
    if family not in ("nomic_bert", "gte"):
        return grads
    out, n = {}, 0
    while any(k.startswith(f"layers.{n}.") for k in grads):
        n += 1
    for k, v in grads.items():
        if not k.startswith("layers."):
            out[k.replace("embeddings.LayerNorm", "emb_ln") if family == "nomic_bert" else k] = v
    for i in range(n):
        g = lambda name: grads[f"layers.{i}.{name}"]
        p = f"encoder.layers.{i}" if family == "nomic_bert" else f"encoder.layer.{i}"
        names = {"nomic_bert": dict(qkv="attn.Wqkv", o="attn.out_proj", n1="norm1", n2="norm2"),
                 "gte": dict(qkv="attention.qkv_proj", o="attention.o_proj", n1="attn_ln", n2="mlp_ln")}[family]
        kinds = ["weight", "bias"] if f"layers.{i}.self_attn.q_proj.bias" in grads else ["weight"]
        for kind in kinds:
            out[f"{p}.{names['qkv']}.{kind}"] = torch.cat(
                [g(f"self_attn.{x}_proj.{kind}") for x in "qkv"], 0)
        for kind in ["weight", "bias"]:
            for src, dst in [(f"self_attn.o_proj.{kind}", names["o"]),
                             (f"post_attention_layernorm.{kind}", names["n1"]),
                             (f"post_mlp_layernorm.{kind}", names["n2"]),
                             (f"mlp.down_proj.{kind}", "mlp.fc2" if family == "nomic_bert" else "mlp.down_proj")]:
                if f"layers.{i}.{src}" in grads:
                    out[f"{p}.{dst}.{kind}"] = g(src)
        if family == "nomic_bert":
            out[f"{p}.mlp.fc11.weight"] = g("mlp.up_proj.weight")
            out[f"{p}.mlp.fc12.weight"] = g("mlp.gate_proj.weight")
        else:
            out[f"{p}.mlp.up_gate_proj.weight"] = torch.cat(
                [g("mlp.up_proj.weight"), g("mlp.gate_proj.weight")], 0)
    return out


def randomize(model, seed):
    """Every parameter at random: norms around 1, everything else small normal values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name.lower():
                p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.1 * noise)
            else:
                p.copy_(0.05 * noise)


def make(family, seed):
    make_tok, overrides = families()[family]
    tok = make_tok()
    if family == "modernbert":
        overrides = dict(overrides, bos_token_id=tok.cls_token_id, cls_token_id=tok.cls_token_id,
                         eos_token_id=tok.sep_token_id, sep_token_id=tok.sep_token_id)
    cfg = AutoConfig.for_model(family, vocab_size=VOCAB, max_position_embeddings=40,
                               pad_token_id=tok.pad_token_id, **overrides)
    torch.manual_seed(seed)
    # eager: the plain attention math (sdpa agrees to ~1e-7 on real tokens).
    model = AutoModel.from_config(cfg, attn_implementation="eager")
    randomize(model, seed)
    out = ROOT / family
    raw = out / "raw"
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(raw)
    tok.save_pretrained(raw)
    tr = Transformer(str(raw), max_seq_length=MAX_SEQ)
    st = SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "mean")], device="cpu")
    st.save(str(out / "model"))
    shutil.rmtree(raw)
    (out / "model" / "README.md").unlink(missing_ok=True)

    # The reference, from the folder as committed.
    st = SentenceTransformer(str(out / "model"), device="cpu")
    st.eval()
    assert st.max_seq_length == MAX_SEQ, st.max_seq_length
    features = st[0].preprocess(TEXTS)
    inputs = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
    result = st(dict(features))
    hidden, emb = result["token_embeddings"], result["sentence_embedding"]
    weights = torch.randn(emb.shape, generator=torch.Generator().manual_seed(seed + 1))
    loss = (emb * weights).sum()
    auto = st[0].model
    auto.zero_grad()
    loss.backward()
    tensors = {
        "input_ids": inputs["input_ids"].to(torch.int64).contiguous(),
        "attention_mask": inputs["attention_mask"].to(torch.int64).contiguous(),
        "hidden": hidden.detach().contiguous(),
        "embeddings": emb.detach().contiguous(),
        "weights": weights.contiguous(),
    }
    grads = {name: p.grad.detach().contiguous() for name, p in auto.named_parameters()
             if p.grad is not None and not name.startswith("pooler.")}
    grads = hub_grads(family, grads)
    from safetensors import safe_open
    with safe_open(str(out / "model" / "model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k).shape for k in f.keys()}
    assert {k: v.shape for k, v in grads.items()} == saved, (sorted(grads), sorted(saved))
    for name, g in grads.items():
        tensors[f"grad.{name}"] = g.contiguous()
    save_file(tensors, str(out / "reference.safetensors"))
    meta = {
        "family": family,
        "texts": TEXTS,
        "max_seq_length": MAX_SEQ,
        "loss": "sum(embeddings * weights), eval mode (no dropout)",
        "pad_token_id": tok.pad_token_id,
        "versions": {"transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__,
                     "torch": torch.__version__},
    }
    (out / "reference.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    n_grads = sum(k.startswith("grad.") for k in tensors)
    print(f"{family}: {tuple(inputs['input_ids'].shape)} tokens, {n_grads} gradients -> {out}")


if __name__ == "__main__":
    names = sys.argv[1:] or list(families())
    for i, fam in enumerate(names):
        make(fam, seed=1000 + list(families()).index(fam))
