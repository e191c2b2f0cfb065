//! Each dataset of a run made ready for the loop once the model is loaded: teacher labels, the
//! loss's own parameters, the dataset check against the model, every text tokenized once (with
//! its column's prompt, and for the guide model of a guided loss), and the step kind its loss
//! takes. Depends on model, loss, pairs::check, and the train modules named below.

use super::prepare::{Part, Prepared};
use super::step::{StepCtx, StepData, TrainStep};
use super::TrainConfig;
use crate::model::SentenceEncoder;
use crate::tokenize::Tokenized;
use anyhow::{Context, Result};
use candle_core::{Device, Var};

/// A dataset's tokens (row-major, `cols` per row) and prompt token counts per column, and the
/// same for the guide model when its loss is guided.
pub(super) struct Ready {
    pub(super) toks: Vec<Tokenized>,
    pub(super) prompt_lens: Vec<usize>,
    pub(super) guide_toks: Option<(Vec<Tokenized>, Vec<usize>)>,
    pub(super) step: Box<dyn TrainStep>,
}

/// The guide model of the guided losses (GIST): loaded once, frozen, eval mode.
pub(super) fn load_guide(
    cfg: &TrainConfig,
    p: &Prepared,
    device: &Device,
) -> Result<Option<SentenceEncoder>> {
    match &cfg.guide {
        Some(spec) if p.parts.iter().any(|x| x.spec.loss.guided()) => {
            let g = SentenceEncoder::load(spec, device)
                .with_context(|| format!("--guide-model {}", spec.model))?;
            crate::logging::model_loaded(spec, &g);
            Ok(Some(g))
        }
        _ => Ok(None),
    }
}

/// Teacher labels and loss parameters, the dataset check, the tokens; the training prompts
/// become the model's own (saved with it).
pub(super) fn make_ready(
    cfg: &TrainConfig,
    part: &mut Part,
    eval_table: Option<&crate::data::Table>,
    model: &mut SentenceEncoder,
    guide: Option<&SentenceEncoder>,
    device: &Device,
    comm: &std::sync::Arc<dyn crate::dist::Collective>,
) -> Result<Ready> {
    if cfg.gather_across_devices && comm.world() > 1 {
        // Every rank's candidates count (`loss::mnrl::GatheredMnrl`, `loss::gist`).
        let lp = &part.spec.loss_params;
        part.loss = if part.spec.loss.guided() {
            Box::new(crate::loss::gist::Gist {
                temperature: lp.temperature.unwrap_or(0.01),
                margin: lp.margin.unwrap_or(0.0),
                comm: Some(comm.clone()),
            })
        } else {
            Box::new(crate::loss::mnrl::GatheredMnrl {
                inner: crate::loss::mnrl::Mnrl {
                    scale: lp.scale.unwrap_or(20.0),
                    symmetric: lp.symmetric,
                },
                comm: comm.clone(),
            })
        };
    }
    if let (Some(t), true) = (&cfg.teacher, part.spec.loss.distills()) {
        let student = (model.dim(), cfg.teacher_projection);
        super::teacher::apply(t, part.spec.loss, &mut part.set, student, device)?;
    }
    part.loss.init(&crate::loss::head::HeadInit {
        dim: model.dim(),
        num_classes: part.set.num_classes(),
        teacher_dim: super::teacher::teacher_dim(&part.set),
        teacher_projection: cfg.teacher_projection,
        device,
        seed: cfg.seed,
    })?;
    part.prompts.apply_to(&mut model.prompts);
    let resolved = crate::data::ColumnSpec {
        text_columns: Some(part.set.columns.clone()),
        label_column: part.set.label_column.clone(),
    };
    let report = crate::pairs::check::check(&part.table, &resolved, eval_table, Some(model))?;
    tracing::info!("{}", report.to_text().trim_end());

    let cols = part.set.n_texts();
    let flat: Vec<String> = part
        .set
        .texts
        .iter()
        .flat_map(|r| {
            r.iter()
                .enumerate()
                .map(|(c, s)| part.prompts.prefixed(c, s))
        })
        .collect();
    let refs: Vec<&str> = flat.iter().map(String::as_str).collect();
    let toks = model.tokenizer.tokenize(&refs)?;
    let prompt_lens = part.prompts.token_counts(&model.tokenizer, cols)?;
    let guide_toks = match guide {
        Some(g) if part.spec.loss.guided() => Some((
            g.tokenizer.tokenize(&refs)?,
            part.prompts.token_counts(&g.tokenizer, cols)?,
        )),
        _ => None,
    };
    let step = super::step::for_config(cfg.grad_accum, cfg.cache_mini_batch_for(part.spec.loss));
    Ok(Ready {
        toks,
        prompt_lens,
        guide_toks,
        step,
    })
}

