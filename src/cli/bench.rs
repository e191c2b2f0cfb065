//! `embtune bench` (throughput of encode or train on this machine, one JSON line) and
//! `embtune check-device` (CPU vs CUDA comparison table): flags → library calls.

use super::ModelArgs;
use crate::loss::LossKind;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchJob {
    /// Sentences per second of `encode` (tokenization included, normalized outputs).
    Encode,
    /// Pairs per second of the real training loop (dropout on), after its warm-up steps.
    Train,
    /// f32 GFLOP/s of an n×n matrix product (the hardware yardstick; --n sets n, default 2048).
    Matmul,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub job: BenchJob,
    #[command(flatten)]
    pub model: ModelArgs,
    /// STS-B-format data: train pairs, or the sentences to encode (unique, in file order).
    #[arg(long, short = 'd', default_value = "data/stsbenchmark/sts-train.csv")]
    pub data: PathBuf,
    /// train: the loss (pairs from sentence1/sentence2; cosent and cosine also use the score).
    #[arg(long, value_enum, default_value = "cosent")]
    pub loss: LossKind,
    /// Pairs per optimizer step (train) or texts per forward pass (encode).
    #[arg(long, short = 'b', default_value_t = 32)]
    pub batch_size: usize,
    /// encode: at most this many tokens per forward pass as well (see `embed
    /// --max-tokens-per-batch`; 0: none) [default: 2048 on the CPU with packed batches, none on
    /// GPUs or padded].
    #[arg(long)]
    pub max_tokens_per_batch: Option<usize>,
    /// train: timed optimizer steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// train: also time each phase of the timed steps (batch upload, forward, loss, backward,
    /// gradient sums, optimizer), waiting for the device at every boundary; adds "phases" to
    /// the output (host time to issue each phase vs time until it finished). Slows the run, so
    /// its pairs/s is not the benchmark's.
    #[arg(long)]
    pub phases: bool,
    /// encode: number of texts (the unique sentences repeated) [default: each unique sentence
    /// once]; matmul: the matrix size [default: 2048].
    #[arg(long)]
    pub n: Option<usize>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.phases && a.job != BenchJob::Train {
        bail!(
            "--phases times the steps of `bench train`; it does not apply to `bench {}`",
            format!("{:?}", a.job).to_lowercase()
        );
    }
    let spec = a.model.into_spec();
    let line = match a.job {
        BenchJob::Encode => {
            let texts = crate::data::read_unique_stsb_sentences(&a.data)?;
            let n = a.n.unwrap_or(texts.len());
            serde_json::to_string(&crate::bench::encode_throughput(
                &spec,
                &texts,
                n,
                (a.batch_size, a.max_tokens_per_batch),
            )?)?
        }
        BenchJob::Train => serde_json::to_string(&crate::bench::train_throughput(
            &spec,
            &a.data,
            a.loss,
            a.batch_size,
            a.steps,
            a.phases,
        )?)?,
        BenchJob::Matmul => serde_json::to_string(&crate::bench::matmul_throughput(
            &spec,
            a.n.unwrap_or(2048),
        )?)?,
    };
    println!("{line}");
    Ok(())
}

#[derive(Debug, Args)]
pub struct CheckDeviceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// STS-B-format data whose first 256 rows feed the checks.
    #[arg(long, short = 'd', default_value = "data/stsbenchmark/sts-train.csv")]
    pub data: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_check(a: CheckDeviceArgs) -> Result<()> {
    let spec = a.model.into_spec();
    let rows = crate::devcheck::run(&spec, &a.data)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", crate::devcheck::to_text(&rows));
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    if failed > 0 {
        bail!("{failed} of {} device checks failed", rows.len());
    }
    Ok(())
}
