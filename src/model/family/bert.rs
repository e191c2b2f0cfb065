//! BERT (`model_type` bert: BERT, MiniLM, BGE/E5-style BERT) and the RoBERTa family (roberta,
//! xlm-roberta, camembert), which share BERT's layer and weight names (checkpoints of task models
//! prefix them with `bert.` / `roberta.`). RoBERTa differs in its positions: they start after
//! `padding_idx` (= `pad_token_id`, 1) and padding keeps `padding_idx` (HF's
//! `create_position_ids_from_input_ids`), so `max_position_embeddings − padding_idx − 1` tokens
//! fit; it has one token type. Depends on `model::{nn, weights, config, encoder}`, `ops::Act`.

use super::Arch;
use crate::model::config::{self as c, default_act, default_dropout, default_eps};
use crate::model::encoder::{DropoutRates, Encoder};
use crate::model::nn::{Embeddings, LayerDims, LayerNames, ParamStore, Positions, PostNormEncoder};
use crate::model::weights::WeightSpec;
use crate::ops::Act;
use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The fields of a BERT / RoBERTa `config.json` the encoder needs (Hub spellings).
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Act,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// BERT 0, RoBERTa 1 when absent (transformers' defaults).
    pub pad_token_id: Option<usize>,
    /// Older configs name it; only "absolute" is implemented (transformers 5 dropped the others).
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_pos_type() -> String {
    "absolute".into()
}

/// BERT-style layer names (`encoder.layer.N.…`).
pub const BERT_LAYER: LayerNames = LayerNames {
    q: "attention.self.query",
    k: "attention.self.key",
    v: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    up: "intermediate.dense",
    down: "output.dense",
    out_norm: "output.LayerNorm",
};

/// BERT or a RoBERTa variant with its config.
pub struct Bert {
    pub cfg: BertConfig,
    family: &'static str,
    roberta: bool,
}

impl Bert {
    /// `model_type` is one of bert, roberta, xlm-roberta, camembert.
    pub fn from_json(json: &Value, path: &Path, model_type: &str) -> Result<Self> {
        let cfg: BertConfig = c::parse(json, path, "BERT")?;
        let (family, roberta) = match model_type {
            "roberta" => ("roberta", true),
            "xlm-roberta" => ("xlm-roberta", true),
            "camembert" => ("camembert", true),
            _ => ("bert", false),
        };
        let a = Self {
            cfg,
            family,
            roberta,
        };
        a.validate()?;
        Ok(a)
    }

    fn pad(&self) -> usize {
        self.cfg
            .pad_token_id
            .unwrap_or(if self.roberta { 1 } else { 0 })
    }

    fn positions(&self) -> Positions {
        if self.roberta {
            Positions::AfterPadding {
                padding_idx: self.pad() as u32,
            }
        } else {
            Positions::Range
        }
    }

    fn validate(&self) -> Result<()> {
        let c = &self.cfg;
        if c.position_embedding_type != "absolute" {
            bail!(
                "position_embedding_type \"{}\" is not supported (only \"absolute\")",
                c.position_embedding_type
            );
        }
        c::check_transformer(
            (c.hidden_size, "hidden_size"),
            (c.num_hidden_layers, "num_hidden_layers"),
            (c.num_attention_heads, "num_attention_heads"),
            (c.intermediate_size, "intermediate_size"),
            c.vocab_size,
            c.max_position_embeddings,
        )?;
        c::check_sizes(&[("type_vocab_size", c.type_vocab_size, 1024)])?;
        c::check_rates(&[
            ("hidden_dropout_prob", c.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                c.attention_probs_dropout_prob,
            ),
        ])?;
        if self.roberta && self.pad() + 2 > c.max_position_embeddings {
            bail!(
                "pad_token_id {} leaves no position of the {} in max_position_embeddings",
                self.pad(),
                c.max_position_embeddings
            );
        }
        Ok(())
    }

    fn dims(&self) -> LayerDims {
        let c = &self.cfg;
        LayerDims {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
            attn_out_dropout: true,
        }
    }
}

impl Arch for Bert {
    fn family(&self) -> &'static str {
        self.family
    }
    fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn pad_token_id(&self) -> u32 {
        self.pad() as u32
    }
    fn max_tokens(&self) -> usize {
        let p = self.cfg.max_position_embeddings;
        match self.positions() {
            Positions::Range => p,
            Positions::AfterPadding { padding_idx } => p.saturating_sub(padding_idx as usize + 1),
        }
    }

    fn weight_spec(&self) -> WeightSpec {
        let c = &self.cfg;
        let h = c.hidden_size;
        let prefix = if self.roberta { "roberta." } else { "bert." };
        let buffers = vec!["embeddings.position_ids", "embeddings.token_type_ids"];
        let mut s = WeightSpec::new(prefix, buffers, Some(h));
        let types = Some(c.type_vocab_size);
        Embeddings::spec(&mut s, c.vocab_size, c.max_position_embeddings, h, types);
        for l in 0..c.num_hidden_layers {
            BERT_LAYER.spec(&mut s, &format!("encoder.layer.{l}"), self.dims());
        }
        s
    }

    fn build(&self, store: ParamStore) -> candle_core::Result<Box<dyn Encoder>> {
        let c = &self.cfg;
        let embeddings = Embeddings::load(
            &store,
            self.positions(),
            true,
            c.hidden_size,
            c.layer_norm_eps,
        )?;
        let layers = (0..c.num_hidden_layers)
            .map(|l| BERT_LAYER.load(&store, &format!("encoder.layer.{l}"), self.dims()))
            .collect::<candle_core::Result<_>>()?;
        let rates = DropoutRates {
            hidden: c.hidden_dropout_prob,
            attention: c.attention_probs_dropout_prob,
        };
        let parts = (embeddings, layers, None);
        let max = self.max_tokens();
        Ok(Box::new(PostNormEncoder::new(
            self.family,
            parts,
            max,
            rates,
            store,
        )))
    }
}
