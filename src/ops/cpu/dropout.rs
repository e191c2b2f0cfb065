//! Inverted dropout with a counter-based mask (`ops::Dropout`): the backward recomputes the
//! mask from the seed. Also the CUDA path's dropout (`cuda_fwd`: the same mask for the same
//! seed), so CPU and GPU runs of one seed drop the same elements. Depends on candle, rayon,
//! `kernels` and `ops::cuda::launch` (feature `cuda`).

use super::kernels as k;
use super::slice;
use crate::ops::Dropout;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Inverted dropout with a counter-based mask (the backward recomputes it from the seed).
struct DropoutOp(Dropout);

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "embtune-cpu-dropout"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "dropout")?;
        let width = l.dims().last().copied().unwrap_or(1);
        Ok((
            CpuStorage::F32(masked(x, width, &self.0)?),
            l.shape().clone(),
        ))
    }
    /// The same mask on the GPU (`ops::cuda::launch::dropout_fwd`), any float dtype; a packed
    /// batch's rows with their padded positions' counters, as above.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((
            crate::ops::cuda::launch::dropout_fwd(s, l, self.0.clone())?,
            l.shape().clone(),
        ))
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1(DropoutOp(self.0.clone()))?))
    }
}

/// `x` (rows of `width` values) times the mask of `d`: what the op's forward and backward
/// compute, also for ops that fold dropout into their output (`linear`).
pub(super) fn masked(x: &[f32], width: usize, d: &Dropout) -> Result<Vec<f32>> {
    let mut y = vec![0f32; x.len()];
    if let Some(p) = &d.packed {
        // Rows of a packed batch: sequence b's rows are rows b·S.. of the padded layout, so
        // its elements use that layout's counters (the same mask as a padded pass).
        if p.tokens() * width != x.len() {
            candle_core::bail!(
                "dropout: {} values for a packed batch of {} tokens × {width}",
                x.len(),
                p.tokens()
            );
        }
        p.split_rows_mut(&mut y, width)
            .into_par_iter()
            .enumerate()
            .for_each(|(b, yc)| {
                let xc = &x[p.start(b) * width..][..yc.len()];
                k::dropout_apply(xc, d, (p.padded_row(b, 0) * width) as u64, yc)
            });
        return Ok(y);
    }
    let chunk = 16 * 1024;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .enumerate()
        .for_each(|(i, (yc, xc))| k::dropout_apply(xc, d, (i * chunk) as u64, yc));
    Ok(y)
}

/// `x` times the mask of `d` (f32 on the CPU; any float dtype on CUDA).
pub fn apply(x: &Tensor, d: Dropout) -> Result<Tensor> {
    x.contiguous()?.apply_op1(DropoutOp(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{max_diff, randn};
    use candle_core::{Var, D};

    #[test]
    fn dropout_keeps_the_expected_share_and_its_backward_uses_the_same_mask() {
        let x = Var::from_tensor(&(randn(&[64, 500], 9, 1.0) + 2.0).unwrap()).unwrap();
        let y = apply(x.as_tensor(), Dropout::new(0.1, 77)).unwrap();
        let kept = y
            .ne(0f32)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((kept - 0.9).abs() < 0.01, "kept {kept}");
        // Same seed, same mask; another seed, another mask.
        assert_eq!(
            max_diff(&y, &apply(x.as_tensor(), Dropout::new(0.1, 77)).unwrap()),
            0.0
        );
        assert!(max_diff(&y, &apply(x.as_tensor(), Dropout::new(0.1, 78)).unwrap()) > 0.0);
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap();
        let expect = (y
            .ne(0f32)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            * (1.0 / 0.9))
            .unwrap();
        assert!(max_diff(gx, &expect) < 1e-6);
        assert!(
            (y.sum(D::Minus1)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                / x.as_tensor().sum_all().unwrap().to_scalar::<f32>().unwrap()
                - 1.0)
                .abs()
                < 0.02
        );
    }
}
