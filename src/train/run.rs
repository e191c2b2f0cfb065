//! The training loop: data → loss check (before step 1) → model → AdamW + schedule →
//! { batch → one padded batch per text column → forward (dropout on) → loss → backward →
//! clip → step → log → maybe evaluate → maybe checkpoint } → final save.

use super::batcher::epoch_batches;
use super::checkpoint::{self, TrainerState};
use super::prepare::{plan, prepare, Prepared};

use super::optimizer::{AdamW, AdamWConfig};
use super::schedule::{lr_at, warmup_steps};
use super::{signals, TrainConfig};

use crate::encode::EncodeOptions;
use crate::eval::Metrics;
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

/// What a finished (or interrupted) run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: usize,
    pub total_steps: usize,
    /// Mean loss of the first and last logging windows.
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub final_eval: Option<Metrics>,
    pub best: Option<(f64, usize)>,
    /// Some(signal) when stopped by SIGINT/SIGTERM after saving a checkpoint.
    pub interrupted: Option<i32>,
    pub output: PathBuf,
}

/// Runs (or resumes) a training run.
pub fn run(cfg: &TrainConfig) -> Result<TrainReport> {
    train(cfg).map(|(r, _)| r)
}

/// [`run`], also returning the trained model as it is in memory at the end.
pub fn train(cfg: &TrainConfig) -> Result<(TrainReport, SentenceEncoder)> {
    let p = prepare(cfg)?;
    let device = Device::Cpu;
    let spec = match &p.resume {
        Some((ckpt, _)) => ModelSpec {
            model: ckpt
                .join(checkpoint::MODEL_DIR)
                .to_string_lossy()
                .into_owned(),
            ..Default::default()
        },
        None => cfg.model.clone(),
    };
    let mut model = SentenceEncoder::load(&spec, &device)?;
    for n in &model.notices {
        eprintln!("note: {n}");
    }
    if let Some(d) = cfg.dropout {
        model.bert.set_dropout(d);
    }
    model.bert.seed_dropout(cfg.seed);
    let label_col = p.set.label_column.clone();
    let report = crate::pairs::check::check(
        &p.table,
        Some(&p.set.columns),
        label_col.as_deref(),
        p.eval_table.as_ref(),
        Some(&model),
    )?;
    eprint!("{}", report.to_text());

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
    if let Some((ckpt, state)) = &p.resume {
        opt.load(&ckpt.join(checkpoint::OPTIMIZER_FILE), state.step as u64)?;
        model.bert.restore_dropout_state(state.dropout_rng);
        start = state.step;
        best = state.best;
        eprintln!(
            "resuming from {} at step {start} of {total}",
            ckpt.display()
        );
    }
    let metrics_path = cfg.output.join("metrics.jsonl");
    truncate_metrics(&metrics_path, start)?;
    crate::fsutil::write_atomic(
        &cfg.output.join("train_config.json"),
        &serde_json::to_vec_pretty(cfg)?,
    )?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    eprintln!(
        "training {} on {} rows ({} text column{}{}), {total} steps, batch {}, warmup {warmup}",
        p.loss.name(),
        p.set.len(),
        cols,
        if cols == 1 { "" } else { "s" },
        if p.simcse {
            ", SimCSE: each text is its own positive"
        } else {
            ""
        },
        cfg.batch_size
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
    let save_ckpt = |step: usize,
                     best: Option<(f64, usize)>,
                     model: &SentenceEncoder,
                     opt: &AdamW|
     -> Result<PathBuf> {
        let state = TrainerState {
            step,
            total_steps: total,
            dropout_rng: model.bert.dropout_state(),
            best,
            recipe: cfg.recipe(),
            embtune_version: env!("CARGO_PKG_VERSION").into(),
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

    for step in start..total {
        if let Some(sig) = signals::pending() {
            let path = save_ckpt(step, best, &model, &opt)?;
            eprintln!("interrupted: checkpoint saved to {}", path.display());
            interrupted = Some(sig);
            break;
        }
        let micro: Vec<&[usize]> = (0..accum)
            .filter_map(|m| batches.get(step * accum + m).map(|b| b.as_slice()))
            .collect();
        let (mut acc, step_loss, examples) =
            accumulate(&model, &p, &micro, &tok, &vars, &device)
                .with_context(|| format!("training step {}", step + 1))?;
        let norm = clip(&mut acc, cfg.max_grad_norm)?;
        let lr = lr_at(cfg.schedule, cfg.lr, step, warmup, total);
        opt.step(&acc, lr)?;
        drop(acc);
        let done = step + 1;
        win_loss += step_loss;
        win_n += 1;
        win_examples += examples;
        bar.inc(1);
        bar.set_message(format!("loss {:.4} lr {lr:.2e}", step_loss));
        if done % cfg.log_steps == 0 || done == total {
            let secs = win_start.elapsed().as_secs_f64();
            let mean = win_loss / win_n as f64;
            first_loss.get_or_insert(mean);
            last_loss = Some(mean);
            let line = json!({"step": done, "epoch": done as f64 / steps_per_epoch as f64, "loss": mean, "lr": lr, "grad_norm": norm,
                "examples_per_sec": win_examples as f64 / secs.max(1e-9)});
            writeln!(metrics, "{line}")
                .with_context(|| format!("writing {}", metrics_path.display()))?;
            if cfg.log_lines {
                eprintln!(
                    "step {done}/{total}  loss {mean:.6}  lr {lr:.3e}  grad-norm {norm:.3}  {:.1} examples/s",
                    win_examples as f64 / secs.max(1e-9)
                );
            }
            (win_loss, win_n, win_examples, win_start) = (0.0, 0, 0, Instant::now());
        }
        let eval_now = match cfg.eval_steps {
            Some(n) => done % n == 0 || done == total,
            None => done % steps_per_epoch == 0 || done == total,
        };
        if let (true, Some(ev)) = (eval_now, &p.evaluator) {
            let m = ev.evaluate(&model, &enc_opts)?;
            let v = m.primary_value();
            writeln!(
                metrics,
                "{}",
                json!({"step": done, "epoch": done as f64 / steps_per_epoch as f64, "eval": m.to_json()})
            )?;
            eprintln!("step {done}: {} = {v:.4}", m.primary);
            let improved =
                best.is_none_or(|(b, _)| if m.greater_is_better { v > b } else { v < b });
            if improved {
                best = Some((v, done));
                if cfg.save_best {
                    model.save(&cfg.output.join("best"))?;
                }
            }
            final_eval = Some(m);
        }
        if cfg.save_steps.is_some_and(|n| done % n == 0) && done < total {
            save_ckpt(done, best, &model, &opt)?;
        }
    }
    bar.finish();
    metrics.flush()?;
    if interrupted.is_none() {
        model.save_into(&cfg.output)?;
        if cfg.save_best && cfg.output.join("best").is_dir() {
            eprintln!(
                "best {} at step {}: kept in {}",
                best.map(|b| b.0).unwrap_or(f64::NAN),
                best.map(|b| b.1).unwrap_or(0),
                cfg.output.join("best").display()
            );
        }
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
    };
    Ok((report, model))
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
) -> Result<(Vec<Option<Tensor>>, f64, usize)> {
    let mut acc: Vec<Option<Tensor>> = vec![None; vars.len()];
    let (mut step_loss, mut examples) = (0.0, 0);
    let n = micro.len().max(1) as f64;
    let columns = if p.simcse { 2 } else { p.set.n_texts() };
    for rows in micro {
        examples += rows.len();
        let mut embs = Vec::with_capacity(columns);
        for c in 0..columns {
            // SimCSE: the same texts twice, two dropout masks.
            let col = if p.simcse { 0 } else { c };
            let ids: Vec<&[u32]> = rows.iter().map(|&r| tok(r, col).ids.as_slice()).collect();
            embs.push(model.embed_batch(&model.tokenizer.pad(&ids, device)?, true)?);
        }
        let labels = match &p.set.labels {
            Some(l) => Some(Tensor::from_vec(
                rows.iter().map(|&r| l[r]).collect::<Vec<f32>>(),
                rows.len(),
                device,
            )?),
            None => None,
        };
        let l = p.loss.compute(&embs, labels.as_ref())?;
        let lv = l.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            bail!("loss is {lv}; lower --lr or check the data");
        }
        step_loss += lv / n;
        let l = if micro.len() > 1 { (l / n)? } else { l };
        let grads = l.backward()?;
        for (a, v) in acc.iter_mut().zip(vars) {
            if let Some(g) = grads.get(v.as_tensor()) {
                *a = Some(match a.take() {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                });
            }
        }
    }
    Ok((acc, step_loss, examples))
}

/// Global-norm clipping as torch's clip_grad_norm_ (0 disables); returns the norm before clipping.
fn clip(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let coef = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut s = 0.0f64;
    for g in grads.iter().flatten() {
        s += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(s.sqrt())
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
