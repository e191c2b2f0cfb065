//! The training loop: data → loss check (before step 1) → model → AdamW + schedule →
//! { batch → one padded batch per text column → forward (dropout on) → loss → backward →
//! clip → step → log → maybe evaluate → maybe checkpoint } → final save.

use super::batcher::epoch_batches;
use super::checkpoint::{self, TrainerState};
use super::prepare::{plan, prepare, Prepared};

use super::optimizer::{AdamW, AdamWConfig};
use super::outcome::{Throughput, TrainReport, WARM_STEPS};
use super::phases::{Phase, PhaseTimer};
use super::schedule::{lr_at, warmup_steps};
use super::TrainConfig;
use crate::signals;

use crate::encode::EncodeOptions;
use crate::loss::LossKind;
use crate::model::{ModelSpec, SentenceEncoder};
use crate::progress::Progress;
use crate::tokenize::Tokenized;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs (or resumes) a training run.
pub fn run(cfg: &TrainConfig) -> Result<TrainReport> {
    train(cfg).map(|(r, _)| r)
}

/// [`run`], also returning the trained model as it is in memory at the end.
pub fn train(cfg: &TrainConfig) -> Result<(TrainReport, SentenceEncoder)> {
    let wall = Instant::now();
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!("training config: {}", serde_json::to_string(cfg)?);
    }
    let p = prepare(cfg)?;
    let device = crate::device::resolve(&cfg.model.compute)?;
    crate::device::check_precision(&cfg.model.compute, &device)?;
    let spec = match &p.resume {
        Some((ckpt, _)) => ModelSpec {
            model: ckpt
                .join(checkpoint::MODEL_DIR)
                .to_string_lossy()
                .into_owned(),
            compute: cfg.model.compute,
            ..Default::default()
        },
        None => cfg.model.clone(),
    };
    let mut model = SentenceEncoder::load(&spec, &device)?;
    crate::logging::model_loaded(&spec, &model);
    if let Some(d) = cfg.dropout {
        model.set_dropout(d);
    }
    model.seed_dropout(cfg.seed);
    let resolved = crate::data::ColumnSpec {
        text_columns: Some(p.set.columns.clone()),
        label_column: p.set.label_column.clone(),
    };
    let report =
        crate::pairs::check::check(&p.table, &resolved, p.eval_table.as_ref(), Some(&model))?;
    tracing::info!("{}", report.to_text().trim_end());

    // Tokenize every text once.
    let cols = p.set.n_texts();
    let flat: Vec<&str> = p
        .set
        .texts
        .iter()
        .flat_map(|r| r.iter().map(|s| s.as_str()))
        .collect();
    let toks = model.tokenizer.tokenize(&flat)?;
    let tok = |row: usize, col: usize| -> &Tokenized { &toks[row * cols + col] };

    let batches = plan(cfg, &p.set);
    let accum = cfg.grad_accum;
    let total = cfg
        .max_steps
        .unwrap_or_else(|| batches.len().div_ceil(accum));
    let steps_per_epoch = {
        let no_dup = cfg.no_duplicates.unwrap_or(cfg.loss == LossKind::Mnrl);
        epoch_batches(
            &p.set.texts,
            cfg.batch_size,
            cfg.seed,
            0,
            cfg.shuffle,
            no_dup,
        )
        .len()
        .div_ceil(accum)
        .max(1)
    };
    let warmup = warmup_steps(total, cfg.warmup_ratio, cfg.warmup_steps);
    let mut opt = AdamW::new(
        model.named_vars(),
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let vars: Vec<_> = model.named_vars().into_iter().map(|(_, v)| v).collect();

    let mut start = 0;
    let mut best = None;
    let mut wall_before = 0.0;
    if let Some((ckpt, state)) = &p.resume {
        opt.load(&ckpt.join(checkpoint::OPTIMIZER_FILE), state.step as u64)?;
        model.restore_dropout_state(state.dropout_rng);
        start = state.step;
        best = state.best;
        wall_before = state.wall_seconds;
        tracing::info!(
            "resuming from {} at step {start} of {total}",
            ckpt.display()
        );
    }
    for line in checkpoint::clean_stale(&cfg.output)? {
        tracing::info!("note: checkpoints: {line}");
    }
    let metrics_path = cfg.output.join("metrics.jsonl");
    truncate_metrics(&metrics_path, start)?;
    // The resolved config, and the model family and execution path the run's ops take.
    let mut saved = serde_json::to_value(cfg)?;
    if let Some(o) = saved.as_object_mut() {
        o.insert("family".into(), json!(model.family()));
        o.insert("exec".into(), json!(model.exec()));
    }
    crate::fsutil::write_atomic(
        &cfg.output.join("train_config.json"),
        &serde_json::to_vec_pretty(&saved)?,
    )?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    tracing::info!(
        "training {} on {} rows ({} text column{}{}), {total} steps, batch {}, warmup {warmup}, on {} ({}, {} ops)",
        p.loss.name(),
        p.set.len(),
        cols,
        if cols == 1 { "" } else { "s" },
        if p.simcse {
            ", SimCSE: each text is its own positive"
        } else {
            ""
        },
        cfg.batch_size,
        crate::device::describe(&device),
        cfg.model.compute.dtype,
        model.exec(),
    );

    signals::install();
    let enc_opts = EncodeOptions {
        batch_size: 64,
        normalize: false,
        progress: false,
    };
    let mut bar = Progress::new("training", (total - start) as u64, cfg.progress);
    let (mut win_loss, mut win_n, mut win_examples) = (0.0f64, 0usize, 0usize);
    let mut win_start = Instant::now();
    let (mut first_loss, mut last_loss, mut final_eval) = (None, None, None);
    let mut interrupted = None;
    let timed_from = start + WARM_STEPS;
    let mut pending = PendingLosses::default();
    let mut step_loss = f64::NAN;
    let (mut timer, mut timed_examples, mut timed_steps) = (None::<Instant>, 0usize, 0usize);
    let mut phases = PhaseTimer::new(&device, cfg.phase_timing);
    let save_ckpt = |step: usize,
                     best: Option<(f64, usize)>,
                     model: &SentenceEncoder,
                     opt: &AdamW|
     -> Result<PathBuf> {
        let state = TrainerState {
            step,
            total_steps: total,
            dropout_rng: model.dropout_state(),
            best,
            recipe: cfg.recipe(),
            embtune_version: env!("CARGO_PKG_VERSION").into(),
            wall_seconds: wall_before + wall.elapsed().as_secs_f64(),
        };
        let path = checkpoint::write(&cfg.output, &state, |dir| {
            model.save(&dir.join(checkpoint::MODEL_DIR))?;
            opt.save(&dir.join(checkpoint::OPTIMIZER_FILE))
        })?;
        if let Some(limit) = cfg.save_total_limit {
            checkpoint::prune(&cfg.output, limit, None)?;
        }
        Ok(path)
    };

    // Per-step loss / lr / grad-norm at DEBUG (reads the norm back, so only when it is shown).
    let debug_steps = tracing::enabled!(tracing::Level::DEBUG);
    for step in start..total {
        if let Some(sig) = signals::pending() {
            let path = save_ckpt(step, best, &model, &opt)?;
            tracing::info!(
                "interrupted: checkpoint saved to {}; continue with the same command and --resume {}",
                path.display(),
                cfg.output.display()
            );
            interrupted = Some(sig);
            break;
        }
        if step == timed_from {
            phases.activate()?;
            device.synchronize()?;
            timer = Some(Instant::now());
        }
        let micro: Vec<&[usize]> = (0..accum)
            .filter_map(|m| batches.get(step * accum + m).map(|b| b.as_slice()))
            .collect();
        let (acc, micro_losses, examples) =
            accumulate(&model, &p, &micro, &tok, &vars, &device, &mut phases)
                .with_context(|| format!("training step {}", step + 1))?;
        let lr = lr_at(cfg.schedule, cfg.lr, step, warmup, total);
        phases.begin();
        let norm = clip_and_step(&mut opt, &acc, lr, cfg.max_grad_norm)?;
        drop(acc);
        phases.end(Phase::Optimizer)?;
        phases.step_done();
        if timer.is_some() {
            timed_examples += examples;
            timed_steps += 1;
        }
        let done = step + 1;
        pending.steps.push((done, micro_losses));
        let log_now = done % cfg.log_steps == 0 || done == total;
        let eval_now = match cfg.eval_steps {
            Some(n) => done % n == 0 || done == total,
            None => done % steps_per_epoch == 0 || done == total,
        };
        let save_now = cfg.save_steps.is_some_and(|n| done % n == 0) && done < total;
        if !device.is_cuda() || log_now || eval_now || save_now || cfg.progress || debug_steps {
            for l in pending.flush()? {
                win_loss += l;
                win_n += 1;
                step_loss = l;
            }
        }
        if debug_steps {
            tracing::debug!(
                "step {done}/{total}: loss {step_loss:.6} lr {lr:.3e} grad-norm {:.4} ({examples} examples)",
                norm.value()?
            );
        }
        win_examples += examples;
        bar.inc(1);
        bar.set_message(format!("loss {:.4} lr {lr:.2e}", step_loss));
        if log_now {
            let norm = norm.value()?;
            let secs = win_start.elapsed().as_secs_f64();
            let mean = win_loss / win_n as f64;
            first_loss.get_or_insert(mean);
            last_loss = Some(mean);
            let line = json!({"step": done, "epoch": done as f64 / steps_per_epoch as f64, "loss": mean, "lr": lr, "grad_norm": norm,
                "examples_per_sec": win_examples as f64 / secs.max(1e-9)});
            writeln!(metrics, "{line}")
                .with_context(|| format!("writing {}", metrics_path.display()))?;
            if cfg.log_lines {
                tracing::info!(
                    "step {done}/{total}  loss {mean:.6}  lr {lr:.3e}  grad-norm {norm:.3}  {:.1} examples/s",
                    win_examples as f64 / secs.max(1e-9)
                );
            }
            (win_loss, win_n, win_examples, win_start) = (0.0, 0, 0, Instant::now());
        }
        if let (true, Some(ev)) = (eval_now, &p.evaluator) {
            let m = ev.evaluate(&model, &enc_opts)?;
            let v = m.primary_value();
            writeln!(
                metrics,
                "{}",
                json!({"step": done, "epoch": done as f64 / steps_per_epoch as f64, "eval": m.to_json()})
            )?;
            tracing::info!("step {done}: {} = {v:.4}", m.primary);
            let improved =
                best.is_none_or(|(b, _)| if m.greater_is_better { v > b } else { v < b });
            if improved {
                best = Some((v, done));
                if cfg.save_best {
                    let dir = cfg.output.join("best");
                    model.save(&dir)?;
                    // best/ says which step it is.
                    let note = json!({"step": done, "metric": m.primary, "value": v});
                    crate::fsutil::write_atomic(&dir.join(BEST_FILE), note.to_string().as_bytes())?;
                }
            }
            final_eval = Some(m);
        }
        if save_now {
            save_ckpt(done, best, &model, &opt)?;
        }
    }
    device.synchronize()?;
    let throughput = timer.map(|t| Throughput {
        steps: timed_steps,
        examples: timed_examples,
        seconds: t.elapsed().as_secs_f64(),
    });
    bar.finish();
    metrics.flush()?;
    if interrupted.is_none() {
        model.save_into(&cfg.output)?;
        if cfg.save_best && cfg.output.join("best").is_dir() {
            tracing::info!(
                "best {:.4} at step {}: kept in {}",
                best.map(|b| b.0).unwrap_or(f64::NAN),
                best.map(|b| b.1).unwrap_or(0),
                cfg.output.join("best").display()
            );
        }
    }
    if let Some((a, b)) = logged_loss_span(&metrics_path) {
        (first_loss, last_loss) = (Some(a), Some(b));
    }
    let report = TrainReport {
        steps: total,
        total_steps: total,
        first_loss,
        last_loss,
        final_eval,
        best,
        interrupted,
        output: cfg.output.clone(),
        throughput,
        phases: phases.report(),
    };
    if report.interrupted.is_none() {
        let card = super::card::CardInput {
            model: &model,
            rows: p.set.len(),
            columns: &p.set.columns,
            label_column: p.set.label_column.as_deref(),
            examples: (0..p.set.len().min(3))
                .map(|i| {
                    (
                        p.set.texts[i].clone(),
                        p.set.labels.as_ref().and_then(|l| l.get(i).copied()),
                    )
                })
                .collect(),
            device: crate::device::describe(&device),
            wall_seconds: wall_before + wall.elapsed().as_secs_f64(),
        };
        super::card::write(cfg, &report, &card)?;
        let title = format!("embtune training report: {}", cfg.output.display());
        crate::report::write_train_report(&cfg.output, &title)?;
    }
    Ok((report, model))
}

