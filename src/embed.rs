//! The `embed` job: read texts, encode them (batched, length-sorted), write `.npy`,
//! `.safetensors` (tensor "embeddings") or `.jsonl` ({"text", "embedding"}) atomically.

use crate::data::{read_table, DataFormat, ReadOptions};
use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::fsutil::AtomicFile;
use crate::model::{ModelSpec, SentenceEncoder};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output file kinds, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputFormat {
    Npy,
    Safetensors,
    Jsonl,
}

impl OutputFormat {
    pub fn from_path(p: &Path) -> Result<Self> {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("npy") => Ok(Self::Npy),
            Some("safetensors") => Ok(Self::Safetensors),
            Some("jsonl") => Ok(Self::Jsonl),
            _ => bail!(
                "{}: output must end in .npy, .safetensors or .jsonl",
                p.display()
            ),
        }
    }
}

/// Everything `embed` needs, resolved from the command line in one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedConfig {
    pub model: ModelSpec,
    pub input: PathBuf,
    /// None: from the input's extension.
    pub format: Option<DataFormat>,
    /// JSONL field or CSV/TSV column holding the text (default "text").
    pub column: Option<String>,
    pub read: ReadOptions,
    pub output: PathBuf,
    pub encode: EncodeOptions,
    /// Inputs longer than this are encoded in chunks kept in `<output>.parts/` (resumable).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Continue an interrupted run from its finished chunks.
    #[serde(default)]
    pub resume: bool,
}

pub const DEFAULT_CHUNK_ROWS: usize = 50_000;

fn default_chunk_rows() -> usize {
    DEFAULT_CHUNK_ROWS
}

/// What a finished `embed` run did.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedReport {
    pub rows: usize,
    pub dim: usize,
    pub truncated: usize,
    pub output: PathBuf,
    /// Chunks reused from an interrupted run (`--resume`).
    pub resumed_chunks: usize,
}

/// Reads the text column of the input (one text per row, in file order).
pub fn read_texts(cfg: &EmbedConfig) -> Result<Vec<String>> {
    let table = read_table(&cfg.input, cfg.format, &cfg.read)?;
    let col = table.column(cfg.column.as_deref().unwrap_or("text"))?;
    table
        .rows
        .iter()
        .map(|r| Ok(table.text(r, col)?.into_owned()))
        .collect()
}

pub fn run(cfg: &EmbedConfig) -> Result<EmbedReport> {
    let out_format = OutputFormat::from_path(&cfg.output)?;
    let texts = read_texts(cfg)?;
    let model = SentenceEncoder::load_on_spec_device(&cfg.model)?;
    for n in &model.notices {
        eprintln!("note: {n}");
    }
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let parts = crate::embed_parts::parts_dir(&cfg.output);
    let chunked = refs.len() > cfg.chunk_rows || cfg.resume || parts.exists();
    let (emb, resumed_chunks) = if chunked {
        let input = std::fs::read(&cfg.input).unwrap_or_default();
        let settings = serde_json::json!({
            "input": cfg.input,
            "model": cfg.model,
            "column": cfg.column,
            "normalize": cfg.encode.normalize,
            "format": cfg.format,
        });
        let key =
            crate::embed_parts::job_key(&input, &settings, refs.len(), cfg.chunk_rows, model.dim());
        crate::embed_parts::encode_in_parts(
            &model,
            &refs,
            &cfg.encode,
            &parts,
            &key,
            cfg.chunk_rows,
            cfg.resume,
        )?
    } else {
        (encode(&model, &refs, &cfg.encode)?, 0)
    };
    write_embeddings(&cfg.output, out_format, &emb, &refs)?;
    if chunked {
        std::fs::remove_dir_all(&parts).with_context(|| format!("removing {}", parts.display()))?;
    }
    Ok(EmbedReport {
        rows: emb.len(),
        dim: emb.dim,
        truncated: emb.truncated,
        output: cfg.output.clone(),
        resumed_chunks,
    })
}

/// Writes embeddings atomically in `format`.
pub fn write_embeddings(
    path: &Path,
    format: OutputFormat,
    emb: &Embeddings,
    texts: &[&str],
) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    let w = f.writer()?;
    let ctx = || format!("writing {}", path.display());
    match format {
        OutputFormat::Npy => {
            w.write_all(&npy_header(emb.len(), emb.dim))
                .with_context(ctx)?;
            for x in &emb.data {
                w.write_all(&x.to_le_bytes()).with_context(ctx)?;
            }
        }
        OutputFormat::Safetensors => {
            let t = candle_core::Tensor::from_slice(
                &emb.data,
                (emb.len(), emb.dim),
                &candle_core::Device::Cpu,
            )?;
            let meta: std::collections::HashMap<String, String> =
                [("format".to_string(), "pt".to_string())].into();
            let bytes = safetensors::serialize([("embeddings", &t)], Some(meta))
                .context("serializing safetensors")?;
            w.write_all(&bytes).with_context(ctx)?;
        }
        OutputFormat::Jsonl => {
            for (i, t) in texts.iter().enumerate() {
                let line = serde_json::json!({"text": t, "embedding": emb.row(i)});
                serde_json::to_writer(&mut *w, &line).with_context(ctx)?;
                w.write_all(b"\n").with_context(ctx)?;
            }
        }
    }
    f.commit()
}

/// NumPy v1.0 header for a C-order little-endian f32 array `[rows, dim]`, padded to 64 bytes.
pub fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = (dict.len() + pad + 1) as u16;
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&header_len.to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn npy_header_is_aligned() {
        let h = super::npy_header(3, 384);
        assert_eq!(h.len() % 64, 0);
        assert!(String::from_utf8_lossy(&h).contains("'shape': (3, 384)"));
    }
}
