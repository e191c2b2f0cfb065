//! MPNet (`model_type` mpnet; all-mpnet-base-v2): BERT's post-norm layer with its own weight
//! names (`attention.attn.q/k/v/o`, `attention.LayerNorm`), RoBERTa-style positions after
//! padding index 1 (transformers hard-codes it), no token types, and a relative position bias
//! (`encoder.relative_attention_bias.weight`, `[relative_attention_num_buckets, heads]`) shared
//! by all layers and added to the attention scores. The bucketing uses 32 buckets and distance
//! 128 whatever the table size, as transformers does. Depends on `model::{nn, weights, config,
//! encoder}`, `ops::Act`.

use super::Arch;
use crate::model::config::{self as c, default_act, default_dropout, default_eps};
use crate::model::encoder::{DropoutRates, Encoder};
use crate::model::nn::{
    Embeddings, LayerDims, LayerNames, ParamStore, Positions, PostNormEncoder, RelativeBias,
};
use crate::model::weights::{Init, WeightSpec};
use crate::ops::Act;
use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// transformers' MPNetEmbeddings: `self.padding_idx = 1`, whatever pad_token_id says.
const PADDING_IDX: u32 = 1;
/// `compute_position_bias` calls `relative_position_bucket` with its defaults.
const BUCKETS: usize = 32;
const MAX_DISTANCE: usize = 128;

#[derive(Debug, Clone, Deserialize)]
pub struct MpNetConfig {
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
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_pad")]
    pub pad_token_id: usize,
}

fn default_buckets() -> usize {
    BUCKETS
}
fn default_pad() -> usize {
    PADDING_IDX as usize
}

const LAYER: LayerNames = LayerNames {
    q: "attention.attn.q",
    k: "attention.attn.k",
    v: "attention.attn.v",
    attn_out: "attention.attn.o",
    attn_norm: "attention.LayerNorm",
    up: "intermediate.dense",
    down: "output.dense",
    out_norm: "output.LayerNorm",
};

pub struct MpNet {
    pub cfg: MpNetConfig,
}

impl MpNet {
    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let cfg: MpNetConfig = c::parse(json, path, "MPNet")?;
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
        if cfg.relative_attention_num_buckets < BUCKETS {
            bail!(
                "relative_attention_num_buckets = {} is below the {BUCKETS} buckets MPNet looks up",
                cfg.relative_attention_num_buckets
            );
        }
        if cfg.max_position_embeddings < PADDING_IDX as usize + 2 {
            bail!(
                "max_position_embeddings = {} leaves no position after the padding index",
                cfg.max_position_embeddings
            );
        }
        Ok(Self { cfg })
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

impl Arch for MpNet {
    fn family(&self) -> &'static str {
        "mpnet"
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
        self.cfg.max_position_embeddings - PADDING_IDX as usize - 1
    }

    fn weight_spec(&self) -> WeightSpec {
        let c = &self.cfg;
        let h = c.hidden_size;
        let mut s = WeightSpec::new("mpnet.", vec!["embeddings.position_ids"], Some(h));
        Embeddings::spec(&mut s, c.vocab_size, c.max_position_embeddings, h, None);
        for l in 0..c.num_hidden_layers {
            LAYER.spec(&mut s, &format!("encoder.layer.{l}"), self.dims());
        }
        s.tensor(
            "encoder.relative_attention_bias.weight",
            vec![c.relative_attention_num_buckets, c.num_attention_heads],
            Init::Normal,
        );
        s
    }

    fn build(&self, store: ParamStore) -> candle_core::Result<Box<dyn Encoder>> {
        let c = &self.cfg;
        let positions = Positions::AfterPadding {
            padding_idx: PADDING_IDX,
        };
        let embeddings =
            Embeddings::load(&store, positions, false, c.hidden_size, c.layer_norm_eps)?;
        let layers = (0..c.num_hidden_layers)
            .map(|l| LAYER.load(&store, &format!("encoder.layer.{l}"), self.dims()))
            .collect::<candle_core::Result<_>>()?;
        let relative = RelativeBias {
            table: store.var("encoder.relative_attention_bias.weight")?,
            buckets: BUCKETS,
            max_distance: MAX_DISTANCE,
        };
        let rates = DropoutRates {
            hidden: c.hidden_dropout_prob,
            attention: c.attention_probs_dropout_prob,
        };
        let parts = (embeddings, layers, Some(relative));
        let max = self.max_tokens();
        Ok(Box::new(PostNormEncoder::new(
            "mpnet", parts, max, rates, store,
        )))
    }
}