/// The file in `<output>/best/` that names the step and metric of the best model.
pub const BEST_FILE: &str = "embtune_best.json";

/// The mean loss of the first and last logged windows of the whole run (metrics.jsonl keeps the
/// windows of every segment, so this holds after a resume too).
fn logged_loss_span(path: &Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let losses: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .collect();
    Some((*losses.first()?, *losses.last()?))
}

/// Forward + backward over the micro-batches of one optimizer step: summed gradients (each
/// micro-batch's loss divided by their count), the mean loss, and the number of examples.
fn accumulate<'a>(
    model: &SentenceEncoder,
    p: &Prepared,
    micro: &[&[usize]],
    tok: &impl Fn(usize, usize) -> &'a Tokenized,
    vars: &[candle_core::Var],
    device: &Device,
    timer: &mut PhaseTimer,
) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>, usize)> {
    let mut acc: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut losses = Vec::with_capacity(micro.len());
    let mut examples = 0;
    let n = micro.len().max(1) as f64;
    let columns = if p.simcse { 2 } else { p.set.n_texts() };
    for rows in micro {
        examples += rows.len();
        timer.begin();
        let ids: Vec<Vec<&[u32]>> = (0..columns)
            .map(|c| {
                // SimCSE: the same texts twice, two dropout masks.
                let col = if p.simcse { 0 } else { c };
                rows.iter().map(|&r| tok(r, col).ids.as_slice()).collect()
            })
            .collect();
        let batches = model.pad_columns(&ids, join_columns(device, &ids), device)?;
        let labels = match &p.set.labels {
            Some(l) => Some(Tensor::from_vec(
                rows.iter().map(|&r| l[r]).collect::<Vec<f32>>(),
                rows.len(),
                device,
            )?),
            None => None,
        };
        timer.end(Phase::Batch)?;
        timer.begin();
        let embs = model.embed_columns(&batches, true)?;
        timer.end(Phase::Forward)?;
        timer.begin();
        let l = p.loss.compute(&embs, labels.as_ref())?;
        losses.push(l.detach());
        let l = if micro.len() > 1 { (l / n)? } else { l };
        timer.end(Phase::Loss)?;
        timer.begin();
        let grads = l.backward()?;
        timer.end(Phase::Backward)?;
        timer.begin();
        for (a, v) in acc.iter_mut().zip(vars) {
            if let Some(g) = grads.get(v.as_tensor()) {
                *a = Some(match a.take() {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                });
            }
        }
        drop(grads);
        timer.end(Phase::Accumulate)?;
    }
    Ok((acc, losses, examples))
}

