//! Layer freezing (`--freeze-embeddings`, `--freeze-layers N`): which of the model's named
//! parameters the optimizer gets. Frozen ones keep their loaded values bit for bit and get no
//! AdamW state, so checkpoints shrink with them. Names are the checkpoint's (HF) names of every
//! family: the embeddings are the parameters under an `embeddings.` module, and a layer's index
//! is the number after its `layer.` / `layers.` component (BERT, RoBERTa, MPNet, GTE, NomicBERT
//! `encoder.layer(s).N.…`, DistilBERT `transformer.layer.N.…`, ModernBERT `layers.N.…`).
//! Parameters outside both (MPNet's shared relative-attention bias, a final norm, Dense heads)
//! stay trainable. Depends on candle only.

use anyhow::{bail, Result};
use candle_core::Var;
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
