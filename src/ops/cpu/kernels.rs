//! CPU kernels for the encoder's work besides matrix products, on plain f32 slices: GELU (erf
//! form) with a bias and its derivative, LayerNorm forward and backward, dropout masks applied,
//! AdamW's update and Σx² — and what every kernel file shares: the SIMD dispatch (`simd_fn!`),
//! lane-wise sums, dot products, `exp` and `erf` (the attention core is `attention_kernels.rs`). Inner loops
//! are written so LLVM vectorizes them; each kernel is compiled for AVX-512, for AVX2 + FMA and
//! for the baseline, and the best one the CPU has is picked at run time. Spreading work over
//! threads is the custom ops' job (`ops::cpu`); no candle types here. Depends on `ops::Dropout`.

use crate::ops::Dropout;
use std::sync::atomic::{AtomicU8, Ordering};

/// 4 = AVX-512 (F, VL, DQ, BW), 3 = AVX2 + FMA, 0 = baseline. Detected once.
pub(crate) fn level() -> u8 {
    static LEVEL: AtomicU8 = AtomicU8::new(u8::MAX);
    let l = LEVEL.load(Ordering::Relaxed);
    if l != u8::MAX {
        return l;
    }
    let l = detect();
    LEVEL.store(l, Ordering::Relaxed);
    l
}

#[cfg(target_arch = "x86_64")]
fn detect() -> u8 {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx512vl") && has!("avx512dq") && has!("avx512bw") && has!("fma") {
        4
    } else if has!("avx2") && has!("fma") {
        3
    } else {
        0
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> u8 {
    0
}

/// Defines `fn NAME(args)` whose body is compiled three times (AVX-512, AVX2 + FMA, baseline)
/// and dispatched on the CPU's features.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($a: $t),*) $(-> $r)? { inner($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($a: $t),*) $(-> $r)? { inner($($a),*) }
                match level() {
                    // SAFETY: the features were detected on this CPU.
                    4 => return unsafe { v4($($a),*) },
                    3 => return unsafe { v3($($a),*) },
                    _ => {}
                }
            }
            inner($($a),*)
        }
    };
}
pub(crate) use simd_fn;

pub(crate) const LANES: usize = 16;

/// Sum with 16 independent accumulators (vectorizes; the order differs from a serial sum by
/// rounding only).
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let mut s: f32 = chunks.remainder().iter().sum();
    for a in acc {
        s += a;
    }
    s
}

/// Dot product with 16 independent accumulators.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for v in acc {
        s += v;
    }
    s
}

/// `y += a · x`.
#[inline(always)]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `exp(x)` for `x ≤ 0` (what softmax and GELU need): 2ⁿ·eʳ with n = round(x·log₂e),
/// r = x − n·ln 2 (two-part ln 2), eʳ by its degree-6 Taylor polynomial on |r| ≤ ln2/2 —
/// relative error ≈ 2e-7. Inputs below −87 give ≈ 1e-38 (callers multiply masked entries by 0).
#[inline(always)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), odd-symmetric.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp_neg(-a * a)).copysign(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

simd_fn! {
    /// `y = gelu(x + bias)` row by row (`bias.len()` columns), GELU in its exact erf form as
    /// BERT's "gelu": `0.5·u·(1 + erf(u/√2))`.
    pub fn gelu_bias(x: &[f32], bias: &[f32], y: &mut [f32]) {
        let h = bias.len().max(1);
        for (xr, yr) in x.chunks(h).zip(y.chunks_mut(h)) {
            for ((yo, &xi), &bi) in yr.iter_mut().zip(xr).zip(bias) {
                let u = xi + bi;
                *yo = 0.5 * u * (1.0 + erf(u * FRAC_1_SQRT_2));
            }
        }
    }
}

simd_fn! {
    /// `dx = g · gelu'(x + bias)`, `gelu'(u) = Φ(u) + u·φ(u)`.
    pub fn gelu_bias_backward(x: &[f32], bias: &[f32], g: &[f32], dx: &mut [f32]) {
        let h = bias.len().max(1);
        for ((xr, gr), dr) in x.chunks(h).zip(g.chunks(h)).zip(dx.chunks_mut(h)) {
            for (((d, &xi), &gi), &bi) in dr.iter_mut().zip(xr).zip(gr).zip(bias) {
                let u = xi + bi;
                let cdf = 0.5 * (1.0 + erf(u * FRAC_1_SQRT_2));
                let pdf = FRAC_1_SQRT_2PI * exp_neg(-0.5 * u * u);
                *d = gi * (cdf + u * pdf);
            }
        }
    }
}

simd_fn! {
    /// LayerNorm of each row of `x` (`w.len()` columns; biased variance, as torch):
    /// `y = (x − mean)/√(var + eps) · w + b`.
    pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
        let h = w.len().max(1);
        for (xr, yr) in x.chunks(h).zip(y.chunks_mut(h)) {
            let mean = sum(xr) / h as f32;
            let mut acc = [0f32; LANES];
            let mut c = xr.chunks_exact(LANES);
            for ch in &mut c {
                for l in 0..LANES {
                    let d = ch[l] - mean;
                    acc[l] += d * d;
                }
            }
            let mut var: f32 = c.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
            for a in acc {
                var += a;
            }
            let rstd = 1.0 / (var / h as f32 + eps).sqrt();
            for (((yo, &xi), &wi), &bi) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                *yo = (xi - mean) * rstd * wi + bi;
            }
        }
    }
}

