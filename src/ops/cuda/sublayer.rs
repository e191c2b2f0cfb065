//! The CUDA training path's fused sublayer ops (candle custom ops; kernels in
//! kernels/embtune.cu): `gelu(x + bias)` for the intermediate layer, and the end of each
//! sublayer, `LayerNorm(dropout(x + bias) + residual)`, each one node in the autograd graph
//! instead of three or four (candle's backprop adds a zero tensor and an add per graph edge, so
//! nodes cost launches). Their CPU forwards are plain loops: `Exec::CudaFused` on a CPU device
//! runs them so tests check values, gradients and dropout masks against the CPU fused path.
//! Depends on candle, `ops::Dropout` (the shared hash mask) and `launch` (feature `cuda`).

use crate::ops::Dropout;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

use super::layer_norm::cpu_f32 as f32s;

fn gelu_grad(x: f64) -> f64 {
    0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2))
        + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// `gelu(x + bias)`, exact (erf) GELU, `bias: [h]` over the last dim; any float dtype on CUDA
/// (computed in f32), f32 on the CPU.
struct GeluBiasOp;

impl CustomOp2 for GeluBiasOp {
    fn name(&self) -> &'static str {
        "embtune-gelu-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (f32s(s1, l1, "gelu bias")?, f32s(s2, l2, "gelu bias")?);
        let h = b.len().max(1);
        let y = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let z = (v + b[i % h]) as f64;
                (0.5 * z * (1.0 + candle_core::cpu::erf::erf_f64(z / std::f64::consts::SQRT_2)))
                    as f32
            })
            .collect();
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
        let h = l2.shape().elem_count() as u64;
        let out = super::launch::gelu_bias(false, &[(s1, l1), (s2, l2)], h)?;
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.to_dtype(x.dtype())?.contiguous()?;
        let dx = x.apply_op3_no_bwd(bias, &g, &GeluBiasBwdOp)?;
        let h = bias.elem_count();
        let db = dx
            .reshape((dx.elem_count() / h.max(1), h))?
            .sum(0)?
            .to_dtype(bias.dtype())?;
        Ok((Some(dx), Some(db)))
    }
}

/// `(x, bias, g)` → `g · gelu'(x + bias)`.
struct GeluBiasBwdOp;

impl CustomOp3 for GeluBiasBwdOp {
    fn name(&self) -> &'static str {
        "embtune-gelu-bias-bwd"
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
        let what = "gelu bias backward";
        let (x, b, g) = (
            f32s(s1, l1, what)?,
            f32s(s2, l2, what)?,
            f32s(s3, l3, what)?,
        );
        let h = b.len().max(1);
        let dx = x
            .iter()
            .zip(g)
            .enumerate()
            .map(|(i, (&v, &gv))| (gv as f64 * gelu_grad((v + b[i % h]) as f64)) as f32)
            .collect();
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
        let h = l2.shape().elem_count() as u64;
        let out = super::launch::gelu_bias(true, &[(s1, l1), (s2, l2), (s3, l3)], h)?;
        Ok((out, l1.shape().clone()))
    }
}

/// `gelu(x + bias)` over the last dim of `x` (`bias: [h]`, cast to x's dtype).
pub fn gelu_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&bias.to_dtype(x.dtype())?.contiguous()?, GeluBiasOp)
}

/// The end of a BERT sublayer, f32: `LayerNorm(drop(x + bias) + res)` with `p = [bias | w | b]`.
struct BiasDropoutAddLn {
    eps: f32,
    drop: Option<Dropout>,
}

