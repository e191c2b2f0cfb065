//! What trains ([`trainable`]): LoRA adapters (`--lora-rank`, `model::lora`) in place of the
//! model's weights, or the model's parameters less the frozen ones. Layer freezing
//! (`--freeze-embeddings`, `--freeze-layers N`): which of the model's named parameters the
//! optimizer gets. Frozen ones keep their loaded values bit for bit and get no
//! AdamW state, so checkpoints shrink with them. Names are the checkpoint's (HF) names of every
//! family: the embeddings are the parameters under an `embeddings.` module, and a layer's index
//! is the number after its `layer.` / `layers.` component (BERT, RoBERTa, MPNet, GTE, NomicBERT
//! `encoder.layer(s).N.…`, DistilBERT `transformer.layer.N.…`, ModernBERT `layers.N.…`).
//! Parameters outside both (MPNet's shared relative-attention bias, a final norm, Dense heads)
//! stay trainable. Depends on candle and model.

use super::TrainConfig;
use crate::model::SentenceEncoder;
use anyhow::{bail, Result};
use candle_core::Var;

/// Where `--save-adapter` writes the PEFT adapter, inside the output directory (not beside the
/// merged weights: sentence-transformers would take a folder with adapter_config.json for an
/// adapter on top of its base model).
pub const ADAPTER_DIR: &str = "adapter";

/// The parameters the optimizer trains: with `--lora-rank`, the adapters attached to `model`
/// now; else the model's parameters less the frozen ones (a note says how many are frozen).
pub fn trainable(cfg: &TrainConfig, model: &mut SentenceEncoder) -> Result<Vec<(String, Var)>> {
    if let Some(l) = &cfg.lora {
        let mut l = l.clone();
        if l.targets.is_empty() {
            l.targets = crate::model::lora::default_targets(model.family()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--lora-rank: no default LoRA targets for the {} family; name them with --lora-targets",
                    model.family()
                )
            })?;
        }
        model.attach_lora(l, cfg.seed)?;
        let vars = model.lora_vars();
        let lora = model.lora().map(|x| x.adapters.len()).unwrap_or(0);
        let weights: usize = vars.iter().map(|(_, v)| v.as_tensor().elem_count()).sum();
        let base: usize = model
            .named_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum();
        tracing::info!(
            "LoRA: {lora} adapted weights, rank {}, alpha {}; training {weights} of {base} weights ({:.2} %)",
            cfg.lora.as_ref().map(|x| x.rank).unwrap_or(0),
            cfg.lora.as_ref().map(|x| x.alpha).unwrap_or(0.0),
            100.0 * weights as f64 / base.max(1) as f64
        );
        return Ok(vars);
    }
    let all = model.named_vars();
    let n_all = all.len();
    let kept = cfg.freeze.select(all, model.num_layers())?;
    if kept.len() < n_all {
        let count: usize = kept.iter().map(|(_, x)| x.as_tensor().elem_count()).sum();
        tracing::info!(
            "frozen: {} of {n_all} parameter tensors; training {count} weights",
            n_all - kept.len()
        );
    }
    Ok(kept)
}
use serde::{Deserialize, Serialize};

/// What to leave untrained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// The token, position and token-type embeddings and their norm.
    #[serde(default)]
    pub embeddings: bool,
    /// The first N encoder layers (from the input side).
    #[serde(default)]
    pub layers: usize,
}

impl Freeze {
    pub fn is_none(&self) -> bool {
        !self.embeddings && self.layers == 0
    }

    /// Whether the parameter named `name` is frozen.
    pub fn frozen(&self, name: &str) -> bool {
        (self.embeddings && is_embedding(name))
            || layer_index(name).is_some_and(|i| i < self.layers)
    }

    /// The trainable subset of `vars` (order kept); refuses more frozen layers than the model
    /// has, and a selection that leaves nothing to train.
    pub fn select(
        &self,
        vars: Vec<(String, Var)>,
        num_layers: usize,
    ) -> Result<Vec<(String, Var)>> {
        if self.layers > num_layers {
            bail!(
                "--freeze-layers {}: the model has {num_layers} layers; give at most {num_layers}",
                self.layers
            );
        }
        let total = vars.len();
        let kept: Vec<_> = vars.into_iter().filter(|(n, _)| !self.frozen(n)).collect();
        // The pooler's dense layer gets no gradient from a mean/CLS-pooled loss.
        if kept.iter().all(|(n, _)| n.starts_with("pooler.")) {
            bail!("--freeze-embeddings --freeze-layers {}: nothing the loss reaches is left to train ({} of {total} parameter tensors frozen); freeze fewer layers", self.layers, total - kept.len());
        }
        Ok(kept)
    }
}

fn is_embedding(name: &str) -> bool {
    name.starts_with("embeddings.") || name.contains(".embeddings.")
}

/// The encoder layer a parameter belongs to (`encoder.layer.3.attention…` → 3).
pub fn layer_index(name: &str) -> Option<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    parts
        .windows(2)
        .find(|w| w[0] == "layer" || w[0] == "layers")
        .and_then(|w| w[1].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_spelling_is_placed() {
        let f = Freeze {
            embeddings: true,
            layers: 2,
        };
        for n in [
            "embeddings.word_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.tok_embeddings.weight",
            "encoder.layer.0.attention.self.query.weight",
            "encoder.layers.1.mlp.fc11.weight",
            "transformer.layer.1.ffn.lin1.bias",
            "layers.0.attn.Wqkv.weight",
        ] {
            assert!(f.frozen(n), "{n} should be frozen");
        }
        for n in [
            "encoder.layer.2.output.dense.weight",
            "encoder.layer.10.output.dense.weight",
            "layers.2.mlp.Wo.weight",
            "encoder.relative_attention_bias.weight",
            "final_norm.weight",
            "dense0.linear.weight",
            "pooler.dense.weight",
        ] {
            assert!(!f.frozen(n), "{n} should train");
        }
        assert_eq!(layer_index("encoder.layer.11.x"), Some(11));
        assert_eq!(layer_index("encoder.relative_attention_bias.weight"), None);
        assert!(!Freeze::default().frozen("embeddings.word_embeddings.weight"));
    }
}
