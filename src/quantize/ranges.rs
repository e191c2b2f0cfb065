//! Per-dimension int8/uint8 quantization ranges (sentence-transformers' `ranges`): computed from
//! embeddings, saved as `<output>.ranges.json` and read back with every field checked (errors
//! name the file). Depends on `quantize::Precision`, `encode::Embeddings`, `fsutil`.

use super::Precision;
use crate::encode::Embeddings;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Per-dimension quantization ranges for int8/uint8 (sentence-transformers' `ranges`, a
/// `(2, dim)` array: row 0 the minimum, row 1 the maximum of each dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct Ranges {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

/// The saved form of [`Ranges`]: `<output>.ranges.json`. Only `min` and `max` are needed to
/// read one (a file written from numpy's `(2, dim)` ranges works); `embed` writes every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangesFile {
    /// The precision these ranges were used for.
    #[serde(default)]
    pub precision: Option<Precision>,
    /// Checked against the lengths of `min` and `max` when present.
    #[serde(default)]
    pub dim: Option<usize>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// Where the ranges came from: a calibration file, or "the embeddings themselves".
    #[serde(default)]
    pub calibration: Option<String>,
}

impl Ranges {
    /// Minimum and maximum of every dimension over the rows of `emb` (at least one row).
    pub fn from_embeddings(emb: &Embeddings) -> Result<Self> {
        if emb.is_empty() {
            bail!("no embeddings to compute int8/uint8 ranges from");
        }
        let mut r = Ranges {
            min: emb.row(0).to_vec(),
            max: emb.row(0).to_vec(),
        };
        for i in 1..emb.len() {
            for (j, &x) in emb.row(i).iter().enumerate() {
                // numpy's min/max propagate NaN; embeddings are finite, so plain comparisons do.
                if x < r.min[j] {
                    r.min[j] = x;
                }
                if x > r.max[j] {
                    r.max[j] = x;
                }
            }
        }
        Ok(r)
    }

    pub fn dim(&self) -> usize {
        self.min.len()
    }

    /// Reads and checks a ranges file written by [`Ranges::save`]; errors name the file.
    pub fn load(path: &Path) -> Result<(Self, RangesFile)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading ranges file {}", path.display()))?;
        let f: RangesFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a ranges file ({{\"min\": [...], \"max\": [...]}} per dimension, as embed writes)",
                path.display()
            )
        })?;
        let dim = f.dim.unwrap_or(f.min.len());
        if f.min.len() != dim || f.max.len() != dim || dim == 0 {
            bail!(
                "{}: \"dim\" is {dim} but \"min\" has {} values and \"max\" {}",
                path.display(),
                f.min.len(),
                f.max.len()
            );
        }
        if let Some(j) = (0..dim).find(|&j| !(f.min[j] <= f.max[j] && f.max[j].is_finite())) {
            bail!(
                "{}: dimension {j} has min {} and max {} (need finite min ≤ max)",
                path.display(),
                f.min[j],
                f.max[j]
            );
        }
        let r = Ranges {
            min: f.min.clone(),
            max: f.max.clone(),
        };
        Ok((r, f))
    }

    /// Writes the ranges atomically as JSON (see [`RangesFile`]).
    pub fn save(&self, path: &Path, precision: Precision, calibration: &str) -> Result<()> {
        let f = RangesFile {
            precision: Some(precision),
            dim: Some(self.dim()),
            min: self.min.clone(),
            max: self.max.clone(),
            calibration: Some(calibration.to_string()),
        };
        let mut bytes = serde_json::to_vec_pretty(&f).context("serializing ranges")?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(path, &bytes)
    }
}
