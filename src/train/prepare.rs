//! Everything before step 1: the data read and checked against the loss, the evaluator, the
//! output directory probed, the checkpoint to resume from, and the plan of batches. Fails fast.

use super::checkpoint::{self, TrainerState};
use super::data::TrainSet;
use super::datasets::{epoch_plan, DatasetSpec, Plan};
use super::observe::EvalSet;
use super::prompts::TrainPrompts;
use super::TrainConfig;
use crate::data::{read_table, ReadOptions};
use crate::eval::{self, EvalTask};
use crate::loss::{self, Loss, LossKind};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// One dataset of the run, read and checked against its loss.
pub(super) struct Part {
    pub(super) spec: DatasetSpec,
    pub(super) table: crate::data::Table,
    pub(super) set: TrainSet,
    pub(super) simcse: bool,
    pub(super) loss: Box<dyn Loss>,
    pub(super) prompts: TrainPrompts,
}

/// Everything prepared before step 1; fails fast on bad data or outputs.
pub(super) struct Prepared {
    /// The datasets, in `--dataset` order (one for a plain run).
    pub(super) parts: Vec<Part>,
    pub(super) eval_table: Option<crate::data::Table>,
    pub(super) evaluators: Vec<EvalSet>,
    pub(super) resume: Option<(PathBuf, TrainerState)>,
}

/// `primary`: this rank writes the outputs (a single device, or rank 0), so it checks them.
pub(super) fn prepare(cfg: &TrainConfig, primary: bool) -> Result<Prepared> {
    cfg.validate()?;
    let parts = cfg
        .parts()
        .into_iter()
        .map(|spec| prepare_part(cfg, spec))
        .collect::<Result<Vec<_>>>()?;
    if primary {
        check_output_dir(cfg)?;
        crate::fsutil::check_writable_dir(&cfg.output)?;
    }
    let mut evaluators = Vec::with_capacity(cfg.eval.len());
    let mut eval_table = None;
    for e in &cfg.eval {
        let evaluator: Box<dyn eval::Evaluator> = match e.task {
            EvalTask::Retrieval => {
                let src = eval::retrieval::RetrievalSource::Beir {
                    dir: e.data.clone(),
                    split: e.split.clone().unwrap_or_else(|| "test".into()),
                };
                // No corpus cache: the weights change between evaluations.
                Box::new(eval::retrieval::RetrievalEvaluator::new(&src)?)
            }
            _ => {
                let t = read_table(&e.data, e.format, &ReadOptions::default())?;
                let ev =
                    eval::build_with_defaults(e.task, &t, e.columns.as_deref(), e.score_scale)?;
                eval_table.get_or_insert(t);
                ev
            }
        };
        evaluators.push(EvalSet {
            name: e.data.display().to_string(),
            evaluator,
        });
    }
    let resume = match &cfg.resume {
        Some(dir) => {
            let ckpt = checkpoint::resolve(dir)?;
            let state = checkpoint::read_state(&ckpt)?;
            let changed = recipe_changes(&state.recipe, &cfg.recipe());
            if !changed.is_empty() {
                bail!(
                    "--resume {}: the checkpoint was made with other settings: {}; resume with the same flags",
                    ckpt.display(),
                    changed.join(", ")
                );
            }
            Some((ckpt, state))
        }
        None => None,
    };
    Ok(Prepared {
        parts,
        eval_table,
        evaluators,
        resume,
    })
}

