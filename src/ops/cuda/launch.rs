//! Our CUDA kernels (kernels/embtune.cu, PTX built by build.rs) behind candle in-place ops:
//! the fused AdamW update (one launch per parameter instead of ~14 elementwise ops) with its
//! moments kept on the GPU and its clipping factor read from device memory; sums of squares for
//! the global gradient norm; the embedding gather with a parallel scatter-add backward; hash
//! dropout (the CUDA side of `ops::cpu::dropout`); the fused LayerNorm (forward and
//! backward) of `ops::cuda::layer_norm`; bias + GELU and bias + dropout + residual + LayerNorm of
//! `ops::cuda::sublayer`; scale + mask + softmax + dropout of `ops::cuda::attention`. Compiled only with
//! the `cuda` feature.

use crate::ops::cpu::kernels::AdamWStep;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, DType, InplaceOp2, Layout, Result, Tensor};
use std::sync::Mutex;

pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/embtune.ptx"));
pub(crate) const MODULE: &str = "embtune";
const THREADS: u32 = 256;
// The one-warp-per-row kernels (EMBTUNE_WARP_ROW) need whole warps per block.
const _: () = assert!(THREADS % 32 == 0);

/// Start and end offsets of a contiguous layout (our kernels take plain arrays).
pub(crate) fn span(l: &Layout, what: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: expected a contiguous tensor")))
}

fn launch_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 4096) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// AdamW first and second moments of one parameter, in GPU memory.
pub struct DeviceMoments {
    m: CudaSlice<f32>,
    v: CudaSlice<f32>,
}

impl DeviceMoments {
    /// Zero moments for a parameter of `n` elements on `t`'s device.
    pub fn zeros(like: &Tensor) -> Result<Self> {
        let dev = like.device().as_cuda_device()?;
        let n = like.elem_count();
        Ok(Self {
            m: dev.alloc_zeros::<f32>(n)?,
            v: dev.alloc_zeros::<f32>(n)?,
        })
    }

    /// Both moments copied to the host (for checkpoints).
    pub fn to_host(&self, like: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
        let dev = like.device().as_cuda_device()?;
        Ok((dev.clone_dtoh(&self.m)?, dev.clone_dtoh(&self.v)?))
    }

    /// Replaces both moments with host values (resume).
    pub fn load(&mut self, like: &Tensor, m: &[f32], v: &[f32]) -> Result<()> {
        let dev = like.device().as_cuda_device()?;
        if m.len() != self.m.len() || v.len() != self.v.len() {
            candle_core::bail!("optimizer moments have the wrong length");
        }
        self.m = dev.clone_htod(m)?;
        self.v = dev.clone_htod(v)?;
        Ok(())
    }
}

struct SumSq {
    index: usize,
}

impl InplaceOp2 for SumSq {
    fn name(&self) -> &'static str {
        "embtune-sumsq-cuda"
    }
    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        candle_core::bail!("embtune-sumsq-cuda: tensor on the CPU")
    }
    fn cuda_fwd(
        &self,
        out: &mut CudaStorage,
        _: &Layout,
        g: &CudaStorage,
        gl: &Layout,
    ) -> Result<()> {
        let (g0, g1) = span(gl, "sumsq")?;
        let dev = out.device.clone();
        let func = dev.get_or_load_custom_func("embtune_sumsq_f32", MODULE, PTX)?;
        let gs = g.as_cuda_slice::<f32>()?.slice(g0..g1);
        let mut o = out
            .as_cuda_slice_mut::<f32>()?
            .slice_mut(self.index..self.index + 1);
        let n64 = (g1 - g0) as u64;
        let mut b = func.builder();
        b.arg(&gs);
        b.arg(&n64);
        b.arg(&mut o);
        // SAFETY: matches the kernel's signature; `o` is one float.
        unsafe { b.launch(launch_cfg(g1 - g0)) }.w()?;
        Ok(())
    }
}

