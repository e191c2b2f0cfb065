//! The seam between a family's transformer and the rest: the [`Encoder`] trait (token batch →
//! hidden states `[B, S, H]`), the per-call [`Fwd`] (execution path, compute dtype, whether a
//! graph is built, and where this pass's dropout masks come from) and the dropout rates.
//! Dropout is seeded per forward call: a pass draws one seed per dropout site, in order, from the
//! RNG it was given, so the same RNG state replays the same masks. Depends on `ops`, `rng` and
//! `tokenize::TokenBatch`.

use super::lazy_rows::LazyRows;
use super::st_read::LazySource;
use crate::ops::{AttnMask, Dropout, Exec, Packed};
use crate::rng::Rng;
use crate::tokenize::TokenBatch;
use candle_core::{DType, Device, Result, Tensor, Var};
use std::cell::RefCell;
use std::sync::Arc;

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
    /// LoRA: the effective weight of each adapted parameter, by the parameter's tensor id
    /// (`model::lora`); `param` hands these out instead.
    lora: Option<std::collections::HashMap<candle_core::TensorId, Tensor>>,
    /// The layout of the batch when it is packed: its dropout masks use the padded layout's
    /// counters (`ops::packed`).
    packed: Option<Arc<Packed>>,
}

impl Fwd {
    /// Inference: eval mode, no graph.
    pub fn inference(exec: Exec, compute: DType) -> Self {
        Self {
            exec,
            compute,
            grad: false,
            dropout: None,
            lora: None,
            packed: None,
        }
    }

    /// For a batch packed as `packed` (none: padded).
    pub fn with_packing(mut self, packed: Option<Arc<Packed>>) -> Self {
        self.packed = packed;
        self
    }

    /// With LoRA's effective weights (see `model::lora::Lora::effective`).
    pub fn with_lora(
        mut self,
        lora: Option<std::collections::HashMap<candle_core::TensorId, Tensor>>,
    ) -> Self {
        self.lora = lora;
        self
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
        (p > 0.0)
            .then(|| Dropout::new(p, rng.borrow_mut().next_u64()).on_packed(self.packed.clone()))
    }

    /// The RNG after this pass (its state moved past every seed drawn).
    pub fn into_rng(self) -> Option<Rng> {
        self.dropout.map(RefCell::into_inner)
    }

    /// A parameter as this pass uses it: tracked for autograd, or detached (no graph is kept, so
    /// activations are freed as soon as they are used). In its stored dtype; ops cast as needed.
    pub fn param(&self, v: &Var) -> Tensor {
        if let Some(w) = self.lora.as_ref().and_then(|m| m.get(&v.as_tensor().id())) {
            return w.clone();
        }
        if self.grad {
            v.as_tensor().clone()
        } else {
            v.as_detached_tensor()
        }
    }
}

/// What every encoder holds besides its blocks: the family name, sizes, parameters by HF name,
/// carried-through tensors, dropout rates, the weights' dtype and device. Built from the loaded
/// parameters by `nn::ParamStore::into_base`.
pub struct EncoderBase {
    pub family: &'static str,
    pub hidden: usize,
    pub max_tokens: usize,
    /// Every trainable parameter by HF name, in checkpoint order.
    pub vars: Vec<(String, Var)>,
    /// Tensors carried through for saving but unused (e.g. `pooler.*`).
    pub extra: Vec<(String, Tensor)>,
    pub dropout: DropoutRates,
    pub dtype: DType,
    pub device: Device,
    /// Word-embedding tables read a row at a time (inference on the CPU; `lazy_rows`).
    pub lazy: Vec<LazyRows>,
    /// Linear weights held transposed, `[in, out]` (inference on the CPU), by name: saving
    /// writes them back as `[out, in]`.
    pub transposed: std::collections::HashSet<String>,
}

impl EncoderBase {
    /// Takes the tables `st_read::load_lazy` left unread (by tensor id): the parameters among
    /// them are read a row at a time from now on ([`Self::read_rows`]); any other is read whole.
    pub fn attach_lazy(
        &mut self,
        unread: Vec<(candle_core::TensorId, LazySource)>,
    ) -> anyhow::Result<()> {
        for (id, src) in unread {
            let param = self.vars.iter().find(|(_, v)| v.as_tensor().id() == id);
            match param {
                Some((_, v)) => self.lazy.push(LazyRows::new(v.clone(), src)?),
                None => match self.extra.iter().find(|(_, t)| t.id() == id) {
                    Some((_, t)) => LazyRows::new(Var::from_tensor(t)?, src)?.ensure_all()?,
                    None => anyhow::bail!("a lazily read table is not among the encoder's tensors"),
                },
            }
        }
        Ok(())
    }

