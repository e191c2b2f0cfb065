//! Command-line types (clap) live only here: one file per subcommand, each turning its `Args`
//! into the library's config in one function, then calling the library's `run`.

pub mod applies;
pub mod bench;
pub mod config_file;
pub mod embed;
pub mod eval;
pub mod pairs;
pub mod ranges;
pub mod similarity;
pub mod train;

use crate::data::{DataFormat, ReadOptions};
use crate::device::{ComputeSpec, DeviceChoice, Precision};
use crate::model::hub::HubOptions;
use crate::model::pooling::Pooling;
use crate::model::ModelSpec;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Fine-tune, evaluate and run sentence-embedding encoders (BERT, RoBERTa/XLM-R, DistilBERT,
/// MPNet, ModernBERT, NomicBERT, GTE) — sentence-transformers compatible, no Python.
#[derive(Debug, Parser)]
#[command(name = "embtune", version, about, long_about = None)]
pub struct Cli {
    /// More diagnostics on stderr: -v debug, -vv trace (RUST_LOG, when set, decides instead;
    /// -q, where a command has it, shows warnings and errors only).
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encode texts from a file into embeddings (.npy, .safetensors or .jsonl).
    Embed(embed::EmbedArgs),
    /// Join the outputs of `embed --shard K/N` into one file, in order (refuses missing,
    /// repeated or mismatched shards).
    Merge(embed::MergeArgs),
    /// Evaluate a model: STS correlation, triplet accuracy or pair classification.
    Eval(eval::EvalArgs),
    /// Build training pairs/triplets from a dataset (thresholds, labels, classes, NLI, negatives), or check a dataset.
    Pairs(pairs::PairsArgs),
    /// Cosine of two texts, or the nearest texts of a corpus for a query.
    Similarity(similarity::SimilarityArgs),
    /// Fine-tune a model with a contrastive, triplet, InfoNCE (MNRL), CoSENT or cosine loss.
    Train(train::TrainArgs),
    /// Measure encode or training throughput on this machine (one JSON line).
    Bench(bench::BenchArgs),
    /// Compare a CUDA device against the CPU: embeddings, losses, gradients, optimizer, dropout.
    CheckDevice(bench::CheckDeviceArgs),
}

/// Which model to load and how (shared by every subcommand).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Hugging Face Hub id (org/name; a bare name is looked up as sentence-transformers/<name> in
    /// the cache first, as sentence-transformers does) or a local model directory.
    #[arg(long, short = 'm')]
    pub model: String,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `--prompt` / `--prompt-name` (embed, eval, similarity).
#[derive(Debug, Clone, Default, Args)]
pub struct PromptArgs {
    /// Text prepended to every input, as sentence-transformers' `prompt` ("" for none: overrides
    /// the model's default prompt) [default: the model's default_prompt_name, if any].
    #[arg(long)]
    pub prompt: Option<String>,
    /// One of the model's prompts (config_sentence_transformers.json) by name, e.g. query.
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_name: Option<String>,
}

impl PromptArgs {
    pub fn choice(&self) -> crate::model::prompts::PromptChoice {
        crate::model::prompts::PromptChoice {
            text: self.prompt.clone(),
            name: self.prompt_name.clone(),
        }
    }
}

/// How to load a model, besides which (shared by every command that loads one).
#[derive(Debug, Clone, Default, Args)]
pub struct LoadArgs {
    /// Hub revision: branch, tag or commit [default: main].
    #[arg(long)]
    pub revision: Option<String>,
    /// Hub cache directory [default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Use only files already in the Hub cache (also on with HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Hub access token for private or gated models.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Override the model's pooling (comma-separated: cls, mean, max, mean_sqrt_len_tokens, weightedmean, lasttoken).
    #[arg(long, value_delimiter = ',')]
    pub pooling: Option<Vec<Pooling>>,
    /// Override the model's max_seq_length, in tokens (special tokens included); longer texts are truncated.
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Where and in which precision the model runs (part of every command that loads a model).
#[derive(Debug, Clone, Default, Args)]
pub struct ComputeArgs {
    /// Device: cpu, cuda, cuda:N, or auto = the first CUDA GPU when this binary is built with
    /// the cuda feature and one is present, else the CPU.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Compute precision of the encoder on CUDA: f32, bf16 or f16 (mixed precision: weights,
    /// loss and optimizer stay f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
    /// Allow TF32 tensor-core matrix products for f32 on CUDA (faster; ~1e-3 relative error).
    #[arg(long)]
    pub tf32: bool,
    /// Pad every batch to its longest text instead of packing the texts back to back (packing
    /// computes no padding; a packed pass gives the padded pass's results up to float
    /// rounding, but training packs a step's text columns into one pass where padding runs one
    /// per column, which draws other dropout masks; texts of 256 tokens or more and the GPU
    /// paths always pad). For comparisons and benchmarks.
    #[arg(long)]
    pub no_packing: bool,
}

impl ComputeArgs {
    pub fn spec(&self) -> ComputeSpec {
        ComputeSpec {
            device: self.device,
            dtype: self.dtype,
            tf32: self.tf32,
            no_packing: self.no_packing,
        }
    }
}

impl ModelArgs {
    pub fn into_spec(self) -> ModelSpec {
        self.load.spec(self.model)
    }
}

impl LoadArgs {
    /// The spec of a second model (a guide) loaded as the trained one is — same cache, token,
    /// device and precision — but with its own revision, pooling and length.
    pub fn guide_spec(self, model: String) -> ModelSpec {
        Self {
            revision: None,
            pooling: None,
            max_seq_length: None,
            ..self
        }
        .spec(model)
    }

    /// The spec of loading `model` with these options.
    pub fn spec(self, model: String) -> ModelSpec {
        ModelSpec {
            model,
            hub: HubOptions {
                revision: self.revision,
                token: self.token,
                cache_dir: self.cache_dir,
                offline: self.offline,
            },
            pooling: self.pooling,
            max_seq_length: self.max_seq_length,
            compute: self.compute.spec(),
        }
    }
}

/// How to read the input dataset (shared by embed, eval, train and pairs).
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Input format [default: from the extension: .txt, .csv, .tsv, .jsonl, .parquet; or stsb].
    #[arg(long, value_enum)]
    pub format: Option<DataFormat>,
    /// Split of a Hub dataset given as hf://datasets/<org>/<name>[/<config>][@<revision>], or the
    /// qrels split of a BEIR folder (qrels/<split>.tsv) [default: train; eval --task retrieval:
    /// test].
    #[arg(long)]
    pub split: Option<String>,
    /// CSV/TSV field delimiter (one character, or \t) [default: , for csv, tab for tsv].
    #[arg(long, value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Read CSV/TSV quotes as literal text instead of quoting.
    #[arg(long)]
    pub no_quoting: bool,
}

impl InputArgs {
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            quoting: !self.no_quoting,
            delimiter: self.delimiter,
            split: self.split.clone(),
        }
    }
}

