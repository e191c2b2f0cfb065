//! Pooling token states `[B, S, H]` into sentence embeddings `[B, k·H]`: the sentence-transformers
//! modes, combinable (concatenated in sentence-transformers' order), read from and written to
//! `1_Pooling/config.json` in both the ≤5.3 boolean form and the ≥5.4 `pooling_mode` form.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};
use serde_json::{json, Map, Value};
use std::path::Path;

/// One pooling strategy. Several may be active; outputs are concatenated in declaration order
/// (sentence-transformers' order: cls, max, mean, mean_sqrt_len, weightedmean, lasttoken).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token's state ([CLS]).
    Cls,
    /// Element-wise max over real tokens (padding set to -1e9 first).
    Max,
    /// Mean over real tokens (attention mask).
    Mean,
    /// Sum over real tokens divided by sqrt(token count).
    #[value(name = "mean_sqrt_len_tokens")]
    MeanSqrtLen,
    /// Mean weighted by position (1, 2, …, S), real tokens only.
    #[value(name = "weightedmean")]
    WeightedMean,
    /// The last real token's state.
    #[value(name = "lasttoken")]
    LastToken,
}

impl Pooling {
    pub const ALL: [Pooling; 6] = [
        Pooling::Cls,
        Pooling::Max,
        Pooling::Mean,
        Pooling::MeanSqrtLen,
        Pooling::WeightedMean,
        Pooling::LastToken,
    ];

    /// The boolean key of the ≤5.3 config format.
    pub fn legacy_key(self) -> &'static str {
        match self {
            Pooling::Cls => "pooling_mode_cls_token",
            Pooling::Max => "pooling_mode_max_tokens",
            Pooling::Mean => "pooling_mode_mean_tokens",
            Pooling::MeanSqrtLen => "pooling_mode_mean_sqrt_len_tokens",
            Pooling::WeightedMean => "pooling_mode_weightedmean_tokens",
            Pooling::LastToken => "pooling_mode_lasttoken",
        }
    }

    /// The name used by sentence-transformers' `pooling_mode` string.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::Mean => "mean",
            Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
            Pooling::WeightedMean => "weightedmean",
            Pooling::LastToken => "lasttoken",
        }
    }

    pub fn from_name(s: &str) -> Option<Pooling> {
        let s = s.trim().to_ascii_lowercase();
        let s = s
            .strip_suffix("_tokens")
            .map(|x| x.to_string())
            .unwrap_or(s);
        Some(match s.as_str() {
            "cls" | "cls_token" => Pooling::Cls,
            "max" => Pooling::Max,
            "mean" => Pooling::Mean,
            "mean_sqrt_len" => Pooling::MeanSqrtLen,
            "weightedmean" => Pooling::WeightedMean,
            "lasttoken" | "last_token" => Pooling::LastToken,
            _ => return None,
        })
    }
}

/// The Pooling module: its modes (sorted, deduplicated) and the token embedding size.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolingConfig {
    pub modes: Vec<Pooling>,
    pub word_embedding_dimension: usize,
    /// false: a prompt's tokens are left out of pooling (`TokenBatch::prompt_len`), as
    /// sentence-transformers' Pooling does (INSTRUCTOR-style models).
    pub include_prompt: bool,
}

impl PoolingConfig {
    pub fn new(mut modes: Vec<Pooling>, dim: usize) -> Self {
        modes.sort();
        modes.dedup();
        Self {
            modes,
            word_embedding_dimension: dim,
            include_prompt: true,
        }
    }

    /// Output dimension: one block of `word_embedding_dimension` per mode.
    pub fn output_dim(&self) -> usize {
        self.modes.len() * self.word_embedding_dimension
    }