/// Sum of squares of each tensor (f32, on one CUDA device), with a single copy to the host.
pub fn sums_of_squares(tensors: &[&Tensor]) -> Result<Vec<f32>> {
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let out = Tensor::zeros(tensors.len(), DType::F32, first.device())?;
    for (i, t) in tensors.iter().enumerate() {
        let t = if t.dtype() == DType::F32 {
            t.contiguous()?
        } else {
            t.to_dtype(DType::F32)?.contiguous()?
        };
        out.inplace_op2(&t, &SumSq { index: i })?;
    }
    out.to_vec1()
}

/// Embedding lookup `table[ids]` (`table: [V, H]` f32, `ids: [N]` u32 → `[N, H]`) whose backward
/// scatter-adds with atomics, parallel over all N·H elements. candle's `index_select` backward
/// (`index_add`) loops over the ids serially in each thread, which made the word-embedding
/// gradient the largest cost of a training step on the GPU (it grows with tokens per batch).
struct Embedding;

impl candle_core::CustomOp2 for Embedding {
    fn name(&self) -> &'static str {
        "embtune-embedding-cuda"
    }
    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        candle_core::bail!("embtune-embedding-cuda: tensors on the CPU")
    }
    fn cuda_fwd(
        &self,
        table: &CudaStorage,
        tl: &Layout,
        ids: &CudaStorage,
        il: &Layout,
    ) -> Result<(CudaStorage, candle_core::Shape)> {
        let ((t0, t1), (i0, i1)) = (span(tl, "embedding")?, span(il, "embedding")?);
        let (_, h) = tl.shape().dims2()?;
        let n = i1 - i0;
        let dev = table.device.clone();
        let func = dev.get_or_load_custom_func("embtune_gather_f32", MODULE, PTX)?;
        let ts = table.as_cuda_slice::<f32>()?.slice(t0..t1);
        let is = ids.as_cuda_slice::<u32>()?.slice(i0..i1);
        // SAFETY: every element is written by the kernel below.
        let mut out = unsafe { dev.alloc::<f32>(n * h)? };
        let (n64, h64) = (n as u64, h as u64);
        let mut b = func.builder();
        b.arg(&ts);
        b.arg(&is);
        b.arg(&mut out);
        b.arg(&n64);
        b.arg(&h64);
        // SAFETY: matches the kernel's signature; out holds n·h floats, ids index rows of table.
        unsafe { b.launch(launch_cfg(n * h)) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), (n, h).into()))
    }
    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Tensor::zeros(table.shape(), DType::F32, table.device())?;
        g.inplace_op3(
            &grad.to_dtype(DType::F32)?.contiguous()?,
            &ids.contiguous()?,
            &ScatterAdd,
        )?;
        Ok((Some(g), None))
    }
}

struct ScatterAdd;

impl candle_core::InplaceOp3 for ScatterAdd {
    fn name(&self) -> &'static str {
        "embtune-scatter-add-cuda"
    }
    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        candle_core::bail!("embtune-scatter-add-cuda: tensors on the CPU")
    }
    fn cuda_fwd(
        &self,
        out: &mut CudaStorage,
        ol: &Layout,
        grad: &CudaStorage,
        gl: &Layout,
        ids: &CudaStorage,
        il: &Layout,
    ) -> Result<()> {
        let ((o0, o1), (g0, g1), (i0, i1)) = (
            span(ol, "scatter-add")?,
            span(gl, "scatter-add")?,
            span(il, "scatter-add")?,
        );
        let n = i1 - i0;
        let h = (g1 - g0) / n.max(1);
        let dev = out.device.clone();
        let func = dev.get_or_load_custom_func("embtune_scatter_add_f32", MODULE, PTX)?;
        let gs = grad.as_cuda_slice::<f32>()?.slice(g0..g1);
        let is = ids.as_cuda_slice::<u32>()?.slice(i0..i1);
        let mut os = out.as_cuda_slice_mut::<f32>()?.slice_mut(o0..o1);
        let (n64, h64) = (n as u64, h as u64);
        let mut b = func.builder();
        b.arg(&gs);
        b.arg(&is);
        b.arg(&mut os);
        b.arg(&n64);
        b.arg(&h64);
        // SAFETY: matches the kernel's signature; grad is n·h floats, ids index rows of out.
        unsafe { b.launch(launch_cfg(n * h)) }.w()?;
        Ok(())
    }
}

