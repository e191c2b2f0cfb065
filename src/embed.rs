//! The `embed` job: read texts, encode them (batched, length-sorted), optionally quantize them
//! (`quantize`: float16, int8/uint8 with ranges saved in `<output>.ranges.json`, binary), write
//! `.npy`, `.safetensors` (tensor "embeddings") or `.jsonl` ({"text", "embedding"}) atomically.

use crate::data::{read_table, DataFormat, ReadOptions};
use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::fsutil::AtomicFile;
use crate::model::prompts::Side;
use crate::model::{ModelSpec, SentenceEncoder};
use crate::quantize::{quantize, Precision, Quantized, Ranges, ValuesRef};
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
    /// `--prompt` / `--prompt-name` (neither: the model's default prompt).
    #[serde(default)]
    pub prompt: crate::model::prompts::PromptChoice,
    /// Inputs longer than this are encoded in chunks kept in `<output>.parts/` (resumable).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Continue an interrupted run from its finished chunks.
    #[serde(default)]
    pub resume: bool,
    /// Output precision (default float32). Any other is L2-normalised first.
    #[serde(default)]
    pub precision: Precision,
    /// int8/uint8: texts whose embeddings give the ranges (read like `input`).
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    /// int8/uint8: a saved ranges file (`<output>.ranges.json` of an earlier run).
    #[serde(default)]
    pub ranges: Option<PathBuf>,
}

impl EmbedConfig {
    /// Flag combinations that cannot work, refused before anything is read.
    pub fn validate(&self) -> Result<()> {
        let int = self.precision.uses_ranges();
        if !int && self.ranges.is_some() {
            bail!(
                "--ranges applies only to --precision int8 or uint8 (got {})",
                self.precision
            );
        }
        if !int && self.calibration.is_some() {
            bail!(
                "--calibration applies only to --precision int8 or uint8 (got {})",
                self.precision
            );
        }
        if self.ranges.is_some() && self.calibration.is_some() {
            bail!("--ranges and --calibration both give the int8/uint8 ranges: use one");
        }
        Ok(())
    }
}

/// Where `embed` saves the int8/uint8 ranges it used: `<output>.ranges.json`.
pub fn ranges_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{name}.ranges.json"))
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
    pub precision: Precision,
    /// Bytes per embedding in the output's precision.
    pub bytes_per_embedding: usize,
    /// int8/uint8: the ranges file written next to the output.
    pub ranges_file: Option<PathBuf>,
}

/// Reads the text column of the input (one text per row, in file order).
pub fn read_texts(cfg: &EmbedConfig) -> Result<Vec<String>> {
    read_texts_from(&cfg.input, cfg)
}

/// Reads the text column of `path` with `cfg`'s reader options (format, column, delimiter).
fn read_texts_from(path: &Path, cfg: &EmbedConfig) -> Result<Vec<String>> {
    let table = read_table(path, cfg.format, &cfg.read)?;
    let col = table.column(cfg.column.as_deref().unwrap_or("text"))?;
    table
        .rows
        .iter()
        .map(|r| Ok(table.text(r, col)?.into_owned()))
        .collect()
}

/// Where the int8/uint8 ranges come from, settled before encoding.
enum RangesSource {
    None,
    Given(Ranges, String),
    Calibration(Vec<String>),
    Own,
}

/// Checks the precision flags and reads what they name, before the model is loaded.
fn ranges_source(cfg: &EmbedConfig, rows: usize) -> Result<RangesSource> {
    cfg.validate()?;
    if !cfg.precision.uses_ranges() {
        return Ok(RangesSource::None);
    }
    if let Some(p) = &cfg.ranges {
        let (r, f) = Ranges::load(p)?;
        let origin = f.calibration.unwrap_or_else(|| p.display().to_string());
        return Ok(RangesSource::Given(r, origin));
    }
    if let Some(p) = &cfg.calibration {
        let texts = read_texts_from(p, cfg)?;
        if texts.is_empty() {
            bail!("--calibration {}: no texts", p.display());
        }
        return Ok(RangesSource::Calibration(texts));
    }
    if rows == 1 {
        bail!(crate::quantize::SINGLE_ROW);
    }
    if rows < 100 {
        tracing::info!(
            "note: {} ranges computed from only {rows} embeddings; --calibration with more texts gives steadier ones",
            cfg.precision
        );
    }
    Ok(RangesSource::Own)
}

