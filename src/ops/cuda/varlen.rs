//! Variable-length (packed) attention for the CUDA path: the attention core over a packed
//! batch's projections `qkv: [1, T, 3H]` (`[q | k | v]`, `ops::Packed` offsets), each sequence
//! over its own rows, with an optional score bias `[heads, S, S]` (MPNet) and its gradient, a
//! sliding window (ModernBERT's local layers) and the probability dropout of the padded layout's
//! counters — one op forward, one backward (kernels/varlen_attention.cuh: a forward kernel, then
//! a query-side and a key-side backward kernel, launched by `varlen_launch`). The ops' CPU
//! forwards run `varlen_mirror`, the same loops as the kernels, so `Exec::CudaFused` on a CPU
//! device runs the kernels' algorithm in tests against the CPU fused attention
//! (`varlen_tests`). f32 (callers cast). Depends on candle, `ops::Packed`, `ops::Dropout`,
//! `layer_norm::cpu_f32`, `varlen_mirror` and `varlen_launch` (feature `cuda`).
use super::layer_norm::cpu_f32;
#[cfg(feature = "cuda")]
use super::varlen_launch as gpu;
use super::varlen_mirror::Mirror;
use crate::ops::{Dropout, Packed};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape};
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// The kernels' parameter block (`EmbtuneVarlen` in kernels/varlen_attention.cuh), field for
/// field in the same order (C layout: 48 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VarlenArgs {
    pub heads: u32,
    pub hd: u32,
    pub s_max: u32,
    pub scale: f32,
    pub has_bias: u32,
    pub use_window: u32,
    pub window: u32,
    pub use_drop: u32,
    pub seed: u64,
    pub threshold: u32,
    pub dscale: f32,
}

/// One attention call over a packed batch.
#[derive(Debug, Clone)]
pub(crate) struct Varlen {
    pub(crate) packed: Arc<Packed>,
    pub(crate) heads: usize,
    pub(crate) drop: Option<Dropout>,
    pub(crate) window: Option<usize>,
}

/// `T` rows and the head size of a `[1, T, 3H]` (or `[T, 3H]`) input.
fn rows_and_head(v: &Varlen, dims: &[usize]) -> Result<(usize, usize)> {
    let (t, h3) = match dims {
        [1, t, h3] | [t, h3] => (*t, *h3),
        _ => candle_core::bail!("packed attention: expected [1, T, 3H], got {dims:?}"),
    };
    let h = h3 / 3;
    if v.heads == 0 || h3 % 3 != 0 || h % v.heads != 0 || t != v.packed.tokens() {
        candle_core::bail!(
            "packed attention: {dims:?} with {} heads for a packed batch of {} tokens",
            v.heads,
            v.packed.tokens()
        );
    }
    Ok((t, h / v.heads))
}

impl Varlen {
    fn args(&self, hd: usize, has_bias: bool) -> VarlenArgs {
        let d = self.drop.as_ref();
        VarlenArgs {
            heads: self.heads as u32,
            hd: hd as u32,
            s_max: self.packed.seq() as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            has_bias: has_bias as u32,
            use_window: self.window.is_some() as u32,
            window: self.window.unwrap_or(0) as u32,
            use_drop: d.is_some() as u32,
            seed: d.map_or(0, |d| d.seed),
            threshold: d.map_or(0, |d| d.threshold),
            dscale: d.map_or(1.0, |d| d.scale),
        }
    }

    fn check_bias(&self, bias: Option<&[usize]>) -> Result<()> {
        let s = self.packed.seq();
        match bias {
            Some(d) if d != [self.heads, s, s] => {
                candle_core::bail!(
                    "packed attention: a score bias of {d:?} for [{}, {s}, {s}]",
                    self.heads
                )
            }
            _ => Ok(()),
        }
    }
}

impl Varlen {
    fn cpu(
        &self,
        x: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
        g: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        let (_, hd) = rows_and_head(self, x.1.dims())?;
        self.check_bias(bias.map(|b| b.1.dims()))?;
        let mirror = Mirror {
            a: self.args(hd, bias.is_some()),
            p: &self.packed,
            qkv: cpu_f32(x.0, x.1, "packed attention")?,
            bias: bias
                .map(|(s, l)| cpu_f32(s, l, "packed attention bias"))
                .transpose()?,
        };
        Ok(match g {
            None => mirror.forward(),
            Some(g) => mirror.backward(g),
        })
    }

    fn out_shape(&self, l: &Layout) -> Result<Shape> {
        let (t, hd) = rows_and_head(self, l.dims())?;
        Ok(match l.dims().len() {
            3 => Shape::from((1, t, hd * self.heads)),
            _ => Shape::from((t, hd * self.heads)),
        })
    }

