//! The attention core's kernels for one (sentence, head), on plain f32 slices: scores, optional
//! score bias, padding mask, sliding window (a row computes only its key range), softmax,
//! dropout and the weighted sum, forward and backward (which recomputes the probabilities).
//! Compiled per SIMD level like every kernel (`kernels::simd_fn`). Depends on `kernels` and
//! `ops::Dropout`.

use super::kernels::{axpy, dot, exp_neg, level, simd_fn, sum, LANES};
use crate::ops::Dropout;

/// Shape of one attention call: `B` sentences of `S` tokens, hidden size `H` = `heads · hd`.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Attention-probability dropout of one call (`None` in eval mode). Element `(b, h, i, j)` of
/// the virtual `[B, heads, S, S]` probability tensor uses counter `((b·heads + h)·S + i)·S + j`
/// (on a packed batch, S is that of its padded layout: [`HeadJob::drop_seq`]).
pub type AttnDropout<'a> = Option<&'a Dropout>;

/// One row of attention probabilities: `p[j] = softmax_j(scale·q·kⱼ)` over the keys with
/// `keep[j] = 1` (0 for padding), from `kt = (Kᵀ, stride, col0)`: Kᵀ of this head (`[hd, sp]`,
/// row-major, stride `sp`), of which columns `col0..col0 + p.len()` are this row's keys
/// (`keep.len()` = `p.len()`, a multiple of 16).
#[inline(always)]
fn probs_row(
    q: &[f32],
    kt: (&[f32], usize, usize),
    keep: &[f32],
    scale: f32,
    bias: Option<&[f32]>,
    p: &mut [f32],
) {
    row_times_t(q, kt.0, (kt.1, kt.2), p);
    if let Some(bias) = bias {
        return probs_row_biased(keep, scale, bias, p);
    }
    // Masked max, exponentials and their sum as separate passes: each vectorizes (a running
    // sum or a branchy max in the same loop would keep it scalar).
    let mut acc = [f32::NEG_INFINITY; LANES];
    for (c, kc) in p.chunks(LANES).zip(keep.chunks(LANES)) {
        for ((a, &v), &k) in acc.iter_mut().zip(c).zip(kc) {
            *a = a.max(if k != 0.0 { v } else { f32::NEG_INFINITY });
        }
    }
    let m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max) * scale;
    if m == f32::NEG_INFINITY {
        // Every key masked (a padded query whose window holds only padding): no attention.
        p.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    for (v, &k) in p.iter_mut().zip(keep) {
        *v = exp_neg(*v * scale - m) * k;
    }
    let inv = 1.0 / sum(p);
    p.iter_mut().for_each(|v| *v *= inv);
}

/// [`probs_row`] with an additive score bias (`bias[j]` for key j, S values): `p[j] =
/// softmax_j(scale·q·kⱼ + bias[j])` over the kept keys; `p` holds the raw products on entry.
#[inline(always)]
fn probs_row_biased(keep: &[f32], scale: f32, bias: &[f32], p: &mut [f32]) {
    for (v, &b) in p.iter_mut().zip(bias) {
        *v = *v * scale + b;
    }
    let mut acc = [f32::NEG_INFINITY; LANES];
    for (c, kc) in p.chunks(LANES).zip(keep.chunks(LANES)) {
        for ((a, &v), &k) in acc.iter_mut().zip(c).zip(kc) {
            *a = a.max(if k != 0.0 { v } else { f32::NEG_INFINITY });
        }
    }
    let m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        p.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    for (v, &k) in p.iter_mut().zip(keep) {
        *v = exp_neg(*v - m) * k;
    }
    let inv = 1.0 / sum(p);
    p.iter_mut().for_each(|v| *v *= inv);
}

/// Where the heads of one projection sit in a row-major `[rows, stride]` buffer (`B·S` padded
/// rows or `T` packed ones): columns
/// `offset + h·hd ..` (a packed `[q | k | v]` buffer has stride 3H and offsets 0, H, 2H).
#[derive(Debug, Clone, Copy)]
pub struct Heads<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub offset: usize,
}

