//! Building blocks shared by the encoder families, each a thin owner of its parameters over the
//! `ops` of its computation (which pick the execution path): `params` (a checkpoint's tensors as
//! named `Var`s), `Linear` and `LayerNorm` (here; either may be bias-free), `embeddings` (word +
//! absolute positions, from 0 or RoBERTa-style after the padding index, + token types, then
//! LayerNorm), `relative` (MPNet's bucketed relative position bias), `block` (the post-norm BERT
//! layer) and `encoder` (a stack of them); for the rotary families: `rope` (which rotary table a
//! layer uses), `gated` (pre- or post-norm layer with fused q|k|v, RoPE, optional sliding window
//! and a gated MLP), `gated_names` (its checkpoint names) and `rotary_encoder` (token embeddings →
//! gated layers → optional final norm). Depends on `ops`, `model::encoder`, `model::weights`,
//! `tokenize`.

pub mod block;
pub mod embeddings;
pub mod encoder;
pub mod gated;
pub mod gated_names;
pub mod params;
pub mod relative;
pub mod rope;
pub mod rotary_encoder;

pub use block::{LayerDims, LayerNames, PostNormLayer};
pub use embeddings::{Embeddings, Positions};
pub use encoder::PostNormEncoder;
pub use gated::{GatedLayer, MlpDropout, Placement};
pub use gated_names::{GatedBiases, GatedDims, GatedNames, UpNames};
pub use params::ParamStore;
pub use relative::RelativeBias;
pub use rope::{RopeScaling, RopeSpec};
pub use rotary_encoder::{RotaryEncoder, RotaryParts, TokenEmbeddings};

use super::encoder::Fwd;
use candle_core::{Result, Tensor, Var};

/// `y = x · Wᵀ + b`; `w: [out, in]`, `b: [out]` (HF's `nn.Linear`; `bias=False` layers have
/// none).
#[derive(Clone)]
pub struct Linear {
    pub w: Var,
    pub b: Option<Var>,
    /// `w` is held transposed, `[in, out]` (inference on the CPU): passes use its transpose.
    pub transposed: bool,
}

impl Linear {
    /// `<prefix>.weight` and `<prefix>.bias` of `store`.
    pub fn load(store: &ParamStore, prefix: &str) -> Result<Self> {
        Self::load_with(store, prefix, true)
    }

    /// `<prefix>.weight`, and `<prefix>.bias` when `bias`.
    pub fn load_with(store: &ParamStore, prefix: &str, bias: bool) -> Result<Self> {
        let (w, transposed) = store.linear_weight(&format!("{prefix}.weight"))?;
        Ok(Self {
            w,
            b: bias
                .then(|| store.var(&format!("{prefix}.bias")))
                .transpose()?,
            transposed,
        })
    }

    /// The weight (`[out, in]`: a view when held transposed) and bias as this pass uses them.
    pub fn get(&self, fwd: &Fwd) -> (Tensor, Option<Tensor>) {
        let w = fwd.param(&self.w);
        let w = match self.transposed {
            // A transpose of a 2-D tensor cannot fail.
            true => w.t().unwrap_or(w),
            false => w,
        };
        (w, self.b.as_ref().map(|b| fwd.param(b)))
    }
}

/// LayerNorm over the last dim, with weight and (unless `bias=False`, as ModernBERT's) bias.
#[derive(Clone)]
pub struct LayerNorm {
    pub w: Var,
    pub b: Option<Var>,
    pub eps: f64,
}

impl LayerNorm {
    /// `<prefix>.weight` and `<prefix>.bias` of `store`.
    pub fn load(store: &ParamStore, prefix: &str, eps: f64) -> Result<Self> {
        Self::load_with(store, prefix, eps, true)
    }

    /// `<prefix>.weight`, and `<prefix>.bias` when `bias`.
    pub fn load_with(store: &ParamStore, prefix: &str, eps: f64, bias: bool) -> Result<Self> {
        Ok(Self {
            w: store.var(&format!("{prefix}.weight"))?,
            b: bias
                .then(|| store.var(&format!("{prefix}.bias")))
                .transpose()?,
            eps,
        })
    }

    /// Weight, bias (zeros, a constant, when the norm has none) and eps for the ops.
    pub fn get(&self, fwd: &Fwd) -> Result<(Tensor, Tensor, f64)> {
        let w = fwd.param(&self.w);
        let b = match &self.b {
            Some(b) => fwd.param(b),
            None => w.zeros_like()?.detach(),
        };
        Ok((w, b, self.eps))
    }
}
