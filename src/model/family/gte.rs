//! GTE v1.5 (`model_type` "new" on the Hub, Alibaba-NLP/new-impl's custom code; "gte" in
//! transformers 5.24; gte-base-en-v1.5, gte-large-en-v1.5): post-norm layers with a fused
//! `qkv_proj` (with bias), RoPE over the whole head, a gated-GELU MLP `down(gelu(gate)·up)` from
//! one `up_gate_proj` `[2I, H]` (no bias; up is the first half, the gate the second), word (+
//! token-type when `type_vocab_size` > 0) embeddings with LayerNorm, no position table, no final
//! norm. Weight names are the Hub checkpoint's (`encoder.layer.N.attention.qkv_proj`, `attn_ln`,
//! `mlp.up_gate_proj`, `mlp_ln`; as text-embeddings-inference's gte.rs and the new-impl
//! modeling.py spell them), which transformers 5.24 also writes. Rotary scaling: the Hub's
//! `rope_scaling {"type": "ntk", "factor": f}` is a fixed rescale at every length,
//! `inv_freq = (θ·f)^(−2i/d) / f^(2/d)` (new-impl's NTKScalingRotaryEmbedding, which always
//! rebuilds its cache at max_positions·f), i.e. transformers' `linear` type with θ·f and factor
//! f^(2/d), which is how 5.24's `rope_parameters` spells it. Refused: `logn_attention_scale`,
//! RMSNorm, unpacked q/k/v. Depends on `model::{nn, weights, config, encoder}`.

use super::Arch;
use crate::model::config::{self as c, default_act, default_dropout};
use crate::model::encoder::{DropoutRates, Encoder};
use crate::model::nn::{
    GatedBiases, GatedDims, GatedNames, MlpDropout, ParamStore, Placement, RopeScaling, RopeSpec,
    RotaryEncoder, RotaryParts, TokenEmbeddings, UpNames,
};
use crate::model::weights::WeightSpec;
use crate::ops::Act;
use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct GteConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Act,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "one")]
    pub type_vocab_size: usize,
    #[serde(default = "c::default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    pub layer_norm_type: Option<String>,
    #[serde(default)]
    pub logn_attention_scale: bool,
    pub pack_qkv: Option<bool>,
    pub position_embedding_type: Option<String>,
}

fn positions() -> usize {
    8192
}
fn one() -> usize {
    1
}

const LAYER: GatedNames = GatedNames {
    qkv: "attention.qkv_proj",
    out: "attention.o_proj",
    attn_norm: Some("attn_ln"),
    up: UpNames::Fused {
        name: "mlp.up_gate_proj",
        act_first: false,
    },
    down: "mlp.down_proj",
    mlp_norm: "mlp_ln",
};

pub struct Gte {
    pub cfg: GteConfig,
    rope: RopeSpec,
}

impl Gte {
    /// `hub`: model_type "new" (the Hub's custom config; θ defaults to 10000) rather than
    /// transformers' "gte" (θ defaults to 160000).
    pub fn from_json(json: &Value, path: &Path, hub: bool) -> Result<Self> {
        let cfg: GteConfig = c::parse(json, path, "GTE")?;
        c::check_transformer(
            (cfg.hidden_size, "hidden_size"),
            (cfg.num_hidden_layers, "num_hidden_layers"),
            (cfg.num_attention_heads, "num_attention_heads"),
            (cfg.intermediate_size, "intermediate_size"),
            cfg.vocab_size,
            cfg.max_position_embeddings,
        )?;
        c::check_rates(&[
            ("hidden_dropout_prob", cfg.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                cfg.attention_probs_dropout_prob,
            ),
        ])?;
        if let Some(t) = cfg
            .layer_norm_type
            .as_deref()
            .filter(|t| *t != "layer_norm")
        {
            bail!("layer_norm_type \"{t}\" is not supported (layer_norm)");
        }
        if cfg.logn_attention_scale {
            bail!("logn_attention_scale: true is not supported");
        }
        if cfg.pack_qkv == Some(false) {
            bail!("pack_qkv: false is not supported (the GTE checkpoints pack q, k and v)");
        }
        if let Some(p) = cfg
            .position_embedding_type
            .as_deref()
            .filter(|p| *p != "rope")
        {
            bail!("position_embedding_type \"{p}\" is not supported (rope)");
        }
        let dim = cfg.hidden_size / cfg.num_attention_heads;
        if dim % 2 != 0 {
            bail!("head dim {dim} is odd: rotary positions need an even one");
        }
        let rope = match (&cfg.rope_parameters, &cfg.rope_scaling) {
            (Some(p), _) => {
                let theta = p
                    .get("rope_theta")
                    .and_then(Value::as_f64)
                    .unwrap_or(160_000.0);
                let scaling = match p
                    .get("rope_type")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear {
                        factor: p.get("factor").and_then(Value::as_f64).ok_or_else(|| {
                            anyhow::anyhow!("rope_parameters: linear without factor")
                        })?,
                    },
                    other => bail!(
                        "rope_parameters.rope_type \"{other}\" is not supported (default, linear)"
                    ),
                };
                RopeSpec {
                    dim,
                    base: theta,
                    scaling,
                }
            }
            (None, scaling) => {
                let theta = cfg
                    .rope_theta
                    .unwrap_or(if hub { 10_000.0 } else { 160_000.0 });
                match scaling.as_ref().filter(|s| !s.is_null()) {
                    None => RopeSpec {
                        dim,
                        base: theta,
                        scaling: RopeScaling::None,
                    },
                    Some(s) => {
                        let ty = s.get("type").or(s.get("rope_type")).and_then(Value::as_str);
                        let f = s.get("factor").and_then(Value::as_f64);
                        match (ty, f) {
                            (Some("ntk"), Some(f)) if f > 0.0 => RopeSpec {
                                dim,
                                base: theta * f,
                                scaling: RopeScaling::Linear {
                                    factor: f.powf(2.0 / dim as f64),
                                },
                            },
                            _ => bail!("rope_scaling {s} is not supported (type \"ntk\" with a positive factor)"),
                        }
                    }
                }
            }
        };
        if !(rope.base > 1.0 && rope.base.is_finite()) {
            bail!("rope theta {} must be a finite number above 1", rope.base);
        }
        Ok(Self { cfg, rope })
    }

    fn dims(&self) -> GatedDims {
        let c = &self.cfg;
        GatedDims {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
            bias: GatedBiases {
                qkv: true,
                out: true,
                up: false,
                down: true,
                norm: true,
            },
            placement: Placement::Post,
            mlp_dropout: MlpDropout::BeforeDown,
        }
    }
}

