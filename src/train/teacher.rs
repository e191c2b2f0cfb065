//! Teacher labels for distillation (`--loss mse` / `margin-mse` with `--teacher`), computed once
//! before step 1:
//! - a model (Hub id or directory): every text column embedded by it in eval mode, through the
//!   embeddings cache (`~/.cache/embtune/embeddings/`, so a resumed run does not embed again).
//!   MSE gets each column's teacher embedding (`[C, D]` per row); MarginMSE the teacher's
//!   dot-product margins `q·p − q·nᵢ` (`[k]` per row), as sentence-transformers' examples
//!   compute them.
//! - a `.npy` (float32, `[rows, D]` or `[rows, C, D]`) or `.safetensors` file (its one tensor,
//!   or the one named `labels`) aligned with the training rows.
//! The labels replace the data's label column. Depends on model, encode, embed_cache.

use super::data::TrainSet;
use crate::encode::EncodeOptions;
use crate::loss::LossKind;
use crate::model::{ModelSpec, SentenceEncoder};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the teacher labels come from (`--teacher`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Teacher {
    Model(ModelSpec),
    File(PathBuf),
}

impl Teacher {
    /// A `.npy` / `.safetensors` path is a labels file; anything else names a model.
    pub fn parse(arg: &str, model_spec: impl FnOnce(String) -> ModelSpec) -> Self {
        let p = Path::new(arg);
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "npy" | "safetensors") {
            Teacher::File(p.to_path_buf())
        } else {
            Teacher::Model(model_spec(arg.to_string()))
        }
    }
}

/// Fills `set.labels` / `set.label_shape` from the teacher.
pub fn apply(
    teacher: &Teacher,
    loss: LossKind,
    set: &mut TrainSet,
    (student, projection): (usize, bool),
    device: &Device,
) -> Result<()> {
    let rows = set.len();
    let (data, shape) = match teacher {
        Teacher::File(p) => read_file(p, rows)?,
        Teacher::Model(spec) => {
            let t = SentenceEncoder::load(spec, device)
                .with_context(|| format!("--teacher {}", spec.model))?;
            crate::logging::model_loaded(spec, &t);
            // Before embedding every row: a dimension MSE cannot use is refused at once.
            if loss == LossKind::Mse {
                crate::loss::distill::check_teacher_dim(student, t.dim(), projection)
                    .with_context(|| format!("--teacher {}", spec.model))?;
            }
            from_model(&t, loss, set)?
        }
    };
    let cols = set.n_texts();
    if let [c, _] = shape[..] {
        if c != cols {
            bail!(
                "--teacher: the labels have {c} embeddings per row for {cols} text columns; give one per column ([rows, {cols}, D]) or one for all ([rows, D])"
            );
        }
    }
    if loss == LossKind::MarginMse && shape.len() > 1 {
        bail!("--teacher: margin-mse takes margins ([rows] or [rows, k]), not embeddings of shape {shape:?} per row");
    }
    tracing::info!(
        "teacher labels: {rows} rows × {:?}{}",
        shape,
        match teacher {
            Teacher::File(p) => format!(" from {}", p.display()),
            Teacher::Model(s) => format!(" from {}", s.model),
        }
    );
    set.labels = Some(data);
    set.label_shape = shape;
    set.label_column = None;
    Ok(())
}

/// The last dimension of the labels (the teacher's embedding size for MSE).
pub fn teacher_dim(set: &TrainSet) -> usize {
    set.label_shape.last().copied().unwrap_or(1)
}

fn from_model(
    t: &SentenceEncoder,
    loss: LossKind,
    set: &TrainSet,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let (rows, cols) = (set.len(), set.n_texts());
    let opts = EncodeOptions::default();
    let cache = crate::embed_cache::default_dir();
    let column = |c: usize| -> Result<crate::encode::Embeddings> {
        let texts: Vec<&str> = set.texts.iter().map(|r| r[c].as_str()).collect();
        crate::embed_cache::embeddings(t, &texts, &opts, Some(&cache), "teacher")
    };
    let embs: Vec<_> = (0..cols).map(column).collect::<Result<_>>()?;
    let d = t.dim();
    match loss {
        LossKind::MarginMse => {
            let k = cols - 2;
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
            let mut out = Vec::with_capacity(rows * k);
            for r in 0..rows {
                let pos = dot(embs[0].row(r), embs[1].row(r));
                for n in &embs[2..] {
                    out.push(pos - dot(embs[0].row(r), n.row(r)));
                }
            }
            Ok((out, vec![k]))
        }
        _ => {
            let mut out = Vec::with_capacity(rows * cols * d);
            for r in 0..rows {
                for e in &embs {
                    out.extend_from_slice(e.row(r));
                }
            }
            Ok((out, vec![cols, d]))
        }
    }
}

/// A labels file: `.npy` float32 or `.safetensors` (one tensor, or `labels`); first dimension =
/// the training rows.
fn read_file(p: &Path, rows: usize) -> Result<(Vec<f32>, Vec<usize>)> {
    let (data, dims) = match p.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy_f32(p)?,
        _ => {
            let map = crate::model::st_read::load(p).with_context(|| {
                format!("--teacher {}: not a readable safetensors file", p.display())
            })?;
            let only = (map.len() == 1)
                .then(|| map.values().next().cloned())
                .flatten();
            let t = match (map.get("labels"), only) {
                (Some(t), _) => t.clone(),
                (None, Some(t)) => t,
                (None, None) => bail!(
                    "--teacher {}: {} tensors and none named \"labels\"; name the one to use \"labels\"",
                    p.display(),
                    map.len()
                ),
            };
            let dims = t.dims().to_vec();
            let data = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            (data, dims)
        }
    };
    if dims.first() != Some(&rows) || dims.len() > 3 {
        bail!(
            "--teacher {}: shape {dims:?}; expected {rows} rows (one per training row, in file order) × D or × columns × D",
            p.display()
        );
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!(
            "--teacher {}: row {} holds a non-finite value",
            p.display(),
            i / (data.len() / rows).max(1) + 1
        );
    }
    Ok((data, dims[1..].to_vec()))
}

/// A little-endian float32 `.npy` (C order).
fn read_npy_f32(p: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let b = std::fs::read(p).with_context(|| format!("--teacher {}", p.display()))?;
    let bad = || anyhow::anyhow!("--teacher {}: not a .npy file", p.display());
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad());
    }
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        if b.len() < 12 {
            return Err(bad());
        }
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = b
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(bad)?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        bail!(
            "--teacher {}: expected little-endian float32 in C order (numpy: arr.astype('<f4')); the header says {}",
            p.display(),
            header.trim()
        );
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(bad)?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data: Vec<f32> = b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if data.len() != dims.iter().product::<usize>() {
        bail!(
            "--teacher {}: {} values for shape {dims:?} (truncated file?)",
            p.display(),
            data.len()
        );
    }
    Ok((data, dims))
}
