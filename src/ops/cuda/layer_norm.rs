//! Fused LayerNorm with a hand-written backward, as a candle custom op: one kernel forward
//! (CUDA: kernels/embtune.cu; CPU: plain loops) instead of ~10 composed ops, and a backward of
//! one row-pass kernel plus two sums instead of the autograd of the composition (norms without a
//! fused sublayer end, e.g. the embedding LayerNorm; the layers' ends are in `sublayer.rs`,
//! attention in `attention.rs`). The CUDA training path uses it, where each op is a kernel
//! launch. Tests check forward and backward against the composed reference on the CPU. f32 only
//! (half precision callers cast up first). Depends on candle and `launch` (feature `cuda`).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

/// The f32 data of a contiguous CPU tensor (custom ops' CPU forwards).
pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("fused {what}: expected f32");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("fused {what}: expected a contiguous tensor");
    };
    Ok(&v[a..b])
}

/// [`cpu_f32`] of a custom op's three inputs.
fn cpu_f32_3<'a>(inputs: [(&'a CpuStorage, &Layout); 3], what: &str) -> Result<[&'a [f32]; 3]> {
    let [(s1, l1), (s2, l2), (s3, l3)] = inputs;
    Ok([
        cpu_f32(s1, l1, what)?,
        cpu_f32(s2, l2, what)?,
        cpu_f32(s3, l3, what)?,
    ])
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
        let [x, w, b] = cpu_f32_3([(s1, l1), (s2, l2), (s3, l3)], "layer norm")?;
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
        super::launch::layer_norm_fwd(s1, l1, s2, l2, s3, l3, self.eps)
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
        let g = g.to_dtype(DType::F32)?.contiguous()?;
        // [2, rows, h]: dx and g·x̂ from one pass over each row.
        let both = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &g,
            &LayerNormBwdOp { eps: self.eps },
        )?;
        let dx = both.get(0)?.reshape(x.shape())?;
        let dw = both.get(1)?.sum(0)?;
        let db = g.reshape((rows, h))?.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The LayerNorm backward's row pass: `(x, w, g)` → `[2, rows, h]` = `[dx; g·x̂]` with
/// `dx = (g·w − mean(g·w) − x̂·mean(g·w·x̂)) · rstd` (one kernel on CUDA).
pub struct LayerNormBwdOp {
    pub eps: f32,
}

impl CustomOp3 for LayerNormBwdOp {
    fn name(&self) -> &'static str {
        "embtune-fused-layer-norm-bwd"
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
        let [x, w, g] = cpu_f32_3([(s1, l1), (s2, l2), (s3, l3)], "layer norm backward")?;
        let h = l1.dims().last().copied().unwrap_or(1).max(1);
        let rows = x.len() / h;
        if w.len() != h || g.len() != x.len() {
            candle_core::bail!("fused layer norm backward: sizes do not match");
        }
        let mut out = vec![0f32; 2 * x.len()];
        let (dxs, gxs) = out.split_at_mut(x.len());
        for r in 0..rows {
            let (xr, gr) = (&x[r * h..(r + 1) * h], &g[r * h..(r + 1) * h]);
            let mean = xr.iter().sum::<f32>() / h as f32;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let rstd = 1.0 / (var + self.eps).sqrt();
            let xhat = |j: usize| (xr[j] - mean) * rstd;
            let m1 = (0..h).map(|j| gr[j] * w[j]).sum::<f32>() / h as f32;
            let m2 = (0..h).map(|j| gr[j] * w[j] * xhat(j)).sum::<f32>() / h as f32;
            for j in 0..h {
                dxs[r * h + j] = (gr[j] * w[j] - m1 - xhat(j) * m2) * rstd;
                gxs[r * h + j] = gr[j] * xhat(j);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((2, rows, h))))
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
        super::launch::layer_norm_bwd(s1, l1, s2, l2, s3, l3, self.eps)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::composed as ops;
    use crate::ops::test_util::{grad_diffs, max_diff, randn};
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
        for (name, d, g) in grad_diffs(&fused, &composed, &r, &[("x", &x), ("w", &w), ("b", &b)]) {
            assert!(d < 1e-4, "grad {name}: max diff {d}");
            assert!(g > 1e-3, "grad {name} is zero");
        }
    }
}