simd_fn! {
    /// LayerNorm backward for the rows of `x`: writes `dx` and adds this block's `dw`, `db`
    /// (`dx = rstd·(g·w − mean(g·w) − x̂·mean(g·w·x̂))`, `dw += g·x̂`, `db += g`). `xhat` is
    /// scratch of one row.
    pub fn layer_norm_backward(
        x: &[f32],
        w: &[f32],
        g: &[f32],
        eps: f32,
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
        xhat: &mut [f32],
    ) {
        let h = w.len().max(1);
        let hf = h as f32;
        for ((xr, gr), dr) in x.chunks(h).zip(g.chunks(h)).zip(dx.chunks_mut(h)) {
            let mean = sum(xr) / hf;
            let mut var = 0f32;
            for (xh, &xi) in xhat.iter_mut().zip(xr) {
                *xh = xi - mean;
            }
            var += dot(xhat, xhat);
            let rstd = 1.0 / (var / hf + eps).sqrt();
            for xh in xhat.iter_mut() {
                *xh *= rstd;
            }
            // dr = g·w for now.
            for ((d, &gi), &wi) in dr.iter_mut().zip(gr).zip(w) {
                *d = gi * wi;
            }
            let m1 = sum(dr) / hf;
            let m2 = dot(dr, xhat) / hf;
            for (d, &xh) in dr.iter_mut().zip(xhat.iter()) {
                *d = (*d - m1 - xh * m2) * rstd;
            }
            for ((dwj, &gi), &xh) in dw.iter_mut().zip(gr).zip(xhat.iter()) {
                *dwj += gi * xh;
            }
            for (dbj, &gi) in db.iter_mut().zip(gr) {
                *dbj += gi;
            }
        }
    }
}

simd_fn! {
    /// `y[k] = x[k] · mask(offset + k)`.
    pub fn dropout_apply(x: &[f32], d: &Dropout, offset: u64, y: &mut [f32]) {
        for (k, (yo, &xi)) in y.iter_mut().zip(x).enumerate() {
            *yo = xi * d.factor(offset + k as u64);
        }
    }
}

/// The per-step constants of an AdamW update (see `train::optimizer`).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// Multiplies every gradient first (global-norm clipping; 1 = none).
    pub gscale: f32,
    /// `1 − lr·weight_decay` (1 for parameters without decay).
    pub decay: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step: f32,
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bc2_sqrt: f32,
}

simd_fn! {
    /// One AdamW update in place, torch.optim.AdamW's arithmetic element by element:
    /// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `p ← p·decay − step·m/(√v/bc2 + ε)`.
    /// (Vector sqrt and division round exactly as the scalar ones, so the result does not depend
    /// on which version runs.)
    pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamWStep) {
        for (((pi, &gi), mi), vi) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let gi = gi * c.gscale;
            let mn = c.b1 * *mi + (1.0 - c.b1) * gi;
            let vn = c.b2 * *vi + (1.0 - c.b2) * gi * gi;
            *mi = mn;
            *vi = vn;
            *pi = *pi * c.decay - c.step * mn / (vn.sqrt() / c.bc2_sqrt + c.eps);
        }
    }
}

simd_fn! {
    /// Σ x² (16 f32 lanes, summed in f64 at the end).
    pub fn sum_squares(x: &[f32]) -> f64 {
        let mut acc = [0f32; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                acc[l] += c[l] * c[l];
            }
        }
        let mut s: f64 = chunks.remainder().iter().map(|v| (v * v) as f64).sum();
        for a in acc {
            s += a as f64;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for k in 0..=200_000 {
            let x = (-87.0 + 87.0 * k as f64 / 200_000.0) as f32;
            let e = (x as f64).exp();
            let rel = ((exp_neg(x) as f64) - e).abs() / e;
            worst_exp = worst_exp.max(rel);
            let y = -6.0 + 12.0 * k as f64 / 200_000.0;
            let y = y as f32;
            let e = (erf(y) as f64 - libm_erf(y as f64)).abs();
            worst_erf = worst_erf.max(e);
        }
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp:e}");
        assert!(worst_erf < 5e-7, "erf absolute error {worst_erf:e}");
    }

    /// erf in f64 by its Taylor series (|x| ≤ 3) or continued fraction, for the test only.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            let mut term = a;
            let mut s = a;
            for n in 1..200 {
                term *= -a * a / n as f64;
                s += term / (2 * n + 1) as f64;
            }
            s * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(x) ≈ e^{-x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶))
            let x2 = a * a;
            let erfc = (-x2).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2));
            1.0 - erfc
        };
        r.copysign(x)
    }
}