impl<'a> Heads<'a> {
    /// The `hd` values of token `j`, head `h`, of the sentence whose first row is `row0`.
    #[inline(always)]
    fn row(&self, sh: AttnShape, row0: usize, j: usize, h: usize) -> &'a [f32] {
        &self.data[(row0 + j) * self.stride + self.offset + h * sh.head_dim..][..sh.head_dim]
    }

    /// This head of the sentence at `row0` transposed, rows padded to `sp` columns:
    /// `out[d·sp + j] = row(row0, j, h)[d]` (zeros stay in columns `S..sp`).
    #[inline(always)]
    fn transposed(&self, sh: AttnShape, row0: usize, h: usize, sp: usize, out: &mut [f32]) {
        for j in 0..sh.seq {
            for (d, &v) in self.row(sh, row0, j, h).iter().enumerate() {
                out[d * sp + j] = v;
            }
        }
    }
}

/// One (sentence `b`, head `h`) of an attention call: the projections, the sentence's padding
/// mask (`keep`, 1 = token), the score scale 1/√hd, the head's additive score bias (rows of
/// `bias_stride` values, row i for query i, of which the first S are used; none for most
/// models), the probability dropout and the sliding window. `sh.seq` is this sentence's S:
/// the padded length, or on a packed batch the sentence's own length.
#[derive(Debug, Clone, Copy)]
pub struct HeadJob<'a> {
    pub q: Heads<'a>,
    pub k: Heads<'a>,
    pub v: Heads<'a>,
    pub keep: &'a [f32],
    pub sh: AttnShape,
    pub scale: f32,
    pub bias: Option<&'a [f32]>,
    pub bias_stride: usize,
    pub drop: AttnDropout<'a>,
    /// The S of the dropout counters (the padded length; ≥ `sh.seq`).
    pub drop_seq: usize,
    /// Sliding window: query i sees keys j with |i − j| ≤ w only (ModernBERT's local layers).
    pub window: Option<usize>,
    /// The sentence's first row in the q|k|v and gradient buffers.
    pub row0: usize,
    pub b: usize,
    pub h: usize,
}

simd_fn! {
/// Forward of one head of one sentence: writes `ctx[i] = Σⱼ p'ᵢⱼ·vⱼ` (p' = probabilities after
/// dropout) into `out`, the `[S, hd]` block of this head (row-major).
pub fn attention_head(job: HeadJob, out: &mut [f32]) {
    let HeadJob { q, k, v, keep, sh, scale, bias, bias_stride: bs, drop, drop_seq: ds, window, row0, b, h } = job;
    let (s, hd) = (sh.seq, sh.head_dim);
    let (sp, keep) = padded_keep(keep);
    let mut kt = vec![0f32; hd * sp];
    k.transposed(sh, row0, h, sp, &mut kt);
    let mut p = vec![0f32; sp];
    let mut row_keep = vec![0f32; if window.is_some() { sp } else { 0 }];
    for i in 0..s {
        let bias_row = bias.map(|bb| &bb[i * bs..i * bs + s]);
        // A window's keys only (the rest are masked anyway): local layers cost O(S·w).
        let (lo, hi) = key_range(window, bias.is_some(), i, sp);
        let keep_i = keep_row(&keep, window, i, (lo, hi), &mut row_keep);
        let end = hi.min(s);
        let pr = &mut p[lo..hi];
        probs_row(q.row(sh, row0, i, h), (&kt, sp, lo), &keep_i[lo..hi], scale, bias_row, pr);
        if let Some(d) = drop {
            let base = (((b * sh.heads + h) * ds + i) * ds) as u64;
            for (j, pj) in pr[..end - lo].iter_mut().enumerate() {
                *pj *= d.factor(base + (lo + j) as u64);
            }
        }
        weighted_sum(&pr[..end - lo], |j| v.row(sh, row0, lo + j, h), &mut out[i * hd..(i + 1) * hd]);
    }
}
}