/// `table[ids]` on CUDA with a fast backward (see [`Embedding`]). `ids` are u32, any shape.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let flat = ids.flatten_all()?.to_dtype(DType::U32)?.contiguous()?;
    let table = if table.dtype() == DType::F32 {
        table.contiguous()?
    } else {
        table.to_dtype(DType::F32)?.contiguous()?
    };
    table.apply_op2(&flat, Embedding)
}

/// A scalar kernel argument after the arrays.
#[derive(Clone, Copy)]
enum Scalar {
    U64(u64),
    U32(u32),
    F32(f32),
}

/// Appends scalar kernel arguments in order.
fn push_scalars<'a>(
    b: &mut candle_core::cuda_backend::cudarc::driver::LaunchArgs<'a>,
    scalars: &'a [Scalar],
) {
    for s in scalars {
        match s {
            Scalar::U64(v) => b.arg(v),
            Scalar::U32(v) => b.arg(v),
            Scalar::F32(v) => b.arg(v),
        };
    }
}

/// Runs the elementwise kernel `{stem}_{f32|bf16|f16}` (by the inputs' dtype) with the
/// arguments (inputs…, out, n, scalars…): every input a contiguous span of the same n elements
/// and dtype, out a fresh buffer of n.
fn elementwise(
    stem: &str,
    inputs: &[(&CudaStorage, &Layout)],
    scalars: &[Scalar],
) -> Result<CudaStorage> {
    elementwise_rows(stem, inputs, None, scalars)
}

/// [`elementwise`] where the second input may also be a row vector of `row` elements
/// (the kernel indexes them by `i % row`; `row` is among its scalars).
fn elementwise_rows(
    stem: &str,
    inputs: &[(&CudaStorage, &Layout)],
    row: Option<usize>,
    scalars: &[Scalar],
) -> Result<CudaStorage> {
    let Some((first, _)) = inputs.first() else {
        candle_core::bail!("{stem}: no inputs");
    };
    let spans = inputs
        .iter()
        .map(|(_, l)| span(l, stem))
        .collect::<Result<Vec<_>>>()?;
    let n = spans[0].1 - spans[0].0;
    let dt = first.dtype();
    // Input 1 (the bias) may be a row vector; every other input has exactly n elements.
    let fits = |(k, &(a, b)): (usize, &(usize, usize))| {
        b - a == n || (k == 1 && row == Some(b - a) && (b - a) > 0 && n % (b - a) == 0)
    };
    if !spans.iter().enumerate().all(fits) || inputs.iter().any(|(s, _)| s.dtype() != dt) {
        candle_core::bail!("{stem}: inputs differ in size or dtype");
    }
    match dt {
        DType::F32 => elementwise_typed::<f32>(stem, "f32", inputs, &spans, n, scalars),
        DType::BF16 => elementwise_typed::<half::bf16>(stem, "bf16", inputs, &spans, n, scalars),
        DType::F16 => elementwise_typed::<half::f16>(stem, "f16", inputs, &spans, n, scalars),
        d => candle_core::bail!("{stem}: unsupported dtype {d:?}"),
    }
}