/// Parses the delimiter flag: one character, `\t` or `tab` for tab.
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!("expected one ASCII character or \\t, got {s:?}")),
    }
}

/// The log levels the parsed command line asks for: `-v` (counted, global) and the
/// subcommand's `-q/--quiet` where it has one.
pub fn verbosity(m: &clap::ArgMatches) -> crate::logging::Verbosity {
    let sub = m.subcommand().map(|(_, s)| s);
    let verbose = sub
        .and_then(|s| s.try_get_one::<u8>("verbose").ok().flatten())
        .or_else(|| m.try_get_one::<u8>("verbose").ok().flatten())
        .copied()
        .unwrap_or(0);
    let quiet = sub
        .and_then(|s| s.try_get_one::<bool>("quiet").ok().flatten())
        .copied()
        .unwrap_or(false);
    crate::logging::Verbosity { verbose, quiet }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Embed(a) => embed::run(a),
        Command::Merge(a) => embed::run_merge(a),
        Command::Eval(a) => eval::run(a),
        Command::Train(a) => train::run(a),
        Command::Pairs(a) => pairs::run(a),
        Command::Similarity(a) => similarity::run(a),
        Command::Bench(a) => bench::run(a),
        Command::CheckDevice(a) => bench::run_check(a),
    }
}
