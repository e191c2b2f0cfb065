//! Building blocks shared by the encoder families, each a thin owner of its parameters over the
//! `ops` of its computation (which pick the execution path): `params` (a checkpoint's tensors as
//! named `Var`s), `Linear` and `LayerNorm` (here), `embeddings` (word + absolute positions, from
//! 0 or RoBERTa-style after the padding index, + token types, then LayerNorm), `relative`
//! (MPNet's bucketed relative position bias), `block` (the post-norm transformer layer:
//! attention, its output sublayer, the feed-forward sublayer) and `encoder` (a stack of them: the
//! one `Encoder` implementation). Pre-norm blocks, rotary positions and gated MLPs belong to the
//! next families (ModernBERT, NomicBERT, GTE). Depends on `ops`, `model::encoder`, `tokenize`.

pub mod block;
pub mod embeddings;
pub mod encoder;
pub mod params;
pub mod relative;

pub use block::{LayerDims, LayerNames, PostNormLayer};
pub use embeddings::{Embeddings, Positions};
pub use encoder::PostNormEncoder;
pub use params::ParamStore;
pub use relative::RelativeBias;

use super::encoder::Fwd;
use candle_core::{Result, Tensor, Var};

/// `y = x · Wᵀ + b`; `w: [out, in]`, `b: [out]` (HF's `nn.Linear`).
#[derive(Clone)]
pub struct Linear {
    pub w: Var,
    pub b: Option<Var>,
}

impl Linear {
    /// `<prefix>.weight` and `<prefix>.bias` of `store`.
    pub fn load(store: &ParamStore, prefix: &str) -> Result<Self> {
        Ok(Self {
            w: store.var(&format!("{prefix}.weight"))?,
            b: Some(store.var(&format!("{prefix}.bias"))?),
        })
    }

    /// The weight and bias as this pass uses them.
    pub fn get(&self, fwd: &Fwd) -> (Tensor, Option<Tensor>) {
        (fwd.param(&self.w), self.b.as_ref().map(|b| fwd.param(b)))
    }
}

/// LayerNorm with weight and bias over the last dim.
#[derive(Clone)]
pub struct LayerNorm {
    pub w: Var,
    pub b: Var,
    pub eps: f64,
}

impl LayerNorm {
    /// `<prefix>.weight` and `<prefix>.bias` of `store`.
    pub fn load(store: &ParamStore, prefix: &str, eps: f64) -> Result<Self> {
        Ok(Self {
            w: store.var(&format!("{prefix}.weight"))?,
            b: store.var(&format!("{prefix}.bias"))?,
            eps,
        })
    }

    pub fn get(&self, fwd: &Fwd) -> (Tensor, Tensor, f64) {
        (fwd.param(&self.w), fwd.param(&self.b), self.eps)
    }
}