fn elementwise_typed<T>(
    stem: &str,
    suffix: &str,
    inputs: &[(&CudaStorage, &Layout)],
    spans: &[(usize, usize)],
    n: usize,
    scalars: &[Scalar],
) -> Result<CudaStorage>
where
    T: candle_core::cuda_backend::CudaDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
{
    let dev = inputs[0].0.device.clone();
    let func = dev.get_or_load_custom_func(&format!("{stem}_{suffix}"), MODULE, PTX)?;
    let views = inputs
        .iter()
        .zip(spans)
        .map(|((s, _), &(a, b))| Ok(s.as_cuda_slice::<T>()?.slice(a..b)))
        .collect::<Result<Vec<_>>>()?;
    // SAFETY: every element is written by the kernel below.
    let mut out = unsafe { dev.alloc::<T>(n)? };
    let n64 = n as u64;
    let mut b = func.builder();
    for v in &views {
        b.arg(v);
    }
    b.arg(&mut out);
    b.arg(&n64);
    push_scalars(&mut b, scalars);
    // SAFETY: the kernels of `elementwise` take (inputs…, out, n, scalars…) in this order, each
    // array holding n elements of T.
    unsafe { b.launch(launch_cfg(n)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// Inverted dropout of a contiguous tensor (f32, bf16 or f16): the CUDA forward of
/// `ops::cpu::dropout`, whose backward is the same op on the gradient. The mask of
/// element i comes from the hash of `(seed, i)`, as on the CPU, and is applied in f32.
pub fn dropout_fwd(s: &CudaStorage, l: &Layout, d: crate::ops::Dropout) -> Result<CudaStorage> {
    if let Some(p) = &d.packed {
        return dropout_rows_fwd(s, l, &d, p);
    }
    elementwise(
        "embtune_dropout",
        &[(s, l)],
        &[
            Scalar::U64(d.seed),
            Scalar::U32(d.threshold),
            Scalar::F32(d.scale),
        ],
    )
}

/// [`dropout_fwd`] on the rows of a packed batch: element (r, c) uses the counter of its padded
/// position, `Packed::counter_bases` (rows of the last dim's width).
fn dropout_rows_fwd(
    s: &CudaStorage,
    l: &Layout,
    d: &crate::ops::Dropout,
    p: &crate::ops::Packed,
) -> Result<CudaStorage> {
    let (a, b) = span(l, "dropout")?;
    let n = b - a;
    let width = l.dims().last().copied().unwrap_or(1).max(1);
    if p.tokens() * width != n {
        candle_core::bail!(
            "dropout: {:?} for a packed batch of {} tokens",
            l.dims(),
            p.tokens()
        );
    }
    let dev = s.device().clone();
    let bases = dev.clone_htod(&p.counter_bases(width))?;
    fn run<T>(
        s: &CudaStorage,
        (a, b): (usize, usize),
        suffix: &str,
        bases: &CudaSlice<u64>,
        (width, d): (usize, &crate::ops::Dropout),
    ) -> Result<CudaStorage>
    where
        T: candle_core::cuda_backend::CudaDType
            + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
    {
        let dev = s.device().clone();
        let func =
            dev.get_or_load_custom_func(&format!("embtune_dropout_rows_{suffix}"), MODULE, PTX)?;
        let x = s.as_cuda_slice::<T>()?.slice(a..b);
        let n = b - a;
        // SAFETY: every element is written by the kernel below.
        let mut out = unsafe { dev.alloc::<T>(n)? };
        let (n64, w64) = (n as u64, width as u64);
        let mut bld = func.builder();
        bld.arg(&x);
        bld.arg(bases);
        bld.arg(&mut out);
        bld.arg(&n64);
        bld.arg(&w64);
        bld.arg(&d.seed);
        bld.arg(&d.threshold);
        bld.arg(&d.scale);
        // SAFETY: the kernel's parameters in order; x and out hold n elements, bases n / width.
        unsafe { bld.launch(launch_cfg(n)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    let args = (width, d);
    match s.dtype() {
        DType::F32 => run::<f32>(s, (a, b), "f32", &bases, args),
        DType::BF16 => run::<half::bf16>(s, (a, b), "bf16", &bases, args),
        DType::F16 => run::<half::f16>(s, (a, b), "f16", &bases, args),
        dt => candle_core::bail!("dropout: unsupported dtype {dt:?}"),
    }
}

struct AdamWOp<'a> {
    moments: &'a Mutex<DeviceMoments>,
    s: AdamWStep,
}

impl candle_core::InplaceOp3 for AdamWOp<'_> {
    fn name(&self) -> &'static str {
        "embtune-adamw-cuda"
    }
    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        candle_core::bail!("embtune-adamw-cuda: parameter on the CPU")
    }
    fn cuda_fwd(
        &self,
        p: &mut CudaStorage,
        pl: &Layout,
        g: &CudaStorage,
        gl: &Layout,
        sc: &CudaStorage,
        scl: &Layout,
    ) -> Result<()> {
        let ((p0, p1), (g0, g1), (c0, c1)) =
            (span(pl, "adamw")?, span(gl, "adamw")?, span(scl, "adamw")?);
        let n = p1 - p0;
        if g1 - g0 != n || c1 - c0 != 1 {
            candle_core::bail!("adamw: gradient or scale has the wrong size");
        }
        let dev = p.device.clone();
        let func = dev.get_or_load_custom_func("embtune_adamw_f32", MODULE, PTX)?;
        let gs = g.as_cuda_slice::<f32>()?.slice(g0..g1);
        let cs = sc.as_cuda_slice::<f32>()?.slice(c0..c1);
        let mut mom = self.moments.lock().unwrap_or_else(|e| e.into_inner());
        let DeviceMoments { m, v } = &mut *mom;
        let mut ps = p.as_cuda_slice_mut::<f32>()?.slice_mut(p0..p1);
        let n64 = n as u64;
        let s = self.s;
        let mut b = func.builder();
        b.arg(&mut ps);
        b.arg(&gs);
        b.arg(m);
        b.arg(v);
        b.arg(&n64);
        b.arg(&s.decay);
        b.arg(&s.step);
        b.arg(&s.b1);
        b.arg(&s.b2);
        b.arg(&s.eps);
        b.arg(&s.bc2_sqrt);
        b.arg(&cs);
        // SAFETY: matches the kernel's signature; all buffers hold n floats, the scale one.
        unsafe { b.launch(launch_cfg(n)) }.w()?;
        Ok(())
    }
}

/// One fused AdamW update of `param` (an f32 CUDA tensor, updated in place) with `grad`
/// multiplied by `gscale` (a one-element f32 tensor on the device: the clipping factor).
pub fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    moments: &Mutex<DeviceMoments>,
    s: AdamWStep,
    gscale: &Tensor,
) -> Result<()> {
    let grad = if grad.dtype() == DType::F32 {
        grad.contiguous()?
    } else {
        grad.to_dtype(DType::F32)?.contiguous()?
    };
    param.inplace_op3(&grad, gscale, &AdamWOp { moments, s })
}

/// Global gradient norm and clipping factor as one-element device tensors (no host copy):
/// `scale = min(1, max_norm / (norm + 1e-6))`, or 1 when `max_norm` is 0.
pub fn clip_scale_device(grads: &[&Tensor], max_norm: f64) -> Result<(Tensor, Tensor)> {
    let Some(first) = grads.first() else {
        candle_core::bail!("clip: no gradients");
    };
    let sums = Tensor::zeros(grads.len(), DType::F32, first.device())?;
    for (i, t) in grads.iter().enumerate() {
        let t = if t.dtype() == DType::F32 {
            t.contiguous()?
        } else {
            t.to_dtype(DType::F32)?.contiguous()?
        };
        sums.inplace_op2(&t, &SumSq { index: i })?;
    }
    let norm = sums.sum_keepdim(0)?.sqrt()?;
    let scale = if max_norm > 0.0 {
        ((norm.clone() + 1e-6)?.recip()? * max_norm)?.minimum(1.0)?
    } else {
        norm.ones_like()?
    };
    Ok((norm, scale))
}

fn warp_per_row_cfg(rows: usize) -> LaunchConfig {
    let warps_per_block = (THREADS / 32) as usize;
    LaunchConfig {
        grid_dim: (rows.div_ceil(warps_per_block).max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Forward of `ops::cuda::layer_norm::LayerNormOp` on CUDA (f32, contiguous).
pub fn layer_norm_fwd(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    b: &CudaStorage,
    bl: &Layout,
    eps: f32,
) -> Result<(CudaStorage, candle_core::Shape)> {
    let h = xl.dims().last().copied().unwrap_or(1).max(1);
    let n = xl.shape().elem_count();
    let rows = n / h;
    let scalars = [
        Scalar::U64(rows as u64),
        Scalar::U32(h as u32),
        Scalar::F32(eps),
    ];
    let arrays = [(x, xl, n), (w, wl, h), (b, bl, h)];
    let y = rows_kernel(
        "embtune_layer_norm_f32",
        &arrays,
        n,
        &scalars,
        (rows, Trailing::None),
    )?;
    Ok((y, xl.shape().clone()))
}

/// Backward of `ops::cuda::layer_norm::LayerNormOp` on CUDA (f32, contiguous x, w, g): `[2, rows, h]`
/// holding dx and g·x̂ (see `ops::cuda::layer_norm::LayerNormBwdOp`).
pub fn layer_norm_bwd(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    g: &CudaStorage,
    gl: &Layout,
    eps: f32,
) -> Result<(CudaStorage, candle_core::Shape)> {
    let h = xl.dims().last().copied().unwrap_or(1).max(1);
    let n = xl.shape().elem_count();
    let rows = n / h;
    let scalars = [
        Scalar::U64(rows as u64),
        Scalar::U32(h as u32),
        Scalar::F32(eps),
    ];
    let arrays = [(x, xl, n), (w, wl, h), (g, gl, n)];
    let out = rows_kernel(
        "embtune_layer_norm_bwd_f32",
        &arrays,
        2 * n,
        &scalars,
        (rows, Trailing::None),
    )?;
    Ok((out, (2, rows, h).into()))
}

/// `gelu(x + bias)` (inputs x, bias) or its backward (x, bias, g), any float dtype:
/// `ops::cuda::sublayer`'s GELU ops; `h` = the bias's length.
pub fn gelu_bias(
    backward: bool,
    inputs: &[(&CudaStorage, &Layout)],
    h: u64,
) -> Result<CudaStorage> {
    let stem = if backward {
        "embtune_gelu_bias_bwd"
    } else {
        "embtune_gelu_bias"
    };
    elementwise_rows(stem, inputs, Some(h as usize), &[Scalar::U64(h)])
}

/// `LayerNorm(drop(x + bias) + res)` over rows of h (f32, contiguous; `p = [bias | w | b]`), or
/// with `g` its backward `[3, rows, h]`: `ops::cuda::sublayer::BiasDropoutAddLn`.
pub fn bias_dropout_add_ln(
    inputs: [(&CudaStorage, &Layout); 3],
    g: Option<(&CudaStorage, &Layout)>,
    eps: f32,
    drop: Option<crate::ops::Dropout>,
) -> Result<CudaStorage> {
    let what = "bias-dropout-add-layer-norm";
    let [(x, xl), (r, rl), (p, pl)] = inputs;
    let h = xl.dims().last().copied().unwrap_or(1).max(1);
    let n = xl.shape().elem_count();
    if rl.shape().elem_count() != n || pl.shape().elem_count() != 3 * h || n % h != 0 {
        candle_core::bail!("{what}: sizes do not match");
    }
    let rows = n / h;
    let name = match g {
        Some(_) => "embtune_bias_dropout_add_ln_bwd_f32",
        None => "embtune_bias_dropout_add_ln_f32",
    };
    let mut arrays = vec![(x, xl, n), (r, rl, n), (p, pl, 3 * h)];
    arrays.extend(g.map(|(g, gl)| (g, gl, n)));
    let out_len = if g.is_some() { 3 * n } else { n };
    let mut scalars = vec![
        Scalar::U64(rows as u64),
        Scalar::U32(h as u32),
        Scalar::F32(eps),
    ];
    // A packed batch's rows use their padded positions' counters (null: row · h).
    let bases = match drop.as_ref().and_then(|d| d.packed.as_ref()) {
        Some(p) if p.tokens() == rows => Some(x.device().clone_htod(&p.counter_bases(h))?),
        Some(p) => candle_core::bail!("{what}: {rows} rows for a packed batch of {}", p.tokens()),
        None => None,
    };
    scalars.extend(drop_scalars(drop));
    rows_kernel(
        name,
        &arrays,
        out_len,
        &scalars,
        (rows, Trailing::Bases(bases.as_ref())),
    )
}

/// The dropout arguments of the row kernels: use (0/1), seed, threshold, scale.
fn drop_scalars(drop: Option<crate::ops::Dropout>) -> [Scalar; 4] {
    match drop {
        Some(d) => [
            Scalar::U32(1),
            Scalar::U64(d.seed),
            Scalar::U32(d.threshold),
            Scalar::F32(d.scale),
        ],
        None => [
            Scalar::U32(0),
            Scalar::U64(0),
            Scalar::U32(0),
            Scalar::F32(1.0),
        ],
    }
}

/// What a `rows_kernel` kernel takes after its scalars.
enum Trailing<'a> {
    None,
    /// A packed batch's dropout counter bases, or null for row · h (the sublayer-end kernels).
    Bases(Option<&'a CudaSlice<u64>>),
}

/// Launches a one-warp-per-row f32 kernel with arguments (arrays…, out, scalars…): each array a
/// contiguous tensor of exactly the given length, out a fresh buffer of `out_len`.
fn rows_kernel(
    name: &str,
    arrays: &[(&CudaStorage, &Layout, usize)],
    out_len: usize,
    scalars: &[Scalar],
    (rows, trailing): (usize, Trailing),
) -> Result<CudaStorage> {
    let Some((first, _, _)) = arrays.first() else {
        candle_core::bail!("{name}: no inputs");
    };
    let dev = first.device.clone();
    let views = arrays
        .iter()
        .map(|&(s, l, len)| {
            let (a, b) = span(l, name)?;
            if b - a != len {
                candle_core::bail!("{name}: an input of {} elements, expected {len}", b - a);
            }
            Ok(s.as_cuda_slice::<f32>()?.slice(a..b))
        })
        .collect::<Result<Vec<_>>>()?;
    let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
    // SAFETY: every element is written by the kernel below.
    let mut out = unsafe { dev.alloc::<f32>(out_len)? };
    let mut b = func.builder();
    for v in &views {
        b.arg(v);
    }
    b.arg(&mut out);
    push_scalars(&mut b, scalars);
    let null = 0u64;
    match trailing {
        Trailing::None => {}
        Trailing::Bases(Some(v)) => {
            b.arg(v);
        }
        Trailing::Bases(None) => {
            b.arg(&null);
        }
    }
    // SAFETY: the callers pass the kernel's arrays and scalars in its parameter order, with the
    // lengths checked above.
    unsafe { b.launch(warp_per_row_cfg(rows)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// `drop(softmax(x·scale + mask))` over rows of n (f32, contiguous; `mask` additive `[B·n]`,
/// row r in sentence r / `per_batch`), or with `g` its backward (the scores' gradient):
/// `ops::cuda::attention`. `geometry` = (rows, n, per_batch).
pub fn attn_softmax(
    inputs: [(&CudaStorage, &Layout); 2],
    g: Option<(&CudaStorage, &Layout)>,
    geometry: (usize, usize, usize),
    scale: f32,
    drop: Option<crate::ops::Dropout>,
) -> Result<CudaStorage> {
    let (rows, n, per_batch) = geometry;
    if per_batch == 0 || rows % per_batch != 0 {
        candle_core::bail!("attention softmax: {rows} rows in sentences of {per_batch}");
    }
    let [(x, xl), (m, ml)] = inputs;
    let name = match g {
        Some(_) => "embtune_attn_softmax_bwd_f32",
        None => "embtune_attn_softmax_f32",
    };
    let mut arrays = vec![(x, xl, rows * n), (m, ml, rows / per_batch * n)];
    arrays.extend(g.map(|(g, gl)| (g, gl, rows * n)));
    let mut scalars = vec![
        Scalar::U64(rows as u64),
        Scalar::U32(n as u32),
        Scalar::U64(per_batch as u64),
        Scalar::F32(scale),
    ];
    scalars.extend(drop_scalars(drop));
    rows_kernel(name, &arrays, rows * n, &scalars, (rows, Trailing::None))
}

/// q/k/v heads layout with bias (`bias` given: x [B, S, H] → heads) or its backward (`bias`
/// None: the heads gradient → [B, S, H]), any float dtype: `ops::cuda::attention`.
/// `dims` = (H, S, heads, keys transposed 0/1).
pub fn bias_heads(
    bias: Option<(&CudaStorage, &Layout)>,
    x: (&CudaStorage, &Layout),
    dims: [u64; 4],
) -> Result<CudaStorage> {
    let [h, s, nh, kt] = dims;
    let scalars = [
        Scalar::U64(h),
        Scalar::U64(s),
        Scalar::U64(nh),
        Scalar::U32(kt as u32),
    ];
    match bias {
        Some(b) => elementwise_rows("embtune_bias_heads", &[x, b], Some(h as usize), &scalars),
        None => elementwise("embtune_heads_back", &[x], &scalars),
    }
}
