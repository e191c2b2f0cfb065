//! Flags that have no effect in the resolved configuration, decided in one place: a table of
//! (subcommand, flag, when it does not apply). A flag the user gave (on the command line or in a
//! `--config` recipe) that does not apply is an error naming the flag and what it applies to —
//! never silently ignored. Checked right after parsing, before any work. Depends on clap and the
//! value enums of the flags it reads.

use crate::eval::EvalTask;
use crate::loss::LossKind;
use crate::pairs::Source;
use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;

/// The parsed subcommand and the flags the user really set: given on the command line or in a
/// recipe, with a value other than the flag's default (`--print-config` writes every default into
/// a recipe; reading such a recipe back sets nothing).
pub struct Ctx<'a> {
    m: &'a ArgMatches,
    given: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn new(m: &'a ArgMatches, cmd: &clap::Command) -> Self {
        let given = cmd
            .get_arguments()
            .filter(|a| {
                let id = a.get_id().as_str();
                if !matches!(m.try_contains_id(id), Ok(true))
                    || m.value_source(id) != Some(ValueSource::CommandLine)
                {
                    return false;
                }
                let defaults: Vec<String> = a
                    .get_default_values()
                    .iter()
                    .map(|d| d.to_string_lossy().into_owned())
                    .collect();
                let raw: Vec<String> = m
                    .try_get_raw(id)
                    .ok()
                    .flatten()
                    .map(|r| r.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                defaults.is_empty() || raw != defaults
            })
            .map(|a| a.get_id().as_str().to_string())
            .collect();
        Self { m, given }
    }

    fn given(&self, id: &str) -> bool {
        self.given.iter().any(|g| g == id)
    }
}

fn loss(c: &Ctx) -> Option<LossKind> {
    c.m.try_get_one::<LossKind>("loss").ok().flatten().copied()
}

/// `--loss`, or any `--dataset`'s loss, is one of `kinds`.
fn loss_in(c: &Ctx, kinds: &[LossKind]) -> bool {
    let datasets =
        c.m.try_get_many::<String>("dataset")
            .ok()
            .flatten()
            .into_iter()
            .flatten()
            .filter_map(|d| crate::train::datasets::DatasetSpec::parse(d).ok())
            .map(|d| d.loss);
    loss(c)
        .into_iter()
        .chain(datasets)
        .any(|l| kinds.contains(&l))
}

fn task(c: &Ctx) -> Option<EvalTask> {
    c.m.try_get_one::<EvalTask>("task").ok().flatten().copied()
}

fn source(c: &Ctx) -> Option<Source> {
    c.m.try_get_one::<Source>("from").ok().flatten().copied()
}

/// The negatives flags of `pairs`: --from pairs, or --from qrels with --mine.
fn negatives_flag(m: &Ctx) -> Option<&'static str> {
    match source(m) {
        Some(Source::Pairs) => None,
        Some(Source::Qrels) if m.given("mine") => None,
        Some(Source::Qrels) => Some("--mine with --from qrels (or --from pairs)"),
        _ => Some("--from pairs (or qrels with --mine)"),
    }
}

/// `Some(what it applies to)` when the flag has no effect.
type Unused = fn(&Ctx) -> Option<&'static str>;

const CONTRASTIVE: [LossKind; 3] = [
    LossKind::Contrastive,
    LossKind::OnlineContrastive,
    LossKind::Triplet,
];

const GIST: [LossKind; 2] = [LossKind::Gist, LossKind::CachedGist];

/// How a flag without effect is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    /// Refused: the user asked for something the run will not do.
    Error,
    /// Warned about: another flag given with it wins (an override the user may mean).
    Warn,
}
use Severity::{Error as E, Warn as W};

