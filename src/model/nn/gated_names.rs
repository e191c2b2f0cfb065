//! Where one [`GatedLayer`]'s tensors sit in a checkpoint, relative to the layer's prefix, and
//! which of them have biases: the weight spec (shapes, in checkpoint order) and the load from
//! the parameters. Depends on `nn`, `model::weights`.

use super::gated::{GateUp, GatedLayer, MlpDropout, Placement};
use super::{LayerNorm, Linear, ParamStore};
use crate::model::weights::WeightSpec;
use crate::ops::Act;
use candle_core::Result;

/// The gated MLP's up-projection names.
#[derive(Debug, Clone, Copy)]
pub enum UpNames {
    /// One `[2I, H]` tensor; `act_first` as in [`GateUp::Fused`].
    Fused { name: &'static str, act_first: bool },
    /// `gate` (activated) and `up`, `[I, H]` each.
    Split {
        gate: &'static str,
        up: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct GatedNames {
    pub qkv: &'static str,
    pub out: &'static str,
    /// `None`: this layer has no attention norm (ModernBERT's layer 0).
    pub attn_norm: Option<&'static str>,
    pub up: UpNames,
    pub down: &'static str,
    pub mlp_norm: &'static str,
}

/// Sizes, biases and settings of one layer.
#[derive(Debug, Clone, Copy)]
pub struct GatedDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub act: Act,
    pub eps: f64,
    /// Biases of the q|k|v and attention output projections, the up-projection(s), the
    /// down-projection and the norms.
    pub bias: GatedBiases,
    pub placement: Placement,
    pub mlp_dropout: MlpDropout,
}

#[derive(Debug, Clone, Copy)]
pub struct GatedBiases {
    pub qkv: bool,
    pub out: bool,
    pub up: bool,
    pub down: bool,
    pub norm: bool,
}

impl GatedNames {
    /// Adds the layer's tensors under `prefix` to `spec`.
    pub fn spec(&self, spec: &mut WeightSpec, prefix: &str, d: GatedDims) {
        let (h, i, b) = (d.hidden, d.intermediate, d.bias);
        let at = |n: &str| format!("{prefix}.{n}");
        if d.placement == Placement::Pre {
            if let Some(n) = self.attn_norm {
                spec.norm_with(&at(n), h, b.norm);
            }
        }
        spec.linear_with(&at(self.qkv), 3 * h, h, b.qkv);
        spec.linear_with(&at(self.out), h, h, b.out);
        if d.placement == Placement::Post {
            if let Some(n) = self.attn_norm {
                spec.norm_with(&at(n), h, b.norm);
            }
        }
        if d.placement == Placement::Pre {
            spec.norm_with(&at(self.mlp_norm), h, b.norm);
        }
        match self.up {
            UpNames::Fused { name, .. } => spec.linear_with(&at(name), 2 * i, h, b.up),
            UpNames::Split { gate, up } => {
                // Checkpoint order: NomicBERT stores fc11 (up) before fc12 (gate).
                spec.linear_with(&at(up), i, h, b.up);
                spec.linear_with(&at(gate), i, h, b.up);
            }
        }
        spec.linear_with(&at(self.down), h, i, b.down);
        if d.placement == Placement::Post {
            spec.norm_with(&at(self.mlp_norm), h, b.norm);
        }
    }

    /// The layer under `prefix`; `rope` indexes the encoder's rotary tables, `local`: attention
    /// within the encoder's sliding window.
    pub fn load(
        &self,
        store: &ParamStore,
        prefix: &str,
        d: GatedDims,
        (rope, local): (usize, bool),
    ) -> Result<GatedLayer> {
        let (b, at) = (d.bias, |n: &str| format!("{prefix}.{n}"));
        let norm = |n: &str| LayerNorm::load_with(store, &at(n), d.eps, b.norm);
        let gate_up = match self.up {
            UpNames::Fused { name, act_first } => GateUp::Fused {
                w: Linear::load_with(store, &at(name), b.up)?,
                act_first,
            },
            UpNames::Split { gate, up } => GateUp::Split {
                gate: Linear::load_with(store, &at(gate), b.up)?,
                up: Linear::load_with(store, &at(up), b.up)?,
            },
        };
        Ok(GatedLayer {
            qkv: Linear::load_with(store, &at(self.qkv), b.qkv)?,
            heads: d.heads,
            out: Linear::load_with(store, &at(self.out), b.out)?,
            attn_norm: self.attn_norm.map(norm).transpose()?,
            gate_up,
            act: d.act,
            down: Linear::load_with(store, &at(self.down), b.down)?,
            mlp_norm: norm(self.mlp_norm)?,
            placement: d.placement,
            mlp_dropout: d.mlp_dropout,
            rope,
            local,
        })
    }
}
