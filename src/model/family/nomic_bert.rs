//! NomicBERT (`model_type` nomic_bert; nomic-embed-text-v1 / v1.5, nomic-bert-2048): post-norm
//! layers with a fused `Wqkv`, RoPE (base `rotary_emb_base`, 1000 in v1.5; a fraction of each
//! head with `rotary_emb_fraction`; dynamic NTK scaling past `max_trained_positions` with
//! `rotary_scaling_factor`), a SwiGLU MLP `fc2(fc11(x)·silu(fc12(x)))`, no biases in v1.5, word +
//! token-type embeddings with `emb_ln`, no position table. Weight names are the Hub
//! checkpoint's (`encoder.layers.N.attn.Wqkv`, `mlp.fc11/fc12/fc2`, `norm1/norm2`), which
//! transformers 5.24 also writes. Config spellings: the Hub's nomic-bert names (`n_embd`,
//! `n_head`, `n_layer`, `n_inner`, `rotary_emb_*`, `layer_norm_epsilon`, `resid_pdrop`, …; the
//! custom `configuration_hf_nomic_bert.py` of nomic-ai/nomic-bert-2048, copies in GitHub repos
//! such as aahrong/nomic-embed-text-v1.5) and transformers 5.24's (`hidden_size`, …,
//! `rope_parameters`). Where both are present, transformers' is used, as transformers itself
//! reads only its own (it ignores `n_embd`). Prenorm, RMSNorm, causal and interleaved-rotary
//! configs are refused. Depends on `model::{nn, weights, config, encoder}`.

use super::Arch;
use crate::model::config as c;
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

/// Both spellings, each optional; [`NomicBert::from_json`] resolves them.
#[derive(Debug, Clone, Deserialize, Default)]
struct Raw {
    vocab_size: usize,
    hidden_size: Option<usize>,
    n_embd: Option<usize>,
    num_hidden_layers: Option<usize>,
    n_layer: Option<usize>,
    num_attention_heads: Option<usize>,
    n_head: Option<usize>,
    intermediate_size: Option<usize>,
    n_inner: Option<usize>,
    hidden_act: Option<String>,
    activation_function: Option<String>,
    layer_norm_eps: Option<f64>,
    layer_norm_epsilon: Option<f64>,
    type_vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    n_positions: Option<usize>,
    max_trained_positions: Option<usize>,
    hidden_dropout_prob: Option<f64>,
    resid_pdrop: Option<f64>,
    embd_pdrop: Option<f64>,
    attention_probs_dropout_prob: Option<f64>,
    attn_pdrop: Option<f64>,
    rope_parameters: Option<Value>,
    rotary_emb_base: Option<f64>,
    rotary_emb_fraction: Option<f64>,
    rotary_emb_interleaved: Option<bool>,
    rotary_scaling_factor: Option<f64>,
    qkv_proj_bias: Option<bool>,
    mlp_fc1_bias: Option<bool>,
    mlp_fc2_bias: Option<bool>,
    prenorm: Option<bool>,
    use_rms_norm: Option<bool>,
    causal: Option<bool>,
    pad_token_id: Option<usize>,
}

/// The resolved config.
#[derive(Debug, Clone)]
pub struct NomicBertConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub act: Act,
    pub eps: f64,
    pub type_vocab_size: usize,
    pub max_tokens: usize,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    pub rope: RopeSpec,
    pub bias: GatedBiases,
    pub pad_token_id: usize,
}

const LAYER: GatedNames = GatedNames {
    qkv: "attn.Wqkv",
    out: "attn.out_proj",
    attn_norm: Some("norm1"),
    up: UpNames::Split {
        gate: "mlp.fc12",
        up: "mlp.fc11",
    },
    down: "mlp.fc2",
    mlp_norm: "norm2",
};

pub struct NomicBert {
    pub cfg: NomicBertConfig,
}

fn need(v: Option<usize>, name: &str) -> Result<usize> {
    v.ok_or_else(|| anyhow::anyhow!("{name} is missing"))
}

/// transformers 5.24's `rope_parameters` → (θ, scaling); `original` is the dynamic length.
fn rope_params(p: &Value, original: usize) -> Result<(Option<f64>, RopeScaling)> {
    let theta = p.get("rope_theta").and_then(Value::as_f64);
    let factor = p.get("factor").and_then(Value::as_f64);
    let scaling = match p
        .get("rope_type")
        .and_then(Value::as_str)
        .unwrap_or("default")
    {
        "default" => RopeScaling::None,
        "dynamic" => RopeScaling::Dynamic {
            factor: factor
                .ok_or_else(|| anyhow::anyhow!("rope_parameters: dynamic without factor"))?,
            original,
        },
        other => bail!("rope_parameters.rope_type \"{other}\" is not supported (default, dynamic)"),
    };
    Ok((theta, scaling))
}

