//! What happens around the steps besides the gradients, as observers the loop calls after each
//! optimizer step (in order: [`Logger`], [`Evaluations`], [`Checkpoints`]) and at the start and
//! end of the run: the loss/lr/grad-norm windows in `metrics.jsonl` and on stderr, evaluation
//! (before step 1, every `--eval-steps` or epoch, the first set's primary metric deciding
//! `--save-best`), and checkpoints every `--save-steps`. Depends on `eval`, `model`,
//! `checkpoint`, `optimizer`, `progress`.

use super::checkpoint::{self, TrainerState};
use super::clip::GradNorm;
use super::optimizer::AdamW;
use super::TrainConfig;
use crate::encode::EncodeOptions;
use crate::eval::{Evaluator, Metrics};
use crate::model::SentenceEncoder;
use crate::progress::Progress;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The file in `<output>/best/` that names the step and metric of the best model.
pub const BEST_FILE: &str = "embtune_best.json";

/// One finished optimizer step, as the observers see it.
pub(super) struct Event<'a> {
    pub done: usize,
    pub total: usize,
    pub lr: f64,
    pub norm: &'a GradNorm,
    pub examples: usize,
    /// The mean losses of the steps whose values reached the host with this one (on a GPU they
    /// are read only when needed, so several may arrive at once; on the CPU one per step).
    pub losses: &'a [f64],
    pub log_now: bool,
    pub eval_now: bool,
    pub save_now: bool,
}

/// `metrics.jsonl`, one JSON object per line, appended.
pub(super) struct MetricsFile {
    path: PathBuf,
    /// None: lines are dropped (the ranks other than 0 of a data-parallel run).
    file: Option<std::fs::File>,
}

impl MetricsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }
    /// A metrics file that keeps nothing.
    pub fn discard() -> Result<Self> {
        Ok(Self {
            path: PathBuf::new(),
            file: None,
        })
    }
    pub fn line(&mut self, v: &Value) -> Result<()> {
        match &mut self.file {
            Some(f) => {
                writeln!(f, "{v}").with_context(|| format!("writing {}", self.path.display()))
            }
            None => Ok(()),
        }
    }
    pub fn flush(&mut self) -> Result<()> {
        match &mut self.file {
            Some(f) => f
                .flush()
                .with_context(|| format!("writing {}", self.path.display())),
            None => Ok(()),
        }
    }
}

/// What the observers share: the best evaluation so far (checkpoints keep it), the last
/// evaluation of each set, the metrics file.
pub(super) struct RunState {
    pub best: Option<(f64, usize)>,
    /// The latest metrics of each evaluation set (name, metrics), the first set first.
    pub last_evals: Vec<(String, Metrics)>,
    pub metrics: MetricsFile,
    pub steps_per_epoch: usize,
}

impl RunState {
    pub fn epoch(&self, step: usize) -> f64 {
        step as f64 / self.steps_per_epoch.max(1) as f64
    }
}

pub(super) trait Observer {
    /// Before the first step of this segment (`start`: the step resumed from, else 0).
    fn start(&mut self, _start: usize, _st: &mut RunState, _model: &SentenceEncoder) -> Result<()> {
        Ok(())
    }
    fn step(
        &mut self,
        ev: &Event,
        st: &mut RunState,
        model: &SentenceEncoder,
        opt: &AdamW,
    ) -> Result<()>;
    fn finish(&mut self, _st: &mut RunState) -> Result<()> {
        Ok(())
    }
}

/// Loss windows: `metrics.jsonl` lines every `--log-steps`, the progress bar or plain lines on
/// stderr, and a per-step DEBUG line.
pub(super) struct Logger {
    bar: Progress,
    log_lines: bool,
    debug_steps: bool,
    window: (f64, usize, usize, Instant),
    /// Several datasets: their names, the dataset of every step of the run, and each one's
    /// (loss sum, steps) in the window (`loss_<name>` in metrics.jsonl).
    datasets: Vec<String>,
    step_dataset: Vec<usize>,
    per_dataset: Vec<(f64, usize)>,
    step_loss: f64,
    /// The mean of the first and the last logged window of this segment.
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
}

