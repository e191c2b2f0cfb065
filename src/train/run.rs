//! The training loop: data → loss check (before step 1) → model → AdamW + schedule →
//! { the step's gradients ([`super::step::TrainStep`]: plain, accumulated or cached) → clip →
//! AdamW step → observers (log, evaluate, checkpoint; `observe.rs`) } → final save, model card,
//! report. An interrupt (Ctrl-C, SIGTERM) saves a checkpoint at the next step boundary. With
//! several data-parallel ranks (`ddp.rs`) every rank runs this loop on its micro-batches, the
//! gradients are summed after each step's backward, and rank 0 alone writes.

use super::checkpoint;
use super::clip::clip_and_step;
use super::observe::{Checkpoints, Evaluations, Event, Logger, MetricsFile, Observer, RunState};
use super::optimizer::{AdamW, AdamWConfig};
use super::outcome::{Throughput, TrainReport, WARM_STEPS};
use super::phases::{Phase, PhaseTimer};
use super::prepare::{plan, prepare};
use super::schedule::{lr_at, warmup_steps};
use super::TrainConfig;
use crate::dist::Collective;
use crate::model::{ModelSpec, SentenceEncoder};
use crate::signals;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub use super::observe::BEST_FILE;

/// Runs (or resumes) a training run.
pub fn run(cfg: &TrainConfig) -> Result<TrainReport> {
    train(cfg).map(|(r, _)| r)
}

/// [`run`], also returning the trained model as it is in memory at the end (rank 0's, when
/// several ranks train: `ddp.rs`).
pub fn train(cfg: &TrainConfig) -> Result<(TrainReport, SentenceEncoder)> {
    super::ddp::run_ranks(cfg, train_rank)
}

