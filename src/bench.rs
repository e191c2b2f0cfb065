//! Throughput measurements behind `embtune bench`: encode (sentences/s over a fixed number of
//! texts) and train (examples/s of the real training loop, after its warm-up steps). Used by
//! scripts/bench.sh and scripts/gpu-check.sh; the numbers are compared with the Python
//! reference measured on the same machine, never asserted in tests.

use crate::data::DataFormat;
use crate::encode::{encode, EncodeOptions};
use crate::loss::LossKind;
use crate::model::{ModelSpec, SentenceEncoder};
use crate::train::data::ColumnSpec;
use crate::train::{TrainConfig, WARM_STEPS};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One encode measurement.
#[derive(Debug, Clone, Serialize)]
pub struct EncodeResult {
    pub job: &'static str,
    pub device: String,
    pub dtype: String,
    pub tf32: bool,
    pub batch_size: usize,
    /// `--max-tokens-per-batch` (none: batches of `batch_size` texts).
    pub max_tokens: Option<usize>,
    pub sentences: usize,
    pub seconds: f64,
    pub sentences_per_sec: f64,
    /// The model family and the execution path its ops took (`ops::Exec`).
    pub family: &'static str,
    pub exec: crate::ops::Exec,
    /// Whether batches were packed (no padding computed) or padded (`--no-packing`).
    pub packed: bool,
    /// Tokens of the texts (special tokens included, truncated at max_seq_length).
    pub real_tokens: usize,
    /// Tokens a padded pass computes: each batch (length-sorted, as `encode` does) padded to its
    /// longest text (a packed pass computes `real_tokens`).
    pub padded_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda: Option<CudaSettings>,
}

/// Encodes `n` texts (the given ones repeated in order) at `batch_size`, after one warm-up pass
/// over the first two batches. Sentences per second of the timed pass (tokenization included,
/// as in sentence-transformers' `encode`).
pub fn encode_throughput(
    spec: &ModelSpec,
    texts: &[String],
    n: usize,
    (batch_size, max_tokens): (usize, Option<usize>),
) -> Result<EncodeResult> {
    if texts.is_empty() || n == 0 {
        bail!("bench encode: no texts");
    }
    let model = SentenceEncoder::load_for_inference(spec)?;
    // Recorded as used: the packed default when none was given.
    let max_tokens =
        crate::encode::token_budget(max_tokens, model.packs() && model.device().is_cpu());
    let all: Vec<&str> = texts.iter().cycle().take(n).map(|s| s.as_str()).collect();
    let opts = EncodeOptions {
        batch_size,
        max_tokens,
        normalize: true,
        progress: false,
        prompt: None,
        truncate_dim: None,
        shard: Default::default(),
    };
    let warm = (2 * batch_size).min(all.len());
    encode(&model, &all[..warm], &opts)?;
    model.device().synchronize()?;
    let t = Instant::now();
    let emb = encode(&model, &all, &opts)?;
    model.device().synchronize()?;
    let seconds = t.elapsed().as_secs_f64();
    if emb.len() != n {
        bail!("bench encode: got {} embeddings for {n} texts", emb.len());
    }
    let (real_tokens, padded_tokens) = token_counts(&model, &all, (batch_size, max_tokens))?;
    Ok(EncodeResult {
        job: "encode",
        device: crate::device::describe(model.device()),
        dtype: spec.compute.dtype.to_string(),
        tf32: spec.compute.tf32,
        batch_size,
        max_tokens,
        sentences: n,
        seconds,
        sentences_per_sec: n as f64 / seconds,
        family: model.family(),
        exec: model.exec(),
        packed: model.packs(),
        real_tokens,
        padded_tokens,
        cuda: CudaSettings::of(model.device()),
    })
}

/// Real and padded token counts of encoding `texts` in length-sorted batches of `batch_size`
/// texts and at most `max_tokens` padded tokens (`encode::batches`).
fn token_counts(
    model: &SentenceEncoder,
    texts: &[&str],
    (batch_size, max_tokens): (usize, Option<usize>),
) -> Result<(usize, usize)> {
    let mut lens: Vec<usize> = model
        .tokenizer
        .tokenize(texts)?
        .iter()
        .map(|t| t.ids.len())
        .collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    let real = lens.iter().sum();
    let padded = crate::encode::batches(&lens, batch_size, max_tokens, model.packs())
        .into_iter()
        .map(|b| lens[b.start] * b.len())
        .sum();
    Ok((real, padded))
}

/// The hardware yardstick: f32 GFLOP/s of an `n×n · n×n` product through candle (the `gemm`
/// crate on the CPU), best of three rounds of ten after three warm-up products.
#[derive(Debug, Clone, Serialize)]
pub struct MatmulResult {
    pub job: &'static str,
    pub device: String,
    pub n: usize,
    pub gflops: f64,
}

