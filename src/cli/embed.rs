//! `embtune embed`: flags → [`EmbedConfig`] → [`crate::embed::run`].

use super::{InputArgs, ModelArgs, PromptArgs};

use crate::embed::EmbedConfig;
use crate::encode::EncodeOptions;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input file: text (one per line), JSONL, CSV/TSV (header row), Parquet, STS-B with
    /// --format stsb, or hf://datasets/… (`-i/--input` is the same flag).
    #[arg(
        long = "data",
        short = 'd',
        visible_alias = "input",
        visible_short_alias = 'i'
    )]
    pub input: PathBuf,
    #[command(flatten)]
    pub reader: InputArgs,
    /// Column (CSV/TSV/Parquet) or field (JSONL) holding the text [default: text].
    #[arg(long)]
    pub column: Option<String>,
    /// The same as --column (the JSONL word for it); not both.
    #[arg(long, conflicts_with = "column")]
    pub field: Option<String>,
    /// Output file: .npy ([N, D] in --precision), .safetensors (tensor "embeddings") or .jsonl.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Output precision, as sentence-transformers' quantize_embeddings: float32 (4 bytes per
    /// dimension), float16 (2), int8/uint8 (1; per-dimension ranges, saved to
    /// <output>.ranges.json), binary/ubinary (1 bit: x > 0, packed 8 per byte, [N, ceil(D/8)]).
    /// Anything but float32 is L2-normalised first.
    #[arg(long, value_enum, default_value = "float32")]
    pub precision: crate::quantize::Precision,
    /// int8/uint8: a file of texts (read like --input: same --format, --field/--column,
    /// --delimiter) whose embeddings give the per-dimension [min, max] ranges
    /// [default: the embeddings themselves].
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// int8/uint8: reuse saved ranges (the <output>.ranges.json of an earlier run), so that
    /// queries and a corpus are quantized alike.
    #[arg(long)]
    pub ranges: Option<PathBuf>,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Keep only the first N dimensions of each embedding (models trained with Matryoshka
    /// losses keep most of their quality), as sentence-transformers' truncate_dim.
    #[arg(long)]
    pub truncate_dim: Option<usize>,
    /// Texts per forward pass.
    #[arg(long, short = 'b', default_value_t = 32)]
    pub batch_size: usize,
    /// At most this many tokens per forward pass as well as --batch-size texts (packed
    /// batches count the texts' tokens, padded ones texts × the longest); long texts then go in
    /// smaller batches; 0: no budget [default: 2048 on the CPU with packed batches (measured:
    /// less memory, as fast), none on GPUs or with --no-packing].
    #[arg(long)]
    pub max_tokens_per_batch: Option<usize>,
    /// L2-normalise embeddings even if the model has no Normalize module.
    #[arg(long)]
    pub normalize: bool,
    /// Hide the progress bar and the notes and summaries (warnings and errors only).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Rows read, encoded and held in memory at a time (peak memory: the model and one chunk).
    /// Inputs with more rows keep each finished chunk in <output>.parts/ as soon as it is
    /// done, so an interrupted run can be continued with --resume.
    #[arg(long, default_value_t = crate::embed::DEFAULT_CHUNK_ROWS)]
    pub chunk_rows: usize,
    /// Continue an interrupted run: reuse the finished chunks in <output>.parts/ (same input,
    /// model and settings) and encode only the rest.
    #[arg(long)]
    pub resume: bool,
    /// Encode only shard K of N (0-based, a contiguous slice of the rows by row count) into
    /// <stem>-KKKKK-of-NNNNN.<ext> beside --output, with a .shard.json sidecar; join them with
    /// `embtune merge`. `auto`: K and N from a Slurm array (SLURM_ARRAY_TASK_ID and _COUNT, or
    /// _MIN/_MAX/_STEP) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with --shards N).
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<String>,
    /// With --shard auto under a Kubernetes Indexed Job: the number of shards (the Job's
    /// completions).
    #[arg(long, requires = "shard")]
    pub shards: Option<usize>,
}

/// `embtune merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged output (.npy, .safetensors or .jsonl: the --output the shards were run with).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Shard files [default: every <stem>-KKKKK-of-NNNNN.<ext> beside --output].
    pub shards: Vec<PathBuf>,
    /// Hide the summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run_merge(args: MergeArgs) -> Result<()> {
    let shards = if args.shards.is_empty() {
        crate::shard::find_shards(&args.output)?
    } else {
        args.shards
    };
    let r = crate::shard::merge(&args.output, &shards)?;
    tracing::info!(
        "merged {} shards ({} rows) into {}",
        r.shards,
        r.rows,
        r.output.display()
    );
    if let Some(p) = &r.ranges_file {
        tracing::info!("ranges: {}", p.display());
    }
    Ok(())
}

impl EmbedArgs {
    pub fn into_config(self) -> Result<EmbedConfig> {
        let cfg = EmbedConfig {
            model: self.model.into_spec(),
            input: self.input,
            format: self.reader.format,
            column: self.field.or(self.column),
            read: self.reader.read_options(),
            output: self.output,
            encode: EncodeOptions {
                batch_size: self.batch_size,
                max_tokens: self.max_tokens_per_batch,
                normalize: self.normalize,
                progress: !self.quiet,
                prompt: None,
                truncate_dim: self.truncate_dim,
                shard: Default::default(),
            },
            prompt: self.prompt.choice(),
            chunk_rows: self.chunk_rows,
            resume: self.resume,
            precision: self.precision,
            calibration: self.calibration,
            ranges: self.ranges,
            shard: self
                .shard
                .as_deref()
                .map(|a| crate::shard::Shard::resolve(a, self.shards, &|k| std::env::var(k).ok()))
                .transpose()?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let cfg = args.into_config()?;
    let r = crate::embed::run(&cfg)?;
    if r.resumed_chunks > 0 {
        tracing::info!(
            "resumed: {} finished chunk(s) of {} rows reused",
            r.resumed_chunks,
            cfg.chunk_rows
        );
    }
    tracing::info!(
        "wrote {} {} embeddings of dimension {} ({} bytes each) to {}",
        r.rows,
        r.precision,
        r.dim,
        r.bytes_per_embedding,
        r.output.display()
    );
    if let Some(p) = &r.ranges_file {
        tracing::info!(
            "{} ranges saved to {} (reuse them with --ranges)",
            r.precision,
            p.display()
        );
    }
    if r.truncated > 0 {
        tracing::info!(
            "{} of {} texts were longer than max_seq_length and truncated",
            r.truncated,
            r.rows
        );
    }
    Ok(())
}