    /// The backward of a forward over `qkv` (and `bias`) with output gradient `g`: dqkv and the
    /// bias's gradient summed over the sequences.
    fn grads(
        &self,
        qkv: &Tensor,
        bias: Option<&Tensor>,
        g: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let g = g.to_dtype(DType::F32)?.contiguous()?;
        let flat = match bias {
            None => qkv.apply_op2_no_bwd(&g, &VarlenBwd(self.clone()))?,
            Some(b) => qkv.apply_op3_no_bwd(&g, b, &VarlenBwd(self.clone()))?,
        };
        let n = qkv.elem_count();
        let dqkv = flat.narrow(0, 0, n)?.reshape(qkv.shape())?;
        let dbias = match bias {
            None => None,
            Some(b) => {
                let (s, nb) = (self.packed.seq(), self.packed.batch());
                let per_seq = flat.narrow(0, n, nb * self.heads * s * s)?;
                Some(
                    per_seq
                        .reshape((nb, self.heads, s, s))?
                        .sum(0)?
                        .reshape(b.shape())?,
                )
            }
        };
        Ok((dqkv, dbias))
    }
}

impl CustomOp1 for Varlen {
    fn name(&self) -> &'static str {
        "embtune-varlen-attention"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((
            CpuStorage::F32(self.cpu((s, l), None, None)?),
            self.out_shape(l)?,
        ))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, hd) = rows_and_head(self, l.dims())?;
        let out = gpu::forward(self, self.args(hd, false), (s, l), None)?;
        Ok((out, self.out_shape(l)?))
    }
    fn bwd(&self, qkv: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.grads(qkv, None, g)?.0))
    }
}

/// [`Varlen`] with the score bias as a second input.
struct Biased(Varlen);

impl CustomOp2 for Biased {
    fn name(&self) -> &'static str {
        "embtune-varlen-attention-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = self.0.cpu((s1, l1), Some((s2, l2)), None)?;
        Ok((CpuStorage::F32(y), self.0.out_shape(l1)?))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, hd) = rows_and_head(&self.0, l1.dims())?;
        self.0.check_bias(Some(l2.dims()))?;
        let out = gpu::forward(&self.0, self.0.args(hd, true), (s1, l1), Some((s2, l2)))?;
        Ok((out, self.0.out_shape(l1)?))
    }
    fn bwd(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dqkv, dbias) = self.0.grads(qkv, Some(bias), g)?;
        Ok((Some(dqkv), dbias))
    }
}

/// The backward as an op: `(qkv, g[, bias])` → `[dqkv | dbias per sequence]`, flat.
struct VarlenBwd(Varlen);

impl VarlenBwd {
    fn out(&self, l: &Layout, bias: bool) -> Result<Shape> {
        let s = self.0.packed.seq();
        let nb = if bias {
            self.0.packed.batch() * self.0.heads * s * s
        } else {
            0
        };
        Ok(Shape::from(l.shape().elem_count() + nb))
    }
}

impl CustomOp2 for VarlenBwd {
    fn name(&self) -> &'static str {
        "embtune-varlen-attention-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = cpu_f32(s2, l2, "packed attention gradient")?;
        Ok((
            CpuStorage::F32(self.0.cpu((s1, l1), None, Some(g))?),
            self.out(l1, false)?,
        ))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, hd) = rows_and_head(&self.0, l1.dims())?;
        let out = gpu::backward(&self.0, self.0.args(hd, false), [(s1, l1), (s2, l2)], None)?;
        Ok((out, self.out(l1, false)?))
    }
}

impl CustomOp3 for VarlenBwd {
    fn name(&self) -> &'static str {
        "embtune-varlen-attention-bias-bwd"
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
        let g = cpu_f32(s2, l2, "packed attention gradient")?;
        let y = self.0.cpu((s1, l1), Some((s3, l3)), Some(g))?;
        Ok((CpuStorage::F32(y), self.out(l1, true)?))
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
        let (_, hd) = rows_and_head(&self.0, l1.dims())?;
        self.0.check_bias(Some(l3.dims()))?;
        let out = gpu::backward(
            &self.0,
            self.0.args(hd, true),
            [(s1, l1), (s2, l2)],
            Some((s3, l3)),
        )?;
        Ok((out, self.out(l1, true)?))
    }
}

/// The context `[1, T, H]` of attention over a packed batch's projections `qkv: [1, T, 3H]`
/// (f32; any device): `heads` heads, `dropout` on the probabilities (the padded layout's
/// counters), `bias: [heads, S, S]` added to the scaled scores (with its gradient), `window`:
/// query i sees keys j with |i − j| ≤ w of its own sequence.
pub fn attention(
    qkv: &Tensor,
    packed: Arc<Packed>,
    heads: usize,
    dropout: Option<Dropout>,
    bias: Option<&Tensor>,
    window: Option<usize>,
) -> Result<Tensor> {
    let op = Varlen {
        packed,
        heads,
        drop: dropout,
        window,
    };
    let qkv = qkv.to_dtype(DType::F32)?.contiguous()?;
    match bias {
        None => qkv.apply_op1(op),
        Some(b) => qkv.apply_op2(&b.to_dtype(DType::F32)?.contiguous()?, Biased(op)),
    }
}