/// The keys query `i` may see, for columns `lo..hi`: the padding mask, within `window` of `i`
/// when there is one (`buf` holds that row; only `lo..hi` is written).
#[inline(always)]
fn keep_row<'a>(
    keep: &'a [f32],
    window: Option<usize>,
    i: usize,
    (lo, hi): (usize, usize),
    buf: &'a mut [f32],
) -> &'a [f32] {
    let Some(w) = window else {
        return keep;
    };
    for (j, x) in buf[lo..hi].iter_mut().enumerate() {
        *x = if (lo + j).abs_diff(i) <= w {
            keep[lo + j]
        } else {
            0.0
        };
    }
    buf
}

/// The key columns query `i` needs, 16-aligned within `0..sp`: all of them, or with a window
/// (and no score bias, whose rows are S wide) those within `w` of `i`.
#[inline(always)]
fn key_range(window: Option<usize>, biased: bool, i: usize, sp: usize) -> (usize, usize) {
    match window {
        Some(w) if !biased => {
            let lo = i.saturating_sub(w) / LANES * LANES;
            let hi = ((i + w + 1).div_ceil(LANES) * LANES).min(sp);
            (lo, hi)
        }
        _ => (0, sp),
    }
}

/// The padding mask widened to a multiple of 16 columns (zeros after the sentence's `S`).
#[inline(always)]
fn padded_keep(keep: &[f32]) -> (usize, Vec<f32>) {
    let sp = keep.len().div_ceil(LANES) * LANES;
    let mut k = vec![0f32; sp];
    k[..keep.len()].copy_from_slice(keep);
    (sp, k)
}

/// `y[j] = Σ_d g[d]·xt[d·stride + col0 + j]` (a row times columns `col0..col0 + y.len()` of a
/// transposed head block); `y.len()` a multiple of 16, so each 16 columns accumulate in one
/// register.
#[inline(always)]
fn row_times_t(g: &[f32], xt: &[f32], (stride, col0): (usize, usize), y: &mut [f32]) {
    for (jc, yc) in y.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [0f32; LANES];
        for (d, &gd) in g.iter().enumerate() {
            let r = &xt[d * stride + col0 + jc * LANES..][..LANES];
            for l in 0..LANES {
                acc[l] += gd * r[l];
            }
        }
        yc.copy_from_slice(&acc);
    }
}

/// `out = Σⱼ w[j]·row(j)` (rows of `out.len()` values), 16 columns at a time in registers.
#[inline(always)]
fn weighted_sum<'a>(w: &[f32], row: impl Fn(usize) -> &'a [f32], out: &mut [f32]) {
    for (ci, oc) in out.chunks_mut(LANES).enumerate() {
        let lo = ci * LANES;
        let mut acc = [0f32; LANES];
        if oc.len() == LANES {
            for (j, &wj) in w.iter().enumerate() {
                if wj != 0.0 {
                    let r = &row(j)[lo..lo + LANES];
                    for l in 0..LANES {
                        acc[l] += wj * r[l];
                    }
                }
            }
        } else {
            for (j, &wj) in w.iter().enumerate() {
                if wj != 0.0 {
                    for (a, x) in acc.iter_mut().zip(&row(j)[lo..lo + oc.len()]) {
                        *a += wj * x;
                    }
                }
            }
        }
        oc.copy_from_slice(&acc[..oc.len()]);
    }
}

/// Softmax backward of one row with dropout factors `f` (1 without dropout):
/// `dp ← dp·f`, then `ds = scale·p·(dp − Σ p·dp)` written over `dp`.
#[inline(always)]
fn softmax_row_backward(p: &[f32], f: &[f32], scale: f32, dp: &mut [f32]) {
    for (d, &fi) in dp.iter_mut().zip(f) {
        *d *= fi;
    }
    let c = dot(p, dp);
    for (d, &pi) in dp.iter_mut().zip(p) {
        *d = scale * pi * (*d - c);
    }
}

