//! The CUDA training path's attention ops: q/k/v in the heads layout with their bias (keys
//! transposed), one node each instead of two or three; and the attention probabilities as one op:
//! `dropout(softmax(scores · scale + mask))` over `[B, heads, S, S]` scores, with a one-kernel
//! backward that recomputes the softmax and the dropout mask (kernels/embtune.cu) — one graph
//! node instead of four (scale, mask add, softmax, dropout), and no probability or mask tensor
//! kept for the backward beyond the scores. The CPU forward and backward are plain loops, run by
//! `Exec::CudaFused` on a CPU device in tests against the CPU fused path. Depends on candle,
//! `ops::Dropout` (the shared hash mask), `layer_norm::cpu_f32` and `launch` (feature `cuda`).

use super::layer_norm::cpu_f32;
use crate::ops::Dropout;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Scale, dropout and the row geometry of the op.
#[derive(Debug, Clone)]
struct AttnSoftmax {
    scale: f32,
    drop: Option<Dropout>,
}

impl AttnSoftmax {
    /// Rows of `n` scores, sentences of `rows / (mask.len() / n)` rows each.
    fn geometry(&self, x: &Layout, mask_len: usize) -> Result<(usize, usize, usize)> {
        let n = x.dims().last().copied().unwrap_or(1).max(1);
        let rows = x.shape().elem_count() / n;
        let b = mask_len / n;
        if b == 0 || mask_len % n != 0 || rows % b != 0 {
            candle_core::bail!("attention softmax: a mask of {mask_len} for rows of {n}");
        }
        Ok((rows, n, rows / b))
    }

