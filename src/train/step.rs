//! One optimizer step's gradients: the seam between the loop and how a batch becomes
//! gradients. [`TrainStep`] has three implementations, chosen once per run ([`for_config`]):
//! - [`Plain`]: one batch — its text columns as one packed batch, or padded batches (one per
//!   column, or joint on a GPU; [`join_columns`]), forward with dropout, loss, backward;
//! - [`Accumulated`]: several micro-batches (`--grad-accum`), each loss divided by their count,
//!   gradients summed;
//! - [`Cached`] (GradCache, `--loss cached-mnrl`, `--mini-batch-size`): each micro-batch is
//!   embedded mini-batch by mini-batch (its columns as a plain step's) without a graph (dropout on), the loss and its gradient
//!   with respect to those embeddings are computed on the whole batch, then each mini-batch is
//!   embedded again with a graph — its dropout masks replayed from the RNG state saved before its
//!   first pass — and `sum(embeddings · cached gradient)` back-propagated. Memory is bounded by
//!   the mini-batch (its rows, times its columns when a packed pass joins them) while the loss
//!   sees the whole batch (in-batch negatives); gradients equal the plain step's.
//! Depends on model, loss, tokenize, phases, `grads`.

use super::grads::GradSum;
use super::phases::{Phase, PhaseTimer};
use crate::loss::Loss;
use crate::model::SentenceEncoder;
use crate::tokenize::Tokenized;
use anyhow::Result;
use candle_core::{Device, Tensor, Var};

/// The tokenized training data a step reads its rows from.
pub struct StepData<'a> {
    /// Row-major: `tokens[row * cols + col]`.
    pub tokens: &'a [Tokenized],
    /// Text columns in the data.
    pub cols: usize,
    /// SimCSE: one text column fed twice (two dropout masks).
    pub simcse: bool,
    /// The label of each row, when the loss takes one: `label_shape`'s elements per row.
    pub labels: Option<&'a [f32]>,
    /// One row's label shape (`[]`: a number).
    pub label_shape: &'a [usize],
    /// Leading prompt tokens of each data column's texts (0: no prompt).
    pub prompt_lens: &'a [usize],
}

impl StepData<'_> {
    /// Text columns the loss gets (SimCSE: 2).
    pub fn columns(&self) -> usize {
        if self.simcse {
            2
        } else {
            self.cols
        }
    }
    pub(super) fn data_column(&self, c: usize) -> usize {
        if self.simcse {
            0
        } else {
            c
        }
    }
    pub(super) fn ids(&self, rows: &[usize], c: usize) -> Vec<&[u32]> {
        let col = self.data_column(c);
        rows.iter()
            .map(|&r| self.tokens[r * self.cols + col].ids.as_slice())
            .collect()
    }
    pub(super) fn prompt_len(&self, c: usize) -> usize {
        self.prompt_lens
            .get(self.data_column(c))
            .copied()
            .unwrap_or(0)
    }
    pub(super) fn labels(&self, rows: &[usize], device: &Device) -> Result<Option<Tensor>> {
        let Some(l) = self.labels else {
            return Ok(None);
        };
        let w: usize = self.label_shape.iter().product();
        let mut v = Vec::with_capacity(rows.len() * w);
        for &r in rows {
            v.extend_from_slice(&l[r * w..(r + 1) * w]);
        }
        let mut shape = vec![rows.len()];
        shape.extend_from_slice(self.label_shape);
        Ok(Some(Tensor::from_vec(v, shape, device)?))
    }
}

/// The frozen guide model of a guided loss (GIST) and the texts tokenized for it (row-major like
/// [`StepData::tokens`]; its own prompt token counts per data column).
pub struct Guide<'a> {
    pub model: &'a SentenceEncoder,
    pub tokens: &'a [Tokenized],
    pub prompt_lens: &'a [usize],
}

/// Everything a step needs besides its rows.
pub struct StepCtx<'a> {
    pub model: &'a SentenceEncoder,
    pub loss: &'a dyn Loss,
    pub data: StepData<'a>,
    pub guide: Option<Guide<'a>>,
    /// The trainable parameters, in the optimizer's order.
    pub vars: &'a [Var],
    pub device: &'a Device,
    /// The dataset's loss weight (the back-propagated loss is multiplied by it; the reported
    /// one is not).
    pub weight: f64,
}

/// One step's result: a gradient per parameter (None: untouched), each micro-batch's loss (still
/// on the device) and the number of examples. On the CPU fused path the gradients share
/// `ops::cpu::grad_sink`'s buffers: valid until the next step on this thread (copy to keep).
pub struct StepOutput {
    pub grads: Vec<Option<Tensor>>,
    pub losses: Vec<Tensor>,
    pub examples: usize,
}

