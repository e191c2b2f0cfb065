//! The BERT-like families' `Encoder`: embeddings → dropout → a stack of post-norm layers, with
//! an optional relative position bias computed once per pass and shared by every layer (MPNet).
//! Families build it from their weight names (`model::family`). It takes packed batches on the
//! CPU fused path (`Encoder::packs`). Depends on `ops`, `nn`,
//! `model::encoder`, `tokenize::TokenBatch`.

use super::{Embeddings, ParamStore, PostNormLayer, RelativeBias};
use crate::model::encoder::{DropoutRates, Encoder, EncoderBase, Fwd};
use crate::ops;
use crate::tokenize::TokenBatch;
use candle_core::{Result, Tensor};

pub struct PostNormEncoder {
    pub embeddings: Embeddings,
    pub layers: Vec<PostNormLayer>,
    pub relative: Option<RelativeBias>,
    pub base: EncoderBase,
}

impl PostNormEncoder {
    /// The encoder of `family` from its blocks; every parameter of `store` is trainable, its
    /// extra tensors are carried through for saving.
    pub fn new(
        family: &'static str,
        (embeddings, layers, relative): (Embeddings, Vec<PostNormLayer>, Option<RelativeBias>),
        max_tokens: usize,
        dropout: DropoutRates,
        store: ParamStore,
    ) -> Self {
        let base = store.into_base(family, (embeddings.hidden, max_tokens), dropout);
        Self {
            embeddings,
            layers,
            relative,
            base,
        }
    }
}

impl Encoder for PostNormEncoder {
    fn base(&self) -> &EncoderBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut EncoderBase {
        &mut self.base
    }

    fn forward(&self, batch: &TokenBatch, fwd: &Fwd) -> Result<Tensor> {
        self.base.read_rows(&batch.ids)?;
        let (s, mask) = self.base.seq_and_mask(batch, fwd)?;
        let x = self.embeddings.forward(batch, fwd)?;
        let mut x = ops::dropout(fwd.exec, &x, fwd.dropout(self.base.dropout.hidden))?;
        let bias = self
            .relative
            .as_ref()
            .map(|r| r.forward(s, fwd))
            .transpose()?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask, bias.as_ref(), fwd, self.base.dropout)?;
        }
        // Back to the weights' dtype (f32; f64 for the gradient-check model).
        if x.dtype() == self.base.dtype {
            Ok(x)
        } else {
            x.to_dtype(self.base.dtype)
        }
    }

    fn packs(&self, exec: ops::Exec) -> bool {
        matches!(exec, ops::Exec::CpuFused | ops::Exec::CudaFused)
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }
}
