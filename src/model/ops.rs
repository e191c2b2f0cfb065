//! Differentiable building blocks composed from candle primitives that all have a backward:
//! layer-norm, softmax, seeded dropout and the additive attention mask.
//! candle's fused `layer_norm`/`softmax_last_dim` have no backward (DESIGN.md), so we never use them
//! on the training path. Depends only on candle and `rng.rs`.

use crate::rng::Rng;
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

/// Inverted dropout with rate `p`, masks drawn from our seeded RNG (candle's CPU RNG cannot be
/// seeded). Identity when `p == 0`.
pub fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let n = x.elem_count();
    let scale = (1.0 / (1.0 - p)) as f32;
    let threshold = (p * u32::MAX as f64) as u32;
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.next_u32() > threshold {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
}

/// Inverted dropout on a GPU with candle's composed ops (`EMBTUNE_CUDA_FUSED=0`): the mask
/// comes from the device's generator, re-seeded with `seed`, so the same seed gives the same
/// mask on that device. (Otherwise bert.rs uses `cpu_ops::dropout`'s hash masks.)
pub fn dropout_on_device(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    // Candle's composed ops (EMBTUNE_CUDA_FUSED=0; bert.rs otherwise uses the hash-mask op of
    // `cpu_ops`): the device generator, re-seeded for this mask.
    x.device().set_seed(seed)?;
    let u = Tensor::rand(0f32, 1f32, x.shape(), x.device())?;
    let mask = (u.ge(p)?.to_dtype(x.dtype())? * (1.0 / (1.0 - p)))?;
    x.mul(&mask)
}

/// Rows `ids` (any shape, flattened) of `table: [V, H]` → `[N, H]`. On CUDA a gather whose
/// backward scatter-adds in parallel (`cuda_ops::embedding`); elsewhere `index_select`.
pub fn embedding_rows(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if table.device().is_cuda() && table.dtype() == DType::F32 && crate::device::fast_cuda_kernels()
    {
        return crate::cuda_ops::embedding(table, ids);
    }
    table.index_select(&ids.flatten_all()?, 0)
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