/// (subcommand, flag id, severity, when it has no effect → what it applies to).
const RULES: &[(&str, &str, Severity, Unused)] = &[
    ("train", "margin", E, |m| {
        (!loss_in(m, &CONTRASTIVE) && !loss_in(m, &GIST))
            .then_some("--loss contrastive, online-contrastive, triplet, gist or cached-gist")
    }),
    ("train", "guide_model", E, |m| {
        (!loss_in(m, &GIST)).then_some("--loss gist or cached-gist")
    }),
    ("train", "temperature", E, |m| {
        (!loss_in(m, &GIST))
            .then_some("--loss gist or cached-gist (mnrl's is --scale = 1/temperature)")
    }),
    ("train", "eval_split", E, |m| {
        (!m.given("eval_data")).then_some("--eval-data (a BEIR folder, for retrieval)")
    }),
    ("train", "distance", E, |m| {
        (!loss_in(m, &CONTRASTIVE)).then_some("--loss contrastive, online-contrastive or triplet")
    }),
    ("train", "scale", E, |m| {
        (!loss_in(
            m,
            &[
                LossKind::Mnrl,
                LossKind::CachedMnrl,
                LossKind::Cosent,
                LossKind::Angle,
            ],
        ))
        .then_some("--loss mnrl, cached-mnrl, cosent or angle")
    }),
    ("train", "gather_across_devices", E, |m| {
        let get = |id: &str| {
            m.m.try_get_one::<usize>(id)
                .ok()
                .flatten()
                .copied()
                .unwrap_or(1)
        };
        // `--devices all` counts as several (the GPUs are counted when the run starts).
        let local = match m.m.try_get_one::<String>("devices").ok().flatten() {
            Some(d) if d.trim() == "all" => 2,
            Some(d) => d.split(',').count(),
            None => 1,
        };
        (get("test_thread_ranks").max(local * get("nnodes")) < 2)
            .then_some("several data-parallel ranks (one device has every candidate already)")
    }),
    ("train", "nnodes", E, |m| {
        (!m.given("devices")).then_some("--devices (the devices of each node)")
    }),
    ("train", "node_rank", E, |m| {
        (!m.given("devices")).then_some("--devices with --nnodes")
    }),
    ("train", "rdzv_endpoint", E, |m| {
        (!m.given("devices")).then_some("--devices")
    }),
    ("train", "symmetric", E, |m| {
        (!loss_in(m, &[LossKind::Mnrl, LossKind::CachedMnrl]))
            .then_some("--loss mnrl or cached-mnrl")
    }),
    ("train", "allow_duplicates", E, |m| {
        (!loss_in(
            m,
            &[
                LossKind::Mnrl,
                LossKind::CachedMnrl,
                LossKind::Gist,
                LossKind::CachedGist,
            ],
        ))
        .then_some(
            "--loss mnrl, cached-mnrl, gist or cached-gist (the losses that refuse duplicates)",
        )
    }),
    ("train", "eval_steps", E, |m| {
        (!m.given("eval_data")).then_some("--eval-data")
    }),
    ("train", "eval_format", E, |m| {
        (!m.given("eval_data")).then_some("--eval-data")
    }),
    ("train", "eval_task", E, |m| {
        (!m.given("eval_data")).then_some("--eval-data")
    }),
    ("train", "eval_columns", E, |m| {
        (!m.given("eval_data")).then_some("--eval-data")
    }),
    ("train", "save_best", E, |m| {
        (!m.given("eval_data")).then_some("--eval-data")
    }),
    ("train", "save_total_limit", E, |m| {
        (!m.given("save_steps")).then_some("--save-steps")
    }),
    ("train", "warmup_ratio", W, |m| {
        m.given("warmup_steps")
            .then_some("runs without --warmup-steps (which overrides it)")
    }),
    ("train", "epochs", W, |m| {
        m.given("max_steps")
            .then_some("runs without --max-steps (which overrides it)")
    }),
    ("eval", "score_scale", E, |m| {
        let task = m.m.try_get_one::<EvalTask>("task").ok().flatten().copied();
        (task != Some(EvalTask::Sts)).then_some("--task sts")
    }),
    ("eval", "queries", E, |m| {
        (task(m) != Some(EvalTask::Retrieval)).then_some("--task retrieval")
    }),
    ("eval", "query_prompt", E, |m| {
        (task(m) != Some(EvalTask::Retrieval)).then_some("--task retrieval")
    }),
    ("eval", "document_prompt", E, |m| {
        (task(m) != Some(EvalTask::Retrieval)).then_some("--task retrieval")
    }),
    ("eval", "query_prompt_name", E, |m| {
        (task(m) != Some(EvalTask::Retrieval)).then_some("--task retrieval")
    }),
    ("eval", "document_prompt_name", E, |m| {
        (task(m) != Some(EvalTask::Retrieval)).then_some("--task retrieval")
    }),
    ("eval", "prompt", E, |m| {
        (task(m) == Some(EvalTask::Retrieval)).then_some(
            "--task sts, triplet or binary (retrieval: --query-prompt, --document-prompt)",
        )
    }),
    ("eval", "prompt_name", E, |m| {
        (task(m) == Some(EvalTask::Retrieval)).then_some("--task sts, triplet or binary (retrieval: --query-prompt-name, --document-prompt-name)")
    }),
    ("eval", "columns", E, |m| {
        (task(m) == Some(EvalTask::Retrieval)).then_some("--task sts, triplet or binary")
    }),
    ("eval", "precision", E, |m| {
        (task(m) == Some(EvalTask::Retrieval)).then_some("--task sts, triplet or binary")
    }),
    ("embed", "ranges", E, |m| {
        (!m.given("precision")).then_some("--precision int8 or uint8")
    }),
    ("embed", "calibration", E, |m| {
        (!m.given("precision")).then_some("--precision int8 or uint8")
    }),
    ("similarity", "top_k", E, |m| {
        (!m.given("query")).then_some("--query with --corpus")
    }),
    ("pairs", "positive_min", E, |m| {
        (source(m) != Some(Source::Scores)).then_some("--from scores")
    }),
    ("pairs", "negative_max", E, |m| {
        (source(m) != Some(Source::Scores)).then_some("--from scores")
    }),
    ("pairs", "positives_only", E, |m| {
        (!matches!(source(m), Some(Source::Scores | Source::Labeled)))
            .then_some("--from scores or labeled")
    }),
    ("pairs", "per_anchor", E, |m| {
        (source(m) != Some(Source::Classes)).then_some("--from classes")
    }),
    ("pairs", "mine", E, |m| {
        (!matches!(source(m), Some(Source::Pairs | Source::Qrels)))
            .then_some("--from pairs or qrels")
    }),
    ("pairs", "columns", E, |m| {
        (source(m) == Some(Source::Qrels)).then_some(
            "--from scores, labeled, classes, nli or pairs (a BEIR folder has its own layout)",
        )
    }),
    ("pairs", "num_negatives", E, |m| negatives_flag(m)),
    ("pairs", "corpus", E, |m| negatives_flag(m)),
    ("pairs", "output_format", E, |m| negatives_flag(m)),
    ("pairs", "range_min", E, |m| {
        (!m.given("mine")).then_some("--mine")
    }),
    ("pairs", "range_max", E, |m| {
        (!m.given("mine")).then_some("--mine")
    }),
    ("pairs", "max_score", E, |m| {
        (!m.given("mine")).then_some("--mine")
    }),
    ("pairs", "min_score", E, |m| {
        (!m.given("mine")).then_some("--mine")
    }),
    ("pairs", "mining_margin", E, |m| {
        (!m.given("mine")).then_some("--mine")
    }),
    ("pairs", "relative_margin", E, |m| {
        (!m.given("mine")).then_some("--mine")
    }),
    ("pairs", "batch_size", E, |m| {
        (!m.given("mine") && !m.given("check")).then_some("--mine or --check with --model")
    }),
    ("pairs", "eval_data", E, |m| {
        (!m.given("check")).then_some("--check")
    }),
    ("pairs", "eval_format", E, |m| {
        (!m.given("check")).then_some("--check")
    }),
    ("pairs", "json", E, |m| {
        (!m.given("check")).then_some("--check")
    }),
];

