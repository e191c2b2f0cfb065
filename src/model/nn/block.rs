//! The post-norm transformer layer of BERT, RoBERTa, DistilBERT and MPNet:
//! `x ← LayerNorm(dropout(attn_out(attention(x))) + x)`, then
//! `x ← LayerNorm(dropout(down(act(up(x)))) + x)`. DistilBERT has no dropout on the attention
//! output (`attn_out_dropout: false`). Dropout sites draw their seeds in this order: attention
//! probabilities, attention output, feed-forward output. [`LayerNames`] says where a family's
//! checkpoint keeps the layer's tensors. Depends on `ops`, `nn`, `model::weights`.

use super::{LayerNorm, Linear, ParamStore};
use crate::model::encoder::{DropoutRates, Fwd};
use crate::model::weights::WeightSpec;
use crate::ops::{self, Act, AttnArgs, AttnMask, Projection, Qkv};
use candle_core::{Result, Tensor};

pub struct PostNormLayer {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub heads: usize,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub attn_out_dropout: bool,
    pub up: Linear,
    pub act: Act,
    pub down: Linear,
    pub out_norm: LayerNorm,
}

impl PostNormLayer {
    /// `x: [B, S, H]` in the compute dtype → the same shape; `bias`: an additive score bias
    /// `[heads, S, S]` (relative positions).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &AttnMask,
        bias: Option<&Tensor>,
        fwd: &Fwd,
        rates: DropoutRates,
    ) -> Result<Tensor> {
        let (exec, grad) = (fwd.exec, fwd.grad);
        let (q, k, v) = (self.q.get(fwd), self.k.get(fwd), self.v.get(fwd));
        fn proj(p: &(Tensor, Option<Tensor>)) -> Projection<'_> {
            Projection {
                w: &p.0,
                b: p.1.as_ref(),
            }
        }
        let args = AttnArgs {
            heads: self.heads,
            dropout: fwd.dropout(rates.attention),
            bias,
            rotary: None,
            window: None,
        };
        let qkv = Qkv::Separate([proj(&q), proj(&k), proj(&v)]);
        let ctx = ops::attention(exec, x, qkv, mask, args, grad)?;
        let drop = if self.attn_out_dropout {
            fwd.dropout(rates.hidden)
        } else {
            None
        };
        let (ow, ob) = self.attn_out.get(fwd);
        let (nw, nb, eps) = self.attn_norm.get(fwd)?;
        let x = ops::residual_norm(
            exec,
            &ctx,
            (&ow, ob.as_ref()),
            x,
            (&nw, &nb, eps),
            drop,
            grad,
        )?;
        let (uw, ub) = self.up.get(fwd);
        let (dw, db) = self.down.get(fwd);
        let (nw, nb, eps) = self.out_norm.get(fwd)?;
        let drop = fwd.dropout(rates.hidden);
        ops::feed_forward_norm(
            exec,
            &x,
            (&uw, ub.as_ref()),
            self.act,
            (&dw, db.as_ref()),
            (&nw, &nb, eps),
            drop,
            grad,
        )
    }
}

/// Where one post-norm layer's tensors sit in a checkpoint, relative to the layer's prefix
/// (BERT: `attention.self.query`, …; DistilBERT: `attention.q_lin`, …).
pub struct LayerNames {
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub attn_out: &'static str,
    pub attn_norm: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    pub out_norm: &'static str,
}

/// Sizes and settings of a layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub act: Act,
    pub eps: f64,
    pub attn_out_dropout: bool,
}

impl LayerNames {
    /// Adds the layer's tensors under `prefix` to `spec`, in checkpoint order.
    pub fn spec(&self, spec: &mut WeightSpec, prefix: &str, d: LayerDims) {
        let (h, i) = (d.hidden, d.intermediate);
        let at = |n: &str| format!("{prefix}.{n}");
        for n in [self.q, self.k, self.v, self.attn_out] {
            spec.linear(&at(n), h, h);
        }
        spec.norm(&at(self.attn_norm), h);
        spec.linear(&at(self.up), i, h);
        spec.linear(&at(self.down), h, i);
        spec.norm(&at(self.out_norm), h);
    }

    /// The layer under `prefix` from `store`.
    pub fn load(&self, store: &ParamStore, prefix: &str, d: LayerDims) -> Result<PostNormLayer> {
        let at = |n: &str| format!("{prefix}.{n}");
        Ok(PostNormLayer {
            q: Linear::load(store, &at(self.q))?,
            k: Linear::load(store, &at(self.k))?,
            v: Linear::load(store, &at(self.v))?,
            heads: d.heads,
            attn_out: Linear::load(store, &at(self.attn_out))?,
            attn_norm: LayerNorm::load(store, &at(self.attn_norm), d.eps)?,
            attn_out_dropout: d.attn_out_dropout,
            up: Linear::load(store, &at(self.up))?,
            act: d.act,
            down: Linear::load(store, &at(self.down))?,
            out_norm: LayerNorm::load(store, &at(self.out_norm), d.eps)?,
        })
    }
}
