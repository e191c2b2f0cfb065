//! The `embed` job: stream the input's texts a chunk at a time (`data::stream`), encode them
//! (batched, length-sorted inside a chunk; `embed_parts`: resumable parts for inputs of more than
//! one chunk), optionally quantize them (`quantize`: float16, int8/uint8 with ranges saved in
//! `<output>.ranges.json`, binary), and write `.npy`, `.safetensors` (tensor "embeddings") or
//! `.jsonl` ({"text", "embedding"}) chunk by chunk to a temporary name (`embed_write`). With
//! `--shard K/N` only that slice of the rows, into the shard's own output and sidecar (`shard`).
//! Memory is bounded by the chunk and the model, not the input (`--calibration` too: its ranges
//! are accumulated a chunk at a time).

use crate::data::{DataFormat, ReadOptions, TextStream};
use crate::embed_parts::{encode_stream, Encoded, PassOptions};
pub use crate::embed_write::OutputFormat;
use crate::embed_write::{Elem, OutputWriter};
use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::prompts::Side;
use crate::model::{ModelSpec, SentenceEncoder};
use crate::quantize::{quantize, Precision, Ranges, ValuesRef};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// `--shard K/N` (resolved, `auto` included): encode only that slice of the rows.
    #[serde(default)]
    pub shard: Option<crate::shard::Shard>,
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
        if int && self.shard.is_some() && self.ranges.is_none() && self.calibration.is_none() {
            bail!(
                "--shard with --precision {}: each shard would compute its own ranges from its own rows; pass --calibration FILE or --ranges FILE so that all shards quantize alike",
                self.precision
            );
        }
        Ok(())
    }
}

/// Where `embed` saves the int8/uint8 ranges it used: `<output>.ranges.json`.
pub fn ranges_path(output: &Path) -> PathBuf {
    crate::fsutil::with_name_suffix(output, ".ranges.json")
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

/// Where the int8/uint8 ranges come from, settled before encoding.
enum RangesSource {
    None,
    Given(Ranges, String),
    /// The `--calibration` texts, opened (and their first row read) before the model loads.
    Calibration(TextStream),
    Own,
}

/// Checks the precision flags and reads what they name, before the model is loaded.
fn ranges_source(cfg: &EmbedConfig) -> Result<RangesSource> {
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
        // Read like --input: the same format, column and reader options.
        let column = cfg.column.as_deref().unwrap_or("text");
        let texts = TextStream::open(p, cfg.format, &cfg.read, column)
            .with_context(|| format!("--calibration {}", p.display()))?;
        return Ok(RangesSource::Calibration(texts));
    }
    Ok(RangesSource::Own)
}