    /// The CPU loops: probabilities, or with `g` the scores' gradient.
    fn cpu(&self, x: &[f32], mask: &[f32], l: &Layout, g: Option<&[f32]>) -> Result<Vec<f32>> {
        let (rows, n, per_batch) = self.geometry(l, mask.len())?;
        let factor = |i: usize| self.drop.as_ref().map_or(1.0, |d| d.factor(i as u64));
        let mut out = vec![0f32; x.len()];
        let mut p = vec![0f32; n];
        for r in 0..rows {
            let (xr, mr) = (&x[r * n..(r + 1) * n], &mask[(r / per_batch) * n..][..n]);
            let z = |j: usize| xr[j] * self.scale + mr[j];
            let m = (0..n).map(z).fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = (0..n).map(|j| (z(j) - m).exp()).sum();
            for (j, pj) in p.iter_mut().enumerate() {
                *pj = (z(j) - m).exp() / s;
            }
            let o = &mut out[r * n..(r + 1) * n];
            match g {
                None => {
                    for j in 0..n {
                        o[j] = p[j] * factor(r * n + j);
                    }
                }
                Some(g) => {
                    let gd = |j: usize| g[r * n + j] * factor(r * n + j);
                    let dot: f32 = (0..n).map(|j| gd(j) * p[j]).sum();
                    for j in 0..n {
                        o[j] = self.scale * p[j] * (gd(j) - dot);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl CustomOp2 for AttnSoftmax {
    fn name(&self) -> &'static str {
        "embtune-attention-softmax"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let what = "attention softmax";
        let y = self.cpu(cpu_f32(s1, l1, what)?, cpu_f32(s2, l2, what)?, l1, None)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (rows, n, per_batch) = self.geometry(l1, l2.shape().elem_count())?;
        let y = super::launch::attn_softmax(
            [(s1, l1), (s2, l2)],
            None,
            (rows, n, per_batch),
            self.scale,
            self.drop.clone(),
        )?;
        Ok((y, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        mask: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.to_dtype(DType::F32)?.contiguous()?;
        let dx = x.apply_op3_no_bwd(mask, &g, &AttnSoftmaxBwd(self.clone()))?;
        Ok((Some(dx), None))
    }
}

/// `(scores, mask, g)` → the scores' gradient.
struct AttnSoftmaxBwd(AttnSoftmax);

impl CustomOp3 for AttnSoftmaxBwd {
    fn name(&self) -> &'static str {
        "embtune-attention-softmax-bwd"
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
        let what = "attention softmax backward";
        let (x, m, g) = (
            cpu_f32(s1, l1, what)?,
            cpu_f32(s2, l2, what)?,
            cpu_f32(s3, l3, what)?,
        );
        if g.len() != x.len() {
            candle_core::bail!("{what}: gradient size does not match");
        }
        let dx = self.0.cpu(x, m, l1, Some(g))?;
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
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
        let geometry = self.0.geometry(l1, l2.shape().elem_count())?;
        let dx = super::launch::attn_softmax(
            [(s1, l1), (s2, l2)],
            Some((s3, l3)),
            geometry,
            self.0.scale,
            self.0.drop.clone(),
        )?;
        Ok((dx, l1.shape().clone()))
    }
}

/// `dropout(softmax(scores · scale + mask))` over the last dim, in f32: `scores: [B, heads, S,
/// S]`, `mask`: the additive mask `[B, 1, 1, S]` (no gradient), `drop` the hash mask on the
/// contiguous probabilities (what `ops::dropout` with the same seed would apply).
pub fn attention_probs(
    scores: &Tensor,
    mask: &Tensor,
    scale: f64,
    drop: Option<Dropout>,
) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.flatten_all()?.contiguous()?;
    scores.to_dtype(DType::F32)?.contiguous()?.apply_op2(
        &mask,
        AttnSoftmax {
            scale: scale as f32,
            drop,
        },
    )
}

/// q, k or v in the heads layout with the bias added: `x: [B, S, nh·hd]` (the product without
/// bias) → `[B, nh, S, hd]`, or for keys (`kt`) `[B, nh, hd, S]`, ready for the scores
/// product: one node instead of a bias add, a transposed copy (and, for keys, a second one).
#[derive(Debug, Clone, Copy)]
struct BiasHeads {
    heads: usize,
    kt: bool,
}

impl BiasHeads {
    /// (B, S, H) of `x`'s layout, checked against the heads.
    fn dims(&self, l: &Layout) -> Result<(usize, usize, usize)> {
        let &[b, s, h] = l.dims() else {
            candle_core::bail!("bias heads: expected [B, S, H], got {:?}", l.dims());
        };
        if self.heads == 0 || h % self.heads != 0 {
            candle_core::bail!("bias heads: {h} not divisible into {} heads", self.heads);
        }
        Ok((b, s, h))
    }
    fn out_shape(&self, (b, s, h): (usize, usize, usize)) -> Shape {
        let hd = h / self.heads;
        if self.kt {
            Shape::from((b, self.heads, hd, s))
        } else {
            Shape::from((b, self.heads, s, hd))
        }
    }
    /// Index in `x` of output element `i`.
    fn src(&self, i: usize, (_, s_len, h): (usize, usize, usize)) -> usize {
        let (nh, hd) = (self.heads, h / self.heads);
        let (s, d, hh, b) = if self.kt {
            (
                i % s_len,
                (i / s_len) % hd,
                (i / (s_len * hd)) % nh,
                i / (s_len * hd * nh),
            )
        } else {
            (
                i / hd % s_len,
                i % hd,
                (i / (hd * s_len)) % nh,
                i / (hd * s_len * nh),
            )
        };
        (b * s_len + s) * h + hh * hd + d
    }
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn scalars(&self, (_, s, h): (usize, usize, usize)) -> [u64; 4] {
        [h as u64, s as u64, self.heads as u64, u64::from(self.kt)]
    }
}

impl CustomOp2 for BiasHeads {
    fn name(&self) -> &'static str {
        "embtune-bias-heads"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(l1)?;
        let (x, bias) = (
            cpu_f32(s1, l1, "bias heads")?,
            cpu_f32(s2, l2, "bias heads")?,
        );
        if bias.len() != dims.2 {
            candle_core::bail!(
                "bias heads: a bias of {} for rows of {}",
                bias.len(),
                dims.2
            );
        }
        let y = (0..x.len())
            .map(|i| {
                let j = self.src(i, dims);
                x[j] + bias[j % dims.2]
            })
            .collect();
        Ok((CpuStorage::F32(y), self.out_shape(dims)))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dims = self.dims(l1)?;
        let y = super::launch::bias_heads(Some((s2, l2)), (s1, l1), self.scalars(dims))?;
        Ok((y, self.out_shape(dims)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.to_dtype(x.dtype())?.contiguous()?;
        let dx = g.apply_op1_no_bwd(&HeadsBack {
            op: *self,
            x: self.dims(x.layout())?,
        })?;
        let h = bias.elem_count();
        let db = dx.reshape((dx.elem_count() / h.max(1), h))?.sum(0)?;
        Ok((Some(dx), Some(db.to_dtype(bias.dtype())?)))
    }
}

/// The heads layout's gradient moved back to `[B, S, H]`.
struct HeadsBack {
    op: BiasHeads,
    x: (usize, usize, usize),
}

impl candle_core::CustomOp1 for HeadsBack {
    fn name(&self) -> &'static str {
        "embtune-heads-back"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = cpu_f32(s, l, "heads backward")?;
        let mut dx = vec![0f32; g.len()];
        for (i, v) in g.iter().enumerate() {
            dx[self.op.src(i, self.x)] = *v;
        }
        Ok((CpuStorage::F32(dx), Shape::from(self.x)))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dx = super::launch::bias_heads(None, (s, l), self.op.scalars(self.x))?;
        Ok((dx, Shape::from(self.x)))
    }
}

/// `x + bias` in the heads layout `[B, nh, S, hd]` (`keys_transposed`: `[B, nh, hd, S]`), for
/// `x: [B, S, nh·hd]` and `bias: [nh·hd]` (cast to x's dtype).
pub fn bias_heads(
    x: &Tensor,
    bias: &Tensor,
    heads: usize,
    keys_transposed: bool,
) -> Result<Tensor> {
    x.contiguous()?.apply_op2(
        &bias.to_dtype(x.dtype())?.contiguous()?,
        BiasHeads {
            heads,
            kt: keys_transposed,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{grad_diffs, max_diff, randn};
    use candle_core::Var;

    /// The one op equals scale → mask add → softmax → dropout composed from candle ops and the
    /// dropout op (same seed), in value and in the scores' gradient, with and without dropout;
    /// masked keys get probability 0.
    #[test]
    fn attention_probs_match_the_composed_ops() {
        let (b, h, s) = (3, 4, 9);
        let x = Var::from_tensor(&randn(&[b, h, s, s], 41, 5.0)).unwrap();
        let keep: Vec<f32> = (0..b * s)
            .map(|i| if i % s < s - i / s { 1.0 } else { 0.0 })
            .collect();
        let am = Tensor::from_vec(keep.clone(), (b, s), &candle_core::Device::Cpu).unwrap();
        let mask = crate::ops::composed::additive_attention_mask(&am, DType::F32).unwrap();
        let r = randn(&[b, h, s, s], 42, 1.0);
        let scale = 0.125;
        for p in [0.0, 0.3] {
            let drop = (p > 0.0).then(|| Dropout::new(p, 5));
            let fused = attention_probs(x.as_tensor(), &mask, scale, drop).unwrap();
            let z = (x.as_tensor() * scale)
                .unwrap()
                .broadcast_add(&mask)
                .unwrap();
            let sm = crate::ops::composed::softmax_last_dim(&z).unwrap();
            let composed = if p > 0.0 {
                crate::ops::cpu::dropout::apply(&sm, Dropout::new(p, 5)).unwrap()
            } else {
                sm
            };
            assert!(max_diff(&fused, &composed) < 1e-6, "p {p}");
            let probs: Vec<f32> = fused.flatten_all().unwrap().to_vec1().unwrap();
            for (i, v) in probs.iter().enumerate() {
                let (row, j) = (i / s, i % s);
                if keep[(row / (h * s)) * s + j] == 0.0 {
                    assert_eq!(*v, 0.0, "masked key {j} of row {row}");
                }
            }
            let (_, d, g) = grad_diffs(&fused, &composed, &r, &[("x", &x)]).remove(0);
            assert!(d < 1e-5, "p {p}: {d}");
            assert!(g > 1e-3);
        }
    }

    /// The heads layout with bias equals candle's bias add + reshape + transpose (+ transpose
    /// for keys), and its gradients (x and bias) equal the composed autograd.
    #[test]
    fn bias_heads_match_reshape_and_transpose() {
        let (b, s, nh, hd) = (2, 5, 3, 4);
        let x = Var::from_tensor(&randn(&[b, s, nh * hd], 51, 2.0)).unwrap();
        let bias = Var::from_tensor(&randn(&[nh * hd], 52, 1.0)).unwrap();
        for kt in [false, true] {
            let fused = bias_heads(x.as_tensor(), bias.as_tensor(), nh, kt).unwrap();
            let mut composed = x
                .as_tensor()
                .broadcast_add(bias.as_tensor())
                .unwrap()
                .reshape((b, s, nh, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            if kt {
                composed = composed.transpose(2, 3).unwrap();
            }
            let composed = composed.contiguous().unwrap();
            assert_eq!(fused.dims(), composed.dims());
            assert!(max_diff(&fused, &composed) == 0.0, "kt {kt}");
            let r = randn(fused.dims(), 53, 1.0);
            for (name, d, _) in grad_diffs(&fused, &composed, &r, &[("x", &x), ("bias", &bias)]) {
                assert!(d < 1e-5, "kt {kt}, grad {name}: {d}");
            }
        }
    }
}