impl Logger {
    /// `datasets`: the names when there are several (else empty), `step_dataset` the dataset
    /// of each step.
    pub fn new(
        cfg: &TrainConfig,
        steps_left: usize,
        datasets: Vec<String>,
        step_dataset: Vec<usize>,
    ) -> Self {
        Self {
            bar: Progress::new("training", steps_left as u64, cfg.progress),
            log_lines: cfg.log_lines,
            debug_steps: tracing::enabled!(tracing::Level::DEBUG),
            window: (0.0, 0, 0, Instant::now()),
            per_dataset: vec![(0.0, 0); datasets.len()],
            datasets,
            step_dataset,
            step_loss: f64::NAN,
            first_loss: None,
            last_loss: None,
        }
    }
}

impl Observer for Logger {
    fn step(
        &mut self,
        ev: &Event,
        st: &mut RunState,
        _: &SentenceEncoder,
        _: &AdamW,
    ) -> Result<()> {
        let (sum, n, examples, _) = &mut self.window;
        let first = ev.done - ev.losses.len();
        for (i, l) in ev.losses.iter().enumerate() {
            *sum += l;
            *n += 1;
            self.step_loss = *l;
            if let Some(w) = self
                .step_dataset
                .get(first + i)
                .and_then(|&d| self.per_dataset.get_mut(d))
            {
                w.0 += l;
                w.1 += 1;
            }
        }
        *examples += ev.examples;
        let done = ev.done;
        if self.debug_steps {
            tracing::debug!(
                "step {done}/{}: loss {:.6} lr {:.3e} grad-norm {:.4} ({} examples)",
                ev.total,
                self.step_loss,
                ev.lr,
                ev.norm.value()?,
                ev.examples
            );
        }
        self.bar.inc(1);
        self.bar
            .set_message(format!("loss {:.4} lr {:.2e}", self.step_loss, ev.lr));
        if ev.log_now {
            let (sum, n, examples, since) = self.window;
            let norm = ev.norm.value()?;
            let secs = since.elapsed().as_secs_f64().max(1e-9);
            let mean = sum / n as f64;
            self.first_loss.get_or_insert(mean);
            self.last_loss = Some(mean);
            let rate = examples as f64 / secs;
            let mut line = json!({"step": done, "epoch": st.epoch(done), "loss": mean, "lr": ev.lr,
                "grad_norm": norm, "examples_per_sec": rate});
            for (name, w) in self.datasets.iter().zip(self.per_dataset.iter_mut()) {
                if w.1 > 0 {
                    line[format!("loss_{name}")] = json!(w.0 / w.1 as f64);
                }
                *w = (0.0, 0);
            }
            st.metrics.line(&line)?;
            if self.log_lines {
                tracing::info!(
                    "step {done}/{}  loss {mean:.6}  lr {:.3e}  grad-norm {norm:.3}  {rate:.1} examples/s",
                    ev.total,
                    ev.lr
                );
            }
            self.window = (0.0, 0, 0, Instant::now());
        }
        Ok(())
    }
    fn finish(&mut self, _: &mut RunState) -> Result<()> {
        self.bar.finish();
        Ok(())
    }
}

/// One evaluation set of a run.
pub(super) struct EvalSet {
    pub name: String,
    pub evaluator: Box<dyn Evaluator>,
}

/// Evaluation during training: every set, before step 1 (the curve starts at the base model)
/// and whenever the loop says; the first set's primary metric keeps `best/` (`--save-best`).
pub(super) struct Evaluations {
    pub sets: Vec<EvalSet>,
    pub save_best: bool,
    pub output: PathBuf,
    /// Several data-parallel ranks: every rank evaluates its share of the batches (the
    /// embeddings summed across ranks, `encode::Shard`) and only rank 0 (`primary`) writes.
    pub shard: crate::encode::Shard,
    pub primary: bool,
}

