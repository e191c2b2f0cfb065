//! The transformer layer of the rotary families (ModernBERT, NomicBERT, GTE): fused q|k|v
//! projection `[3H, H]` rotated by RoPE, full or sliding-window attention, and a gated MLP
//! (`down(act(a)·b)` from one `[2I, H]` up-projection or two `[I, H]` ones), with the norms
//! before each sublayer (pre-norm, ModernBERT: `x + attn(norm(x))`, the first layer's norm may be
//! the identity) or after each residual (post-norm, NomicBERT and GTE: `norm(x + attn(x))`).
//! Linear layers and norms may be bias-free. Dropout sites, in seed order: attention
//! probabilities, attention output, MLP (before the down-projection for ModernBERT and GTE, after
//! it for NomicBERT). Depends on `ops`, `nn`, `model::encoder`.

use super::{LayerNorm, Linear};
use crate::model::encoder::Fwd;
use crate::ops::{self, Act, AttnArgs, AttnMask, Dropout, Projection, Qkv, Rotary, Window};
use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Pre,
    Post,
}

/// Where the MLP's dropout sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpDropout {
    /// On `act(a)·b`, before the down-projection (ModernBERT, GTE).
    BeforeDown,
    /// On the down-projection's output (NomicBERT).
    AfterDown,
}

/// The up-projection of a gated MLP as a checkpoint stores it.
pub enum GateUp {
    /// One `[2I, H]` weight; `act_first`: the activated half is rows `0..I` (ModernBERT's `Wi`)
    /// or `I..2I` (GTE's `up_gate_proj`, whose second half is the gate).
    Fused { w: Linear, act_first: bool },
    /// Two `[I, H]` weights (NomicBERT's `fc12` gate, `fc11` up).
    Split { gate: Linear, up: Linear },
}

impl GateUp {
    /// The up projection of `m`, `[.., 2I]`, and whether its first half is the activated one.
    /// A split pair is one product over both weights (`ops::linear_rows`: no join of the
    /// weights where the path can avoid it).
    fn product(&self, exec: ops::Exec, m: &Tensor, fwd: &Fwd) -> Result<(Tensor, bool)> {
        Ok(match self {
            GateUp::Fused { w, act_first } => {
                let (w, b) = w.get(fwd);
                (ops::linear(exec, m, &w, b.as_ref())?, *act_first)
            }
            GateUp::Split { gate, up } => {
                let ((gw, gb), (uw, ub)) = (gate.get(fwd), up.get(fwd));
                if gb.is_some() != ub.is_some() {
                    candle_core::bail!("gated MLP: one of its two projections has a bias");
                }
                let parts = [(&gw, gb.as_ref()), (&uw, ub.as_ref())];
                (ops::linear_rows(exec, m, &parts)?, true)
            }
        })
    }
}

/// Dropout rates of the layer's sites.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatedRates {
    pub attn_probs: f64,
    pub attn_out: f64,
    pub mlp: f64,
}

pub struct GatedLayer {
    /// `[3H, H]`: q rows, then k, then v; head h is rows `h·hd..` of each.
    pub qkv: Linear,
    pub heads: usize,
    pub out: Linear,
    /// Pre: before attention (`None`: identity); Post: after the attention residual.
    pub attn_norm: Option<LayerNorm>,
    pub gate_up: GateUp,
    pub act: Act,
    pub down: Linear,
    pub mlp_norm: LayerNorm,
    pub placement: Placement,
    pub mlp_dropout: MlpDropout,
    /// Index of this layer's rotary table in the encoder's list.
    pub rope: usize,
    /// A local layer: attention within the encoder's sliding window (ModernBERT); else global.
    pub local: bool,
}

impl GatedLayer {
    /// `x: [B, S, H]` (compute dtype) → the same shape; `window`: the encoder's sliding window
    /// for this forward (used by local layers).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &AttnMask,
        (rotary, window): (&Rotary, Option<&Window>),
        fwd: &Fwd,
        rates: GatedRates,
    ) -> Result<Tensor> {
        let (exec, grad) = (fwd.exec, fwd.grad);
        if self.local && window.is_none() {
            candle_core::bail!("internal: a local attention layer without a window");
        }
        let (w, b) = self.qkv.get(fwd);
        let qkv = || {
            Qkv::Packed(Projection {
                w: &w,
                b: b.as_ref(),
            })
        };
        let args = AttnArgs {
            heads: self.heads,
            dropout: fwd.dropout(rates.attn_probs),
            bias: None,
            rotary: Some(rotary),
            window: window.filter(|_| self.local),
        };
        let norm = |n: &LayerNorm, t: &Tensor| -> Result<Tensor> {
            let (nw, nb, eps) = n.get(fwd)?;
            ops::layer_norm(exec, t, &nw, &nb, eps, grad)
        };
        let (ow, ob) = self.out.get(fwd);
        let x = match self.placement {
            Placement::Pre => {
                let a = match &self.attn_norm {
                    Some(n) => norm(n, x)?,
                    None => x.clone(),
                };
                let ctx = ops::attention(exec, &a, qkv(), mask, args, grad)?;
                let y = ops::linear(exec, &ctx, &ow, ob.as_ref())?;
                (x + ops::dropout(exec, &y, fwd.dropout(rates.attn_out))?)?
            }
            Placement::Post => {
                let ctx = ops::attention(exec, x, qkv(), mask, args, grad)?;
                let drop = fwd.dropout(rates.attn_out);
                self.post_residual(
                    &ctx,
                    (&ow, ob.as_ref()),
                    x,
                    self.attn_norm.as_ref(),
                    drop,
                    fwd,
                )?
            }
        };
        let m = match self.placement {
            Placement::Pre => norm(&self.mlp_norm, &x)?,
            Placement::Post => x.clone(),
        };
        let (up, act_first) = self.gate_up.product(exec, &m, fwd)?;
        let g = ops::glu(exec, &up, self.act, act_first)?;
        let drop = fwd.dropout(rates.mlp);
        let (g, after) = match self.mlp_dropout {
            MlpDropout::BeforeDown => (ops::dropout(exec, &g, drop)?, None),
            MlpDropout::AfterDown => (g, drop),
        };
        let (dw, db) = self.down.get(fwd);
        match self.placement {
            Placement::Pre => {
                let y = ops::dropout(exec, &ops::linear(exec, &g, &dw, db.as_ref())?, after)?;
                x + y
            }
            Placement::Post => {
                self.post_residual(&g, (&dw, db.as_ref()), &x, Some(&self.mlp_norm), after, fwd)
            }
        }
    }

    /// `norm(dropout(t·Wᵀ + b) + residual)` (post-norm), one op on the fused paths.
    fn post_residual(
        &self,
        t: &Tensor,
        (w, b): (&Tensor, Option<&Tensor>),
        residual: &Tensor,
        norm: Option<&LayerNorm>,
        drop: Option<Dropout>,
        fwd: &Fwd,
    ) -> Result<Tensor> {
        let Some(norm) = norm else {
            candle_core::bail!("internal: a post-norm layer without its norm");
        };
        let (nw, nb, eps) = norm.get(fwd)?;
        ops::residual_norm(
            fwd.exec,
            t,
            (w, b),
            residual,
            (&nw, &nb, eps),
            drop,
            fwd.grad,
        )
    }
}
