//! Fine-tuning: [`TrainConfig`] (resolved from the command line in one step, checked by
//! `validate.rs`, saved with every run), which ranks a process runs (`ddp.rs`), the loop (`run.rs`) over its parts — how a batch becomes gradients (`step.rs`: plain,
//! accumulated, cached; GradCache's micro-batch in `cached.rs`; the gradient sum in `grads.rs`), what happens around the steps (`observe.rs`: logging, evaluation,
//! checkpoints), clipping (`clip.rs`) — our AdamW (`optimizer.rs`), schedules, batching,
//! prompts, checkpoints and exact resume. Depends on model, loss, data, eval (evaluation during
//! training).

pub mod batcher;
mod cached;
pub mod card;
pub mod checkpoint;
pub mod clip;
pub mod data;
pub mod datasets;
pub mod ddp;
pub mod freeze;
mod grads;
mod observe;
pub mod optimizer;
pub mod outcome;
mod parts;
pub mod phases;
mod prepare;
pub mod prompts;
pub mod run;
pub mod schedule;
pub mod step;
pub mod teacher;
mod validate;

pub use outcome::{Throughput, TrainReport, WARM_STEPS};
pub use run::{run, train};

use crate::data::{DataFormat, ReadOptions};
use crate::eval::EvalTask;
use crate::loss::{LossKind, LossParams, LossSpec, MatryoshkaSpec};
use crate::model::ModelSpec;
use anyhow::{bail, Result};
use data::ColumnSpec;
use schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One evaluation set used during training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalSpec {
    /// A file (sts, triplet, binary) or a BEIR folder (retrieval).
    pub data: PathBuf,
    pub format: Option<DataFormat>,
    pub task: EvalTask,
    pub columns: Option<Vec<String>>,
    pub score_scale: Option<f64>,
    /// Retrieval: the qrels split [default: test].
    #[serde(default)]
    pub split: Option<String>,
}

/// Everything a training run needs. Defaults are sentence-transformers' / HF's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelSpec,
    pub data: PathBuf,
    pub format: Option<DataFormat>,
    pub read: ReadOptions,
    pub columns: ColumnSpec,
    pub loss: LossKind,
    pub loss_params: LossParams,
    /// Matryoshka: the loss at each of these embedding sizes (see [`TrainConfig::loss_spec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matryoshka: Option<MatryoshkaSpec>,
    /// GradCache: texts embedded at a time (`--mini-batch-size`; cached losses: 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_batch_size: Option<usize>,
    /// GIST: the frozen guide model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guide: Option<ModelSpec>,
    /// Several datasets, each with its loss (`--dataset`, a recipe's `[[datasets]]`); empty: the
    /// one dataset of `data`, `loss`, `columns`, `prompts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<datasets::DatasetSpec>,
    /// How several datasets' batches are ordered.
    #[serde(default)]
    pub sampler: datasets::Sampler,
    /// Distillation (mse, margin-mse): the teacher model or labels file (`--teacher`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<teacher::Teacher>,
    /// mse: learn a projection into a teacher of another dimension (`--teacher-projection`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub teacher_projection: bool,
    /// Training prompts (`--prompts`): (column or role, prompt); key "" = every column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<(String, String)>,
    pub output: PathBuf,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub warmup_steps: Option<usize>,
    pub schedule: Schedule,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub shuffle: bool,
    /// None: on for losses with in-batch negatives (MNRL).
    pub no_duplicates: Option<bool>,
    pub dropout: Option<f64>,
    /// Data-parallel ranks (`ddp.rs`): the world size of a `--devices` run (`worker`), or
    /// threads of this process with the in-process test backend (`--test-thread-ranks`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub ranks: usize,
    /// This process is one worker of a `--devices` run (`dist::launch`).
    #[serde(skip)]
    pub worker: Option<crate::dist::launch::Worker>,
    /// MNRL with every rank's candidates (`--gather-across-devices`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gather_across_devices: bool,
    /// LoRA adapters instead of the model's weights (`--lora-rank`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::model::lora::LoraConfig>,
    /// With LoRA: also write the adapter as PEFT does, in `<output>/adapter/`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub save_adapter: bool,
    /// Parameters left untrained (`--freeze-embeddings`, `--freeze-layers`).
    #[serde(default, skip_serializing_if = "freeze::Freeze::is_none")]
    pub freeze: freeze::Freeze,
    /// Evaluation sets; the first one's primary metric decides `--save-best`.
    #[serde(default)]
    pub eval: Vec<EvalSpec>,
    /// None: evaluate at the end of each epoch (when eval data is given).
    pub eval_steps: Option<usize>,
    pub save_best: bool,
    pub save_steps: Option<usize>,
    pub save_total_limit: Option<usize>,
    pub log_steps: usize,
    pub resume: Option<PathBuf>,
    /// Train into an output directory that already holds files (a previous run's checkpoints and
    /// best/ are removed first); without it such a directory is refused, as HF's
    /// `overwrite_output_dir`.
    #[serde(default)]
    pub overwrite: bool,
    /// Progress bar on stderr (a terminal).
    #[serde(skip)]
    pub progress: bool,
    /// Plain progress lines on stderr at each log step (stderr is not a terminal, e.g. CI logs).
    #[serde(skip)]
    pub log_lines: bool,
    /// Time each phase of the timed steps, waiting for the device at every boundary
    /// (`bench train --phases`; see `phases.rs`).
    #[serde(skip)]
    pub phase_timing: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelSpec::default(),
            data: PathBuf::new(),
            format: None,
            read: ReadOptions::default(),
            columns: ColumnSpec::default(),
            loss: LossKind::Cosent,
            loss_params: LossParams::default(),
            matryoshka: None,
            mini_batch_size: None,
            guide: None,
            datasets: Vec::new(),
            sampler: datasets::Sampler::default(),
            teacher: None,
            teacher_projection: false,
            prompts: Vec::new(),
            output: PathBuf::from("output"),
            epochs: 1,
            max_steps: None,
            batch_size: 16,
            grad_accum: 1,
            lr: 2e-5,
            warmup_ratio: 0.1,
            warmup_steps: None,
            schedule: Schedule::Linear,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            seed: 42,
            shuffle: true,
            no_duplicates: None,
            dropout: None,
            ranks: 1,
            worker: None,
            gather_across_devices: false,
            lora: None,
            save_adapter: false,
            freeze: freeze::Freeze::default(),
            eval: Vec::new(),
            eval_steps: None,
            save_best: false,
            save_steps: None,
            save_total_limit: None,
            log_steps: 10,
            resume: None,
            overwrite: false,
            progress: false,
            log_lines: false,
            phase_timing: false,
        }
    }
}