    /// Parses `1_Pooling/config.json` in either format (`pooling_mode`, a string or list, wins).
    pub fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let obj = v
            .as_object()
            .with_context(|| format!("{}: expected a JSON object", path.display()))?;
        let dim = obj
            .get("word_embedding_dimension")
            .or_else(|| obj.get("embedding_dimension"))
            .and_then(Value::as_u64)
            .with_context(|| {
                format!(
                    "{}: field word_embedding_dimension: expected a positive integer",
                    path.display()
                )
            })? as usize;
        let mut modes = Vec::new();
        match obj.get("pooling_mode") {
            Some(Value::String(s)) => modes.push(parse_mode(s, path)?),
            Some(Value::Array(a)) => {
                for m in a {
                    let s = m.as_str().with_context(|| {
                        format!("{}: field pooling_mode: expected strings", path.display())
                    })?;
                    modes.push(parse_mode(s, path)?);
                }
            }
            Some(Value::Null) | None => {
                for p in Pooling::ALL {
                    if obj
                        .get(p.legacy_key())
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                    {
                        modes.push(p);
                    }
                }
            }
            Some(other) => bail!(
                "{}: field pooling_mode: expected a string or a list, got {other}",
                path.display()
            ),
        }
        if modes.is_empty() {
            bail!("{}: no pooling mode is enabled", path.display());
        }
        let mut cfg = Self::new(modes, dim);
        cfg.include_prompt = obj
            .get("include_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        Ok(cfg)
    }

    /// Both key sets: the six booleans older sentence-transformers read, and `pooling_mode`,
    /// which newer versions read (older ones also accept it as a constructor argument).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "word_embedding_dimension".into(),
            json!(self.word_embedding_dimension),
        );
        for p in Pooling::ALL {
            m.insert(p.legacy_key().into(), json!(self.modes.contains(&p)));
        }
        m.insert("include_prompt".into(), json!(self.include_prompt));
        // Older versions take `pooling_mode` only as one string, so several modes are left to the
        // booleans (which newer versions convert to a mode list in the same order).
        if let [one] = self.modes.as_slice() {
            m.insert("pooling_mode".into(), json!(one.name()));
        }
        Value::Object(m)
    }

    /// `hidden: [B, S, H]`, `attention_mask: [B, S]` (1 real, 0 pad), `lengths[i]` real tokens,
    /// `prompt_len` leading prompt tokens per row (left out with `include_prompt: false`).
    /// Returns `[B, modes·H]`.
    pub fn forward(
        &self,
        hidden: &Tensor,
        attention_mask: &Tensor,
        lengths: &[usize],
        prompt_len: usize,
    ) -> candle_core::Result<Tensor> {
        let skip = if self.include_prompt { 0 } else { prompt_len };
        let mask = if skip == 0 {
            attention_mask.clone()
        } else {
            // sentence-transformers zeroes the first prompt_length positions of the mask (ours
            // is right-padded), and CLS pooling takes the first position the mask keeps.
            let s = attention_mask.dim(1)?;
            let keep: Vec<u32> = (0..s).map(|j| u32::from(j >= skip)).collect();
            let keep = Tensor::from_vec(keep, (1, s), attention_mask.device())?
                .to_dtype(attention_mask.dtype())?;
            attention_mask.broadcast_mul(&keep)?
        };
        let parts: Vec<Tensor> = self
            .modes
            .iter()
            .map(|m| pool_one(*m, hidden, &mask, lengths, skip))
            .collect::<candle_core::Result<_>>()?;
        if parts.len() == 1 {
            Ok(parts.into_iter().next().unwrap_or_else(|| unreachable!()))
        } else {
            Tensor::cat(&parts, 1)
        }
    }
}

fn parse_mode(s: &str, path: &Path) -> Result<Pooling> {
    Pooling::from_name(s).with_context(|| {
        format!(
            "{}: field pooling_mode: unknown mode {s:?}; expected one of cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken",
            path.display()
        )
    })
}

/// A `[B, S, 1]` float mask selecting one position per row.
fn one_hot_rows(positions: &[usize], s: usize, like: &Tensor) -> candle_core::Result<Tensor> {
    let b = positions.len();
    let mut v = vec![0f32; b * s];
    for (r, &p) in positions.iter().enumerate() {
        v[r * s + p.min(s.saturating_sub(1))] = 1.0;
    }
    Tensor::from_vec(v, (b, s, 1), like.device())?.to_dtype(like.dtype())
}