pub fn run(cfg: &EmbedConfig) -> Result<EmbedReport> {
    let out_format = OutputFormat::from_path(&cfg.output)?;
    crate::fsutil::check_writable_file(&cfg.output)?;
    let texts = read_texts(cfg)?;
    let source = ranges_source(cfg, texts.len())?;
    let model = SentenceEncoder::load_on_spec_device(&cfg.model)?;
    crate::logging::model_loaded(&cfg.model, &model);
    // Quantized precisions are L2-normalised first, as sentence-transformers' evaluator does.
    let prompt = model.prompts.choose(&cfg.prompt, Side::Plain, "--prompt-name")?;
    let opts = EncodeOptions {
        normalize: cfg.encode.normalize || cfg.precision != Precision::Float32,
        prompt: Some(prompt),
        ..cfg.encode.clone()
    };
    let source = settle_ranges(cfg, &model, &opts, source)?;
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let (emb, resumed_chunks) = encode_all(cfg, &model, &refs, &opts)?;
    let (rows, dim, truncated) = (emb.len(), emb.dim, emb.truncated);
    let ranges_file = quantize_and_write(cfg, out_format, emb, source, &refs)?;
    let parts = crate::embed_parts::parts_dir(&cfg.output);
    if parts.exists() {
        std::fs::remove_dir_all(&parts).with_context(|| format!("removing {}", parts.display()))?;
    }
    Ok(EmbedReport {
        rows,
        dim,
        truncated,
        output: cfg.output.clone(),
        resumed_chunks,
        precision: cfg.precision,
        bytes_per_embedding: cfg.precision.bytes_per_embedding(dim),
        ranges_file,
    })
}

/// Checks given ranges against the model and turns calibration texts into ranges — both
/// before the input is encoded.
fn settle_ranges(
    cfg: &EmbedConfig,
    model: &SentenceEncoder,
    opts: &EncodeOptions,
    source: RangesSource,
) -> Result<RangesSource> {
    Ok(match source {
        RangesSource::Given(r, c) => {
            if r.dim() != model.dim() {
                let p = cfg.ranges.as_deref().unwrap_or(Path::new("")).display();
                bail!(
                    "--ranges {p}: ranges of dimension {} but the model's embeddings have {}",
                    r.dim(),
                    model.dim()
                );
            }
            RangesSource::Given(r, c)
        }
        RangesSource::Calibration(t) => {
            let refs: Vec<&str> = t.iter().map(|s| s.as_str()).collect();
            let calib = encode(model, &refs, opts)?;
            let name = cfg.calibration.as_deref().unwrap_or(Path::new(""));
            RangesSource::Given(Ranges::from_embeddings(&calib)?, name.display().to_string())
        }
        s => s,
    })
}

/// Quantizes the float32 result, saves the int8/uint8 ranges used (`<output>.ranges.json`,
/// before the output, so an output never lacks its ranges) and writes the output.
fn quantize_and_write(
    cfg: &EmbedConfig,
    format: OutputFormat,
    emb: Embeddings,
    source: RangesSource,
    texts: &[&str],
) -> Result<Option<PathBuf>> {
    let (ranges, calibration) = match source {
        RangesSource::Given(r, c) => (Some(r), c),
        RangesSource::Own => (
            Some(Ranges::from_embeddings(&emb)?),
            "the embeddings themselves".to_string(),
        ),
        _ => (None, String::new()),
    };
    let q = match cfg.precision {
        Precision::Float32 => Quantized::from_f32(emb),
        p => quantize(&emb, p, ranges.as_ref())?,
    };
    let ranges_file = match &ranges {
        Some(r) => {
            let p = ranges_path(&cfg.output);
            r.save(&p, cfg.precision, &calibration)?;
            Some(p)
        }
        None => None,
    };
    write_values(&cfg.output, format, q.view(), q.cols, texts)?;
    Ok(ranges_file)
}