pub fn run(cfg: &EmbedConfig) -> Result<EmbedReport> {
    let out_format = OutputFormat::from_path(&cfg.output)?;
    cfg.validate()?;
    let output = match cfg.shard {
        Some(s) => s.output_path(&cfg.output),
        None => cfg.output.clone(),
    };
    crate::fsutil::check_writable_file(&output)?;
    if cfg.shard.is_some() {
        // A shard's sidecar says its output is finished: an earlier run's must not vouch for
        // this one's while it is being written.
        let side = crate::shard::sidecar_path(&output);
        if side.exists() {
            std::fs::remove_file(&side).with_context(|| format!("removing {}", side.display()))?;
        }
    }
    let column = cfg.column.as_deref().unwrap_or("text");
    let open = || TextStream::open(&cfg.input, cfg.format, &cfg.read, column);
    let mut texts = open()?;
    let source = ranges_source(cfg)?;
    // A shard needs the row count first: one pass that parses and counts (nothing kept).
    let (range, total) = match cfg.shard {
        Some(s) => {
            let total = crate::data::texts::count_rows(&cfg.input, cfg.format, &cfg.read)?;
            (s.rows(total), Some(total))
        }
        None => (0..usize::MAX, None),
    };
    let model = SentenceEncoder::load_for_inference(&cfg.model)?;
    crate::logging::model_loaded(&cfg.model, &model);
    // Quantized precisions are L2-normalised first, as sentence-transformers' evaluator does.
    let prompt = model
        .prompts
        .choose(&cfg.prompt, Side::Plain, "--prompt-name")?;
    let opts = EncodeOptions {
        normalize: cfg.encode.normalize || cfg.precision != Precision::Float32,
        prompt: Some(prompt),
        ..cfg.encode.clone()
    };
    crate::encode::check_truncate_dim(&opts, &model)?;
    let source = settle_ranges(cfg, &model, &opts, source)?;
    let settings = job_settings(cfg, &opts);
    let parts = crate::embed_parts::parts_dir(&output);
    let pass = PassOptions {
        parts: &parts,
        chunk_rows: cfg.chunk_rows,
        resume: cfg.resume,
        ranges: matches!(source, RangesSource::Own),
    };
    let sha = std::cell::OnceCell::new();
    let input_sha = || -> Result<String> {
        if let Some(s) = sha.get() {
            return Ok(String::clone(s));
        }
        let s = input_sha256(cfg)?;
        Ok(sha.get_or_init(|| s).clone())
    };
    let enc = if range.is_empty() {
        // A shard of an input with fewer rows than shards: nothing to encode.
        Encoded {
            chunks: crate::embed_parts::Chunks::Memory(Embeddings {
                data: Vec::new(),
                dim: opts.out_dim(&model),
                truncated: 0,
            }),
            rows: 0,
            dim: opts.out_dim(&model),
            truncated: 0,
            reused: 0,
            ranges: None,
        }
    } else {
        let key = || -> Result<serde_json::Value> {
            Ok(serde_json::json!({
                "input_sha256": input_sha()?,
                "settings": settings,
                "rows": [range.start, range.end.min(u64::MAX as usize)],
                "chunk_rows": cfg.chunk_rows,
            }))
        };
        encode_stream(&model, &mut texts, range.clone(), &opts, &pass, key)?
    };
    drop(texts);
    let (rows, dim, truncated) = (enc.rows, enc.dim, enc.truncated);
    let shard_sha = match cfg.shard {
        Some(_) => Some(input_sha()?),
        None => None,
    };
    let ranges_file =
        quantize_and_write(cfg, &output, out_format, &enc, source, range.start, &open)?;
    if let (Some(s), Some(total)) = (cfg.shard, total) {
        crate::shard::Sidecar {
            embtune: env!("CARGO_PKG_VERSION").to_string(),
            shard: s.index,
            shards: s.count,
            rows_total: total,
            row_start: range.start,
            rows,
            input: cfg.input.display().to_string(),
            input_sha256: shard_sha.unwrap_or_default(),
            settings: settings.clone(),
            format: out_format,
            cols: cfg.precision.columns(dim),
            precision: cfg.precision,
            ranges_file: ranges_file
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
        }
        .save(&output)?;
    }
    if parts.exists() {
        std::fs::remove_dir_all(&parts).with_context(|| format!("removing {}", parts.display()))?;
    }
    Ok(EmbedReport {
        rows,
        dim,
        truncated,
        output,
        resumed_chunks: enc.reused,
        precision: cfg.precision,
        bytes_per_embedding: cfg.precision.bytes_per_embedding(dim),
        ranges_file,
    })
}

/// What makes two runs (or two shards) the same job, besides the input's bytes.
fn job_settings(cfg: &EmbedConfig, opts: &EncodeOptions) -> serde_json::Value {
    // Where the model is cached and whether the Hub is reachable do not change the embeddings.
    let m = &cfg.model;
    serde_json::json!({
        "model": {
            "model": m.model,
            "revision": m.hub.revision,
            "pooling": m.pooling,
            "max_seq_length": m.max_seq_length,
            "compute": m.compute,
        },
        "format": cfg.format,
        "read": cfg.read,
        "column": cfg.column,
        "normalize": opts.normalize,
        "prompt": opts.prompt,
        "truncate_dim": opts.truncate_dim,
        "precision": cfg.precision,
        "ranges": cfg.ranges,
        "calibration": cfg.calibration,
    })
}