/// [`softmax_row_backward`] that also adds the biased scores' gradient `p·(dp − Σ p·dp)` into
/// `db` (S values; the bias enters the scores unscaled).
#[inline(always)]
fn softmax_row_backward_bias(p: &[f32], f: &[f32], scale: f32, dp: &mut [f32], db: &mut [f32]) {
    for (d, &fi) in dp.iter_mut().zip(f) {
        *d *= fi;
    }
    let c = dot(p, dp);
    for (d, &pi) in dp.iter_mut().zip(p) {
        *d = pi * (*d - c);
    }
    for (acc, &d) in db.iter_mut().zip(dp.iter()) {
        *acc += d;
    }
    for d in dp.iter_mut() {
        *d *= scale;
    }
}

simd_fn! {
/// Backward of one head of one sentence, recomputing its probabilities. `g` holds the gradient
/// of the context; `dq`, `dk`, `dv` receive this head's `[S, hd]` blocks (row-major); with a
/// score bias, `dbias` (this head's `[S, S]` block) accumulates the scores' gradient.
pub fn attention_head_backward(
    job: HeadJob,
    g: Heads,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dbias: Option<&mut [f32]>,
) {
    let mut dbias = dbias;
    let HeadJob { q, k, v, keep, sh, scale, bias, bias_stride: bs, drop, drop_seq: ds, window, row0, b, h } = job;
    let (s, hd) = (sh.seq, sh.head_dim);
    let (sp, keep) = padded_keep(keep);
    let mut row_keep = vec![0f32; if window.is_some() { sp } else { 0 }];
    let mut kt = vec![0f32; hd * sp];
    let mut vt = vec![0f32; hd * sp];
    k.transposed(sh, row0, h, sp, &mut kt);
    v.transposed(sh, row0, h, sp, &mut vt);
    let mut p = vec![0f32; sp];
    let mut f = vec![1f32; sp];
    let mut dp = vec![0f32; sp];
    dk.iter_mut().for_each(|x| *x = 0.0);
    dv.iter_mut().for_each(|x| *x = 0.0);
    for i in 0..s {
        let qi = q.row(sh, row0, i, h);
        let gi = g.row(sh, row0, i, h);
        let (lo, hi) = key_range(window, bias.is_some(), i, sp);
        let keep_i = keep_row(&keep, window, i, (lo, hi), &mut row_keep);
        let end = hi.min(s);
        let (pr, fr, dpr) = (&mut p[lo..hi], &mut f[lo..hi], &mut dp[lo..hi]);
        let bias_row = bias.map(|bb| &bb[i * bs..i * bs + s]);
        probs_row(qi, (&kt, sp, lo), &keep_i[lo..hi], scale, bias_row, pr);
        if let Some(d) = drop {
            let base = (((b * sh.heads + h) * ds + i) * ds) as u64;
            for (j, fj) in fr[..end - lo].iter_mut().enumerate() {
                *fj = d.factor(base + (lo + j) as u64);
            }
        }
        // dV_j += p'_ij · g_i
        for j in lo..end {
            let pj = pr[j - lo] * fr[j - lo];
            if pj != 0.0 {
                axpy(pj, gi, &mut dv[j * hd..(j + 1) * hd]);
            }
        }
        // dP'_ij = g_i · v_j, then through dropout and softmax.
        row_times_t(gi, &vt, (sp, lo), dpr);
        match dbias.as_deref_mut() {
            None => softmax_row_backward(pr, fr, scale, dpr),
            Some(db) => softmax_row_backward_bias(pr, fr, scale, dpr, &mut db[i * bs..i * bs + s]),
        }
        weighted_sum(&dpr[..end - lo], |j| k.row(sh, row0, lo + j, h), &mut dq[i * hd..(i + 1) * hd]);
        for j in lo..end {
            let ds = dpr[j - lo];
            if ds != 0.0 {
                axpy(ds, qi, &mut dk[j * hd..(j + 1) * hd]);
            }
        }
    }
}
}
