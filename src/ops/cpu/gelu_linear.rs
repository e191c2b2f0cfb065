//! `gelu(u)·Wᵀ + b` as one CPU op (f32): a feed-forward's activation folded into its down
//! projection. The forward computes `gelu(u)` into a temporary for the product; the backward
//! computes it again for the weight's gradient instead of keeping `[T, intermediate]` alive
//! from the forward to the backward (a training step then holds 4·H fewer floats per token and
//! layer), and applies gelu′ to the product's input gradient. The kernels are the separate ops'
//! (`dense::GeluBias` with a zero bias, `linear::Linear`), so values and gradients are bitwise
//! theirs. Dropout may be folded into the output, as in `linear_dropout`. Depends on candle,
//! `dense`, `linear`, `weight_layout` and `ops::dropout::Dropout`.

use super::dense::{gelu_rows, gelu_rows_backward};
use super::linear::Linear;
use super::weight_layout::weight_operand;
use super::{last_dim, slice, with_data};
use crate::ops::Dropout;
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};

/// With dropout on the output (folded into the product's op, as `linear_dropout`).
struct GeluLinear(Option<Dropout>);

impl CustomOp3 for GeluLinear {
    fn name(&self) -> &'static str {
        "embtune-cpu-gelu-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = gelu_rows(slice(s1, l1, "gelu-linear")?, last_dim(l1));
        let la = Layout::contiguous(l1.shape());
        Linear::plain(self.0.clone()).cpu_fwd(&CpuStorage::F32(a), &la, s2, l2, s3, l3)
    }
    fn bwd(
        &self,
        u: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = u.dim(candle_core::D::Minus1)?;
        let a = with_data(&[u], "gelu-linear backward", |d| Ok(gelu_rows(d[0], h)))?;
        let a = Tensor::from_vec(a, u.shape(), &Device::Cpu)?;
        let (da, dw, db) = Linear::plain(self.0.clone()).bwd(&a, w, b, y, g)?;
        drop(a);
        let du = match da {
            Some(da) => {
                let du = with_data(&[u, &da], "gelu-linear backward", |d| {
                    Ok(gelu_rows_backward(d[0], d[1], h))
                })?;
                Some(Tensor::from_vec(du, u.shape(), &Device::Cpu)?)
            }
            None => None,
        };
        Ok((du, dw, db))
    }
}

/// `dropout(gelu(u)·Wᵀ + b)` over the last dim of `u` (exact erf GELU; `W: [out, in]`, `b:
/// [out]`; `drop`: the mask of `ops::dropout`, or none).
pub fn gelu_linear(u: &Tensor, w: &Tensor, b: &Tensor, drop: Option<Dropout>) -> Result<Tensor> {
    u.contiguous()?
        .apply_op3(&weight_operand(w)?, &b.contiguous()?, GeluLinear(drop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::testing::check;
    use crate::ops::test_util::randn;
    use candle_core::Var;

    /// Against candle's composed ops (values and gradients of u, W and b).
    #[test]
    fn gelu_linear_matches_the_composed_ops() {
        let u = Var::from_tensor(&randn(&[2, 7, 48], 40, 1.5)).unwrap();
        let w = Var::from_tensor(&randn(&[16, 48], 41, 0.3)).unwrap();
        let b = Var::from_tensor(&randn(&[16], 42, 0.5)).unwrap();
        let fused = gelu_linear(u.as_tensor(), w.as_tensor(), b.as_tensor(), None).unwrap();
        let composed = u
            .as_tensor()
            .gelu_erf()
            .unwrap()
            .reshape((14, 48))
            .unwrap()
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .reshape((2, 7, 16))
            .unwrap();
        check(
            &[("u", &u), ("w", &w), ("b", &b)],
            &fused,
            &composed,
            1e-5,
            1e-5,
        );
    }

    /// Bitwise the separate fused ops (`cpu::gelu`, `cpu::linear`, then `cpu::dropout`):
    /// values and gradients, without and with dropout folded in.
    #[test]
    fn gelu_linear_is_bitwise_the_separate_ops() {
        let u = Var::from_tensor(&randn(&[3, 5, 64], 50, 1.5)).unwrap();
        let w = Var::from_tensor(&randn(&[24, 64], 51, 0.3)).unwrap();
        let b = Var::from_tensor(&randn(&[24], 52, 0.5)).unwrap();
        let r = randn(&[3, 5, 24], 53, 1.0);
        let run = |fused: bool, drop: Option<Dropout>| {
            let y = match fused {
                true => gelu_linear(u.as_tensor(), w.as_tensor(), b.as_tensor(), drop).unwrap(),
                false => {
                    let a = crate::ops::cpu::gelu(u.as_tensor()).unwrap();
                    let y = crate::ops::cpu::linear(&a, w.as_tensor(), b.as_tensor()).unwrap();
                    match drop {
                        Some(d) => crate::ops::cpu::dropout(&y, d).unwrap(),
                        None => y,
                    }
                }
            };
            let gs = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let grads: Vec<Vec<f32>> = [&u, &w, &b]
                .iter()
                .map(|p| v(gs.get(p.as_tensor()).unwrap()))
                .collect();
            (v(&y), grads)
        };
        for drop in [None, Some(Dropout::new(0.3, 17))] {
            let (a, b) = (run(true, drop.clone()), run(false, drop.clone()));
            let dropped = a.0.iter().filter(|&&x| x == 0.0).count();
            assert_eq!(
                dropped > 10,
                drop.is_some(),
                "{dropped} zeros of {}",
                a.0.len()
            );
            assert!(a.0 == b.0, "values differ (dropout {})", drop.is_some());
            for (i, (x, y)) in a.1.iter().zip(&b.1).enumerate() {
                assert!(x == y, "gradient {i} differs (dropout {})", drop.is_some());
            }
        }
    }
}