/// Reads one dataset and checks it against its loss (column count, labels, batch size).
fn prepare_part(cfg: &TrainConfig, spec: DatasetSpec) -> Result<Part> {
    let loss = cfg.loss_spec_for(spec.loss).build(&spec.loss_params);
    let table = read_table(&spec.data, spec.format, &cfg.read)?;
    let label_kind = loss.input_shape().label;
    // Teacher labels come from --teacher, not from the data.
    let teacher_labels = label_kind == loss::LabelKind::Teacher && cfg.teacher.is_some();
    let takes_label = label_kind != loss::LabelKind::None && !teacher_labels;
    let mut set = TrainSet::from_table_with(
        &table,
        &spec.columns,
        takes_label,
        label_kind == loss::LabelKind::Class,
    )?;
    if spec.columns.label_column.is_none() && !takes_label && set.labels.is_some() {
        // sentence-transformers hands a "label"/"score" column to every loss and the losses
        // without labels ignore it; do the same for a column found by default, and say so.
        tracing::info!(
            "note: {} {}; ignoring column {:?}",
            loss.name(),
            if teacher_labels {
                "takes its labels from --teacher"
            } else {
                "takes no label"
            },
            set.label_column.as_deref().unwrap_or("")
        );
        set.labels = None;
        set.label_column = None;
    }
    let simcse = set.n_texts() == 1 && matches!(spec.loss, LossKind::Mnrl | LossKind::CachedMnrl);
    let n_texts = if simcse { 2 } else { set.n_texts() };
    let shape = loss.input_shape();
    shape
        .check(loss.name(), n_texts, set.labels.is_some() || teacher_labels)
        .with_context(|| {
            format!(
                "{}: columns {:?}{}",
                spec.data.display(),
                set.columns,
                set.label_column
                    .as_ref()
                    .map(|l| format!(" + label {l:?}"))
                    .unwrap_or_default()
            )
        })?;
    set.check_labels(shape.label)?;
    if let Some(c) = &set.classes {
        tracing::info!(
            "classes of {:?}: {}",
            set.label_column.as_deref().unwrap_or("label"),
            c.iter()
                .enumerate()
                .map(|(i, n)| format!("{n}={i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if spec.loss == LossKind::Cosine {
        // The target of CosineSimilarityLoss is a cosine: a score outside [-1, 1] is almost
        // always an unscaled one (STS-B's 0–5), which would train towards impossible values.
        if let Some(labels) = &set.labels {
            if let Some(i) = labels.iter().position(|y| !(-1.0..=1.0).contains(y)) {
                bail!(
                    "{}:{}: field {:?}: cosine loss needs scores in [-1, 1], got {}; scale them (divide 0–5 STS scores by 5, or use --format stsb)",
                    set.path.display(),
                    set.lines.get(i).copied().unwrap_or(0),
                    set.label_column.as_deref().unwrap_or("label"),
                    labels[i]
                );
            }
        }
    }
    if cfg.batch_size > set.len() {
        bail!(
            "--batch-size {} is larger than the training data ({} rows in {})",
            cfg.batch_size,
            set.len(),
            spec.data.display()
        );
    }
    let prompts = TrainPrompts::resolve(&spec.prompts, &set.columns)?;
    Ok(Part {
        spec,
        table,
        set,
        simcse,
        loss,
        prompts,
    })
}

/// The output-directory rule (as HF's `overwrite_output_dir`): a directory that already holds
/// files is refused unless the run resumes from it (`--resume`) or starts over (`--overwrite`,
/// which first removes a previous run's checkpoints and best model).
fn check_output_dir(cfg: &TrainConfig) -> Result<()> {
    let dir = &cfg.output;
    if cfg.resume.is_some() {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".write-test-"))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let checkpoints = dir.join(checkpoint::CHECKPOINTS_DIR);
    if cfg.overwrite {
        for d in [checkpoints, dir.join("best")] {
            if d.is_dir() {
                std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
        return Ok(());
    }
    let mut shown: Vec<&str> = names.iter().map(|s| s.as_str()).take(4).collect();
    if names.len() > 4 {
        shown.push("…");
    }
    if checkpoints.is_dir() {
        bail!(
            "output directory {} holds a previous run's checkpoints: continue it with --resume {}, or start over with --overwrite",
            dir.display(),
            dir.display()
        );
    }
    bail!(
        "output directory {} is not empty ({}): choose another --output, or pass --overwrite to write into it",
        dir.display(),
        shown.join(", ")
    );
}

/// The settings that differ between a checkpoint's recipe and this run's, as the flags that set
/// them (`--lr 2e-5 → 3e-5`).
fn recipe_changes(saved: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    fn flat(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v.as_object() {
            Some(o) => o.iter().for_each(|(k, x)| flat(k, x, out)),
            None => out.push((prefix.to_string(), v.to_string())),
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flat("", saved, &mut a);
    flat("", now, &mut b);
    let get = |v: &[(String, String)], k: &str| {
        v.iter()
            .find(|(n, _)| n == k)
            .map(|(_, x)| x.clone())
            .unwrap_or_else(|| "null".into())
    };
    let mut keys: Vec<String> = a.iter().chain(&b).map(|(k, _)| k.clone()).collect();
    keys.dedup();
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        let (x, y) = (get(&a, &k), get(&b, &k));
        let line = format!("--{} {x} → {y}", k.replace('_', "-"));
        if x != y && !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

/// The optimizer steps of the whole run, epoch after epoch: each step's dataset and its
/// micro-batches of rows.
pub(super) fn plan(cfg: &TrainConfig, parts: &[Part]) -> Plan {
    let (texts, no_dup) = sampler_inputs(cfg, parts);
    let mut steps = Vec::new();
    let mut epoch = 0;
    loop {
        steps.extend(epoch_steps(cfg, &texts, &no_dup, epoch));
        epoch += 1;
        let enough = match cfg.max_steps {
            Some(m) => steps.len() >= m,
            None => epoch >= cfg.epochs,
        };
        if enough || steps.is_empty() {
            return steps;
        }
    }
}

/// One epoch's steps. Gathering across several ranks keeps only the steps that give every rank
/// `--grad-accum` full batches (an epoch's last, shorter step is left out, as a drop-last
/// sampler does): the gather needs the same batch on every rank, and every rank must call it.
fn epoch_steps(cfg: &TrainConfig, texts: &[&[Vec<String>]], no_dup: &[bool], epoch: usize) -> Plan {
    let mut steps = epoch_plan(
        texts,
        no_dup,
        cfg.batch_size,
        cfg.grad_accum,
        cfg.seed,
        epoch,
        cfg.shuffle,
        cfg.sampler,
    );
    if cfg.gather_across_devices && cfg.ranks > 1 {
        // `cfg` is the plan's: its grad_accum counts every rank's micro-batches.
        steps.retain(|(_, micro)| {
            micro.len() == cfg.grad_accum && micro.iter().all(|b| b.len() == cfg.batch_size)
        });
    }
    steps
}

pub(super) fn steps_per_epoch(cfg: &TrainConfig, parts: &[Part]) -> usize {
    let (texts, no_dup) = sampler_inputs(cfg, parts);
    epoch_steps(cfg, &texts, &no_dup, 0).len().max(1)
}

/// Each dataset's rows, and whether its batches avoid duplicate texts (in-batch negatives).
fn sampler_inputs<'a>(cfg: &TrainConfig, parts: &'a [Part]) -> (Vec<&'a [Vec<String>]>, Vec<bool>) {
    let texts = parts.iter().map(|p| p.set.texts.as_slice()).collect();
    let no_dup = parts
        .iter()
        .map(|p| {
            cfg.no_duplicates
                .unwrap_or(p.spec.loss.in_batch_negatives())
        })
        .collect();
    (texts, no_dup)
}
