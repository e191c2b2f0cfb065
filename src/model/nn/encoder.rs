//! The one `Encoder` implementation: embeddings → dropout → a stack of post-norm layers, with
//! an optional relative position bias computed once per pass and shared by every layer (MPNet).
//! Families build it from their weight names (`model::family`). Depends on `ops`, `nn`,
//! `model::encoder`, `tokenize::TokenBatch`.

use super::{Embeddings, ParamStore, PostNormLayer, RelativeBias};
use crate::model::encoder::{DropoutRates, Encoder, Fwd};
use crate::ops::{self, AttnMask};
use crate::tokenize::TokenBatch;
use candle_core::{DType, Device, Result, Tensor, Var};

pub struct PostNormEncoder {
    pub family: &'static str,
    pub embeddings: Embeddings,
    pub layers: Vec<PostNormLayer>,
    pub relative: Option<RelativeBias>,
    pub hidden: usize,
    pub max_tokens: usize,
    /// Every trainable parameter by HF name, in checkpoint order.
    pub vars: Vec<(String, Var)>,
    /// Tensors carried through for saving but unused (e.g. `pooler.*`).
    pub extra: Vec<(String, Tensor)>,
    pub dropout: DropoutRates,
    pub dtype: DType,
    pub device: Device,
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
        Self {
            family,
            hidden: embeddings.hidden,
            embeddings,
            layers,
            relative,
            max_tokens,
            vars: store.vars,
            extra: store.extra,
            dropout,
            dtype: store.dtype,
            device: store.device,
        }
    }
}

impl Encoder for PostNormEncoder {
    fn family(&self) -> &'static str {
        self.family
    }

    fn forward(&self, batch: &TokenBatch, fwd: &Fwd) -> Result<Tensor> {
        let (_, s) = batch.input_ids.dims2()?;
        if s > self.max_tokens {
            candle_core::bail!(
                "sequence length {s} exceeds the model's {} positions",
                self.max_tokens
            );
        }
        let x = self.embeddings.forward(batch, fwd)?;
        let mut x = ops::dropout(fwd.exec, &x, fwd.dropout(self.dropout.hidden))?;
        let mask = AttnMask::new(fwd.exec, &batch.attention_mask, fwd.compute)?;
        let bias = self
            .relative
            .as_ref()
            .map(|r| r.forward(s, fwd))
            .transpose()?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask, bias.as_ref(), fwd, self.dropout)?;
        }
        // Back to the weights' dtype (f32; f64 for the gradient-check model).
        if x.dtype() == self.dtype {
            Ok(x)
        } else {
            x.to_dtype(self.dtype)
        }
    }

    fn hidden_size(&self) -> usize {
        self.hidden
    }
    fn num_layers(&self) -> usize {
        self.layers.len()
    }
    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }
    fn tensors_for_save(&self) -> Vec<(String, Tensor)> {
        super::params::tensors_for_save(&self.vars, &self.extra)
    }
    fn dropout(&self) -> DropoutRates {
        self.dropout
    }
    fn set_dropout(&mut self, rates: DropoutRates) {
        self.dropout = rates;
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn device(&self) -> &Device {
        &self.device
    }
}
