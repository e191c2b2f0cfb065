//! GradCache's micro-batch (the [`Cached`](super::step::Cached) step; see `step.rs`'s header):
//! embed every mini-batch without a graph (dropout on), the loss and its gradient with respect
//! to those embeddings on the whole batch, then each mini-batch again with a graph and its
//! replayed masks, back-propagating `sum(embeddings · cached gradient)`. Depends on `step`
//! (the context, gradient sums, the loss, `join_columns`), `phases` and the model.

use super::grads::GradSum;
use super::phases::{Phase, PhaseTimer};
use super::step::{divided_loss, join_columns, StepCtx};
use anyhow::{Context, Result};
use candle_core::{Tensor, Var};

/// One micro-batch by GradCache (see the module header). Each mini-batch's text columns go
/// through the encoder as a plain step's do (one joint pass when [`join_columns`] says so, so
/// one mini-batch as large as the batch draws the plain step's masks); memory is bounded by one
/// such pass: the mini-batch's rows, times its columns when they are joined.
pub(super) fn cached_micro(
    ctx: &StepCtx,
    rows: &[usize],
    mini: usize,
    divide: Option<f64>,
    acc: &mut GradSum,
    timer: &mut PhaseTimer,
) -> Result<Tensor> {
    let (model, d) = (ctx.model, &ctx.data);
    // First pass: every mini-batch without a graph, dropout on; the RNG state before each is
    // kept to replay its masks.
    timer.begin();
    let plens: Vec<usize> = (0..d.columns()).map(|c| d.prompt_len(c)).collect();
    // (batch, RNG state before it, its columns, first row, rows): one per column of a
    // mini-batch, or one for all its columns when they are joined.
    let mut passes = Vec::new();
    let mut parts: Vec<Vec<Tensor>> = vec![Vec::new(); d.columns()];
    let mut start = 0;
    for chunk in rows.chunks(mini) {
        let ids: Vec<Vec<&[u32]>> = (0..d.columns()).map(|c| d.ids(chunk, c)).collect();
        let packed = model.packs_items(ids.iter().flatten().copied());
        let joint = join_columns(ctx.device, packed, &ids);
        let b = model.column_batches(&ids, &plens, joint, ctx.device)?;
        let joined = b.joint_rows.is_some();
        for (i, batch) in b.batches.into_iter().enumerate() {
            let state = model.dropout_state();
            let e = model.embed_batch_no_graph(&batch)?;
            let cols: Vec<usize> = if joined {
                (0..d.columns()).collect()
            } else {
                vec![i]
            };
            for (k, &c) in cols.iter().enumerate() {
                parts[c].push(e.narrow(0, k * chunk.len(), chunk.len())?);
            }
            passes.push((batch, state, cols, start, chunk.len()));
        }
        start += chunk.len();
    }
    let cached: Vec<Var> = parts
        .iter()
        .map(|p| Var::from_tensor(&Tensor::cat(p, 0)?.detach()))
        .collect::<candle_core::Result<_>>()?;
    let after = model.dropout_state();
    timer.end(Phase::Forward)?;
    // The loss on the whole batch, and its gradient with respect to each column's embeddings.
    timer.begin();
    let labels = d.labels(rows, ctx.device)?;
    let embs: Vec<Tensor> = cached.iter().map(|v| v.as_tensor().clone()).collect();
    let (out, l) = divided_loss(ctx, rows, &embs, labels.as_ref(), divide)?;
    let loss_grads = l.backward()?;
    // The loss's own parameters (a classifier, a projection) get their gradient here.
    acc.add(&loss_grads)?;
    timer.end(Phase::Loss)?;
    // Replay: each batch again with a graph and the same masks, one backward each (memory: one
    // batch's graph); the cached gradients are the upstream gradients of its embeddings
    // (columns the loss does not read get none).
    timer.begin();
    for (batch, state, cols, first, n) in &passes {
        let ups: Vec<(usize, Tensor)> = cols
            .iter()
            .enumerate()
            .filter_map(|(k, &c)| {
                let g = loss_grads.get(cached[c].as_tensor())?;
                Some(g.narrow(0, *first, *n).map(|g| (k, g)))
            })
            .collect::<candle_core::Result<_>>()?;
        if ups.is_empty() {
            continue;
        }
        model.rewind_dropout(*state);
        let e = model.embed_batch(batch, true)?;
        let mut surrogate: Option<Tensor> = None;
        for (k, g) in ups {
            let part = e.narrow(0, k * n, *n)?;
            let s = (part * g.to_dtype(e.dtype())?)?.sum_all()?;
            surrogate = Some(match surrogate {
                Some(t) => (t + s)?,
                None => s,
            });
        }
        if let Some(s) = surrogate {
            let grads = s.backward().context("GradCache replay")?;
            acc.add(&grads)?;
        }
    }
    model.rewind_dropout(after);
    timer.end(Phase::Backward)?;
    Ok(out)
}