impl Evaluations {
    /// Matryoshka: the first set's primary metric at each trained size (largest first).
    pub fn matryoshka(
        &self,
        cfg: &TrainConfig,
        model: &SentenceEncoder,
    ) -> Result<Vec<(usize, f64)>> {
        let (Some(m), Some(set)) = (&cfg.matryoshka, self.sets.first()) else {
            return Ok(Vec::new());
        };
        let mut dims = m.dims.clone();
        dims.sort_by(|a, b| b.cmp(a));
        dims.dedup();
        let mut out = Vec::with_capacity(dims.len());
        for d in dims {
            let opts = EncodeOptions {
                batch_size: 64,
                truncate_dim: Some(d),
                ..Default::default()
            };
            let v = set.evaluator.evaluate(model, &opts)?.primary_value();
            tracing::info!("{} at {d} dimensions: {v:.4}", set.name);
            out.push((d, v));
        }
        Ok(out)
    }
    fn evaluate(&self, step: usize, st: &mut RunState, model: &SentenceEncoder) -> Result<()> {
        let opts = EncodeOptions {
            batch_size: 64,
            shard: self.shard.clone(),
            ..Default::default()
        };
        let mut evals = Vec::with_capacity(self.sets.len());
        for (i, set) in self.sets.iter().enumerate() {
            let m = set
                .evaluator
                .evaluate(model, &opts)
                .with_context(|| format!("evaluating on {} at step {step}", set.name))?;
            let mut line = json!({"step": step, "epoch": st.epoch(step), "eval": m.to_json()});
            if self.sets.len() > 1 {
                line["eval_set"] = json!(set.name);
                line["eval_index"] = json!(i);
            }
            st.metrics.line(&line)?;
            tracing::info!(
                "step {step}: {}{} = {:.4}",
                if self.sets.len() > 1 {
                    format!("{}: ", set.name)
                } else {
                    String::new()
                },
                m.primary,
                m.primary_value()
            );
            evals.push((set.name.clone(), m));
        }
        if let Some((_, m)) = evals.first() {
            let v = m.primary_value();
            let improved = st
                .best
                .is_none_or(|(b, _)| if m.greater_is_better { v > b } else { v < b });
            if improved {
                st.best = Some((v, step));
                if self.save_best && self.primary {
                    let dir = self.output.join("best");
                    model.save(&dir)?;
                    // best/ says which step it is.
                    let note = json!({"step": step, "metric": m.primary, "value": v});
                    crate::fsutil::write_atomic(&dir.join(BEST_FILE), note.to_string().as_bytes())?;
                }
            }
        }
        st.last_evals = evals;
        Ok(())
    }
}

impl Observer for Evaluations {
    fn start(&mut self, start: usize, st: &mut RunState, model: &SentenceEncoder) -> Result<()> {
        if start == 0 && !self.sets.is_empty() {
            self.evaluate(0, st, model)?;
        }
        Ok(())
    }
    fn step(
        &mut self,
        ev: &Event,
        st: &mut RunState,
        model: &SentenceEncoder,
        _: &AdamW,
    ) -> Result<()> {
        if ev.eval_now && !self.sets.is_empty() {
            self.evaluate(ev.done, st, model)?;
        }
        Ok(())
    }
}

/// Checkpoints: every `--save-steps` (pruned to `--save-total-limit`), and on an interrupt.
pub(super) struct Checkpoints<'a> {
    pub cfg: &'a TrainConfig,
    pub total: usize,
    /// Wall seconds of the earlier segments of this run, and when this one started.
    pub wall_before: f64,
    pub wall: Instant,
}

impl Checkpoints<'_> {
    pub fn save(
        &self,
        step: usize,
        best: Option<(f64, usize)>,
        model: &SentenceEncoder,
        opt: &AdamW,
    ) -> Result<PathBuf> {
        let state = TrainerState {
            step,
            total_steps: self.total,
            dropout_rng: model.dropout_state(),
            best,
            recipe: self.cfg.recipe(),
            embtune_version: env!("CARGO_PKG_VERSION").into(),
            wall_seconds: self.wall_before + self.wall.elapsed().as_secs_f64(),
        };
        let path = checkpoint::write(&self.cfg.output, &state, |dir| {
            // With LoRA the base weights never change: the adapters are the checkpoint.
            if model.lora().is_none() {
                model.save(&dir.join(checkpoint::MODEL_DIR))?;
            }
            opt.save_values(&dir.join(checkpoint::LORA_FILE), "lora.")?;
            opt.save(&dir.join(checkpoint::OPTIMIZER_FILE))?;
            opt.save_values(&dir.join(checkpoint::LOSS_PARAMS_FILE), "loss.")
        })?;
        if let Some(limit) = self.cfg.save_total_limit {
            checkpoint::prune(&self.cfg.output, limit, None)?;
        }
        Ok(path)
    }
}

impl Observer for Checkpoints<'_> {
    fn step(
        &mut self,
        ev: &Event,
        st: &mut RunState,
        model: &SentenceEncoder,
        opt: &AdamW,
    ) -> Result<()> {
        if ev.save_now {
            self.save(ev.done, st.best, model, opt)?;
        }
        Ok(())
    }
}
