//! DistilBERT (`model_type` distilbert): BERT's post-norm layer without token types, its own
//! config names (`dim`, `n_layers`, `n_heads`, `hidden_dim`, `dropout`, `attention_dropout`,
//! `activation`; the hidden_size-style aliases transformers maps them from are accepted too) and
//! weight names (`transformer.layer.N.attention.q_lin`, `sa_layer_norm`, `ffn.lin1`, …), no
//! dropout on the attention output, LayerNorm eps fixed at 1e-12 (transformers hard-codes it).
//! `sinusoidal_pos_embds` configs load their stored table and train it as transformers 5 does
//! (it copies the sinusoids into a trainable parameter at init). Depends on
//! `model::{nn, weights, config, encoder}`, `ops::Act`.

use super::Arch;
use crate::model::config::{self as c, default_act, default_dropout};
use crate::model::encoder::{DropoutRates, Encoder};
use crate::model::nn::{Embeddings, LayerDims, LayerNames, ParamStore, Positions, PostNormEncoder};
use crate::model::weights::WeightSpec;
use crate::ops::Act;
use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// DistilBERT's LayerNorm eps (modeling_distilbert: `eps=1e-12`, not configurable).
const EPS: f64 = 1e-12;

#[derive(Debug, Clone, Deserialize)]
pub struct DistilBertConfig {
    pub vocab_size: usize,
    #[serde(alias = "hidden_size")]
    pub dim: usize,
    #[serde(alias = "num_hidden_layers")]
    pub n_layers: usize,
    #[serde(alias = "num_attention_heads")]
    pub n_heads: usize,
    #[serde(alias = "intermediate_size")]
    pub hidden_dim: usize,
    #[serde(default = "default_dropout", alias = "hidden_dropout_prob")]
    pub dropout: f64,
    #[serde(default = "default_dropout", alias = "attention_probs_dropout_prob")]
    pub attention_dropout: f64,
    #[serde(default = "default_act", alias = "hidden_act")]
    pub activation: Act,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
    #[serde(default)]
    pub pad_token_id: usize,
}

fn default_positions() -> usize {
    512
}

const LAYER: LayerNames = LayerNames {
    q: "attention.q_lin",
    k: "attention.k_lin",
    v: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    up: "ffn.lin1",
    down: "ffn.lin2",
    out_norm: "output_layer_norm",
};

pub struct DistilBert {
    pub cfg: DistilBertConfig,
}

impl DistilBert {
    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let cfg: DistilBertConfig = c::parse(json, path, "DistilBERT")?;
        c::check_transformer(
            (cfg.dim, "dim"),
            (cfg.n_layers, "n_layers"),
            (cfg.n_heads, "n_heads"),
            (cfg.hidden_dim, "hidden_dim"),
            cfg.vocab_size,
            cfg.max_position_embeddings,
        )?;
        c::check_rates(&[
            ("dropout", cfg.dropout),
            ("attention_dropout", cfg.attention_dropout),
        ])?;
        Ok(Self { cfg })
    }

    fn dims(&self) -> LayerDims {
        LayerDims {
            hidden: self.cfg.dim,
            intermediate: self.cfg.hidden_dim,
            heads: self.cfg.n_heads,
            act: self.cfg.activation,
            eps: EPS,
            attn_out_dropout: false,
        }
    }
}

impl Arch for DistilBert {
    fn family(&self) -> &'static str {
        "distilbert"
    }
    fn hidden_size(&self) -> usize {
        self.cfg.dim
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
        let (c, h) = (&self.cfg, self.cfg.dim);
        let mut s = WeightSpec::new("distilbert.", vec!["embeddings.position_ids"], None);
        Embeddings::spec(&mut s, c.vocab_size, c.max_position_embeddings, h, None);
        for l in 0..c.n_layers {
            LAYER.spec(&mut s, &format!("transformer.layer.{l}"), self.dims());
        }
        s
    }

    fn build(&self, store: ParamStore) -> candle_core::Result<Box<dyn Encoder>> {
        let c = &self.cfg;
        let embeddings = Embeddings::load(&store, Positions::Range, false, c.dim, EPS)?;
        let layers = (0..c.n_layers)
            .map(|l| LAYER.load(&store, &format!("transformer.layer.{l}"), self.dims()))
            .collect::<candle_core::Result<_>>()?;
        let rates = DropoutRates {
            hidden: c.dropout,
            attention: c.attention_dropout,
        };
        let parts = (embeddings, layers, None);
        let max = self.max_tokens();
        Ok(Box::new(PostNormEncoder::new(
            "distilbert",
            parts,
            max,
            rates,
            store,
        )))
    }
}
