//! What a training run did ([`TrainReport`], [`Throughput`]): returned by `run`, read by the
//! model card and `bench`. Depends on `eval::Metrics` and `phases`.

use super::phases::PhaseTimes;
use crate::eval::Metrics;
use std::path::PathBuf;

/// What a finished (or interrupted) run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: usize,
    pub total_steps: usize,
    /// Mean loss of the first and last logging windows.
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    /// The last evaluation of the first set (its primary metric decides `--save-best`).
    pub final_eval: Option<Metrics>,
    /// The last evaluation of every set: (set name, metrics), the first set first.
    pub final_evals: Vec<(String, Metrics)>,
    /// Matryoshka runs: the first set's primary metric of the final model at each trained
    /// dimension (embeddings truncated), largest first.
    pub matryoshka_evals: Vec<(usize, f64)>,
    pub best: Option<(f64, usize)>,
    /// Some(signal) when stopped by SIGINT/SIGTERM after saving a checkpoint.
    pub interrupted: Option<i32>,
    pub output: PathBuf,
    /// Speed of the optimizer steps after the first [`WARM_STEPS`] of this process (None when
    /// there were no more): what `embtune bench train` reports.
    pub throughput: Option<Throughput>,
    /// Per-phase step times when [`TrainConfig::phase_timing`] was on.
    pub phases: Option<PhaseTimes>,
}

/// Steps excluded from [`TrainReport::throughput`] (allocator, kernel loading, caches).
pub const WARM_STEPS: usize = 3;

/// Examples and optimizer steps per second over a timed stretch of training.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Throughput {
    pub steps: usize,
    pub examples: usize,
    pub seconds: f64,
}

impl Throughput {
    pub fn examples_per_sec(&self) -> f64 {
        self.examples as f64 / self.seconds.max(1e-12)
    }
}