    /// Reads the rows of the token ids `ids` that lazily read tables do not hold yet (every
    /// encoder's forward starts with it; nothing without lazy tables).
    pub fn read_rows(&self, ids: &[u32]) -> Result<()> {
        self.lazy.iter().try_for_each(|l| l.ensure(ids))
    }

    /// Reads every row of the lazily read tables (before saving or training them).
    pub fn read_all_rows(&self) -> Result<()> {
        self.lazy.iter().try_for_each(|l| l.ensure_all())
    }

    /// What both encoders do first with a batch: its length S (a packed batch's longest
    /// sequence) checked against the positions, and its attention mask in the form `fwd`'s
    /// path wants (packed or padded).
    pub fn seq_and_mask(&self, batch: &TokenBatch, fwd: &Fwd) -> Result<(usize, AttnMask)> {
        let s = batch.seq().map_err(candle_core::Error::wrap)?;
        if s > self.max_tokens {
            candle_core::bail!(
                "sequence length {s} exceeds the model's {} positions",
                self.max_tokens
            );
        }
        let mask = AttnMask::for_batch(
            fwd.exec,
            &batch.attention_mask,
            batch.packed.as_ref(),
            fwd.compute,
        )?;
        Ok((s, mask))
    }
}

/// A family's transformer: token ids to the last layer's hidden states. Implemented by
/// `nn::PostNormEncoder` (the BERT-like families) and `nn::RotaryEncoder` (ModernBERT,
/// NomicBERT, GTE); everything but the forward and the layer count comes from their
/// [`EncoderBase`]. Nothing outside `model/` sees a family's fields.
pub trait Encoder: Send + Sync {
    fn base(&self) -> &EncoderBase;
    fn base_mut(&mut self) -> &mut EncoderBase;
    /// Hidden states `[B, S, H]` of the last layer, in the weights' dtype (a packed batch:
    /// `[1, T, H]`, only where [`Self::packs`]).
    fn forward(&self, batch: &TokenBatch, fwd: &Fwd) -> Result<Tensor>;
    fn num_layers(&self) -> usize;
    /// Whether `forward` takes packed batches on this execution path (both encoders: on the
    /// CPU fused path).
    fn packs(&self, _exec: Exec) -> bool {
        false
    }

    /// The family name (`config.json`'s model_type family: "bert", "roberta", …).
    fn family(&self) -> &'static str {
        self.base().family
    }
    fn hidden_size(&self) -> usize {
        self.base().hidden
    }
    /// The most tokens one sequence may have (special tokens included): the position table's
    /// usable rows.
    fn max_tokens(&self) -> usize {
        self.base().max_tokens
    }
    /// Trainable parameters by HF name (no prefix), in checkpoint order.
    fn vars(&self) -> &[(String, Var)] {
        &self.base().vars
    }
    /// Everything that goes into `model.safetensors`, HF names, parameters first.
    fn tensors_for_save(&self) -> Vec<(String, Tensor)> {
        let b = self.base();
        let mut v: Vec<(String, Tensor)> = b
            .vars
            .iter()
            .map(|(n, var)| {
                let t = var.as_detached_tensor();
                match b.transposed.contains(n) {
                    // `[in, out]` back to the checkpoint's `[out, in]`, as a view (saving makes
                    // it contiguous); the transpose of a 2-D tensor cannot fail.
                    true => (n.clone(), t.t().unwrap_or(t)),
                    false => (n.clone(), t),
                }
            })
            .collect();
        v.extend(b.extra.iter().cloned());
        v
    }
    fn dropout(&self) -> DropoutRates {
        self.base().dropout
    }
    fn set_dropout(&mut self, rates: DropoutRates) {
        self.base_mut().dropout = rates;
    }
    /// Dtype of the stored (master) weights: f32 for loaded models.
    fn dtype(&self) -> DType {
        self.base().dtype
    }
    fn device(&self) -> &Device {
        &self.base().device
    }
}