pub trait TrainStep {
    fn name(&self) -> &'static str;
    /// The gradients of one optimizer step over `micro` (one or more batches of row indices).
    fn run(&self, ctx: &StepCtx, micro: &[&[usize]], timer: &mut PhaseTimer) -> Result<StepOutput>;
}

/// The step a run takes: cached when a mini-batch size is set, else accumulated when several
/// micro-batches make a step, else plain.
pub fn for_config(grad_accum: usize, mini_batch: Option<usize>) -> Box<dyn TrainStep> {
    match (mini_batch, grad_accum) {
        (Some(m), _) => Box::new(Cached {
            mini_batch: m.max(1),
        }),
        (None, 1) => Box::new(Plain),
        (None, _) => Box::new(Accumulated),
    }
}

pub struct Plain;
pub struct Accumulated;
pub struct Cached {
    pub mini_batch: usize,
}

impl TrainStep for Plain {
    fn name(&self) -> &'static str {
        "plain"
    }
    fn run(&self, ctx: &StepCtx, micro: &[&[usize]], timer: &mut PhaseTimer) -> Result<StepOutput> {
        let [rows] = micro else {
            anyhow::bail!(
                "internal: a plain step takes one batch, got {}",
                micro.len()
            );
        };
        let mut acc = GradSum::new(ctx.vars)?;
        let loss = graph_micro(ctx, rows, None, &mut acc, timer)?;
        Ok(StepOutput {
            grads: acc.finish()?,
            losses: vec![loss],
            examples: rows.len(),
        })
    }
}

impl TrainStep for Accumulated {
    fn name(&self) -> &'static str {
        "accumulated"
    }
    fn run(&self, ctx: &StepCtx, micro: &[&[usize]], timer: &mut PhaseTimer) -> Result<StepOutput> {
        accumulate(ctx, micro, timer, |ctx, rows, divide, acc, timer| {
            graph_micro(ctx, rows, divide, acc, timer)
        })
    }
}

impl TrainStep for Cached {
    fn name(&self) -> &'static str {
        "cached"
    }
    fn run(&self, ctx: &StepCtx, micro: &[&[usize]], timer: &mut PhaseTimer) -> Result<StepOutput> {
        accumulate(ctx, micro, timer, |ctx, rows, divide, acc, timer| {
            super::cached::cached_micro(ctx, rows, self.mini_batch, divide, acc, timer)
        })
    }
}

type MicroFn<'f> =
    dyn Fn(&StepCtx, &[usize], Option<f64>, &mut GradSum, &mut PhaseTimer) -> Result<Tensor> + 'f;

/// Runs `one` over each micro-batch (each loss divided by their count when there are several)
/// and sums the gradients.
fn accumulate(
    ctx: &StepCtx,
    micro: &[&[usize]],
    timer: &mut PhaseTimer,
    one: impl Fn(&StepCtx, &[usize], Option<f64>, &mut GradSum, &mut PhaseTimer) -> Result<Tensor>,
) -> Result<StepOutput> {
    let one: &MicroFn = &one;
    let mut acc = GradSum::new(ctx.vars)?;
    let mut losses = Vec::with_capacity(micro.len());
    let divide = (micro.len() > 1).then_some(micro.len() as f64);
    let mut examples = 0;
    for rows in micro {
        examples += rows.len();
        losses.push(one(ctx, rows, divide, &mut acc, timer)?);
    }
    Ok(StepOutput {
        grads: acc.finish()?,
        losses,
        examples,
    })
}

/// The loss of `rows` from their embeddings: with the guide's embeddings of the same texts when
/// the loss is guided (eval mode, no graph).
fn loss_of(
    ctx: &StepCtx,
    rows: &[usize],
    embs: &[Tensor],
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    if !ctx.loss.needs_guide() {
        return Ok(ctx.loss.compute(embs, labels)?);
    }
    let Some(g) = &ctx.guide else {
        anyhow::bail!("internal: a guided loss without its guide model");
    };
    let d = &ctx.data;
    let guide: Vec<Tensor> = (0..d.columns())
        .map(|c| {
            let col = d.data_column(c);
            let ids: Vec<&[u32]> = rows
                .iter()
                .map(|&r| g.tokens[r * d.cols + col].ids.as_slice())
                .collect();
            let mut batch = g.model.batch(&ids, ctx.device)?;
            batch.prompt_len = g.prompt_lens.get(col).copied().unwrap_or(0);
            Ok(g.model.embed_inference(&batch)?)
        })
        .collect::<Result<_>>()?;
    Ok(ctx.loss.compute_guided(embs, &guide, labels)?)
}