/// Whether a step's text columns go through the encoder as one batch: on a GPU, unless that
/// pads more than 15 % extra tokens. One pass has half (or a third) of the kernels, and small
/// batches on a GPU are bound by the number of kernels, not their size (GPU run 1: step time
/// far above the FLOPs; scripts/gpu-check.sh measures both ways). Long passages beside short
/// queries stay separate. On the CPU, no: interleaved runs (CoSENT, batch 16, STS-B) measured
/// no difference (25.7 vs 25.8 pairs/s), and separate passes keep the recorded results
/// reproducible. `EMBTUNE_JOINT_FORWARD=0|1` decides instead (benchmarks, tests).
pub fn join_columns(device: &Device, columns: &[Vec<&[u32]>]) -> bool {
    if columns.len() < 2 {
        return false;
    }
    static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let forced = FORCED.get_or_init(|| match std::env::var("EMBTUNE_JOINT_FORWARD").as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    });
    forced.unwrap_or_else(|| device.is_cuda() && joint_padding_ok(columns))
}

/// A joint batch computes at most 15 % more (padded) tokens than the columns' own batches.
fn joint_padding_ok(columns: &[Vec<&[u32]>]) -> bool {
    let longest = |c: &[&[u32]]| c.iter().map(|x| x.len()).max().unwrap_or(0);
    let separate: usize = columns.iter().map(|c| c.len() * longest(c)).sum();
    let rows: usize = columns.iter().map(|c| c.len()).sum();
    let joint = rows * columns.iter().map(|c| longest(c)).max().unwrap_or(0);
    joint as f64 <= 1.15 * separate as f64
}

