//! LayerNorm on every path: plain (`layer_norm`), after the embedding sum (`sum_layer_norm`) and
//! at a post-norm sublayer's end (`residual_norm`). Statistics are in f32 on every path; results
//! are in the input's dtype. Depends on candle and the path modules.

use super::{candle_inference_kernels, composed, cpu, cuda, dense, Dropout, Exec};
use candle_core::{DType, Result, Tensor};

/// LayerNorm over the last dim: `(x − mean)/√(var + eps)·w + b` (biased variance, as torch).
/// `w, b: [H]` f32 master weights.
pub fn layer_norm(
    exec: Exec,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
    grad: bool,
) -> Result<Tensor> {
    let dt = x.dtype();
    if exec == Exec::CpuFused {
        return cpu::layer_norm(x, w, b, eps);
    }
    if exec == Exec::CudaFused || x.device().is_cuda() {
        // f32 on the GPU paths: candle's kernel for inference, ours (CudaFused) or the composed
        // version with a backward for training.
        let (w, b) = (w.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
        let x32 = x.to_dtype(DType::F32)?;
        let y = if candle_inference_kernels(exec, x, grad) {
            candle_nn::ops::layer_norm(&x32, &w, &b, eps as f32)?
        } else if exec == Exec::CudaFused {
            cuda::layer_norm::layer_norm(&x32, &w, &b, eps)?
        } else {
            composed::layer_norm(&x32, &w, &b, eps)?
        };
        return y.to_dtype(dt);
    }
    composed::layer_norm(x, &w.to_dtype(dt)?, &b.to_dtype(dt)?, eps)
}

/// `LayerNorm(parts[0] + parts[1] + …)`: the embeddings' sum and norm. `parts[0]` is `[B, S, H]`,
/// the others broadcast against it (a position block `[S, H]`, a token-type row `[1, H]`, or
/// full `[B, S, H]`). On the CPU fused path the last part's sum is fused into the norm.
pub fn sum_layer_norm(
    exec: Exec,
    parts: &[&Tensor],
    w: &Tensor,
    b: &Tensor,
    eps: f64,
    grad: bool,
) -> Result<Tensor> {
    let Some((first, rest)) = parts.split_first() else {
        candle_core::bail!("sum_layer_norm: no inputs");
    };
    if exec == Exec::CpuFused && rest.len() >= 2 {
        let mut a = (*first).clone();
        for p in &rest[..rest.len() - 1] {
            a = a.broadcast_add(p)?;
        }
        let r = rest[rest.len() - 1].broadcast_as(a.shape())?.contiguous()?;
        return cpu::add_layer_norm(&a, &r, w, b, eps);
    }
    let mut x = (*first).clone();
    for p in rest {
        x = x.broadcast_add(p)?;
    }
    layer_norm(exec, &x, w, b, eps, grad)
}

/// `LayerNorm(dropout(act(x·Uᵀ + c)·Wᵀ + b) + x)`: a post-norm feed-forward sublayer (`up`:
/// `(U, c)`, `down`: `(W, b)`). On the CPU fused path with GELU the activation is folded into
/// the down projection (`cpu::gelu_linear`): a training step keeps the up projection's output
/// only, not its activation too (4·H floats per token and layer less), and dropout is folded
/// into that product's op, with bitwise the same values and gradients. Elsewhere it is [`dense::linear_act`], then [`residual_norm`].
#[allow(clippy::too_many_arguments)]
pub fn feed_forward_norm(
    exec: Exec,
    x: &Tensor,
    up: (&Tensor, Option<&Tensor>),
    act: dense::Act,
    down: (&Tensor, Option<&Tensor>),
    norm: (&Tensor, &Tensor, f64),
    drop: Option<Dropout>,
    grad: bool,
) -> Result<Tensor> {
    if let (Exec::CpuFused, dense::Act::Gelu) = (exec, act) {
        let u = dense::linear(exec, x, up.0, up.1)?;
        let b = match down.1 {
            Some(b) => b.clone(),
            None => dense::zero_bias(down.0)?,
        };
        let y = cpu::gelu_linear(&u, down.0, &b, drop)?;
        return cpu::add_layer_norm(&y, x, norm.0, norm.1, norm.2);
    }
    let inter = dense::linear_act(exec, x, up.0, up.1, act, grad)?;
    residual_norm(exec, &inter, down, x, norm, drop, grad)
}

/// `LayerNorm(dropout(x·Wᵀ + b) + residual)`: the end of a post-norm sublayer (attention output,
/// feed-forward output). On the CUDA training path bias, dropout, residual and norm are one op
/// whose mask is the one `ops::dropout` draws for `drop` (same hash, same element order).
#[allow(clippy::too_many_arguments)]
pub fn residual_norm(
    exec: Exec,
    x: &Tensor,
    (w, b): (&Tensor, Option<&Tensor>),
    residual: &Tensor,
    (nw, nb, eps): (&Tensor, &Tensor, f64),
    drop: Option<Dropout>,
    grad: bool,
) -> Result<Tensor> {
    match exec {
        Exec::CpuFused => {
            // Dropout folded into the product's op: its undropped output is not kept.
            let y = match b {
                Some(b) => cpu::linear_dropout(x, w, b, drop)?,
                None => cpu::linear_dropout(x, w, &dense::zero_bias(w)?, drop)?,
            };
            cpu::add_layer_norm(&y, residual, nw, nb, eps)
        }
        Exec::CudaFused if grad && b.is_some() => {
            let bias = b.map(|b| b.to_dtype(DType::F32)).transpose()?;
            let y = cuda::sublayer::bias_dropout_add_ln(
                &dense::product(x, w)?,
                bias.as_ref().unwrap_or(w),
                residual,
                &nw.to_dtype(DType::F32)?,
                &nb.to_dtype(DType::F32)?,
                eps,
                drop,
            )?;
            y.to_dtype(x.dtype())
        }
        _ => {
            let y = super::dropout(exec, &dense::linear(exec, x, w, b)?, drop)?;
            layer_norm(exec, &(y + residual)?, nw, nb, eps, grad)
        }
    }
}
