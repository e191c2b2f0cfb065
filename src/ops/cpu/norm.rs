//! LayerNorm on the CPU fused path (f32): `LayerNorm(a + r)` with the residual sum fused into the
//! norm (recomputed in the backward, not stored), and the plain norm. Depends on candle, rayon and
//! `kernels`.

use super::kernels as k;
use super::{last_dim, rows_per_task, slice, sum_in_order, with_data};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `LayerNorm(a + r)` with `wb = [w; b]` (`[2H]`): the residual sum of a post-norm sublayer
/// fused into the norm (the sum is recomputed in the backward, not stored); without `r`, the
/// plain norm ([`PlainLayerNorm`]).
struct AddLayerNorm {
    eps: f32,
}

/// `a + r` of one row block into `tmp` (or `a` itself without `r`).
fn sum_into<'t>(a: &'t [f32], r: Option<&[f32]>, tmp: &'t mut Vec<f32>) -> &'t [f32] {
    match r {
        None => a,
        Some(r) => {
            tmp.clear();
            tmp.extend(a.iter().zip(r).map(|(x, y)| x + y));
            tmp
        }
    }
}

impl AddLayerNorm {
    fn forward(&self, a: &[f32], r: Option<&[f32]>, wb: &[f32], la: &Layout) -> Result<Vec<f32>> {
        let h = wb.len() / 2;
        if last_dim(la) != h || wb.len() != 2 * h || r.is_some_and(|r| r.len() != a.len()) {
            bail!(
                "add+layer norm: [w; b] of {} for rows of {}",
                wb.len(),
                last_dim(la)
            );
        }
        let (w, b) = wb.split_at(h);
        let mut y = vec![0f32; a.len()];
        let chunk = rows_per_task(a.len() / h.max(1)) * h.max(1);
        y.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk))
            .enumerate()
            .for_each(|(i, (yc, ac))| {
                let mut tmp = Vec::new();
                let rc = r.map(|r| &r[i * chunk..i * chunk + ac.len()]);
                k::layer_norm(sum_into(ac, rc, &mut tmp), w, b, self.eps, yc)
            });
        Ok(y)
    }

    /// `(d(a + r), d[w; b])`.
    fn backward(
        &self,
        a: &[f32],
        r: Option<&[f32]>,
        wb: &[f32],
        g: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let h = (wb.len() / 2).max(1);
        let w = &wb[..h];
        let mut dx = vec![0f32; a.len()];
        let chunk = rows_per_task(a.len() / h) * h;
        let dwb = dx
            .par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .enumerate()
            .map(|(i, (dc, (ac, gc)))| {
                let mut dwb = vec![0f32; 2 * h];
                let (dw, db) = dwb.split_at_mut(h);
                let (mut tmp, mut xhat) = (Vec::new(), vec![0f32; h]);
                let rc = r.map(|r| &r[i * chunk..i * chunk + ac.len()]);
                let x = sum_into(ac, rc, &mut tmp);
                k::layer_norm_backward(x, w, gc, self.eps, dc, dw, db, &mut xhat);
                dwb
            })
            .collect::<Vec<_>>();
        let dwb = sum_in_order(dwb, 2 * h);
        (dx, dwb)
    }
}

impl CustomOp3 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "embtune-cpu-add-layer-norm"
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
        if l1.dims() != l2.dims() {
            bail!("add+layer norm: {:?} + {:?}", l1.dims(), l2.dims());
        }
        let what = "add+layer norm";
        let (a, r, wb) = (
            slice(s1, l1, what)?,
            slice(s2, l2, what)?,
            slice(s3, l3, what)?,
        );
        let y = self.forward(a, Some(r), wb, l1)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        a: &Tensor,
        r: &Tensor,
        wb: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb) = with_data(&[a, r, wb, g], "add+layer norm backward", |d| {
            Ok(self.backward(d[0], Some(d[1]), d[2], d[3]))
        })?;
        let dx = Tensor::from_vec(dx, a.shape(), &Device::Cpu)?;
        Ok((
            Some(dx.clone()),
            Some(dx),
            Some(Tensor::from_vec(dwb, wb.shape(), &Device::Cpu)?),
        ))
    }
}

/// [`AddLayerNorm`] without the residual: `LayerNorm(x)` with `wb = [w; b]`.
struct PlainLayerNorm(AddLayerNorm);

impl CustomOp2 for PlainLayerNorm {
    fn name(&self) -> &'static str {
        "embtune-cpu-layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, wb) = (slice(s1, l1, "layer norm")?, slice(s2, l2, "layer norm")?);
        let y = self.0.forward(x, None, wb, l1)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb) = with_data(&[x, wb, g], "layer norm backward", |d| {
            Ok(self.0.backward(d[0], None, d[1], d[2]))
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(dwb, wb.shape(), &Device::Cpu)?),
        ))
    }
}

/// `LayerNorm(a + r)·w + b` over the last dim (the residual connection and the norm in one op).
pub fn add_layer_norm(a: &Tensor, r: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let wb = Tensor::cat(&[w, b], 0)?;
    a.contiguous()?
        .apply_op3(&r.contiguous()?, &wb, AddLayerNorm { eps: eps as f32 })
}

/// `LayerNorm(x)·w + b` over the last dim.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let wb = Tensor::cat(&[w, b], 0)?;
    x.contiguous()?
        .apply_op2(&wb, PlainLayerNorm(AddLayerNorm { eps: eps as f32 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::composed;
    use crate::ops::cpu::testing::check;
    use crate::ops::test_util::{max_diff, randn};
    use candle_core::Var;

    #[test]
    fn add_layer_norm_matches_the_composed_reference() {
        let a = Var::from_tensor(&randn(&[2, 9, 32], 13, 2.0)).unwrap();
        let r = Var::from_tensor(&(randn(&[2, 9, 32], 14, 2.0) + 0.5).unwrap()).unwrap();
        let w = Var::from_tensor(&(randn(&[32], 15, 0.5) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&randn(&[32], 16, 0.5)).unwrap();
        let fused = add_layer_norm(
            a.as_tensor(),
            r.as_tensor(),
            w.as_tensor(),
            b.as_tensor(),
            1e-12,
        )
        .unwrap();
        let sum = (a.as_tensor() + r.as_tensor()).unwrap();
        let composed = composed::layer_norm(&sum, w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        check(
            &[("a", &a), ("r", &r), ("w", &w), ("b", &b)],
            &fused,
            &composed,
            1e-5,
            1e-5,
        );
    }

    #[test]
    fn plain_layer_norm_matches_the_composed_reference() {
        let x = Var::from_tensor(&(randn(&[3, 5, 24], 17, 3.0) + 0.7).unwrap()).unwrap();
        let w = Var::from_tensor(&(randn(&[24], 18, 0.5) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&randn(&[24], 19, 0.5)).unwrap();
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let composed =
            composed::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        check(
            &[("x", &x), ("w", &w), ("b", &b)],
            &fused,
            &composed,
            1e-5,
            1e-5,
        );
        assert!(max_diff(&fused, x.as_tensor()) > 0.1);
    }
}