/// Float32 embeddings of all texts: directly, or chunk by chunk (resumable) for large inputs.
fn encode_all(
    cfg: &EmbedConfig,
    model: &SentenceEncoder,
    refs: &[&str],
    opts: &EncodeOptions,
) -> Result<(Embeddings, usize)> {
    let parts = crate::embed_parts::parts_dir(&cfg.output);
    let chunked = refs.len() > cfg.chunk_rows || cfg.resume || parts.exists();
    if !chunked {
        return Ok((encode(model, refs, opts)?, 0));
    }
    let input = std::fs::read(&cfg.input).unwrap_or_default();
    let settings = serde_json::json!({
        "input": cfg.input,
        "model": cfg.model,
        "column": cfg.column,
        "normalize": opts.normalize,
        "prompt": opts.prompt,
        "format": cfg.format,
        "precision": cfg.precision,
    });
    let key =
        crate::embed_parts::job_key(&input, &settings, refs.len(), cfg.chunk_rows, model.dim());
    crate::embed_parts::encode_in_parts(model, refs, opts, &parts, &key, cfg.chunk_rows, cfg.resume)
}

/// Writes float32 embeddings atomically in `format`.
pub fn write_embeddings(
    path: &Path,
    format: OutputFormat,
    emb: &Embeddings,
    texts: &[&str],
) -> Result<()> {
    write_values(path, format, ValuesRef::F32(&emb.data), emb.dim, texts)
}

/// Writes `[rows, cols]` typed values atomically in `format`: `.npy` with the values' descr,
/// `.safetensors` with their dtype, `.jsonl` with numbers (integers for integer precisions).
pub fn write_values(
    path: &Path,
    format: OutputFormat,
    values: ValuesRef<'_>,
    cols: usize,
    texts: &[&str],
) -> Result<()> {
    let rows = texts.len();
    let mut f = AtomicFile::create(path)?;
    let w = f.writer()?;
    let ctx = || format!("writing {}", path.display());
    match format {
        OutputFormat::Npy => {
            w.write_all(&npy_header_typed(values.npy_descr(), rows, cols))
                .with_context(ctx)?;
            w.write_all(&values.le_bytes()).with_context(ctx)?;
        }
        OutputFormat::Safetensors => {
            let data = values.le_bytes();
            let view = safetensors::tensor::TensorView::new(
                values.safetensors_dtype(),
                vec![rows, cols],
                &data,
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .context("building the safetensors tensor")?;
            let meta: std::collections::HashMap<String, String> =
                [("format".to_string(), "pt".to_string())].into();
            let bytes = safetensors::serialize([("embeddings", view)], Some(meta))
                .context("serializing safetensors")?;
            w.write_all(&bytes).with_context(ctx)?;
        }
        OutputFormat::Jsonl => {
            for (i, t) in texts.iter().enumerate() {
                let line = serde_json::json!({"text": t, "embedding": values.json(i * cols..(i + 1) * cols)});
                serde_json::to_writer(&mut *w, &line).with_context(ctx)?;
                w.write_all(b"\n").with_context(ctx)?;
            }
        }
    }
    f.commit()
}

/// NumPy v1.0 header for a C-order little-endian f32 array `[rows, dim]`, padded to 64 bytes.
pub fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    npy_header_typed("<f4", rows, dim)
}

/// NumPy v1.0 header for a C-order array `[rows, cols]` of `descr` (`<f4`, `<f2`, `|i1`, `|u1`).
pub fn npy_header_typed(descr: &str, rows: usize, cols: usize) -> Vec<u8> {
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
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