pub fn matmul_throughput(spec: &ModelSpec, n: usize) -> Result<MatmulResult> {
    use candle_core::{DType, Tensor};
    let dev = crate::device::resolve(&spec.compute)?;
    let a = Tensor::randn(0f32, 1f32, (n, n), &dev)?;
    let b = Tensor::randn(0f32, 1f32, (n, n), &dev)?;
    for _ in 0..3 {
        a.matmul(&b)?;
    }
    dev.synchronize()?;
    let reps = 10;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..reps {
            let c = a.matmul(&b)?;
            if c.dtype() != DType::F32 {
                bail!("bench matmul: unexpected dtype");
            }
        }
        dev.synchronize()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(MatmulResult {
        job: "matmul",
        device: crate::device::describe(&dev),
        n,
        gflops: 2.0 * (n as f64).powi(3) * reps as f64 / best / 1e9,
    })
}

/// One training measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TrainResult {
    pub job: &'static str,
    pub loss: String,
    pub device: String,
    pub dtype: String,
    pub tf32: bool,
    pub batch_size: usize,
    pub steps: usize,
    pub examples: usize,
    pub seconds: f64,
    pub pairs_per_sec: f64,
    pub family: &'static str,
    pub exec: crate::ops::Exec,
    /// Whether the training batches were packed or padded (`--no-packing`).
    pub packed: bool,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda: Option<CudaSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<crate::train::phases::PhaseTimes>,
}

/// Runs the real training loop (dropout on, AdamW, clipping, linear schedule) for
/// `WARM_STEPS + steps` optimizer steps on STS-B-format pairs (sentence1, sentence2; CoSENT and
/// cosine also use the score) and reports the examples per second of the `steps` timed ones.
pub fn train_throughput(
    spec: &ModelSpec,
    stsb_train: &Path,
    loss: LossKind,
    batch_size: usize,
    steps: usize,
    phases: bool,
) -> Result<TrainResult> {
    let out = scratch_dir()?;
    let uses_score = matches!(loss, LossKind::Cosent | LossKind::Angle | LossKind::Cosine);
    let cfg = TrainConfig {
        model: spec.clone(),
        data: stsb_train.to_path_buf(),
        format: Some(DataFormat::Stsb),
        columns: ColumnSpec {
            text_columns: Some(vec!["sentence1".into(), "sentence2".into()]),
            label_column: uses_score.then(|| "score".into()),
        },
        loss,
        output: out.clone(),
        batch_size,
        max_steps: Some(WARM_STEPS + steps.max(1)),
        log_steps: usize::MAX / 2,
        phase_timing: phases,
        ..Default::default()
    };
    let r = crate::train::train(&cfg)
        .map(|(r, m)| (r, m.device().clone(), m.family(), (m.exec(), m.packs())));
    let _ = std::fs::remove_dir_all(&out);
    let (r, dev, family, (exec, packed)) = r?;
    let tp = r
        .throughput
        .context("bench train: no timed steps (is the data smaller than one batch?)")?;
    Ok(TrainResult {
        job: "train",
        loss: format!("{loss:?}").to_lowercase(),
        device: crate::device::describe(&dev),
        dtype: spec.compute.dtype.to_string(),
        tf32: spec.compute.tf32,
        batch_size,
        steps: tp.steps,
        examples: tp.examples,
        seconds: tp.seconds,
        pairs_per_sec: tp.examples_per_sec(),
        family,
        exec,
        packed,
        first_loss: r.first_loss,
        last_loss: r.last_loss,
        cuda: CudaSettings::of(&dev),
        phases: r.phases,
    })
}

/// The CUDA switches a measurement ran with (`EMBTUNE_CUDA_FUSED`, `EMBTUNE_CUDA_ALLOC`).
#[derive(Debug, Clone, Serialize)]
pub struct CudaSettings {
    /// embtune's own kernels (else candle's composed ops).
    pub kernels: bool,
    /// The memory pool keeps freed memory; no per-buffer events.
    pub alloc: bool,
    /// `EMBTUNE_JOINT_FORWARD`: "auto" (one pass over all text columns when it pads ≤ 15 %),
    /// "0" or "1".
    pub joint_forward: String,
}

impl CudaSettings {
    /// Some on a CUDA device.
    fn of(dev: &candle_core::Device) -> Option<Self> {
        dev.is_cuda().then(|| CudaSettings {
            kernels: crate::ops::exec::cuda_kernels_enabled(),
            alloc: crate::device::cuda_alloc_tuning(),
            joint_forward: match std::env::var("EMBTUNE_JOINT_FORWARD").as_deref() {
                Ok(v @ ("0" | "1")) => v.to_string(),
                _ => "auto".into(),
            },
        })
    }
}

/// A fresh directory under the system temp dir for a benchmark run's outputs.
fn scratch_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let p = base.join(format!("embtune-bench-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    bail!("cannot create a scratch directory in {}", base.display())
}