impl NomicBert {
    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let r: Raw = c::parse(json, path, "NomicBERT")?;
        for (flag, what) in [
            (r.prenorm, "prenorm"),
            (r.use_rms_norm, "use_rms_norm"),
            (r.causal, "causal"),
            (r.rotary_emb_interleaved, "rotary_emb_interleaved"),
        ] {
            if flag == Some(true) {
                bail!("{what}: true is not supported (nomic-embed-text uses false)");
            }
        }
        let hidden = need(r.hidden_size.or(r.n_embd), "hidden_size (n_embd)")?;
        let layers = need(
            r.num_hidden_layers.or(r.n_layer),
            "num_hidden_layers (n_layer)",
        )?;
        let heads = need(
            r.num_attention_heads.or(r.n_head),
            "num_attention_heads (n_head)",
        )?;
        let intermediate = r.intermediate_size.or(r.n_inner).unwrap_or(4 * hidden);
        let act = match r
            .hidden_act
            .or(r.activation_function)
            .as_deref()
            .unwrap_or("silu")
        {
            // The Hub's "swiglu" is fc11(x)·silu(fc12(x)); transformers' "silu" the same.
            "swiglu" | "silu" | "swish" => Act::Silu,
            "geglu" | "gelu" => Act::Gelu,
            other => bail!("activation \"{other}\" is not supported (swiglu, geglu)"),
        };
        let positions = r.max_position_embeddings.or(r.n_positions).unwrap_or(2048);
        let max_tokens = r.n_positions.unwrap_or(positions).max(positions);
        c::check_transformer(
            (hidden, "hidden_size"),
            (layers, "num_hidden_layers"),
            (heads, "num_attention_heads"),
            (intermediate, "intermediate_size"),
            r.vocab_size,
            max_tokens,
        )?;
        let hidden_dropout = r.hidden_dropout_prob.or(r.resid_pdrop).unwrap_or(0.0);
        let attention_dropout = r
            .attention_probs_dropout_prob
            .or(r.attn_pdrop)
            .unwrap_or(0.0);
        let embd = r.embd_pdrop.unwrap_or(hidden_dropout);
        c::check_rates(&[
            ("hidden_dropout_prob (resid_pdrop)", hidden_dropout),
            (
                "attention_probs_dropout_prob (attn_pdrop)",
                attention_dropout,
            ),
        ])?;
        if embd != hidden_dropout {
            bail!("embd_pdrop {embd} differs from resid_pdrop {hidden_dropout}: embtune trains NomicBERT with one hidden dropout rate");
        }
        let head_dim = hidden / heads;
        let fraction = r.rotary_emb_fraction.unwrap_or(1.0);
        if !(fraction > 0.0 && fraction <= 1.0) {
            bail!("rotary_emb_fraction = {fraction} is outside (0, 1]");
        }
        // The Hub: `rotary_emb_dim = int(head_dim * rotary_emb_fraction)`.
        let dim = (head_dim as f64 * fraction) as usize;
        if dim == 0 || dim % 2 != 0 {
            bail!("rotary_emb_fraction {fraction} of head dim {head_dim} gives {dim} rotated features (must be even and positive)");
        }
        let (theta, scaling) = match &r.rope_parameters {
            Some(p) => rope_params(p, positions)?,
            None => (
                None,
                match r.rotary_scaling_factor {
                    Some(f) => RopeScaling::Dynamic {
                        factor: f,
                        original: r.max_trained_positions.unwrap_or(2048),
                    },
                    None => RopeScaling::None,
                },
            ),
        };
        let base = theta.or(r.rotary_emb_base).unwrap_or(1000.0);
        if !(base > 1.0 && base.is_finite()) {
            bail!("the rotary base {base} must be a finite number above 1");
        }
        let fc1 = r.mlp_fc1_bias.unwrap_or(false);
        let cfg = NomicBertConfig {
            vocab_size: r.vocab_size,
            hidden,
            layers,
            heads,
            intermediate,
            act,
            eps: r.layer_norm_eps.or(r.layer_norm_epsilon).unwrap_or(1e-12),
            type_vocab_size: r.type_vocab_size.unwrap_or(2),
            max_tokens,
            hidden_dropout,
            attention_dropout,
            rope: RopeSpec { dim, base, scaling },
            bias: GatedBiases {
                qkv: r.qkv_proj_bias.unwrap_or(false),
                out: r.qkv_proj_bias.unwrap_or(false),
                up: fc1,
                down: r.mlp_fc2_bias.unwrap_or(false),
                norm: true,
            },
            pad_token_id: r.pad_token_id.unwrap_or(0),
        };
        Ok(Self { cfg })
    }

    fn dims(&self) -> GatedDims {
        let c = &self.cfg;
        GatedDims {
            hidden: c.hidden,
            intermediate: c.intermediate,
            heads: c.heads,
            act: c.act,
            eps: c.eps,
            bias: c.bias,
            placement: Placement::Post,
            mlp_dropout: MlpDropout::AfterDown,
        }
    }
}

