//! The CPU mirror of the variable-length attention kernels (kernels/varlen_attention.cuh):
//! the same loops over (row, head) in the same steps — scores, softmax statistics, the
//! query-side backward (dq, D_i, the bias's gradient per sequence) and the key-side one (dk, dv
//! from each query's statistics) — so `Exec::CudaFused` on a CPU device runs the kernels'
//! algorithm (sums in another order than the warps'). Depends on `ops::Packed`,
//! `ops::dropout::hash` and `varlen::VarlenArgs`.

use super::varlen::VarlenArgs;
use crate::ops::Packed;

/// The CPU mirror of the kernels, loop for loop (sums in another order than the warps').
pub(super) struct Mirror<'a> {
    pub(super) a: VarlenArgs,
    pub(super) p: &'a Packed,
    pub(super) qkv: &'a [f32],
    pub(super) bias: Option<&'a [f32]>,
}

impl Mirror<'_> {
    fn hh(&self) -> usize {
        (self.a.heads * self.a.hd) as usize
    }
    /// Head `h`'s part (`part` 0: q, 1: k, 2: v) of packed row `r`.
    fn vec(&self, part: usize, r: usize, h: usize) -> &[f32] {
        let (hh, hd) = (self.hh(), self.a.hd as usize);
        &self.qkv[r * 3 * hh + part * hh + h * hd..][..hd]
    }
    fn sees(&self, i: usize, j: usize) -> bool {
        self.a.use_window == 0 || i.abs_diff(j) <= self.a.window as usize
    }
    fn factor(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        let (a, s) = (&self.a, self.a.s_max as u64);
        if a.use_drop == 0 {
            return 1.0;
        }
        let c = ((b as u64 * a.heads as u64 + h as u64) * s + i as u64) * s + j as u64;
        if crate::ops::dropout::hash(a.seed, c) > a.threshold {
            a.dscale
        } else {
            0.0
        }
    }
    fn z(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        let start = self.p.start(b);
        let dot: f32 = dot(self.vec(0, start + i, h), self.vec(1, start + j, h));
        let s = self.a.s_max as usize;
        dot * self.a.scale + self.bias.map_or(0.0, |bb| bb[(h * s + i) * s + j])
    }
    /// `embtune_vl_scores`: the row's scores (−inf outside the window), their max and 1/Σ.
    fn scores(&self, b: usize, h: usize, i: usize) -> (Vec<f32>, f32, f32) {
        let zs: Vec<f32> = (0..self.p.len(b))
            .map(|j| {
                if self.sees(i, j) {
                    self.z(b, h, i, j)
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let m = zs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let s: f32 = zs.iter().map(|&z| expo(z, m)).sum();
        (zs, m, 1.0 / s)
    }

    /// `embtune_varlen_attn_f32`: the context `[T, H]`.
    pub(super) fn forward(&self) -> Vec<f32> {
        let (hh, hd) = (self.hh(), self.a.hd as usize);
        let mut out = vec![0f32; self.p.tokens() * hh];
        for b in 0..self.p.batch() {
            for i in 0..self.p.len(b) {
                for h in 0..self.a.heads as usize {
                    let (zs, m, inv) = self.scores(b, h, i);
                    let o = &mut out[(self.p.start(b) + i) * hh + h * hd..][..hd];
                    for (j, &z) in zs.iter().enumerate() {
                        let w = expo(z, m) * inv * self.factor(b, h, i, j);
                        for (od, vd) in o.iter_mut().zip(self.vec(2, self.p.start(b) + j, h)) {
                            *od += w * vd;
                        }
                    }
                }
            }
        }
        out
    }

    /// Both backward kernels: `[dqkv (T·3H) | dbias per sequence (B·heads·S·S, with a bias)]`.
    pub(super) fn backward(&self, g: &[f32]) -> Vec<f32> {
        let (hh, hd, heads) = (self.hh(), self.a.hd as usize, self.a.heads as usize);
        let (t, s) = (self.p.tokens(), self.a.s_max as usize);
        let nb = if self.bias.is_some() {
            self.p.batch() * heads * s * s
        } else {
            0
        };
        let mut out = vec![0f32; t * 3 * hh + nb];
        let (dqkv, dbias) = out.split_at_mut(t * 3 * hh);
        let gv = |r: usize, h: usize| &g[r * hh + h * hd..][..hd];
        // Query side: stats (max, 1/sum, D) per (row, head), dq, dbias.
        let mut stats = vec![[0f32; 3]; t * heads];
        for b in 0..self.p.batch() {
            let start = self.p.start(b);
            for i in 0..self.p.len(b) {
                for h in 0..heads {
                    let (zs, m, inv) = self.scores(b, h, i);
                    let p: Vec<f32> = zs.iter().map(|&z| expo(z, m) * inv).collect();
                    let fd: Vec<f32> = (0..p.len())
                        .map(|j| {
                            self.factor(b, h, i, j)
                                * dot(gv(start + i, h), self.vec(2, start + j, h))
                        })
                        .collect();
                    let d: f32 = p.iter().zip(&fd).map(|(p, f)| p * f).sum();
                    let dz: Vec<f32> = p.iter().zip(&fd).map(|(p, f)| p * (f - d)).collect();
                    stats[(start + i) * heads + h] = [m, inv, d];
                    if nb > 0 {
                        dbias[((b * heads + h) * s + i) * s..][..dz.len()].copy_from_slice(&dz);
                    }
                    let dq = &mut dqkv[(start + i) * 3 * hh + h * hd..][..hd];
                    for (j, &w) in dz.iter().enumerate() {
                        for (o, kd) in dq.iter_mut().zip(self.vec(1, start + j, h)) {
                            *o += w * kd;
                        }
                    }
                    dq.iter_mut().for_each(|o| *o *= self.a.scale);
                }
            }
        }
        // Key side: dk, dv of key j from every query's statistics.
        for b in 0..self.p.batch() {
            let start = self.p.start(b);
            for j in 0..self.p.len(b) {
                for h in 0..heads {
                    let (mut dk, mut dv) = (vec![0f32; hd], vec![0f32; hd]);
                    for i in (0..self.p.len(b)).filter(|&i| self.sees(i, j)) {
                        let [m, inv, d] = stats[(start + i) * heads + h];
                        let p = (self.z(b, h, i, j) - m).exp() * inv;
                        let f = self.factor(b, h, i, j);
                        let dp = dot(gv(start + i, h), self.vec(2, start + j, h));
                        let (dzi, pfi) = (p * (f * dp - d), p * f);
                        for x in 0..hd {
                            dk[x] += dzi * self.vec(0, start + i, h)[x];
                            dv[x] += pfi * gv(start + i, h)[x];
                        }
                    }
                    let row = &mut dqkv[(start + j) * 3 * hh..][..3 * hh];
                    for x in 0..hd {
                        row[hh + h * hd + x] = self.a.scale * dk[x];
                        row[2 * hh + h * hd + x] = dv[x];
                    }
                }
            }
        }
        out
    }
}

fn dot(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// `exp(z − m)`, 0 for a hidden key (z = −inf), as the kernels compute it.
fn expo(z: f32, m: f32) -> f32 {
    if z == f32::NEG_INFINITY {
        0.0
    } else {
        (z - m).exp()
    }
}
