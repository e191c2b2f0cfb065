//! ModernBERT (`model_type` modernbert; ModernBERT-base, gte-modernbert-base,
//! modernbert-embed-base): pre-norm layers (layer 0 has no attention norm), fused `Wqkv`, RoPE
//! with two bases — global layers (every `global_attn_every_n_layers`-th from layer 0) use
//! `global_rope_theta` (160000), the others `local_rope_theta` (10000) and a sliding window of
//! |i − j| ≤ `local_attention / 2` — a GeGLU MLP (`Wi` `[2I, H]`, the activated half first),
//! bias-free norms and projections by default, an embedding norm and a final norm; no position
//! table, no token types. Config spellings: the Hub's (`global_rope_theta`, `local_rope_theta`,
//! `global_attn_every_n_layers`; answerdotai/ModernBERT-base and nomic-ai/modernbert-embed-base
//! config.json) and transformers 5.24's (`layer_types`, `rope_parameters` per layer type), which
//! wins where both are present, as transformers does. Dropout: `attention_dropout` on the
//! probabilities and the attention output, `mlp_dropout` before `Wo` and (as our one hidden
//! rate) on the embeddings; a config whose `embedding_dropout` differs from `mlp_dropout` is
//! refused rather than trained differently. Depends on `model::{nn, weights, config, encoder}`.

use super::Arch;
use crate::model::config as c;
use crate::model::encoder::{DropoutRates, Encoder};
use crate::model::nn::{
    GatedBiases, GatedDims, GatedNames, LayerNorm, MlpDropout, ParamStore, Placement, RopeScaling,
    RopeSpec, RotaryEncoder, RotaryParts, TokenEmbeddings, UpNames,
};
use crate::model::weights::{Init, WeightSpec};
use crate::ops::Act;
use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct ModernBertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_activation: Act,
    #[serde(default = "positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub mlp_dropout: f64,
    #[serde(default)]
    pub embedding_dropout: f64,
    #[serde(default = "local")]
    pub local_attention: usize,
    #[serde(default = "every")]
    pub global_attn_every_n_layers: usize,
    pub global_rope_theta: Option<f64>,
    pub local_rope_theta: Option<f64>,
    pub layer_types: Option<Vec<String>>,
    pub rope_parameters: Option<Value>,
    #[serde(default = "pad")]
    pub pad_token_id: usize,
}

fn gelu() -> Act {
    Act::Gelu
}
fn positions() -> usize {
    8192
}
fn eps() -> f64 {
    1e-5
}
fn local() -> usize {
    128
}
fn every() -> usize {
    3
}
fn pad() -> usize {
    50283
}

const LAYER: GatedNames = GatedNames {
    qkv: "attn.Wqkv",
    out: "attn.Wo",
    attn_norm: Some("attn_norm"),
    up: UpNames::Fused {
        name: "mlp.Wi",
        act_first: true,
    },
    down: "mlp.Wo",
    mlp_norm: "mlp_norm",
};

pub struct ModernBert {
    pub cfg: ModernBertConfig,
    /// Per layer: global (full attention)?
    global: Vec<bool>,
    /// rope_theta of global and of local layers.
    theta: [f64; 2],
}

/// `rope_parameters.<kind>.rope_theta` (transformers 5.24), checking its rope_type.
fn theta_of(params: Option<&Value>, kind: &str) -> Result<Option<f64>> {
    let Some(p) = params.and_then(|p| p.get(kind)) else {
        return Ok(None);
    };
    let ty = p
        .get("rope_type")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if ty != "default" {
        bail!("rope_parameters.{kind}.rope_type \"{ty}\" is not supported (only \"default\")");
    }
    Ok(p.get("rope_theta").and_then(Value::as_f64))
}

