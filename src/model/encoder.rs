//! The seam between a family's transformer and the rest: the [`Encoder`] trait (token batch →
//! hidden states `[B, S, H]`), the per-call [`Fwd`] (execution path, compute dtype, whether a
//! graph is built, and where this pass's dropout masks come from) and the dropout rates.
//! Dropout is seeded per forward call: a pass draws one seed per dropout site, in order, from the
//! RNG it was given, so the same RNG state replays the same masks. Depends on `ops`, `rng` and
//! `tokenize::TokenBatch`.

use crate::ops::{Dropout, Exec};
use crate::rng::Rng;
use crate::tokenize::TokenBatch;
use candle_core::{DType, Device, Result, Tensor, Var};
use std::cell::RefCell;

/// Dropout rates in effect (config.json's unless overridden).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutRates {
    /// Hidden states: embeddings and each sublayer's output.
    pub hidden: f64,
    /// Attention probabilities.
    pub attention: f64,
}

/// How one forward pass runs.
pub struct Fwd {
    pub exec: Exec,
    /// The dtype the layers compute in (weights are cast on the fly; outputs come back in the
    /// weights' dtype).
    pub compute: DType,
    /// Build an autograd graph (parameters tracked); false for inference.
    pub grad: bool,
    /// Train mode: dropout seeds come from this RNG. `None`: eval mode, no dropout.
    dropout: Option<RefCell<Rng>>,
}

impl Fwd {
    /// Inference: eval mode, no graph.
    pub fn inference(exec: Exec, compute: DType) -> Self {
        Self {
            exec,
            compute,
            grad: false,
            dropout: None,
        }
    }

    /// Eval mode with a graph (gradients without dropout).
    pub fn eval(exec: Exec, compute: DType) -> Self {
        Self {
            grad: true,
            ..Self::inference(exec, compute)
        }
    }

    /// Train mode: a graph, and dropout masks seeded from `rng` (see [`Fwd::dropout`]).
    pub fn train(exec: Exec, compute: DType, rng: Rng) -> Self {
        Self {
            dropout: Some(RefCell::new(rng)),
            ..Self::eval(exec, compute)
        }
    }

    /// Train mode without a graph: dropout masks as [`Fwd::train`] draws them (the same RNG state
    /// gives the same masks), nothing kept for a backward (GradCache's first pass).
    pub fn train_no_graph(exec: Exec, compute: DType, rng: Rng) -> Self {
        Self {
            dropout: Some(RefCell::new(rng)),
            ..Self::inference(exec, compute)
        }
    }

    pub fn train_mode(&self) -> bool {
        self.dropout.is_some()
    }

    /// The dropout of the next site at rate `p`: `None` in eval mode or when `p` is 0, else a
    /// mask seeded by the next value of this pass's RNG.
    pub fn dropout(&self, p: f64) -> Option<Dropout> {
        let rng = self.dropout.as_ref()?;
        (p > 0.0).then(|| Dropout::new(p, rng.borrow_mut().next_u64()))
    }

    /// The RNG after this pass (its state moved past every seed drawn).
    pub fn into_rng(self) -> Option<Rng> {
        self.dropout.map(RefCell::into_inner)
    }

    /// A parameter as this pass uses it: tracked for autograd, or detached (no graph is kept, so
    /// activations are freed as soon as they are used). In its stored dtype; ops cast as needed.
    pub fn param(&self, v: &Var) -> Tensor {
        if self.grad {
            v.as_tensor().clone()
        } else {
            v.as_detached_tensor()
        }
    }
}

/// A family's transformer: token ids to the last layer's hidden states. Implemented once for the
/// post-norm families (`nn::PostNormEncoder`); nothing outside `model/` sees a family's fields.
pub trait Encoder: Send + Sync {
    /// The family name (`config.json`'s model_type family: "bert", "roberta", …).
    fn family(&self) -> &'static str;
    /// Hidden states `[B, S, H]` of the last layer, in the weights' dtype.
    fn forward(&self, batch: &TokenBatch, fwd: &Fwd) -> Result<Tensor>;
    fn hidden_size(&self) -> usize;
    fn num_layers(&self) -> usize;
    /// The most tokens one sequence may have (special tokens included): the position table's
    /// usable rows.
    fn max_tokens(&self) -> usize;
    /// Trainable parameters by HF name (no prefix), in checkpoint order.
    fn vars(&self) -> &[(String, Var)];
    /// Everything that goes into `model.safetensors`, HF names, parameters first.
    fn tensors_for_save(&self) -> Vec<(String, Tensor)>;
    fn dropout(&self) -> DropoutRates;
    fn set_dropout(&mut self, rates: DropoutRates);
    /// Dtype of the stored (master) weights: f32 for loaded models.
    fn dtype(&self) -> DType;
    fn device(&self) -> &Device;
}
