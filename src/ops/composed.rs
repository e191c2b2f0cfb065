//! The composed path's math from candle primitives that all have a backward: LayerNorm, softmax
//! and the additive attention masks (padding, sliding window). candle's fused `layer_norm`/`softmax_last_dim` have no
//! backward (DESIGN.md), so they are used only for CUDA inference. Depends only on candle.

use candle_core::{DType, Result, Tensor, D};

/// LayerNorm over the last dim, as torch: `(x - mean) / sqrt(var + eps) * weight + bias`
/// with the biased variance. `x: [.., H]`, `weight, bias: [H]`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let in_dtype = x.dtype();
    // Half precision statistics lose too much; compute them in f32 like torch's kernels do.
    let x = if matches!(in_dtype, DType::F16 | DType::BF16) {
        x.to_dtype(DType::F32)?
    } else {
        x.clone()
    };
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .to_dtype(in_dtype)?;
    xn.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Softmax over the last dim, numerically stabilised by the row max (which gets no gradient,
/// as the result does not depend on it).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// The value added to attention scores at padded keys: far below any real score, yet finite in
/// every dtype so that `score + mask` never overflows to -inf (f16 tops out at 65504).
pub fn mask_value(dtype: DType) -> f64 {
    match dtype {
        DType::F16 | DType::BF16 => -1.0e4,
        _ => -1.0e9,
    }
}

/// `attention_mask: [B, S]` (1 = token, 0 = pad, any int/float dtype) → additive mask `[B, 1, 1, S]`.
pub fn additive_attention_mask(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = attention_mask.dims2()?;
    let m = attention_mask.to_dtype(DType::F32)?;
    let add = ((m.ones_like()? - m)? * mask_value(dtype))?;
    add.reshape((b, 1, 1, s))?.to_dtype(dtype)
}

/// The sliding window as an additive `[S, S]` score term: 0 where |i − j| ≤ `w`, the mask value
/// elsewhere (ModernBERT's local layers).
pub fn window_mask(
    s: usize,
    w: usize,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let m = mask_value(dtype) as f32;
    let v: Vec<f32> = (0..s * s)
        .map(|k| if (k / s).abs_diff(k % s) <= w { 0.0 } else { m })
        .collect();
    Tensor::from_vec(v, (s, s), device)?.to_dtype(dtype)
}