impl TrainConfig {
    /// The datasets of the run: `--dataset` entries, or the one of the top-level flags.
    pub fn parts(&self) -> Vec<datasets::DatasetSpec> {
        if !self.datasets.is_empty() {
            return self.datasets.clone();
        }
        vec![datasets::DatasetSpec {
            name: self
                .data
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into()),
            data: self.data.clone(),
            format: self.format,
            columns: self.columns.clone(),
            loss: self.loss,
            loss_params: self.loss_params.clone(),
            prompts: self.prompts.clone(),
            weight: 1.0,
        }]
    }

    /// The loss configuration, nested: Matryoshka (when set) around the base loss.
    pub fn loss_spec(&self) -> LossSpec {
        self.loss_spec_for(self.loss)
    }

    /// [`Self::loss_spec`] for another base loss (a dataset's).
    pub fn loss_spec_for(&self, kind: LossKind) -> LossSpec {
        let base = LossSpec::Base { kind };
        match &self.matryoshka {
            Some(m) => LossSpec::Matryoshka {
                dims: m.dims.clone(),
                weights: if m.weights.is_empty() {
                    vec![1.0; m.dims.len()]
                } else {
                    m.weights.clone()
                },
                loss: Box::new(base),
            },
            None => base,
        }
    }

    /// The GradCache mini-batch of this run, if it caches.
    pub fn cache_mini_batch(&self) -> Option<usize> {
        self.cache_mini_batch_for(self.loss)
    }

    /// The GradCache mini-batch of a dataset with loss `kind`, if it caches.
    pub fn cache_mini_batch_for(&self, kind: LossKind) -> Option<usize> {
        self.mini_batch_size.or_else(|| kind.cached().then_some(32))
    }

    /// The fields that must match for `--resume` to continue the same run.
    pub fn recipe(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            for k in [
                "resume",
                "overwrite",
                "output",
                "model",
                "eval_steps",
                "save_steps",
                "save_total_limit",
                "log_steps",
                "eval",
                "save_best",
            ] {
                o.remove(k);
            }
        }
        v
    }
}

fn one() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