/// One rank's training (all of it on `device`, the one its communicator runs on).
fn train_rank(
    cfg: &TrainConfig,
    comm: Arc<dyn Collective>,
    device: candle_core::Device,
) -> Result<(TrainReport, SentenceEncoder)> {
    let wall = Instant::now();
    let (rank, world) = (comm.rank(), comm.world());
    let primary = rank == 0;
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!("training config: {}", serde_json::to_string(cfg)?);
    }
    let p = prepare(cfg, primary);
    super::ddp::agree(comm.as_ref(), p.is_ok())?;
    let mut p = p?;
    crate::device::check_precision(&cfg.model.compute, &device)?;
    // A LoRA checkpoint holds the adapters only: the base model is loaded again.
    let spec = match &p.resume {
        Some((ckpt, _)) if cfg.lora.is_none() => ModelSpec {
            model: ckpt
                .join(checkpoint::MODEL_DIR)
                .to_string_lossy()
                .into_owned(),
            compute: cfg.model.compute,
            ..Default::default()
        },
        _ => cfg.model.clone(),
    };
    let mut model = SentenceEncoder::load(&spec, &device)?;
    crate::logging::model_loaded(&spec, &model);
    if let Some(d) = cfg.dropout {
        model.set_dropout(d);
    }
    model.seed_dropout(cfg.seed);
    if let Some(m) = &cfg.matryoshka {
        if let Some(d) = m.dims.iter().find(|&&d| d > model.dim()) {
            bail!(
                "--matryoshka-dims: {d} is larger than the model's embedding dimension {}",
                model.dim()
            );
        }
        if !m.dims.contains(&model.dim()) {
            // As sentence-transformers warns: the full size would not be trained.
            tracing::warn!(
                "warning: --matryoshka-dims leaves out the model's full dimension {}: embeddings used at full size would not be trained; add it",
                model.dim()
            );
        }
    }
    // Each dataset made ready: teacher labels, the loss's parameters, the check, the tokens.
    let guide = super::parts::load_guide(cfg, &p, &device)?;
    let mut ready = Vec::with_capacity(p.parts.len());
    for part in p.parts.iter_mut() {
        ready.push(super::parts::make_ready(
            cfg,
            part,
            p.eval_table.as_ref(),
            &mut model,
            guide.as_ref(),
            &device,
            &comm,
        )?);
    }

    // Every rank plans the same steps; each takes its micro-batches of them (`ddp.rs`).
    let plan_cfg = TrainConfig {
        grad_accum: cfg.grad_accum * world,
        ..cfg.clone()
    };
    let steps = plan(&plan_cfg, &p.parts);
    if steps.is_empty() {
        // Only a gathering run leaves steps out (`prepare::epoch_steps`).
        bail!(
            "--gather-across-devices on {world} ranks: no step gives every rank {} full batch(es) of {} (an epoch needs at least {} examples); lower --batch-size",
            cfg.grad_accum,
            cfg.batch_size,
            world * cfg.grad_accum * cfg.batch_size
        );
    }
    let total = cfg.max_steps.unwrap_or(steps.len());
    let steps_per_epoch = super::prepare::steps_per_epoch(&plan_cfg, &p.parts);
    let warmup = warmup_steps(total, cfg.warmup_ratio, cfg.warmup_steps);
    // What trains: LoRA adapters, or the model's parameters less the frozen ones; and the
    // loss's own parameters (kept in checkpoints, not in the model).
    let mut trainable = super::freeze::trainable(cfg, &mut model)?;
    trainable.extend(super::parts::loss_params(&p.parts));
    let vars: Vec<_> = trainable.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = AdamW::new(
        trainable,
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;

    let (mut start, mut best, mut wall_before) = (0, None, 0.0);
    if let Some((ckpt, state)) = &p.resume {
        opt.load(&ckpt.join(checkpoint::OPTIMIZER_FILE), state.step as u64)?;
        opt.load_values(&ckpt.join(checkpoint::LOSS_PARAMS_FILE), "loss.")?;
        opt.load_values(&ckpt.join(checkpoint::LORA_FILE), "lora.")?;
        model.restore_dropout_state(state.dropout_rng);
        (start, best, wall_before) = (state.step, state.best, state.wall_seconds);
        tracing::info!(
            "resuming from {} at step {start} of {total}",
            ckpt.display()
        );
    }
    if primary {
        for line in checkpoint::clean_stale(&cfg.output)? {
            tracing::info!("note: checkpoints: {line}");
        }
    }
    let metrics_path = cfg.output.join("metrics.jsonl");
    if primary {
        truncate_metrics(&metrics_path, start)?;
    }
    // The resolved config, and the model family, execution path and step the run takes.
    let mut saved = serde_json::to_value(cfg)?;
    if let Some(o) = saved.as_object_mut() {
        o.insert("family".into(), json!(model.family()));
        o.insert("exec".into(), json!(model.exec()));
        o.insert("packing".into(), json!(model.packs()));
        o.insert("step".into(), json!(ready[0].step.name()));
    }
    if primary {
        crate::fsutil::write_atomic(
            &cfg.output.join("train_config.json"),
            &serde_json::to_vec_pretty(&saved)?,
        )?;
    }
    super::parts::describe(cfg, &p.parts, &ready, total, warmup, &device, &model, world);

    let mut st = RunState {
        best,
        last_evals: Vec::new(),
        metrics: if primary {
            MetricsFile::open(&metrics_path)?
        } else {
            MetricsFile::discard()?
        },
        steps_per_epoch,
    };
    let names = if p.parts.len() > 1 {
        p.parts.iter().map(|x| x.spec.name.clone()).collect()
    } else {
        Vec::new()
    };
    let mut logger = Logger::new(
        cfg,
        total - start,
        names,
        steps.iter().map(|(d, _)| *d).collect(),
    );
    let mut evals = Evaluations {
        sets: p.evaluators,
        save_best: cfg.save_best,
        output: cfg.output.clone(),
        shard: crate::encode::Shard((world > 1).then(|| comm.clone())),
        primary,
    };
    let mut ckpts = Checkpoints {
        cfg,
        total,
        wall_before,
        wall,
    };
    // Every rank evaluates (its share of the batches); rank 0 writes.
    evals.start(start, &mut st, &model)?;

    signals::install();
    let mut interrupted = None;
    let timed_from = start + WARM_STEPS;
    let mut pending = PendingLosses::default();
    let (mut timer, mut timed_examples, mut timed_steps) = (None::<Instant>, 0usize, 0usize);
    let mut phases = PhaseTimer::new(&device, cfg.phase_timing);
    let debug_steps = tracing::enabled!(tracing::Level::DEBUG);
    let ctxs: Vec<_> = p
        .parts
        .iter()
        .zip(&ready)
        .map(|(part, r)| super::parts::ctx(&model, part, r, guide.as_ref(), &vars, &device))
        .collect();
    // A `--devices` worker goes through its communicator even alone (world size 1 on one GPU
    // runs NCCL's code path).
    let distributed = world > 1 || cfg.worker.is_some();
    for step in start..total {
        // Several ranks stop at the same step: any rank's signal counts for all.
        let signal = match distributed {
            false => signals::pending(),
            true => super::ddp::any_signal(comm.as_ref(), signals::pending())?,
        };
        if let Some(sig) = signal {
            if primary {
                let path = ckpts.save(step, st.best, &model, &opt)?;
                tracing::info!(
                    "interrupted: checkpoint saved to {}; continue with the same command and --resume {}",
                    path.display(),
                    cfg.output.display()
                );
            }
            interrupted = Some(sig);
            break;
        }
        if step == timed_from {
            phases.activate()?;
            device.synchronize()?;
            timer = Some(Instant::now());
        }
        let (d, batches) = &steps[step];
        let micro = super::ddp::rank_slice(batches, rank, cfg.grad_accum);
        if world > 1 {
            // Per (seed, rank, step): a resumed run draws the straight run's masks.
            let s = super::ddp::dropout_seed(cfg.seed, rank, step);
            model.rewind_dropout(crate::rng::Rng::with_stream(s, 1).state(s));
        }
        let out = if micro.is_empty() {
            super::step::StepOutput {
                grads: vec![None; vars.len()],
                losses: Vec::new(),
                examples: 0,
            }
        } else {
            ready[*d]
                .step
                .run(&ctxs[*d], &micro, &mut phases)
                .with_context(|| format!("training step {}", step + 1))?
        };
        let out = match distributed {
            false => out,
            true => super::ddp::reduce(comm.as_ref(), out, &vars, micro.len(), batches.len())?,
        };
        let lr = lr_at(cfg.schedule, cfg.lr, step, warmup, total);
        phases.begin();
        let norm = clip_and_step(&mut opt, &out.grads, lr, cfg.max_grad_norm)?;
        drop(out.grads);
        phases.end(Phase::Optimizer)?;
        phases.step_done();
        if timer.is_some() {
            timed_examples += out.examples;
            timed_steps += 1;
        }
        let done = step + 1;
        pending.steps.push((done, out.losses));
        let log_now = done % cfg.log_steps == 0 || done == total;
        let eval_now = match cfg.eval_steps {
            Some(n) => done % n == 0 || done == total,
            None => done % steps_per_epoch == 0 || done == total,
        };
        let save_now = cfg.save_steps.is_some_and(|n| done % n == 0) && done < total;
        let losses = if !device.is_cuda()
            || log_now
            || eval_now
            || save_now
            || cfg.progress
            || debug_steps
        {
            pending.flush()?
        } else {
            Vec::new()
        };
        let ev = Event {
            done,
            total,
            lr,
            norm: &norm,
            examples: out.examples,
            losses: &losses,
            log_now,
            eval_now,
            save_now,
        };
        if primary {
            logger.step(&ev, &mut st, &model, &opt)?;
        }
        evals.step(&ev, &mut st, &model, &opt)?;
        if primary {
            ckpts.step(&ev, &mut st, &model, &opt)?;
        }
    }
    // The in-place gradient buffers are the size of the parameters; the steps are done with them.
    crate::ops::cpu::grad_sink::release();
    drop(ctxs);
    device.synchronize()?;
    let throughput = timer.map(|t| Throughput {
        steps: timed_steps,
        examples: timed_examples,
        seconds: t.elapsed().as_secs_f64(),
    });
    logger.finish(&mut st)?;
    st.metrics.flush()?;
    if primary && interrupted.is_none() {
        // With LoRA: merged into the weights; the adapter itself on request.
        model.save_into(&cfg.output)?;
        if cfg.save_adapter {
            let dir = cfg.output.join(super::freeze::ADAPTER_DIR);
            crate::fsutil::write_dir_atomic(&dir, |tmp| {
                model.save_peft_adapter(tmp, &cfg.model.model)
            })?;
            tracing::info!("LoRA adapter (PEFT format) saved to {}", dir.display());
        }
        if cfg.save_best && cfg.output.join("best").is_dir() {
            tracing::info!(
                "best {:.4} at step {}: kept in {}",
                st.best.map(|b| b.0).unwrap_or(f64::NAN),
                st.best.map(|b| b.1).unwrap_or(0),
                cfg.output.join("best").display()
            );
        }
    }
    let (mut first_loss, mut last_loss) = (logger.first_loss, logger.last_loss);
    if let Some((a, b)) = logged_loss_span(&metrics_path) {
        (first_loss, last_loss) = (Some(a), Some(b));
    }
    let final_eval = st.last_evals.first().map(|(_, m)| m.clone());
    // Matryoshka: the first set's primary metric at each trained size, for the card.
    let matryoshka_evals = match (primary, interrupted) {
        (true, None) => evals.matryoshka(cfg, &model)?,
        _ => Vec::new(),
    };
    let report = TrainReport {
        steps: total,
        total_steps: total,
        first_loss,
        last_loss,
        final_eval,
        final_evals: std::mem::take(&mut st.last_evals),
        matryoshka_evals,
        best: st.best,
        interrupted,
        output: cfg.output.clone(),
        throughput,
        phases: phases.report(),
    };
    if primary && report.interrupted.is_none() {
        let card = super::card::CardInput {
            model: &model,
            datasets: super::card::datasets(&p.parts),
            device: crate::device::describe(&device),
            wall_seconds: wall_before + wall.elapsed().as_secs_f64(),
        };
        super::card::write(cfg, &report, &card)?;
        let title = format!("embtune training report: {}", cfg.output.display());
        crate::report::write_train_report(&cfg.output, &title)?;
    }
    Ok((report, model))
}

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