/// The long flag of `id` in `cmd` (`--eval-steps` for "eval_steps").
fn flag(cmd: &clap::Command, id: &str) -> String {
    cmd.get_arguments()
        .find(|a| a.get_id().as_str() == id)
        .and_then(|a| a.get_long())
        .map(|l| format!("--{l}"))
        .unwrap_or_else(|| format!("--{}", id.replace('_', "-")))
}

/// Refuses the first given flag that has no effect, naming what it applies to.
pub fn check(matches: &ArgMatches, command: &clap::Command) -> Result<()> {
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let Some(cmd) = command.find_subcommand(name) else {
        return Ok(());
    };
    let ctx = Ctx::new(sub, cmd);
    for (c, id, severity, unused) in RULES {
        if *c != name || !ctx.given(id) {
            continue;
        }
        if let Some(applies_to) = unused(&ctx) {
            let msg = format!(
                "{name} {}: has no effect here; it applies to {applies_to}",
                flag(cmd, id)
            );
            match severity {
                Severity::Error => bail!("{msg}"),
                Severity::Warn => tracing::warn!("warning: {msg}"),
            }
        }
    }
    // A warmup longer than the run: the learning rate never reaches its peak.
    if name == "train" {
        let n = |id: &str| sub.try_get_one::<usize>(id).ok().flatten().copied();
        if let (Some(w), Some(t)) = (n("warmup_steps"), n("max_steps")) {
            if w >= t {
                tracing::warn!(
                    "warning: train --warmup-steps {w} is not below --max-steps {t}: the learning rate never leaves warmup"
                );
            }
        }
    }
    Ok(())
}

/// The rules' (subcommand, flag id) pairs, for the tests.
pub fn rules() -> impl Iterator<Item = (&'static str, &'static str)> {
    RULES.iter().map(|(c, id, _, _)| (*c, *id))
}