impl BiasDropoutAddLn {
    /// The CPU loops (for checks): `[rows·h]` output, or with `g` the backward's
    /// `[3, rows, h]` = `[d(sum); d(x); g·x̂]`.
    fn cpu(&self, x: &[f32], r: &[f32], p: &[f32], g: Option<&[f32]>) -> Result<Vec<f32>> {
        let h = p.len() / 3;
        if h == 0 || p.len() != 3 * h || x.len() % h != 0 || r.len() != x.len() {
            candle_core::bail!("bias-dropout-add-layer-norm: sizes do not match");
        }
        let (bias, w, b) = (&p[..h], &p[h..2 * h], &p[2 * h..]);
        let rows = x.len() / h;
        // Element (row, j) uses counter base(row) + j: row · h, or on a packed batch the padded
        // position's (as the kernel's `base` array).
        let bases = match self.drop.as_ref().and_then(|d| d.packed.as_ref()) {
            Some(p) if p.tokens() == rows => Some(p.counter_bases(h)),
            Some(p) => candle_core::bail!(
                "bias-dropout-add-layer-norm: {rows} rows for a packed batch of {}",
                p.tokens()
            ),
            None => None,
        };
        let base = |row: usize| bases.as_ref().map_or((row * h) as u64, |b| b[row]);
        let factor = |row: usize, j: usize| {
            self.drop
                .as_ref()
                .map_or(1.0, |d| d.factor(base(row) + j as u64))
        };
        let mut out = vec![0f32; if g.is_some() { 3 * x.len() } else { x.len() }];
        let mut s = vec![0f32; h];
        for row in 0..rows {
            let o = row * h;
            for j in 0..h {
                s[j] = (x[o + j] + bias[j]) * factor(row, j) + r[o + j];
            }
            let mean = s.iter().sum::<f32>() / h as f32;
            let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let rstd = 1.0 / (var + self.eps).sqrt();
            let xhat = |j: usize| (s[j] - mean) * rstd;
            match g {
                None => {
                    for j in 0..h {
                        out[o + j] = xhat(j) * w[j] + b[j];
                    }
                }
                Some(g) => {
                    let gr = &g[o..o + h];
                    let m1 = (0..h).map(|j| gr[j] * w[j]).sum::<f32>() / h as f32;
                    let m2 = (0..h).map(|j| gr[j] * w[j] * xhat(j)).sum::<f32>() / h as f32;
                    let n = x.len();
                    for j in 0..h {
                        let d = (gr[j] * w[j] - m1 - xhat(j) * m2) * rstd;
                        out[o + j] = d;
                        out[n + o + j] = d * factor(row, j);
                        out[2 * n + o + j] = gr[j] * xhat(j);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl CustomOp3 for BiasDropoutAddLn {
    fn name(&self) -> &'static str {
        "embtune-bias-dropout-add-layer-norm"
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
        let what = "bias-dropout-add-layer-norm";
        let y = self.cpu(
            f32s(s1, l1, what)?,
            f32s(s2, l2, what)?,
            f32s(s3, l3, what)?,
            None,
        )?;
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
        let y = super::launch::bias_dropout_add_ln(
            [(s1, l1), (s2, l2), (s3, l3)],
            None,
            self.eps,
            self.drop.clone(),
        )?;
        Ok((y, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        r: &Tensor,
        p: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = x.dim(D::Minus1)?;
        let rows = x.elem_count() / h.max(1);
        let g = g.to_dtype(DType::F32)?.contiguous()?;
        let op = BiasDropoutAddLnBwd {
            eps: self.eps,
            drop: self.drop.clone(),
            p: p.clone(),
        };
        let all = x.apply_op3_no_bwd(r, &g, &op)?;
        let ds = all.get(0)?.reshape(x.shape())?;
        let dx = all.get(1)?;
        let dp = Tensor::cat(
            &[
                dx.sum(0)?,
                all.get(2)?.sum(0)?,
                g.reshape((rows, h))?.sum(0)?,
            ],
            0,
        )?;
        Ok((Some(dx.reshape(x.shape())?), Some(ds), Some(dp)))
    }
}

/// The backward's row pass over `(x, res, g)`, with `p` held (custom ops take three inputs).
struct BiasDropoutAddLnBwd {
    eps: f32,
    drop: Option<Dropout>,
    p: Tensor,
}

impl BiasDropoutAddLnBwd {
    fn shape(&self, x: &Layout) -> Shape {
        let h = x.dims().last().copied().unwrap_or(1).max(1);
        Shape::from((3, x.shape().elem_count() / h, h))
    }
}

impl CustomOp3 for BiasDropoutAddLnBwd {
    fn name(&self) -> &'static str {
        "embtune-bias-dropout-add-layer-norm-bwd"
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
        let what = "bias-dropout-add-layer-norm backward";
        let p = self.p.contiguous()?;
        let (ps, pl) = p.storage_and_layout();
        let candle_core::Storage::Cpu(pc) = &*ps else {
            candle_core::bail!("{what}: parameters not on the CPU");
        };
        let out = BiasDropoutAddLn {
            eps: self.eps,
            drop: self.drop.clone(),
        }
        .cpu(
            f32s(s1, l1, what)?,
            f32s(s2, l2, what)?,
            f32s(pc, pl, what)?,
            Some(f32s(s3, l3, what)?),
        )?;
        Ok((CpuStorage::F32(out), self.shape(l1)))
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
        let p = self.p.contiguous()?;
        let (ps, pl) = p.storage_and_layout();
        let candle_core::Storage::Cuda(pc) = &*ps else {
            candle_core::bail!("bias-dropout-add-layer-norm backward: parameters not on the GPU");
        };
        let out = super::launch::bias_dropout_add_ln(
            [(s1, l1), (s2, l2), (pc, pl)],
            Some((s3, l3)),
            self.eps,
            self.drop.clone(),
        )?;
        Ok((out, self.shape(l1)))
    }
}

/// `LayerNorm(dropout(x + bias) + res)` in f32 over the last dim: `bias`, `w`, `b` of size h;
/// `drop` the dropout mask (the same as `ops::dropout` with its seed draws on x + bias).
pub fn bias_dropout_add_ln(
    x: &Tensor,
    bias: &Tensor,
    res: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
    drop: Option<Dropout>,
) -> Result<Tensor> {
    let f = |t: &Tensor| t.to_dtype(DType::F32)?.contiguous();
    let p = Tensor::cat(&[f(bias)?, f(w)?, f(b)?], 0)?;
    f(x)?.apply_op3(
        &f(res)?,
        &p,
        BiasDropoutAddLn {
            eps: eps as f32,
            drop,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{grad_diffs, max_diff, randn};
    use candle_core::Var;

    /// bias + GELU and its backward equal candle's `(x + bias).gelu_erf()` and its autograd,
    /// for x and for the bias.
    #[test]
    fn gelu_bias_matches_the_composed_reference() {
        let x = Var::from_tensor(&randn(&[3, 5, 40], 21, 3.0)).unwrap();
        let b = Var::from_tensor(&randn(&[40], 22, 1.0)).unwrap();
        let r = randn(&[3, 5, 40], 23, 1.0);
        let fused = gelu_bias(x.as_tensor(), b.as_tensor()).unwrap();
        let reference = x
            .as_tensor()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .gelu_erf()
            .unwrap();
        assert!(max_diff(&fused, &reference) < 1e-5);
        for (name, d, g) in grad_diffs(&fused, &reference, &r, &[("x", &x), ("bias", &b)]) {
            assert!(d < 1e-4, "grad {name}: {d}");
            assert!(g > 1e-2, "grad {name} is zero");
        }
    }

    /// `LayerNorm(dropout(x + bias) + res)` in one op equals the composed ops — the same
    /// dropout mask (`ops::dropout` with the seed) — in value and in all five gradients,
    /// with and without dropout.
    #[test]
    fn bias_dropout_add_layer_norm_matches_the_composed_reference() {
        let v = |shape: &[usize], seed: u64, scale: f32| {
            Var::from_tensor(&randn(shape, seed, scale)).unwrap()
        };
        let x = v(&[2, 7, 48], 31, 2.0);
        let res = v(&[2, 7, 48], 32, 2.0);
        let bias = v(&[48], 33, 0.5);
        let w = Var::from_tensor(&(randn(&[48], 34, 0.3) + 1.0).unwrap()).unwrap();
        let b = v(&[48], 35, 0.5);
        let r = randn(&[2, 7, 48], 36, 1.0);
        for p in [0.0, 0.25] {
            let drop = (p > 0.0).then(|| Dropout::new(p, 99));
            let fused = bias_dropout_add_ln(
                x.as_tensor(),
                bias.as_tensor(),
                res.as_tensor(),
                w.as_tensor(),
                b.as_tensor(),
                1e-12,
                drop,
            )
            .unwrap();
            let pre = x.as_tensor().broadcast_add(bias.as_tensor()).unwrap();
            let pre = if p > 0.0 {
                crate::ops::cpu::dropout::apply(&pre, Dropout::new(p, 99)).unwrap()
            } else {
                pre
            };
            let sum = (pre + res.as_tensor()).unwrap();
            let composed =
                crate::ops::composed::layer_norm(&sum, w.as_tensor(), b.as_tensor(), 1e-12)
                    .unwrap();
            assert!(max_diff(&fused, &composed) < 1e-5, "p {p}");
            let vars = [
                ("x", &x),
                ("res", &res),
                ("bias", &bias),
                ("w", &w),
                ("b", &b),
            ];
            for (name, d, g) in grad_diffs(&fused, &composed, &r, &vars) {
                assert!(d < 1e-4, "p {p}, grad {name}: {d}");
                assert!(g > 1e-3, "grad {name} is zero");
            }
            if p > 0.0 {
                // The mask really applies: x's gradient is 0 exactly where dropped.
                let gx = (&fused * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gx = gx.get(x.as_tensor()).unwrap().flatten_all().unwrap();
                let zeros = gx
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .filter(|v| **v == 0.0)
                    .count();
                assert!(zeros > 10 && zeros < 300, "{zeros} of 672 dropped");
            }
        }
    }
}
