//! The device check's packing rows: on the device under test, one CoSENT pass in train mode
//! (dropout 0.1, one seed) over packed batches — every text back to back, the variable-length
//! attention kernels, the packed rows' dropout counters — against the same pass padded
//! (`--no-packing`): embeddings, loss and every gradient. Both draw the same dropout masks, so
//! they agree up to float reassociation. Depends on `model`, `loss` and the parent's `Check`.

use super::{max_abs_diff, Check};
use crate::loss::{self, LossKind, LossParams};
use crate::model::SentenceEncoder;
use anyhow::Result;
use candle_core::Tensor;

/// Packed against padded on `m`'s device over the columns `a`, `b` with labels `score`
/// (`m` keeps packing on and dropout off afterwards).
pub fn checks(m: &mut SentenceEncoder, cols: [&[String]; 2], score: &[f32]) -> Result<Vec<Check>> {
    m.set_dropout(0.1);
    let toks = cols
        .iter()
        .map(|c| {
            let refs: Vec<&str> = c.iter().map(|s| s.as_str()).collect();
            m.tokenizer.tokenize(&refs)
        })
        .collect::<Result<Vec<_>>>()?;
    let ids: Vec<Vec<&[u32]>> = toks
        .iter()
        .map(|t| t.iter().map(|x| x.ids.as_slice()).collect())
        .collect();
    let l = loss::build(LossKind::Cosent, &LossParams::default());
    let labels = Tensor::from_slice(score, score.len(), m.device())?;
    let mut pass = |packing: bool| -> Result<(bool, Vec<f32>, f32, Vec<Vec<f32>>)> {
        m.set_packing(packing);
        m.seed_dropout(7);
        let batches = m.column_batches(&ids, &[], false, &m.device().clone())?;
        let packed = batches.batches.iter().all(|b| b.packed.is_some());
        let embs = m.embed_columns(&batches, true)?;
        let loss = l.compute(&embs, Some(&labels))?;
        let grads = loss.backward()?;
        let g = m
            .named_vars()
            .iter()
            .map(|(_, v)| match grads.get(v.as_tensor()) {
                Some(t) => Ok(t
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1()?),
                None => Ok(Vec::new()),
            })
            .collect::<Result<Vec<_>>>()?;
        let e = Tensor::cat(&embs, 0)?.flatten_all()?.to_vec1()?;
        Ok((packed, e, loss.to_scalar::<f32>()?, g))
    };
    let (pa, ea, la, ga) = pass(false)?;
    let (pb, eb, lb, gb) = pass(true)?;
    m.set_dropout(0.0);
    let gmax = ga.iter().flatten().fold(0f32, |x, v| x.max(v.abs()));
    let gd = ga
        .iter()
        .zip(&gb)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f64::max);
    let note = format!(
        "CoSENT, {} pairs, dropout 0.1 seed 7, {} vs {}",
        score.len(),
        if pb { "packed" } else { "NOT packed" },
        if pa { "NOT padded" } else { "padded" }
    );
    let taken = |c: Check| Check {
        pass: c.pass && pb && !pa,
        ..c
    };
    Ok(vec![
        taken(Check::diff(
            "packed = padded embeddings",
            max_abs_diff(&ea, &eb),
            1e-5,
            &note,
        )),
        taken(Check::diff(
            "packed = padded loss",
            (la - lb).abs() as f64,
            1e-5,
            &note,
        )),
        taken(Check::diff(
            "packed = padded gradients",
            gd,
            1e-5 * (gmax as f64).max(1.0),
            format!("{} tensors, max |grad| {gmax:.3e}", ga.len()),
        )),
    ])
}