/// The loss's own parameters under names unique in the run: `loss.<dataset>.…` when there are
/// several datasets.
pub(super) fn loss_params(parts: &[Part]) -> Vec<(String, Var)> {
    let several = parts.len() > 1;
    parts
        .iter()
        .flat_map(|p| {
            p.loss.params().into_iter().map(move |(n, v)| {
                let n = if several {
                    n.replacen("loss.", &format!("loss.{}.", p.spec.name), 1)
                } else {
                    n
                };
                (n, v)
            })
        })
        .collect()
}

/// The step context of one dataset.
pub(super) fn ctx<'a>(
    model: &'a SentenceEncoder,
    part: &'a Part,
    ready: &'a Ready,
    guide: Option<&'a SentenceEncoder>,
    vars: &'a [Var],
    device: &'a Device,
) -> StepCtx<'a> {
    StepCtx {
        model,
        loss: part.loss.as_ref(),
        data: StepData {
            tokens: &ready.toks,
            cols: part.set.n_texts(),
            simcse: part.simcse,
            labels: part.set.labels.as_deref(),
            label_shape: &part.set.label_shape,
            prompt_lens: &ready.prompt_lens,
        },
        guide: match (guide, &ready.guide_toks) {
            (Some(g), Some((tokens, lens))) => Some(super::step::Guide {
                model: g,
                tokens,
                prompt_lens: lens,
            }),
            _ => None,
        },
        vars,
        device,
        weight: part.spec.weight,
    }
}

/// What the run trains, said once before step 1.
#[allow(clippy::too_many_arguments)]
pub(super) fn describe(
    cfg: &TrainConfig,
    parts: &[Part],
    ready: &[Ready],
    total: usize,
    warmup: usize,
    device: &Device,
    model: &SentenceEncoder,
    world: usize,
) {
    for (part, r) in parts.iter().zip(ready) {
        let cols = part.set.n_texts();
        tracing::info!(
            "training {} on {} rows of {} ({} text column{}{}){}",
            part.loss.name(),
            part.set.len(),
            part.spec.name,
            cols,
            if cols == 1 { "" } else { "s" },
            if part.simcse {
                ", SimCSE: each text is its own positive"
            } else {
                ""
            },
            match r.step.name() {
                "cached" => format!(
                    ", embedded {} at a time (GradCache)",
                    cfg.cache_mini_batch_for(part.spec.loss).unwrap_or(0)
                ),
                _ => String::new(),
            }
        );
    }
    tracing::info!(
        "{total} steps, batch {}, warmup {warmup}{}, on {} ({}, {} ops)",
        cfg.batch_size,
        if parts.len() > 1 {
            format!(", datasets drawn {:?}", cfg.sampler)
        } else {
            String::new()
        },
        crate::device::describe(device),
        cfg.model.compute.dtype,
        model.exec(),
    );
    if world > 1 {
        tracing::info!(
            "{world} data-parallel ranks ({}), batch {} each",
            if cfg.worker.is_some() {
                "one process per device"
            } else {
                "threads: a test double"
            },
            cfg.batch_size
        );
    }
}
