//! Fine-tuning: [`TrainConfig`] (resolved from the command line in one step, saved with every
//! run), the loop (`run.rs`) over its parts — how a batch becomes gradients (`step.rs`: plain,
//! accumulated, cached; GradCache's micro-batch in `cached.rs`), what happens around the steps (`observe.rs`: logging, evaluation,
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
    /// Value checks that need no file.
    pub fn validate(&self) -> Result<()> {
        let pos = |name: &str, v: usize| {
            if v == 0 {
                bail!("{name} must be at least 1")
            } else {
                Ok(())
            }
        };
        pos("--batch-size", self.batch_size)?;
        pos("--grad-accum", self.grad_accum)?;
        pos("--log-steps", self.log_steps)?;
        if self.max_steps.is_none() {
            pos("--epochs", self.epochs)?;
        }
        if let Some(s) = self.max_steps {
            pos("--max-steps", s)?;
        }
        for (name, v) in [
            ("--eval-steps", self.eval_steps),
            ("--save-steps", self.save_steps),
            ("--save-total-limit", self.save_total_limit),
        ] {
            if let Some(v) = v {
                pos(name, v)?;
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            bail!(
                "--warmup-ratio must be in [0, 1], got {}",
                self.warmup_ratio
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("--weight-decay must be ≥ 0, got {}", self.weight_decay);
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            bail!(
                "--max-grad-norm must be ≥ 0 (0 disables clipping), got {}",
                self.max_grad_norm
            );
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                bail!("--dropout must be in [0, 1), got {p}");
            }
        }
        if self.save_best && self.eval.is_empty() {
            bail!("--save-best needs --eval-data");
        }
        if self.mini_batch_size == Some(0) {
            bail!("--mini-batch-size must be at least 1");
        }
        if let Some(m) = &self.matryoshka {
            if m.dims.is_empty() || m.dims.contains(&0) {
                bail!("--matryoshka-dims: give positive sizes, e.g. 384,256,128,64");
            }
            if !m.weights.is_empty() && m.weights.len() != m.dims.len() {
                bail!(
                    "--matryoshka-weights: {} weights for {} dimensions; give one per dimension",
                    m.weights.len(),
                    m.dims.len()
                );
            }
            if let Some(w) = m.weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
                bail!("--matryoshka-weights: {w} is not a non-negative number");
            }
        }
        if self.lora.is_some() && !self.freeze.is_none() {
            bail!("--freeze-embeddings/--freeze-layers do not combine with --lora-rank: LoRA trains only its adapters");
        }
        if let Some(l) = &self.lora {
            if l.rank == 0 {
                bail!("--lora-rank must be at least 1");
            }
            if !(l.alpha.is_finite() && l.alpha > 0.0) {
                bail!("--lora-alpha must be > 0, got {}", l.alpha);
            }
        }
        if self.ranks == 0 {
            bail!("--test-thread-ranks must be at least 1");
        }
        if self.worker.as_ref().is_some_and(|w| w.world != self.ranks) {
            bail!("internal: a worker's world size differs from its ranks");
        }
        let parts = self.parts();
        if self.gather_across_devices {
            if let Some(p) = parts.iter().find(|p| !(p.loss.in_batch_negatives())) {
                bail!("--gather-across-devices is for mnrl, cached-mnrl, gist and cached-gist (their in-batch negatives); {} computes its loss per rank", p.name);
            }
        }
        if self.teacher.is_some() && !parts.iter().any(|p| p.loss.distills()) {
            bail!("--teacher is for the distillation losses (--loss mse, margin-mse)");
        }
        if self.teacher_projection && !parts.iter().any(|p| p.loss == LossKind::Mse) {
            bail!("--teacher-projection is for --loss mse (a projection into the teacher's embeddings)");
        }
        let mut names: Vec<&str> = Vec::new();
        for p in &parts {
            if names.contains(&p.name.as_str()) {
                bail!(
                    "--dataset: two datasets are named {:?}; give each its own name=…",
                    p.name
                );
            }
            names.push(&p.name);
            let flag = serde_json::to_value(p.loss)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            if p.loss == LossKind::Mse && self.teacher.is_none() {
                bail!("--loss mse needs --teacher: a model (Hub id or directory) whose embeddings the student learns, or a .npy/.safetensors file of them, one row per training row");
            }
            if self.matryoshka.is_some() && matches!(p.loss, LossKind::Mse | LossKind::Softmax) {
                bail!("--matryoshka-dims does not combine with --loss mse or softmax (their targets and classifier have the full dimension)");
            }
            if p.loss.guided() && self.guide.is_none() {
                bail!("--loss {flag} needs --guide-model (the frozen model that spots false negatives, e.g. the model you start from)");
            }
        }
        if parts.len() > 1 && matches!(self.teacher, Some(teacher::Teacher::File(_))) {
            bail!("--teacher FILE: a labels file is aligned with one dataset's rows; with several --dataset give a teacher model");
        }
        Ok(())
    }

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

/// A hash of the whole configuration but what may differ between the ranks of one run (the
/// device, whether stderr is a terminal): the ranks of a `--devices` run check at the
/// rendezvous that they run the same command.
pub(crate) fn recipe_key(cfg: &TrainConfig) -> u64 {
    use sha2::Digest;
    let mut same = cfg.clone();
    same.model.compute.device = crate::device::DeviceChoice::Auto;
    same.progress = false;
    same.log_lines = false;
    let json = serde_json::to_string(&same).unwrap_or_default();
    let d = sha2::Sha256::digest(json.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

fn one() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