/// The loss (detached, as reported) and the loss to back-propagate (divided by `divide`).
pub(super) fn divided_loss(
    ctx: &StepCtx,
    rows: &[usize],
    embs: &[Tensor],
    labels: Option<&Tensor>,
    divide: Option<f64>,
) -> Result<(Tensor, Tensor)> {
    let l = loss_of(ctx, rows, embs, labels)?;
    let out = l.detach();
    let l = if ctx.weight != 1.0 {
        (l * ctx.weight)?
    } else {
        l
    };
    Ok(match divide {
        Some(n) => (out, (l / n)?),
        None => (out, l),
    })
}

/// One micro-batch with a graph: batch the columns (packed or padded, joint or not), forward
/// (dropout on), loss (divided by `divide`), backward, add the gradients. Returns the undivided
/// loss, detached.
fn graph_micro(
    ctx: &StepCtx,
    rows: &[usize],
    divide: Option<f64>,
    acc: &mut GradSum,
    timer: &mut PhaseTimer,
) -> Result<Tensor> {
    let (model, d) = (ctx.model, &ctx.data);
    timer.begin();
    let ids: Vec<Vec<&[u32]>> = (0..d.columns()).map(|c| d.ids(rows, c)).collect();
    let plens: Vec<usize> = (0..d.columns()).map(|c| d.prompt_len(c)).collect();
    let packed = model.packs_items(ids.iter().flatten().copied());
    let joint = join_columns(ctx.device, packed, &ids);
    let batches = model.column_batches(&ids, &plens, joint, ctx.device)?;
    let labels = d.labels(rows, ctx.device)?;
    timer.end(Phase::Batch)?;
    timer.begin();
    let embs = model.embed_columns(&batches, true)?;
    timer.end(Phase::Forward)?;
    timer.begin();
    let (out, l) = divided_loss(ctx, rows, &embs, labels.as_ref(), divide)?;
    timer.end(Phase::Loss)?;
    timer.begin();
    let grads = l.backward()?;
    timer.end(Phase::Backward)?;
    timer.begin();
    acc.add(&grads)?;
    drop(grads);
    timer.end(Phase::Accumulate)?;
    Ok(out)
}

/// Whether a step's text columns go through the encoder as one batch. Packed batches (`packed`):
/// always — there is no padding to add, and one pass over all texts has half (or a third) of
/// the kernels and larger products (CoSENT b16 on STS-B, all-MiniLM-L6-v2, 2 cores: 36.8 vs
/// 29.9 pairs/s, interleaved runs). Padded, on a GPU: unless that pads more than 15 % extra
/// tokens (small batches on a GPU are bound by the number of kernels, not their size; GPU run
/// 1; scripts/gpu-check.sh measures both ways), so long passages beside short queries stay
/// separate. Padded on the CPU: no (interleaved runs measured no difference, 25.7 vs 25.8
/// pairs/s). `EMBTUNE_JOINT_FORWARD=0|1` decides instead (benchmarks, tests).
pub fn join_columns(device: &Device, packed: bool, columns: &[Vec<&[u32]>]) -> bool {
    if columns.len() < 2 {
        return false;
    }
    static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let forced = FORCED.get_or_init(|| match std::env::var("EMBTUNE_JOINT_FORWARD").as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    });
    forced.unwrap_or_else(|| packed || (device.is_cuda() && joint_padding_ok(columns)))
}

/// A joint batch computes at most 15 % more (padded) tokens than the columns' own batches.
fn joint_padding_ok(columns: &[Vec<&[u32]>]) -> bool {
    let longest = |c: &[&[u32]]| c.iter().map(|x| x.len()).max().unwrap_or(0);
    let separate: usize = columns.iter().map(|c| c.len() * longest(c)).sum();
    let rows: usize = columns.iter().map(|c| c.len()).sum();
    let joint = rows * columns.iter().map(|c| longest(c)).max().unwrap_or(0);
    joint as f64 <= 1.15 * separate as f64
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
        // The CPU keeps separate padded passes and joins packed ones; one column: nothing to
        // join.
        let (a, b) = (ids(&[20, 5]), ids(&[20, 5]));
        assert!(!join_columns(&Device::Cpu, false, &cols(&a, &b)));
        assert!(join_columns(&Device::Cpu, true, &cols(&a, &b)));
        assert!(!join_columns(&Device::Cpu, true, &cols(&a, &b)[..1]));
    }
}