/// Loss values not yet copied to the host. On the CPU they are read after every step; on a GPU
/// only when needed (log, evaluation, checkpoint, end), so steps queue without waiting.
#[derive(Default)]
struct PendingLosses {
    /// Per optimizer step: its step number and the loss of each micro-batch.
    steps: Vec<(usize, Vec<Tensor>)>,
}

impl PendingLosses {
    /// Mean micro-batch loss of each pending step (in order); an error on a non-finite loss.
    fn flush(&mut self) -> Result<Vec<f64>> {
        if self.steps.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<Tensor> = self
            .steps
            .iter()
            .flat_map(|(_, l)| l.iter().map(|t| t.flatten_all()))
            .collect::<candle_core::Result<_>>()?;
        let vals: Vec<f32> = Tensor::cat(&all, 0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        let mut out = Vec::with_capacity(self.steps.len());
        let mut k = 0;
        for (step, l) in self.steps.drain(..) {
            let n = l.len().max(1) as f64;
            let mut s = 0.0;
            for _ in 0..l.len() {
                let lv = vals[k] as f64;
                k += 1;
                if !lv.is_finite() {
                    bail!("training step {step}: loss is {lv}; lower --lr or check the data");
                }
                s += lv / n;
            }
            out.push(s);
        }
        Ok(out)
    }
}

/// The gradient norm of the last step: on the host, or (GPU) still on the device.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) enum GradNorm {
    Host(f64),
    Device(Tensor),
}

