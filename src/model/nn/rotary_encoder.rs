//! The `Encoder` of the rotary families (ModernBERT, NomicBERT, GTE): token embeddings (word +
//! token types when the family has them, no position table) → norm → dropout → a stack of
//! [`GatedLayer`]s, each with its rotary table (ModernBERT's global and local layers use two
//! bases; the tables are computed once per pass for the batch's length) → an optional final
//! norm (pre-norm families). Families build it from their weight names (`model::family`). It
//! takes packed batches on the CPU fused path (rotary positions and windows per sequence).
//! Depends on `ops`, `nn`, `model::{encoder, weights}`, `tokenize::TokenBatch`.

use super::gated::{GatedLayer, GatedRates};
use super::rope::RopeSpec;
use super::{LayerNorm, ParamStore};
use crate::model::encoder::{DropoutRates, Encoder, EncoderBase, Fwd};
use crate::model::weights::{Init, WeightSpec};
use crate::ops::{self, Exec, Window};
use crate::tokenize::TokenBatch;
use candle_core::{Result, Tensor, Var};

/// Word rows (+ token-type rows), summed and normed.
pub struct TokenEmbeddings {
    pub word: Var,
    pub token_type: Option<Var>,
    pub norm: LayerNorm,
}

/// BERT's names for word and token-type rows (NomicBERT and GTE keep them).
const WORD: &str = "embeddings.word_embeddings.weight";
const TYPES: &str = "embeddings.token_type_embeddings.weight";

impl TokenEmbeddings {
    /// Adds BERT-named word `[vocab, H]` and (with `types` > 0) token-type `[types, H]` rows and
    /// the norm `norm` (with bias) to `spec`.
    pub fn bert_spec(spec: &mut WeightSpec, (vocab, types, h): (usize, usize, usize), norm: &str) {
        spec.tensor(WORD, vec![vocab, h], Init::Normal);
        if types > 0 {
            spec.tensor(TYPES, vec![types, h], Init::Normal);
        }
        spec.norm(norm, h);
    }

    /// The block [`TokenEmbeddings::bert_spec`] lists.
    pub fn bert_load(store: &ParamStore, types: usize, norm: &str, eps: f64) -> Result<Self> {
        Ok(Self {
            word: store.var(WORD)?,
            token_type: (types > 0).then(|| store.var(TYPES)).transpose()?,
            norm: LayerNorm::load(store, norm, eps)?,
        })
    }

    /// `[B, S, H]` in the compute dtype.
    pub fn forward(&self, batch: &TokenBatch, fwd: &Fwd) -> Result<Tensor> {
        let (b, s) = batch.input_ids.dims2()?;
        let exec = fwd.exec;
        let table = fwd.param(&self.word);
        let h = table.dim(1)?;
        let words = ops::embedding(exec, &table, &batch.input_ids)?.reshape((b, s, h))?;
        let mut parts = vec![words];
        if let Some(tt) = &self.token_type {
            let tt = fwd.param(tt);
            parts.push(if batch.single_segment {
                tt.narrow(0, 0, 1)?
            } else {
                ops::embedding(exec, &tt, &batch.token_type_ids)?.reshape((b, s, h))?
            });
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        let (w, bias, eps) = self.norm.get(fwd)?;
        let x = ops::sum_layer_norm(exec, &refs, &w, &bias, eps, fwd.grad)?;
        x.to_dtype(fwd.compute)
    }
}

/// The blocks of a rotary encoder, as a family builds them.
pub struct RotaryParts {
    pub embeddings: TokenEmbeddings,
    pub layers: Vec<GatedLayer>,
    /// The distinct rotary settings; each layer names one by index.
    pub ropes: Vec<RopeSpec>,
    pub final_norm: Option<LayerNorm>,
    /// The sliding window half-width of the local layers (|i − j| ≤ w).
    pub window: Option<usize>,
    /// The attention output's dropout uses the attention rate (ModernBERT's `out_drop`) rather
    /// than the hidden one (NomicBERT, GTE).
    pub attn_out_uses_attention_rate: bool,
}

pub struct RotaryEncoder {
    pub parts: RotaryParts,
    pub base: EncoderBase,
}

impl RotaryEncoder {
    pub fn new(
        family: &'static str,
        parts: RotaryParts,
        sizes: (usize, usize),
        dropout: DropoutRates,
        store: ParamStore,
    ) -> Self {
        Self {
            parts,
            base: store.into_base(family, sizes, dropout),
        }
    }

    fn rates(&self) -> GatedRates {
        let d = self.base.dropout;
        GatedRates {
            attn_probs: d.attention,
            attn_out: if self.parts.attn_out_uses_attention_rate {
                d.attention
            } else {
                d.hidden
            },
            mlp: d.hidden,
        }
    }
}

impl Encoder for RotaryEncoder {
    fn base(&self) -> &EncoderBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut EncoderBase {
        &mut self.base
    }

    fn forward(&self, batch: &TokenBatch, fwd: &Fwd) -> Result<Tensor> {
        self.base.read_rows(&batch.ids)?;
        let (s, mask) = self.base.seq_and_mask(batch, fwd)?;
        let x = self.parts.embeddings.forward(batch, fwd)?;
        let mut x = ops::dropout(fwd.exec, &x, fwd.dropout(self.base.dropout.hidden))?;
        let tables = self
            .parts
            .ropes
            .iter()
            .map(|r| match fwd.exec {
                // The CPU fused op reads the host tables; the others rotate tensors.
                Exec::CpuFused => r.table(s),
                _ => r.table(s)?.with_device_tables(batch.input_ids.device()),
            })
            .collect::<Result<Vec<_>>>()?;
        let window = self
            .parts
            .window
            .map(|w| Window::new(fwd.exec, s, w, fwd.compute, batch.input_ids.device()))
            .transpose()?;
        let rates = self.rates();
        for layer in &self.parts.layers {
            let Some(table) = tables.get(layer.rope) else {
                candle_core::bail!("internal: a layer names rotary table {}", layer.rope);
            };
            x = layer.forward(&x, &mask, (table, window.as_ref()), fwd, rates)?;
        }
        if let Some(n) = &self.parts.final_norm {
            let (w, b, eps) = n.get(fwd)?;
            x = ops::layer_norm(fwd.exec, &x, &w, &b, eps, fwd.grad)?;
        }
        if x.dtype() == self.base.dtype {
            Ok(x)
        } else {
            x.to_dtype(self.base.dtype)
        }
    }

    fn num_layers(&self) -> usize {
        self.parts.layers.len()
    }

    fn packs(&self, exec: Exec) -> bool {
        matches!(exec, Exec::CpuFused | Exec::CudaFused)
    }
}