impl Arch for NomicBert {
    fn family(&self) -> &'static str {
        "nomic_bert"
    }
    fn hidden_size(&self) -> usize {
        self.cfg.hidden
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn pad_token_id(&self) -> u32 {
        self.cfg.pad_token_id as u32
    }
    fn max_tokens(&self) -> usize {
        self.cfg.max_tokens
    }

    fn weight_spec(&self) -> WeightSpec {
        let c = &self.cfg;
        let h = c.hidden;
        // nomic-bert-2048 (NomicBertForPreTraining) keeps the encoder under `bert.`;
        // transformers 5.24's task models under `nomic_bert.`.
        let mut s = WeightSpec::new("bert.", Vec::new(), None);
        s.prefixes.push("nomic_bert.");
        TokenEmbeddings::bert_spec(&mut s, (c.vocab_size, c.type_vocab_size, h), "emb_ln");
        for l in 0..c.layers {
            LAYER.spec(&mut s, &format!("encoder.layers.{l}"), self.dims());
        }
        s
    }

    fn build(&self, store: ParamStore) -> candle_core::Result<Box<dyn Encoder>> {
        let c = &self.cfg;
        let embeddings = TokenEmbeddings::bert_load(&store, c.type_vocab_size, "emb_ln", c.eps)?;
        let layers = (0..c.layers)
            .map(|l| {
                LAYER.load(
                    &store,
                    &format!("encoder.layers.{l}"),
                    self.dims(),
                    (0, false),
                )
            })
            .collect::<candle_core::Result<_>>()?;
        let parts = RotaryParts {
            embeddings,
            layers,
            ropes: vec![c.rope],
            final_norm: None,
            window: None,
            attn_out_uses_attention_rate: false,
        };
        let rates = DropoutRates {
            hidden: c.hidden_dropout,
            attention: c.attention_dropout,
        };
        Ok(Box::new(RotaryEncoder::new(
            "nomic_bert",
            parts,
            (c.hidden, c.max_tokens),
            rates,
            store,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// nomic-embed-text-v1.5's Hub spelling and transformers 5.24's resolve to the same model.
    #[test]
    fn hub_and_transformers_spellings_agree() {
        let hub = json!({"model_type": "nomic_bert", "vocab_size": 30528, "n_embd": 768,
            "n_head": 12, "n_layer": 12, "n_inner": 3072, "n_positions": 8192,
            "rotary_emb_base": 1000, "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": false,
            "activation_function": "swiglu", "layer_norm_epsilon": 1e-12, "qkv_proj_bias": false,
            "mlp_fc1_bias": false, "mlp_fc2_bias": false, "prenorm": false, "use_rms_norm": false,
            "type_vocab_size": 2, "max_trained_positions": 2048, "rotary_scaling_factor": 2.0});
        let v5 = json!({"model_type": "nomic_bert", "vocab_size": 30528, "hidden_size": 768,
            "num_attention_heads": 12, "num_hidden_layers": 12, "intermediate_size": 3072,
            "max_position_embeddings": 2048, "hidden_act": "silu", "layer_norm_eps": 1e-12,
            "rope_parameters": {"rope_theta": 1000.0, "rope_type": "dynamic", "factor": 2.0},
            "n_positions": 8192});
        let (a, b) = (
            NomicBert::from_json(&hub, Path::new("c.json")).unwrap().cfg,
            NomicBert::from_json(&v5, Path::new("c.json")).unwrap().cfg,
        );
        assert_eq!(
            (a.hidden, a.heads, a.layers, a.intermediate),
            (768, 12, 12, 3072)
        );
        assert_eq!(
            (b.hidden, b.heads, b.layers, b.intermediate),
            (768, 12, 12, 3072)
        );
        assert_eq!(a.rope, b.rope);
        assert_eq!(a.max_tokens, 8192);
        assert_eq!(b.max_tokens, 8192);
        assert_eq!(a.act, Act::Silu);
    }

    /// A rotary fraction outside (0, 1], interleaved rotary, prenorm: one-line errors.
    #[test]
    fn bad_configs_are_refused() {
        let base = json!({"vocab_size": 100, "n_embd": 32, "n_head": 4, "n_layer": 2});
        let err = |k: &str, v: Value| {
            let mut j = base.clone();
            j[k] = v;
            format!(
                "{:#}",
                NomicBert::from_json(&j, Path::new("c.json")).err().unwrap()
            )
        };
        assert!(err("rotary_emb_fraction", json!(1.5)).contains("outside (0, 1]"));
        assert!(err("rotary_emb_fraction", json!(0.0)).contains("outside (0, 1]"));
        assert!(err("rotary_emb_interleaved", json!(true)).contains("rotary_emb_interleaved"));
        assert!(err("prenorm", json!(true)).contains("prenorm"));
    }
}
