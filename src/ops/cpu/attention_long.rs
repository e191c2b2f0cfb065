//! The CPU fused attention forward for long sentences (≥ [`LONG`] tokens, no score bias): per
//! (sentence, head), blocks of [`ROWS`] queries are scored against their keys with one matrix
//! product (`gemm`, the kernels candle's matmul uses) instead of a row at a time, masked
//! (padding, sliding window), soft-maxed, dropped out, and multiplied by V with a second
//! product. A block only touches the keys it can see: the sentence's real tokens, within the
//! window of some row of the block — so ModernBERT's local layers cost O(S·w). Jobs run in
//! parallel over (sentence, head), products on one thread each. Same masks, same dropout
//! counters and the same formulas as the per-row kernel (`attention_kernels::attention_head`), which the
//! backward and short sentences keep using. Depends on rayon, `kernels`, `dense::gemm_on`.

use super::attention_kernels::AttnShape;
use super::dense::{gemm_on, View};
use super::kernels::{exp_neg, level, simd_fn};
use crate::ops::Dropout;
use rayon::prelude::*;

/// Sentences at least this long take the blocked path.
pub const LONG: usize = 256;
/// Query rows per block.
const ROWS: usize = 64;

/// One (sentence, head) job's inputs.
pub struct LongJob<'a> {
    pub qkv: &'a [f32],
    pub keep: &'a [f32],
    pub sh: AttnShape,
    pub scale: f32,
    pub drop: Option<Dropout>,
    pub window: Option<usize>,
}

/// The context `[B·S, H]` (heads side by side) of every sentence and head.
pub fn forward(job: LongJob) -> candle_core::Result<Vec<f32>> {
    let sh = job.sh;
    let (s, hd, hid) = (sh.seq, sh.head_dim, sh.hidden());
    let blocks: Vec<(usize, usize, Vec<f32>)> = (0..sh.batch * sh.heads)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / sh.heads, bh % sh.heads);
            head(&job, b, h).map(|o| (b, h, o))
        })
        .collect::<candle_core::Result<_>>()?;
    let mut out = vec![0f32; sh.batch * s * hid];
    for (b, h, block) in blocks {
        for (i, row) in block.chunks(hd).enumerate() {
            out[(b * s + i) * hid + h * hd..][..hd].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// `[S, hd]` context of head `h` of sentence `b`.
fn head(job: &LongJob, b: usize, h: usize) -> candle_core::Result<Vec<f32>> {
    let sh = job.sh;
    let (s, hd, hid) = (sh.seq, sh.head_dim, sh.hidden());
    let keep = &job.keep[b * s..(b + 1) * s];
    // Keys past the last real token are padding for every query.
    let real = keep.iter().rposition(|&k| k != 0.0).map_or(0, |i| i + 1);
    let at = |row: usize, part: usize| (b * s + row) * 3 * hid + part * hid + h * hd;
    let mut out = vec![0f32; s * hd];
    let mut p = Vec::new();
    for i0 in (0..s).step_by(ROWS) {
        let i1 = (i0 + ROWS).min(s);
        let (lo, hi) = match job.window {
            Some(w) => (i0.saturating_sub(w), (i1 - 1 + w + 1).min(real)),
            None => (0, real),
        };
        if lo >= hi {
            continue; // no key to see: zeros, as the per-row kernel
        }
        let (r, n) = (i1 - i0, hi - lo);
        p.clear();
        p.resize(r * n, 0.0);
        // scores = Q[i0..i1] · K[lo..hi]ᵀ
        let q = View(&job.qkv[at(i0, 0)..], 3 * hid, 1);
        let kt = View(&job.qkv[at(lo, 1)..], 1, 3 * hid);
        gemm_on(r, n, hd, &mut p, false, q, kt, 1)?;
        for (ri, row) in p.chunks_mut(n).enumerate() {
            softmax_row(job, keep, (b, h, i0 + ri), lo, row);
        }
        let v = View(&job.qkv[at(lo, 2)..], 3 * hid, 1);
        gemm_on(
            r,
            hd,
            n,
            &mut out[i0 * hd..i1 * hd],
            false,
            View(&p, n, 1),
            v,
            1,
        )?;
    }
    Ok(out)
}

/// Row `i`'s probabilities over keys `lo..lo + row.len()` (raw products on entry), masked by
/// padding and the window, then its dropout factors (counter `((b·heads + h)·S + i)·S + j`).
fn softmax_row(
    job: &LongJob,
    keep: &[f32],
    (b, h, i): (usize, usize, usize),
    lo: usize,
    row: &mut [f32],
) {
    let n = row.len();
    // The window's columns of this row (relative to lo); outside them nothing is seen.
    let (a, z) = match job.window {
        Some(w) => (
            i.saturating_sub(w).saturating_sub(lo).min(n),
            (i + w + 1).saturating_sub(lo).min(n),
        ),
        None => (0, n),
    };
    row[..a].iter_mut().for_each(|v| *v = 0.0);
    row[z..].iter_mut().for_each(|v| *v = 0.0);
    let sum = masked_exp(&mut row[a..z], &keep[lo + a..lo + z], job.scale);
    if sum == 0.0 {
        row.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let inv = 1.0 / sum;
    match &job.drop {
        None => row[a..z].iter_mut().for_each(|v| *v *= inv),
        Some(d) => {
            let s = job.sh.seq;
            let base = (((b * job.sh.heads + h) * s + i) * s + lo) as u64;
            for (j, v) in row.iter_mut().enumerate().take(z).skip(a) {
                *v *= inv * d.factor(base + j as u64);
            }
        }
    }
}

const LANES: usize = 16;

simd_fn! {
    /// `v ← exp(scale·(v − max)) · keep` over the kept entries (max over them); returns the sum,
    /// 0 when nothing is kept. Max and sum in 16 independent lanes so each pass vectorizes.
    fn masked_exp(v: &mut [f32], keep: &[f32], scale: f32) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        for (c, kc) in v.chunks(LANES).zip(keep.chunks(LANES)) {
            for ((a, &x), &k) in acc.iter_mut().zip(c).zip(kc) {
                *a = a.max(if k != 0.0 { x } else { f32::NEG_INFINITY });
            }
        }
        let m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if m == f32::NEG_INFINITY {
            return 0.0;
        }
        for (x, &k) in v.iter_mut().zip(keep) {
            *x = exp_neg((*x - m) * scale) * k;
        }
        let mut sums = [0f32; LANES];
        for c in v.chunks(LANES) {
            for (a, &x) in sums.iter_mut().zip(c) {
                *a += x;
            }
        }
        sums.iter().sum()
    }
}