impl GradNorm {
    pub(crate) fn value(&self) -> Result<f64> {
        Ok(match self {
            GradNorm::Host(v) => *v,
            GradNorm::Device(t) => t.flatten_all()?.to_vec1::<f32>()?[0] as f64,
        })
    }
}

/// Global-norm clipping (torch's clip_grad_norm_, 0 disables) folded into the AdamW update.
/// On a GPU the norm and the factor stay on the device (no wait for the host); on the CPU
/// the norm is computed on the host as before.
pub(crate) fn clip_and_step(
    opt: &mut AdamW,
    grads: &[Option<Tensor>],
    lr: f64,
    max_norm: f64,
) -> Result<GradNorm> {
    #[cfg(feature = "cuda")]
    if let Some(g) = grads.iter().flatten().next() {
        if g.device().is_cuda() && crate::ops::exec::cuda_kernels_enabled() {
            let gs: Vec<&Tensor> = grads.iter().flatten().collect();
            let (norm, scale) = crate::ops::cuda::launch::clip_scale_device(&gs, max_norm)?;
            opt.step_with(
                grads,
                lr,
                crate::train::optimizer::GradScale::Device(&scale),
            )?;
            return Ok(GradNorm::Device(norm));
        }
    }
    let (norm, gscale) = clip_scale(grads, max_norm)?;
    opt.step_scaled(grads, lr, gscale)?;
    Ok(GradNorm::Host(norm))
}

