//! Launches of the variable-length attention kernels (kernels/varlen_attention.cuh) for
//! `varlen`'s ops: one warp per (row, head), the batch's offsets and each row's sequence
//! uploaded per call, the parameter block passed by value (feature `cuda`). Depends on candle's
//! CUDA backend, `launch` (module, PTX, spans) and `varlen`.

use super::varlen::{Varlen, VarlenArgs};
use crate::ops::cuda::launch::{span, MODULE, PTX};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result};

// SAFETY: `VarlenArgs` is `repr(C)` plain data with the field order and types of the
// kernels' `EmbtuneVarlen` struct.
unsafe impl DeviceRepr for VarlenArgs {}

/// One warp per (row, head); `floats` of dynamic shared memory per warp.
fn cfg(op: &Varlen, floats: usize) -> Result<LaunchConfig> {
    let blocks = op.packed.tokens() * op.heads;
    if blocks == 0 || blocks > i32::MAX as usize || floats * 4 > 48 * 1024 {
        candle_core::bail!(
            "packed attention: {blocks} (row, head) pairs, {floats} floats of scratch"
        );
    }
    Ok(LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: (floats * 4) as u32,
    })
}

/// `offsets [B+1]` and each row's sequence `seq_of [T]`.
fn geometry(op: &Varlen) -> (Vec<u32>, Vec<u32>) {
    let p = &op.packed;
    let offsets = p.offsets().iter().map(|&o| o as u32).collect();
    let seq_of = (0..p.batch())
        .flat_map(|b| std::iter::repeat_n(b as u32, p.len(b)))
        .collect();
    (offsets, seq_of)
}

pub(crate) fn forward(
    op: &Varlen,
    a: VarlenArgs,
    (x, xl): (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    let dev = x.device().clone();
    let (x0, x1) = span(xl, "packed attention")?;
    let qkv = x.as_cuda_slice::<f32>()?.slice(x0..x1);
    let (offsets, seq_of) = geometry(op);
    let (offsets, seq_of) = (dev.clone_htod(&offsets)?, dev.clone_htod(&seq_of)?);
    let hh = (a.heads * a.hd) as usize;
    // SAFETY: the kernel writes every element of out (each (row, head) its hd values).
    let mut out = unsafe { dev.alloc::<f32>(op.packed.tokens() * hh)? };
    let func = dev.get_or_load_custom_func("embtune_varlen_attn_f32", MODULE, PTX)?;
    let bias_view = bias.map(|(s, l)| -> Result<_> {
        let (b0, b1) = span(l, "packed attention bias")?;
        Ok(s.as_cuda_slice::<f32>()?.slice(b0..b1))
    });
    let bias_view = bias_view.transpose()?;
    let mut b = func.builder();
    b.arg(&qkv);
    b.arg(&offsets);
    b.arg(&seq_of);
    let null = 0u64;
    match &bias_view {
        Some(v) => b.arg(v),
        None => b.arg(&null),
    };
    b.arg(&mut out);
    b.arg(&a);
    let cfg = cfg(op, a.s_max as usize + a.hd as usize)?;
    // SAFETY: arguments in the kernel's order; qkv holds T·3H floats, bias heads·S·S.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

pub(crate) fn backward(
    op: &Varlen,
    a: VarlenArgs,
    [(x, xl), (g, gl)]: [(&CudaStorage, &Layout); 2],
    bias: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    let dev = x.device().clone();
    let (x0, x1) = span(xl, "packed attention")?;
    let (g0, g1) = span(gl, "packed attention gradient")?;
    let qkv = x.as_cuda_slice::<f32>()?.slice(x0..x1);
    let gs = g.as_cuda_slice::<f32>()?.slice(g0..g1);
    let (offsets, seq_of) = geometry(op);
    let (offsets, seq_of) = (dev.clone_htod(&offsets)?, dev.clone_htod(&seq_of)?);
    let (t, heads, s) = (op.packed.tokens(), op.heads, op.packed.seq());
    let n = x1 - x0;
    let nb = if bias.is_some() {
        op.packed.batch() * heads * s * s
    } else {
        0
    };
    // dqkv is written whole by the two kernels; the per-sequence bias gradient only inside
    // each sequence's square, so the buffer starts zeroed.
    let mut out = dev.alloc_zeros::<f32>(n + nb)?;
    let mut stats = dev.alloc_zeros::<f32>(t * heads * 3)?;
    let bias_view = bias
        .map(|(s, l)| -> Result<_> {
            let (b0, b1) = span(l, "packed attention bias")?;
            Ok(s.as_cuda_slice::<f32>()?.slice(b0..b1))
        })
        .transpose()?;
    let null = 0u64;
    let scratch = 2 * a.s_max as usize + 2 * a.hd as usize;
    let n64 = n as u64;
    {
        let func = dev.get_or_load_custom_func("embtune_varlen_attn_bwd_q_f32", MODULE, PTX)?;
        let mut b = func.builder();
        b.arg(&qkv);
        b.arg(&gs);
        b.arg(&offsets);
        b.arg(&seq_of);
        match &bias_view {
            Some(v) => b.arg(v),
            None => b.arg(&null),
        };
        b.arg(&mut out);
        b.arg(&mut stats);
        b.arg(&n64);
        b.arg(&a);
        // SAFETY: arguments in the kernel's order and sizes (dbias: B·heads·S·S with a bias).
        unsafe { b.launch(cfg(op, scratch)?) }.w()?;
    }
    {
        let mut dqkv = out.slice_mut(0..n);
        let func = dev.get_or_load_custom_func("embtune_varlen_attn_bwd_kv_f32", MODULE, PTX)?;
        let mut b = func.builder();
        b.arg(&qkv);
        b.arg(&gs);
        b.arg(&offsets);
        b.arg(&seq_of);
        match &bias_view {
            Some(v) => b.arg(v),
            None => b.arg(&null),
        };
        b.arg(&stats);
        b.arg(&mut dqkv);
        b.arg(&a);
        // SAFETY: as above; stats were written by the query-side kernel on this stream.
        unsafe { b.launch(cfg(op, scratch)?) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}