impl Arch for Gte {
    fn family(&self) -> &'static str {
        "gte"
    }
    fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn pad_token_id(&self) -> u32 {
        self.cfg.pad_token_id as u32
    }
    fn max_tokens(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn weight_spec(&self) -> WeightSpec {
        let c = &self.cfg;
        let h = c.hidden_size;
        // The Hub's task heads (NewForMaskedLM, …) keep the encoder under `new.`.
        let mut s = WeightSpec::new("new.", vec!["embeddings.position_ids"], None);
        TokenEmbeddings::bert_spec(
            &mut s,
            (c.vocab_size, c.type_vocab_size, h),
            "embeddings.LayerNorm",
        );
        for l in 0..c.num_hidden_layers {
            LAYER.spec(&mut s, &format!("encoder.layer.{l}"), self.dims());
        }
        s
    }

    fn build(&self, store: ParamStore) -> candle_core::Result<Box<dyn Encoder>> {
        let c = &self.cfg;
        let embeddings = TokenEmbeddings::bert_load(
            &store,
            c.type_vocab_size,
            "embeddings.LayerNorm",
            c.layer_norm_eps,
        )?;
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                LAYER.load(
                    &store,
                    &format!("encoder.layer.{l}"),
                    self.dims(),
                    (0, false),
                )
            })
            .collect::<candle_core::Result<_>>()?;
        let parts = RotaryParts {
            embeddings,
            layers,
            ropes: vec![self.rope],
            final_norm: None,
            window: None,
            attn_out_uses_attention_rate: false,
        };
        let rates = DropoutRates {
            hidden: c.hidden_dropout_prob,
            attention: c.attention_probs_dropout_prob,
        };
        Ok(Box::new(RotaryEncoder::new(
            "gte",
            parts,
            (c.hidden_size, c.max_position_embeddings),
            rates,
            store,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// gte-base-en-v1.5's Hub config (θ 500000, ntk factor 2) is transformers' linear rope with
    /// θ·2 and factor 2^(2/64); 5.24's spelling of it resolves the same.
    #[test]
    fn the_hub_ntk_scaling_is_linear_rope_with_a_scaled_base() {
        let hub = json!({"model_type": "new", "vocab_size": 30528, "hidden_size": 768,
            "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
            "rope_theta": 500000.0, "rope_scaling": {"factor": 2.0, "type": "ntk"},
            "type_vocab_size": 0, "layer_norm_type": "layer_norm", "max_position_embeddings": 8192});
        let a = Gte::from_json(&hub, Path::new("c.json"), true).unwrap();
        assert_eq!(a.rope.base, 1_000_000.0);
        assert_eq!(
            a.rope.scaling,
            RopeScaling::Linear {
                factor: 2f64.powf(1.0 / 32.0)
            }
        );
        let mut v5 = hub.clone();
        v5["rope_parameters"] = json!({"rope_type": "linear", "rope_theta": 1_000_000.0,
                                       "factor": 2f64.powf(1.0 / 32.0)});
        let b = Gte::from_json(&v5, Path::new("c.json"), false).unwrap();
        assert_eq!(a.rope, b.rope);
        // Pair 1 at position 1: (θ·f)^(−2/64) / f^(2/64).
        let t = a.rope.table(2).unwrap();
        let want = (1.0 / 1e6f32.powf(2.0 / 64.0) / 2f32.powf(2.0 / 64.0)).sin();
        assert!((t.sin[32 + 1] - want).abs() < 1e-6);
    }

    #[test]
    fn unsupported_settings_are_refused() {
        let base = json!({"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 37});
        let err = |k: &str, v: Value| {
            let mut j = base.clone();
            j[k] = v;
            format!(
                "{:#}",
                Gte::from_json(&j, Path::new("c.json"), true).err().unwrap()
            )
        };
        assert!(err("logn_attention_scale", json!(true)).contains("logn"));
        assert!(err("layer_norm_type", json!("rms_norm")).contains("rms_norm"));
        assert!(err("rope_scaling", json!({"type": "yarn", "factor": 2.0})).contains("ntk"));
    }
}
