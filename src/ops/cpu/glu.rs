//! Gated linear units on the CPU fused path: rows `[a | b]` (or `[b | a]`) of `[N, 2I]` become
//! `act(a)·b` `[N, I]` (GeGLU with erf or tanh GELU, SwiGLU with SiLU, ReGLU), one pass each way; the
//! backward recomputes `act(a)` and `act'(a)` from the input: `da = g·b·act'(a)`, `db =
//! g·act(a)`. Kernels compiled per SIMD level (`kernels::simd_fn`). Depends on candle, rayon,
//! `kernels` and `ops::Act`.

use super::kernels::{erf, exp_neg, level, simd_fn};
use super::{rows_per_task, slice, with_data};
use crate::ops::Act;
use candle_core::{bail, CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
/// √(2/π), GELU's tanh form.
const SQRT_2_PI: f32 = 0.797_884_6;

/// `(act(u), act'(u))`.
#[inline(always)]
fn act_and_slope(act: Act, u: f32) -> (f32, f32) {
    match act {
        Act::Gelu => {
            let cdf = 0.5 * (1.0 + erf(u * FRAC_1_SQRT_2));
            let pdf = FRAC_1_SQRT_2PI * exp_neg(-0.5 * u * u);
            (u * cdf, cdf + u * pdf)
        }
        Act::GeluTanh => {
            let z = SQRT_2_PI * (u + 0.044_715 * u * u * u);
            let e = exp_neg(-2.0 * z.abs());
            let t = ((1.0 - e) / (1.0 + e)).copysign(z);
            let dz = SQRT_2_PI * (1.0 + 3.0 * 0.044_715 * u * u);
            (
                0.5 * u * (1.0 + t),
                0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * dz,
            )
        }
        Act::Silu => {
            // sigmoid without overflow: e = exp(−|u|).
            let e = exp_neg(-u.abs());
            let sig = if u >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            (u * sig, sig * (1.0 + u * (1.0 - sig)))
        }
        Act::Relu => {
            if u > 0.0 {
                (u, 1.0)
            } else {
                (0.0, 0.0)
            }
        }
    }
}

simd_fn! {
    /// `y = act(a)·b` for each row `[a | b]` (`act_first`) or `[b | a]` of `x` (`cols` = I
    /// values per half).
    fn glu_rows(x: &[f32], cols: usize, act: Act, act_first: bool, y: &mut [f32]) {
        for (xr, yr) in x.chunks(2 * cols).zip(y.chunks_mut(cols)) {
            let (a, b) = halves(xr, cols, act_first);
            for ((yo, &u), &v) in yr.iter_mut().zip(a).zip(b) {
                *yo = act_and_slope(act, u).0 * v;
            }
        }
    }
}

simd_fn! {
    /// `dx = [g·b·act'(a) | g·act(a)]` (halves in `x`'s order) for each row of `x` and row `g`
    /// of the output gradient.
    fn glu_rows_backward(x: &[f32], g: &[f32], cols: usize, act: Act, act_first: bool, dx: &mut [f32]) {
        for ((xr, gr), dr) in x.chunks(2 * cols).zip(g.chunks(cols)).zip(dx.chunks_mut(2 * cols)) {
            let (a, b) = halves(xr, cols, act_first);
            let (first, second) = dr.split_at_mut(cols);
            let (da, db) = if act_first { (first, second) } else { (second, first) };
            for j in 0..cols {
                let (f, slope) = act_and_slope(act, a[j]);
                da[j] = gr[j] * b[j] * slope;
                db[j] = gr[j] * f;
            }
        }
    }
}

/// `(a, b)`: the activated half and the linear one of a row.
#[inline(always)]
fn halves(row: &[f32], cols: usize, act_first: bool) -> (&[f32], &[f32]) {
    let (first, second) = row.split_at(cols);
    if act_first {
        (first, second)
    } else {
        (second, first)
    }
}

struct Glu {
    act: Act,
    act_first: bool,
}

/// `(rows, I)` of an input `[.., 2I]`.
fn geometry(l: &Layout) -> Result<(usize, usize)> {
    let w = l.dims().last().copied().unwrap_or(0);
    if w == 0 || w % 2 != 0 {
        bail!("glu: the last dim {w} is not two equal halves");
    }
    Ok((l.shape().elem_count() / w, w / 2))
}

impl CustomOp1 for Glu {
    fn name(&self) -> &'static str {
        "embtune-cpu-glu"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, cols) = geometry(l1)?;
        let x = slice(s1, l1, "glu")?;
        let mut y = vec![0f32; rows * cols];
        let per = rows_per_task(rows);
        y.par_chunks_mut(per * cols)
            .zip(x.par_chunks(per * 2 * cols))
            .for_each(|(yc, xc)| glu_rows(xc, cols, self.act, self.act_first, yc));
        let mut dims = l1.dims().to_vec();
        if let Some(d) = dims.last_mut() {
            *d = cols;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (rows, cols) = geometry(x.layout())?;
        let dx = with_data(&[x, g], "glu backward", |d| {
            let mut dx = vec![0f32; rows * 2 * cols];
            let per = rows_per_task(rows);
            dx.par_chunks_mut(per * 2 * cols)
                .zip(d[0].par_chunks(per * 2 * cols))
                .zip(d[1].par_chunks(per * cols))
                .for_each(|((dc, xc), gc)| {
                    glu_rows_backward(xc, gc, cols, self.act, self.act_first, dc)
                });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?))
    }
}

/// `act(x[.., :I]) · x[.., I:]` for `x: [.., 2I]` (f32) → `[.., I]`; the halves swapped when
/// not `act_first`.
pub fn glu(x: &Tensor, act: Act, act_first: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Glu { act, act_first })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::testing::check;
    use crate::ops::glu::glu_composed;
    use crate::ops::test_util::randn;
    use candle_core::Var;

    /// Every activation, either half activated: the fused op and the composed ops agree in
    /// value and gradient.
    #[test]
    fn glu_matches_the_composed_ops_for_every_activation() {
        for act in [Act::Gelu, Act::GeluTanh, Act::Silu, Act::Relu] {
            for act_first in [true, false] {
                let x = Var::from_tensor(&randn(&[3, 5, 2 * 19], 4, 3.0)).unwrap();
                let fused = glu(x.as_tensor(), act, act_first).unwrap();
                let composed = glu_composed(x.as_tensor(), act, act_first).unwrap();
                check(&[("x", &x)], &fused, &composed, 2e-6, 2e-5);
            }
        }
    }
}