/// The sha256 of the input: the file, or a Hub split's parquet files in order.
fn input_sha256(cfg: &EmbedConfig) -> Result<String> {
    let spec = cfg.input.to_string_lossy();
    if spec.starts_with(crate::data::hub::PREFIX) {
        let r = crate::data::hub::DatasetRef::parse(&spec)?;
        let split = cfg.read.split.as_deref().unwrap_or("train");
        let files = crate::data::hub::resolve(&r, split, &Default::default())?;
        let all: Result<Vec<String>> = files
            .iter()
            .map(|f| crate::fsutil::sha256_file(f).map(|r| r.1))
            .collect();
        return Ok(all?.join("+"));
    }
    crate::fsutil::sha256_file(&cfg.input).map(|r| r.1)
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
            if r.dim() != opts.out_dim(model) {
                let p = cfg.ranges.as_deref().unwrap_or(Path::new("")).display();
                bail!(
                    "--ranges {p}: ranges of dimension {} but the embeddings have {}",
                    r.dim(),
                    opts.out_dim(model)
                );
            }
            RangesSource::Given(r, c)
        }
        RangesSource::Calibration(mut t) => {
            // A chunk at a time: the ranges are the min/max over every calibration embedding.
            let mut ranges = None;
            loop {
                let chunk = t.next_chunk(cfg.chunk_rows.max(1))?;
                if chunk.is_empty() {
                    break;
                }
                let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
                crate::embed_parts::merge_ranges(&mut ranges, &encode(model, &refs, opts)?)?;
            }
            let name = cfg.calibration.as_deref().unwrap_or(Path::new(""));
            let r =
                ranges.with_context(|| format!("--calibration {}: no texts", name.display()))?;
            RangesSource::Given(r, name.display().to_string())
        }
        s => s,
    })
}

/// Saves the int8/uint8 ranges used (`<output>.ranges.json`, before the output, so an output
/// never lacks its ranges), then writes the output chunk by chunk, each quantized on the way
/// (a `.jsonl` output reads its texts again from the input, `open`).
fn quantize_and_write(
    cfg: &EmbedConfig,
    output: &Path,
    format: OutputFormat,
    enc: &Encoded,
    source: RangesSource,
    first_row: usize,
    open: &dyn Fn() -> Result<TextStream>,
) -> Result<Option<PathBuf>> {
    let (ranges, calibration) = match source {
        RangesSource::Given(r, c) => (Some(r), c),
        RangesSource::Own => {
            if enc.rows == 1 {
                bail!(crate::quantize::SINGLE_ROW);
            }
            if enc.rows < 100 {
                tracing::info!(
                    "note: {} ranges computed from only {} embeddings; --calibration with more texts gives steadier ones",
                    cfg.precision,
                    enc.rows
                );
            }
            let r = enc
                .ranges
                .clone()
                .context("no embeddings to compute int8/uint8 ranges from")?;
            (Some(r), "the embeddings themselves".to_string())
        }
        _ => (None, String::new()),
    };
    let ranges_file = match &ranges {
        Some(r) => {
            let p = ranges_path(output);
            r.save(&p, cfg.precision, &calibration)?;
            Some(p)
        }
        None => None,
    };
    let cols = cfg.precision.columns(enc.dim);
    let mut w = OutputWriter::create(output, format, Elem::of(cfg.precision), enc.rows, cols)?;
    let mut texts = match format {
        OutputFormat::Jsonl if enc.rows > 0 => {
            let mut t = open()?;
            t.skip(first_row)?;
            Some(t)
        }
        _ => None,
    };
    for i in 0..enc.num_chunks() {
        let emb = enc.chunk(i)?;
        let q = match cfg.precision {
            Precision::Float32 => None,
            p => Some(quantize(&emb, p, ranges.as_ref())?),
        };
        let values = q.as_ref().map_or(ValuesRef::F32(&emb.data), |q| q.view());
        let chunk_texts = match texts.as_mut() {
            Some(t) => t.next_chunk(emb.len())?,
            None => Vec::new(),
        };
        w.append(values, emb.len(), &chunk_texts)?;
    }
    w.finish()?;
    Ok(ranges_file)
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
    let elem = match values {
        ValuesRef::F32(_) => Elem::of(Precision::Float32),
        ValuesRef::F16(_) => Elem::of(Precision::Float16),
        ValuesRef::I8(_) => Elem::of(Precision::Int8),
        ValuesRef::U8(_) => Elem::of(Precision::Uint8),
    };
    let mut w = OutputWriter::create(path, format, elem, rows, cols)?;
    let owned: Vec<String> = match format {
        OutputFormat::Jsonl => texts.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    };
    w.append(values, rows, &owned)?;
    w.finish()
}