impl ModernBert {
    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let cfg: ModernBertConfig = c::parse(json, path, "ModernBERT")?;
        c::check_transformer(
            (cfg.hidden_size, "hidden_size"),
            (cfg.num_hidden_layers, "num_hidden_layers"),
            (cfg.num_attention_heads, "num_attention_heads"),
            (cfg.intermediate_size, "intermediate_size"),
            cfg.vocab_size,
            cfg.max_position_embeddings,
        )?;
        c::check_rates(&[
            ("attention_dropout", cfg.attention_dropout),
            ("mlp_dropout", cfg.mlp_dropout),
            ("embedding_dropout", cfg.embedding_dropout),
        ])?;
        if cfg.embedding_dropout != cfg.mlp_dropout {
            bail!(
                "embedding_dropout {} differs from mlp_dropout {}: embtune trains ModernBERT with one hidden dropout rate",
                cfg.embedding_dropout,
                cfg.mlp_dropout
            );
        }
        if cfg.local_attention == 0 || cfg.local_attention > cfg.max_position_embeddings {
            bail!(
                "local_attention = {} (the sliding window) must be in 1..={} (max_position_embeddings)",
                cfg.local_attention,
                cfg.max_position_embeddings
            );
        }
        let head_dim = cfg.hidden_size / cfg.num_attention_heads;
        if head_dim % 2 != 0 {
            bail!("head dim {head_dim} is odd: rotary positions need an even one");
        }
        let n = cfg.num_hidden_layers;
        let global = match &cfg.layer_types {
            Some(types) => {
                if types.len() != n {
                    bail!("layer_types has {} entries for {n} layers", types.len());
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "full_attention" => Ok(true),
                        "sliding_attention" => Ok(false),
                        other => bail!("layer_types: \"{other}\" is neither full_attention nor sliding_attention"),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None => {
                if cfg.global_attn_every_n_layers == 0 {
                    bail!("global_attn_every_n_layers must be at least 1");
                }
                // transformers: "sliding_attention" if i % every else "full_attention".
                (0..n)
                    .map(|i| i % cfg.global_attn_every_n_layers == 0)
                    .collect()
            }
        };
        let params = cfg.rope_parameters.as_ref();
        let theta = [
            theta_of(params, "full_attention")?
                .or(cfg.global_rope_theta)
                .unwrap_or(160_000.0),
            theta_of(params, "sliding_attention")?
                .or(cfg.local_rope_theta)
                .unwrap_or(10_000.0),
        ];
        for (t, name) in theta.iter().zip(["global", "local"]) {
            if !(*t > 1.0 && t.is_finite()) {
                bail!("the {name} rope theta {t} must be a finite number above 1");
            }
        }
        Ok(Self { cfg, global, theta })
    }

    fn dims(&self) -> GatedDims {
        let c = &self.cfg;
        GatedDims {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            act: c.hidden_activation,
            eps: c.norm_eps,
            bias: GatedBiases {
                qkv: c.attention_bias,
                out: c.attention_bias,
                up: c.mlp_bias,
                down: c.mlp_bias,
                norm: c.norm_bias,
            },
            placement: Placement::Pre,
            mlp_dropout: MlpDropout::BeforeDown,
        }
    }

    fn names(&self, layer: usize) -> GatedNames {
        GatedNames {
            attn_norm: (layer > 0).then_some("attn_norm"),
            ..LAYER
        }
    }
}

impl Arch for ModernBert {
    fn family(&self) -> &'static str {
        "modernbert"
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
        // ModernBertForMaskedLM keeps the encoder under `model.`; `head.*` and `decoder.*` are
        // its MLM head (ignored).
        let mut s = WeightSpec::new("model.", Vec::new(), None);
        s.tensor(
            "embeddings.tok_embeddings.weight",
            vec![c.vocab_size, h],
            Init::Normal,
        );
        s.norm_with("embeddings.norm", h, c.norm_bias);
        for l in 0..c.num_hidden_layers {
            self.names(l)
                .spec(&mut s, &format!("layers.{l}"), self.dims());
        }
        s.norm_with("final_norm", h, c.norm_bias);
        s
    }

    fn build(&self, store: ParamStore) -> candle_core::Result<Box<dyn Encoder>> {
        let c = &self.cfg;
        let embeddings = TokenEmbeddings {
            word: store.var("embeddings.tok_embeddings.weight")?,
            token_type: None,
            norm: LayerNorm::load_with(&store, "embeddings.norm", c.norm_eps, c.norm_bias)?,
        };
        // Table 0: global layers' base; table 1: local layers'.
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let local = !self.global[l];
                self.names(l).load(
                    &store,
                    &format!("layers.{l}"),
                    self.dims(),
                    (usize::from(local), local),
                )
            })
            .collect::<candle_core::Result<_>>()?;
        let rope = |base| RopeSpec {
            dim: c.hidden_size / c.num_attention_heads,
            base,
            scaling: RopeScaling::None,
        };
        let parts = RotaryParts {
            embeddings,
            layers,
            ropes: vec![rope(self.theta[0]), rope(self.theta[1])],
            final_norm: Some(LayerNorm::load_with(
                &store,
                "final_norm",
                c.norm_eps,
                c.norm_bias,
            )?),
            // transformers: `sliding_window = local_attention // 2`, kept iff |i − j| ≤ it.
            window: Some(c.local_attention / 2),
            attn_out_uses_attention_rate: true,
        };
        let rates = DropoutRates {
            hidden: c.mlp_dropout,
            attention: c.attention_dropout,
        };
        Ok(Box::new(RotaryEncoder::new(
            "modernbert",
            parts,
            (c.hidden_size, self.max_tokens()),
            rates,
            store,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "modernbert", "vocab_size": 100, "hidden_size": 32,
               "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 48})
    }

    /// The Hub's spelling and transformers 5.24's give the same layer kinds and bases; 5.24's
    /// wins where both are present.
    #[test]
    fn both_config_spellings_resolve_the_same_layers() {
        let mut hub = base();
        hub["global_attn_every_n_layers"] = json!(3);
        hub["global_rope_theta"] = json!(160000.0);
        hub["local_rope_theta"] = json!(10000.0);
        let a = ModernBert::from_json(&hub, Path::new("config.json")).unwrap();
        assert_eq!(a.global, [true, false, false, true]);
        assert_eq!(a.theta, [160000.0, 10000.0]);
        let mut v5 = base();
        v5["layer_types"] = json!([
            "full_attention",
            "sliding_attention",
            "sliding_attention",
            "full_attention"
        ]);
        v5["rope_parameters"] = json!({"full_attention": {"rope_theta": 1000.0, "rope_type": "default"},
                                       "sliding_attention": {"rope_theta": 50.0, "rope_type": "default"}});
        v5["global_rope_theta"] = json!(160000.0);
        let b = ModernBert::from_json(&v5, Path::new("config.json")).unwrap();
        assert_eq!(b.global, a.global);
        assert_eq!(b.theta, [1000.0, 50.0]);
    }

    /// A window wider than the positions, an unknown layer type, an odd head dim: one-line
    /// errors naming the field.
    #[test]
    fn bad_configs_are_refused() {
        let err = |v: Value| {
            format!(
                "{:#}",
                ModernBert::from_json(&v, Path::new("m/config.json"))
                    .err()
                    .unwrap()
            )
        };
        let mut v = base();
        v["local_attention"] = json!(9000);
        assert!(err(v).contains("local_attention = 9000"), "window");
        let mut v = base();
        v["layer_types"] = json!(["full_attention", "x", "x", "x"]);
        assert!(err(v).contains("\"x\""));
        let mut v = base();
        v["hidden_size"] = json!(36);
        assert!(err(v).contains("odd"));
    }
}
