//! Fused LayerNorm and softmax with hand-written backwards, as candle custom ops: one kernel
//! forward (CUDA: kernels/embtune.cu; CPU: plain loops) instead of ~10 composed ops, and a
//! backward of ~12 composed ops instead of the autograd of the composition. The training path
//! uses them on CUDA, where each op is a kernel launch; the CPU keeps the composed versions in
//! `ops.rs` (its numbers match sentence-transformers). Tests check forward and backward against
//! the composed reference on the CPU. f32 only (half precision callers cast up first).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("fused {what}: expected f32");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("fused {what}: expected a contiguous tensor");
    };
    Ok(&v[a..b])
}

/// `LayerNorm(x) · w + b` over the last dim (biased variance, as torch).
pub struct LayerNormOp {
    pub eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "embtune-fused-layer-norm"
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
        let (x, w, b) = (
            cpu_f32(s1, l1, "layer norm")?,
            cpu_f32(s2, l2, "layer norm")?,
            cpu_f32(s3, l3, "layer norm")?,
        );
        let h = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks(h).zip(y.chunks_mut(h)) {
            let mean = xr.iter().sum::<f32>() / h as f32;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let rstd = 1.0 / (var + self.eps).sqrt();
            for j in 0..h {
                yr[j] = (xr[j] - mean) * rstd * w[j] + b[j];
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda_ops::layer_norm_fwd(s1, l1, s2, l2, s3, l3, self.eps)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = x.dim(D::Minus1)?;
        let rows = x.elem_count() / h.max(1);
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let rstd = (var + self.eps as f64)?.sqrt()?.recip()?;
        let xhat = xc.broadcast_mul(&rstd)?;
        let gw = g.broadcast_mul(w)?;
        let m1 = gw.mean_keepdim(D::Minus1)?;
        let m2 = (&gw * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = gw
            .broadcast_sub(&m1)?
            .sub(&xhat.broadcast_mul(&m2)?)?
            .broadcast_mul(&rstd)?;
        let dw = (g * &xhat)?.reshape((rows, h))?.sum(0)?;
        let db = g.reshape((rows, h))?.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Softmax over the last dim.
pub struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "embtune-fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "softmax")?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks(n).zip(y.chunks_mut(n)) {
            let m = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0f32;
            for (o, v) in yr.iter_mut().zip(xr) {
                *o = (v - m).exp();
                s += *o;
            }
            yr.iter_mut().for_each(|o| *o /= s);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda_ops::softmax_fwd(s, l)
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((g.broadcast_sub(&dot)? * y)?))
    }
}

fn f32_contiguous(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)?.contiguous()
}

/// Fused LayerNorm in f32 (inputs cast up; the result is f32).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    f32_contiguous(x)?.apply_op3(
        &f32_contiguous(w)?,
        &f32_contiguous(b)?,
        LayerNormOp { eps: eps as f32 },
    )
}

/// Fused softmax over the last dim in f32 (input cast up; the result is f32).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    f32_contiguous(x)?.apply_op1(SoftmaxOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops;
    use crate::model::test_util::{max_diff, randn};
    use candle_core::Var;

    /// Forward and every backward of the fused LayerNorm equal the composed reference's
    /// (autograd through `ops::layer_norm`), on a loss that weights each output differently.
    #[test]
    fn fused_layer_norm_matches_the_composed_reference() {
        let x = Var::from_tensor(&(randn(&[3, 5, 24], 1, 3.0) + 0.7).unwrap()).unwrap();
        let w = Var::from_tensor(&(randn(&[24], 2, 0.5) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&randn(&[24], 3, 0.5)).unwrap();
        let r = randn(&[3, 5, 24], 4, 1.0);
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        let composed = ops::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-5);
        let gf = (&fused * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (&composed * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let (a, c) = (
                gf.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            let d = max_diff(a, c);
            assert!(d < 1e-4, "grad {name}: max diff {d}");
            assert!(
                max_diff(a, &a.zeros_like().unwrap()) > 1e-3,
                "grad {name} is zero"
            );
        }
    }

    #[test]
    fn fused_softmax_matches_the_composed_reference() {
        let x = Var::from_tensor(&randn(&[2, 3, 7, 9], 5, 6.0)).unwrap();
        let r = randn(&[2, 3, 7, 9], 6, 1.0);
        let fused = softmax_last_dim(x.as_tensor()).unwrap();
        let composed = ops::softmax_last_dim(x.as_tensor()).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-6);
        let gf = (&fused * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (&composed * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, c) = (
            gf.get(x.as_tensor()).unwrap(),
            gc.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(a, c) < 1e-5, "{}", max_diff(a, c));
        assert!(max_diff(a, &a.zeros_like().unwrap()) > 1e-3);
    }
}
