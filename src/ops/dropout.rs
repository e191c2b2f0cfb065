//! Dropout with counter-based masks: element `i` of a call seeded `seed` is kept when
//! `hash(seed, i)` exceeds `p·2³²` — the same function on the CPU (`ops::cpu`), in the CUDA
//! kernels (kernels/embtune.cu) and on the composed path, so every path drops the same elements
//! for the same seed and a backward recomputes the mask instead of storing it. [`dropout`]
//! dispatches on the [`Exec`]. Depends on candle and rayon.

use super::{Exec, Packed};
use candle_core::{Result, Tensor};
use std::sync::Arc;

/// Counter-based random bits: splitmix64 of `(seed, index)` — the same function as the CUDA
/// kernels (kernels/embtune.cu), so a seed gives the same dropout mask on either device.
#[inline(always)]
pub fn hash(seed: u64, i: u64) -> u32 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 32) as u32
}

/// Inverted-dropout parameters of one call: keep an element when its random bits exceed
/// `threshold` (= p·2³²) and scale kept ones by 1/(1 − p). On a packed batch (`packed`) the
/// counters are those of the padded layout of the same sequences (see `ops::packed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    pub seed: u64,
    pub threshold: u32,
    pub scale: f32,
    /// The packed layout of the rows this dropout applies to (none: a padded batch).
    pub packed: Option<Arc<Packed>>,
}

impl Dropout {
    pub fn new(p: f64, seed: u64) -> Self {
        Self {
            seed,
            threshold: (p * u32::MAX as f64) as u32,
            scale: (1.0 / (1.0 - p)) as f32,
            packed: None,
        }
    }

    /// The same dropout on the rows of a packed batch.
    pub fn on_packed(mut self, packed: Option<Arc<Packed>>) -> Self {
        self.packed = packed;
        self
    }
    /// The mask factor of element `i`: `scale` or 0.
    #[inline(always)]
    pub fn factor(&self, i: u64) -> f32 {
        if hash(self.seed, i) > self.threshold {
            self.scale
        } else {
            0.0
        }
    }
}

/// `x · mask` with the mask of `d` over `x`'s elements in row-major order (identity for `None`).
/// CpuFused / CudaFused: one op whose backward is the same op on the gradient (on a CUDA device
/// the kernel draws the mask). Composed: on the CPU the mask is built on the host and multiplied
/// (the same mask); on CUDA candle's generator draws it (`EMBTUNE_CUDA_FUSED=0`: candle's ops only).
pub fn dropout(exec: Exec, x: &Tensor, d: Option<Dropout>) -> Result<Tensor> {
    let Some(d) = d else {
        return Ok(x.clone());
    };
    if d.packed.is_some() && exec == Exec::Composed {
        candle_core::bail!("dropout: packed batches run on the fused paths only");
    }
    match exec {
        Exec::CpuFused | Exec::CudaFused => super::cpu::dropout::apply(x, d),
        Exec::Composed if x.device().is_cuda() => on_device(x, d),
        Exec::Composed => {
            use rayon::prelude::*;
            let n = x.elem_count();
            let mut mask = vec![0f32; n];
            mask.par_chunks_mut(16 * 1024)
                .enumerate()
                .for_each(|(c, m)| {
                    let base = (c * 16 * 1024) as u64;
                    for (k, v) in m.iter_mut().enumerate() {
                        *v = d.factor(base + k as u64);
                    }
                });
            let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
            x.mul(&mask)
        }
    }
}

/// Inverted dropout with candle's device generator, re-seeded with the call's seed (so the same
/// seed gives the same mask on that device, not the hash mask).
fn on_device(x: &Tensor, d: Dropout) -> Result<Tensor> {
    x.device().set_seed(d.seed)?;
    let p = d.threshold as f64 / u32::MAX as f64;
    let u = Tensor::rand(0f32, 1f32, x.shape(), x.device())?;
    let mask = (u.ge(p)?.to_dtype(x.dtype())? * (d.scale as f64))?;
    x.mul(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_hash_matches_the_cuda_kernel_definition() {
        // splitmix64(seed + (i+1)·golden), high 32 bits — values computed by hand from the
        // definition in kernels/embtune.cu.
        let z = 7u64.wrapping_add(1u64.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        assert_eq!(hash(7, 0), ((z ^ (z >> 31)) >> 32) as u32);
        let d = Dropout::new(0.1, 42);
        let kept = (0..100_000u64).filter(|&i| d.factor(i) != 0.0).count();
        assert!(
            (89_000..91_000).contains(&kept),
            "kept {kept} of 100000 at p = 0.1"
        );
    }

    /// The composed path's host mask is the fused op's mask: same seed, same output.
    #[test]
    fn composed_and_fused_dropout_draw_the_same_mask() {
        let x = crate::ops::test_util::randn(&[7, 33, 19], 3, 2.0);
        let d = Some(Dropout::new(0.2, 1234));
        let a = dropout(Exec::Composed, &x, d.clone()).unwrap();
        let b = dropout(Exec::CpuFused, &x, d).unwrap();
        assert_eq!(crate::ops::test_util::max_diff(&a, &b), 0.0);
        assert!(crate::ops::test_util::max_diff(&a, &x) > 0.1);
    }
}