/// Global gradient norm and the factor that clips it to `max_norm` (torch's
/// clip_grad_norm_: `max_norm / (norm + 1e-6)` when above; 1 otherwise). The factor is applied
/// inside the optimizer update.
pub fn clip_scale(grads: &[Option<Tensor>], max_norm: f64) -> Result<(f64, f64)> {
    let norm = global_norm(grads)?;
    // torch: clip_coef = max_norm / (norm + 1e-6), clamped to at most 1 (so a norm just under
    // max_norm is scaled by a hair, as there).
    let scale = if max_norm > 0.0 {
        (max_norm / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    Ok((norm, scale))
}

/// √(Σ‖g‖²) with each tensor's sum of squares in f32 and the total in f64; on CUDA all sums
/// come back in one copy.
fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let gs: Vec<&Tensor> = grads.iter().flatten().collect();
    let sums: Vec<f32> = match gs.first() {
        #[cfg(feature = "cuda")]
        Some(g) if g.device().is_cuda() && crate::ops::exec::cuda_kernels_enabled() => {
            crate::ops::cuda::launch::sums_of_squares(&gs)?
        }
        Some(g) if g.device().is_cpu() && g.dtype() == candle_core::DType::F32 => {
            let total = gs
                .iter()
                .map(|g| crate::ops::cpu::sum_squares(g))
                .sum::<candle_core::Result<f64>>()?;
            return Ok(total.sqrt());
        }
        _ => gs
            .iter()
            .map(|g| g.sqr()?.sum_all()?.to_scalar::<f32>())
            .collect::<candle_core::Result<_>>()?,
    };
    Ok(sums.iter().map(|&s| s as f64).sum::<f64>().sqrt())
}

/// On resume, drops metric lines logged after the checkpoint (they will be logged again).
fn truncate_metrics(path: &Path, keep_upto: usize) -> Result<()> {
    if keep_upto == 0 {
        if path.exists() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing old {}", path.display()))?;
        }
        return Ok(());
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= keep_upto)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::fsutil::write_atomic(path, kept.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_joined_only_when_padding_stays_within_15_percent() {
        fn ids(lens: &[usize]) -> Vec<Vec<u32>> {
            lens.iter().map(|&n| vec![1; n]).collect()
        }
        fn cols<'a>(a: &'a [Vec<u32>], b: &'a [Vec<u32>]) -> Vec<Vec<&'a [u32]>> {
            vec![
                a.iter().map(|x| x.as_slice()).collect(),
                b.iter().map(|x| x.as_slice()).collect(),
            ]
        }
        // 2×(2·22) = 88 vs 2·21 + 2·22 = 86: joined.
        let (a, b) = (ids(&[21, 5]), ids(&[22, 3]));
        assert!(joint_padding_ok(&cols(&a, &b)));
        // 4×20 = 80 vs 2·13 + 2·20 = 66 (+21 %): separate.
        let (a, b) = (ids(&[13, 5]), ids(&[20, 3]));
        assert!(!joint_padding_ok(&cols(&a, &b)));
        // short queries, long passages: 2×(2·100) = 400 vs 2·10 + 2·100 = 220: separate.
        let (a, b) = (ids(&[10, 8]), ids(&[100, 90]));
        assert!(!joint_padding_ok(&cols(&a, &b)));
        // The CPU keeps separate passes; one column: nothing to join.
        let (a, b) = (ids(&[20, 5]), ids(&[20, 5]));
        assert!(!join_columns(&Device::Cpu, &cols(&a, &b)));
        assert!(!join_columns(&Device::Cpu, &cols(&a, &b)[..1]));
    }
}