fn pool_one(
    mode: Pooling,
    hidden: &Tensor,
    attention_mask: &Tensor,
    lengths: &[usize],
    skip: usize,
) -> candle_core::Result<Tensor> {
    let (_b, s, _h) = hidden.dims3()?;
    let mask = attention_mask.to_dtype(hidden.dtype())?.unsqueeze(2)?; // [B, S, 1]
    match mode {
        Pooling::Cls if skip == 0 => hidden.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Cls => {
            // The first kept position; a row that is all prompt falls back to position 0
            // (torch's argmax of an all-zero mask).
            let first: Vec<usize> = lengths
                .iter()
                .map(|&l| if skip < l { skip } else { 0 })
                .collect();
            hidden
                .broadcast_mul(&one_hot_rows(&first, s, hidden)?)?
                .sum(1)
        }
        Pooling::LastToken => {
            let last: Vec<usize> = lengths.iter().map(|l| l.saturating_sub(1)).collect();
            hidden
                .broadcast_mul(&one_hot_rows(&last, s, hidden)?)?
                .sum(1)
        }
        Pooling::Max => {
            // Padding gets -1e9 so it never wins, as sentence-transformers does.
            let pad = ((mask.ones_like()? - &mask)? * -1e9)?;
            hidden.broadcast_mul(&mask)?.broadcast_add(&pad)?.max(1)
        }
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let sum = hidden.broadcast_mul(&mask)?.sum(1)?; // [B, H]
            let count = mask.sum(1)?.to_dtype(DType::F32)?; // [B, 1]
            let count = count.clamp(1e-9, f64::MAX)?;
            let denom = if mode == Pooling::Mean {
                count
            } else {
                count.sqrt()?
            };
            sum.broadcast_div(&denom.to_dtype(hidden.dtype())?)
        }
        Pooling::WeightedMean => {
            let pos = (Tensor::arange(1u32, s as u32 + 1, hidden.device())?
                .to_dtype(hidden.dtype())?)
            .reshape((1, s, 1))?;
            let w = mask.broadcast_mul(&pos)?; // [B, S, 1]
            let sum = hidden.broadcast_mul(&w)?.sum(1)?;
            let denom = w.sum(1)?.clamp(1e-9, f64::MAX)?;
            sum.broadcast_div(&denom)
        }
    }
}

/// L2-normalises rows of `[B, D]` (the Normalize module); zero rows stay zero (eps 1e-12 like torch).
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_config_forms_parse_to_the_same_modes() {
        let p = Path::new("1_Pooling/config.json");
        let legacy = json!({"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false});
        let modern = json!({"word_embedding_dimension": 8, "pooling_mode": "mean"});
        let a = PoolingConfig::from_json(&legacy, p).unwrap();
        let b = PoolingConfig::from_json(&modern, p).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.modes, vec![Pooling::Mean]);
        let round = PoolingConfig::from_json(&a.to_json(), p).unwrap();
        assert_eq!(round, a);
        assert_eq!(a.to_json()["pooling_mode_mean_tokens"], json!(true));
    }

    #[test]
    fn unknown_mode_is_an_error_naming_the_field() {
        let e = PoolingConfig::from_json(
            &json!({"word_embedding_dimension": 8, "pooling_mode": "median"}),
            Path::new("x.json"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("pooling_mode"), "{e:#}");
    }

    #[test]
    fn pooling_math_on_a_hand_example() {
        let dev = candle_core::Device::Cpu;
        // B=1, S=3 (last one padding), H=2.
        let h = Tensor::new(&[[[1f32, 2.], [3., -4.], [100., 100.]]], &dev).unwrap();
        let m = Tensor::new(&[[1u32, 1, 0]], &dev).unwrap();
        let get = |mode| {
            pool_one(mode, &h, &m, &[2], 0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()[0]
                .clone()
        };
        assert_eq!(get(Pooling::Cls), vec![1., 2.]);
        assert_eq!(get(Pooling::Mean), vec![2., -1.]);
        assert_eq!(get(Pooling::Max), vec![3., 2.]);
        assert_eq!(get(Pooling::LastToken), vec![3., -4.]);
        let s = get(Pooling::MeanSqrtLen);
        assert!((s[0] - 4. / 2f32.sqrt()).abs() < 1e-6);
        let w = get(Pooling::WeightedMean);
        assert!((w[0] - (1. + 6.) / 3.).abs() < 1e-6 && (w[1] - (2. - 8.) / 3.).abs() < 1e-6);
    }
}
