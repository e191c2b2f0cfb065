//! Gradient clipping folded into the optimizer step: the global norm (torch's clip_grad_norm_),
//! the clip factor, and [`clip_and_step`], which keeps both on the GPU when training there.
//! Depends on `optimizer`, `ops` (the norm kernels).

use super::optimizer::AdamW;
use anyhow::Result;
use candle_core::Tensor;

/// The gradient norm of the last step: on the host, or (GPU) still on the device.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) enum GradNorm {
    Host(f64),
    Device(Tensor),
}

impl GradNorm {
    pub(crate) fn value(&self) -> Result<f64> {
        Ok(match self {
            GradNorm::Host(v) => *v,
            GradNorm::Device(t) => t.flatten_all()?.to_vec1::<f32>()?[0] as f64,
        })
    }
}

/// Global-norm clipping (torch's clip_grad_norm_, 0 disables) folded into the AdamW update.
/// On a GPU the norm and the factor stay on the device (no wait for the host); on the CPU
/// the norm is computed on the host as before.
pub(crate) fn clip_and_step(
    opt: &mut AdamW,
    grads: &[Option<Tensor>],
    lr: f64,
    max_norm: f64,
) -> Result<GradNorm> {
    #[cfg(feature = "cuda")]
    if let Some(g) = grads.iter().flatten().next() {
        if g.device().is_cuda() && crate::ops::exec::cuda_kernels_enabled() {
            let gs: Vec<&Tensor> = grads.iter().flatten().collect();
            let (norm, scale) = crate::ops::cuda::launch::clip_scale_device(&gs, max_norm)?;
            opt.step_with(
                grads,
                lr,
                crate::train::optimizer::GradScale::Device(&scale),
            )?;
            return Ok(GradNorm::Device(norm));
        }
    }
    let (norm, gscale) = clip_scale(grads, max_norm)?;
    opt.step_scaled(grads, lr, gscale)?;
    Ok(GradNorm::Host(norm))
}

/// Global gradient norm and the factor that clips it to `max_norm` (torch's
/// clip_grad_norm_: `max_norm / (norm + 1e-6)` when above; 1 otherwise). The factor is applied
/// inside the optimizer update.
pub fn clip_scale(grads: &[Option<Tensor>], max_norm: f64) -> Result<(f64, f64)> {
    let norm = global_norm(grads)?;
    // torch: clip_coef = max_norm / (norm + 1e-6), clamped to at most 1 (so a norm just under
    // max_norm is scaled by a hair, as there).
    let scale = if max_norm > 0.0 {
        (max_norm / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    Ok((norm, scale))
}

/// √(Σ‖g‖²) with each tensor's sum of squares in f32 and the total in f64; on CUDA all sums
/// come back in one copy.
fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let gs: Vec<&Tensor> = grads.iter().flatten().collect();
    let sums: Vec<f32> = match gs.first() {
        #[cfg(feature = "cuda")]
        Some(g) if g.device().is_cuda() && crate::ops::exec::cuda_kernels_enabled() => {
            crate::ops::cuda::launch::sums_of_squares(&gs)?
        }
        Some(g) if g.device().is_cpu() && g.dtype() == candle_core::DType::F32 => {
            let total = gs
                .iter()
                .map(|g| crate::ops::cpu::sum_squares(g))
                .sum::<candle_core::Result<f64>>()?;
            return Ok(total.sqrt());
        }
        _ => gs
            .iter()
            .map(|g| g.sqr()?.sum_all()?.to_scalar::<f32>())
            .collect::<candle_core::Result<_>>()?,
    };
    Ok(sums.iter().map(|&s| s as f64).sum::<f64>().sqrt())
}
