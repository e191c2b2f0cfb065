//! Multi-head self-attention on every path, from the input projections to the context:
//! `softmax(q·kᵀ/√hd + bias + mask) → dropout → ·v`, heads side by side `[B, S, H]`. The padding
//! mask is built once per forward in the form its path wants ([`AttnMask`]); `bias` is an
//! optional additive score term `[heads, S, S]` (MPNet's relative position bias) with its
//! gradient; `rotary` rotates q and k by their positions (RoPE) before the scores; `window`
//! limits query i to keys with |i − j| ≤ w (ModernBERT's local layers: the CPU fused kernel
//! masks per row, the other paths add a `[S, S]` mask, [`Window`]). The projections come as three
//! or packed in one ([`Qkv`]). Depends on candle and the path modules.

use super::rotary::{rotary_heads, Rotary};
use super::{candle_inference_kernels, composed, cpu, cuda, dense, Dropout, Exec, Packed};
use candle_core::{DType, Device, Result, Tensor};
use std::sync::Arc;

/// The attention mask of one forward, as its path wants it.
#[derive(Debug, Clone)]
pub enum AttnMask {
    /// `[B·S]`: 1 for tokens, 0 for padding (CPU fused path).
    Keep(Arc<Vec<f32>>),
    /// Additive `[B, 1, 1, S]`: 0 for tokens, a large negative value for padding.
    Additive(Tensor),
    /// A packed batch (both fused paths): `x` is `[1, T, H]`, each sequence attends over its own
    /// rows; S (of a score bias) is the layout's longest sequence.
    Packed(Arc<Packed>),
}

impl AttnMask {
    /// From `attention_mask: [B, S]` (1 = token, 0 = pad); `compute` = the scores' dtype.
    pub fn new(exec: Exec, attention_mask: &Tensor, compute: DType) -> Result<Self> {
        Ok(match exec {
            Exec::CpuFused => AttnMask::Keep(Arc::new(
                attention_mask
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )),
            _ => AttnMask::Additive(composed::additive_attention_mask(attention_mask, compute)?),
        })
    }

    /// The mask of a batch: its packed layout when it has one (fused paths only), else
    /// [`Self::new`] from its `attention_mask`.
    pub fn for_batch(
        exec: Exec,
        attention_mask: &Tensor,
        packed: Option<&Arc<Packed>>,
        compute: DType,
    ) -> Result<Self> {
        match packed {
            Some(_) if exec == Exec::Composed => {
                candle_core::bail!("attention: packed batches run on the fused paths only")
            }
            Some(p) => Ok(AttnMask::Packed(p.clone())),
            None => Self::new(exec, attention_mask, compute),
        }
    }

    /// S for a score bias or rotary tables: the padded length, or a packed batch's longest.
    pub fn seq(&self, padded: usize) -> usize {
        match self {
            AttnMask::Packed(p) => p.seq(),
            _ => padded,
        }
    }
}

/// One input projection (`w: [H, H]`, `b: [H]`, f32 master weights).
#[derive(Clone, Copy)]
pub struct Projection<'a> {
    pub w: &'a Tensor,
    pub b: Option<&'a Tensor>,
}

impl Projection<'_> {
    /// The bias, or zeros of the output width when the projection has none (f32).
    fn bias_or_zeros(&self) -> Result<Tensor> {
        match self.b {
            Some(b) => Ok(b.clone()),
            None => dense::zero_bias(self.w),
        }
    }
}

/// The input projections: three `[H, H]` ones (BERT's query/key/value), or one packed `[3H, H]`
/// (rows q, then k, then v: the rotary families' `Wqkv`), which the CPU fused path multiplies
/// as it is and the other paths split by views.
#[derive(Clone, Copy)]
pub enum Qkv<'a> {
    Separate([Projection<'a>; 3]),
    Packed(Projection<'a>),
}

/// A sliding window (query i sees keys with |i − j| ≤ `w`) for one forward, as its path wants
/// it: the CPU fused kernel masks per row; the other paths add `mask` `[S, S]` (0 inside, the
/// mask value of the compute dtype outside) to the scores. Built once per forward.
#[derive(Debug, Clone)]
pub struct Window {
    pub w: usize,
    mask: Option<Tensor>,
}

impl Window {
    pub fn new(exec: Exec, s: usize, w: usize, compute: DType, device: &Device) -> Result<Self> {
        let mask = match exec {
            Exec::CpuFused => None,
            _ => Some(composed::window_mask(s, w, compute, device)?),
        };
        Ok(Self { w, mask })
    }

    fn mask(&self) -> Result<&Tensor> {
        match &self.mask {
            Some(m) => Ok(m),
            None => {
                candle_core::bail!("attention: the window was built for another execution path")
            }
        }
    }
}

/// What an attention call needs besides its input.
#[derive(Clone)]
pub struct AttnArgs<'a> {
    pub heads: usize,
    /// Dropout on the probabilities (element `(b, h, i, j)` of `[B, heads, S, S]`).
    pub dropout: Option<Dropout>,
    /// Added to the scaled scores before the mask: `[heads, S, S]` (shared by the batch).
    pub bias: Option<&'a Tensor>,
    /// Rotary positions applied to q and k (tables for this S).
    pub rotary: Option<&'a Rotary>,
    /// Sliding window (none: full attention).
    pub window: Option<&'a Window>,
}

/// The context `[B, S, H]` of self-attention over `x: [B, S, H]` (compute dtype); with a
/// packed mask (`AttnMask::Packed`, CPU fused path) `x` and the context are `[1, T, H]`.
pub fn attention(
    exec: Exec,
    x: &Tensor,
    qkv: Qkv,
    mask: &AttnMask,
    a: AttnArgs,
    grad: bool,
) -> Result<Tensor> {
    let (b, s, h) = x.dims3()?;
    let (nh, hd) = (a.heads, h / a.heads.max(1));
    if a.heads == 0 || h % a.heads != 0 {
        candle_core::bail!(
            "attention: hidden size {h} is not divisible into {} heads",
            a.heads
        );
    }
    let bs = mask.seq(s);
    if let Some(bias) = a.bias {
        if bias.dims() != [nh, bs, bs] {
            candle_core::bail!(
                "attention: a score bias of {:?} for [{nh}, {bs}, {bs}]",
                bias.dims()
            );
        }
    }
    let scale = 1.0 / (hd as f64).sqrt();
    let packed = match mask {
        AttnMask::Packed(p) => Some(p.clone()),
        _ => None,
    };
    let rows = match mask {
        AttnMask::Packed(p) => Some(cpu::attention::Rows::Packed(p.clone())),
        AttnMask::Keep(keep) => Some(cpu::attention::Rows::Keep(keep.clone())),
        AttnMask::Additive(_) => None,
    };
    if let (Exec::CudaFused, AttnMask::Packed(p)) = (exec, mask) {
        return packed_cuda_path(x, qkv, p, &a);
    }
    let mask = match (exec, rows, mask) {
        (Exec::CpuFused, Some(rows), _) => {
            // q, k and v in one product: x is packed once and the product is 3× wider.
            let qkv = match qkv {
                Qkv::Packed(p) => cpu::linear(x, p.w, &p.bias_or_zeros()?)?,
                Qkv::Separate([q, k, v]) => cpu::linear_joined(
                    x,
                    &[q.w, k.w, v.w],
                    &[
                        &q.bias_or_zeros()?,
                        &k.bias_or_zeros()?,
                        &v.bias_or_zeros()?,
                    ],
                )?,
            };
            let qkv = match a.rotary {
                Some(r) => cpu::rotary(&qkv, r, nh, packed)?,
                None => qkv,
            };
            let window = a.window.map(|w| w.w);
            return cpu::attention(&qkv, rows, nh, a.dropout, a.bias, window);
        }
        (_, _, AttnMask::Additive(m)) if exec != Exec::CpuFused => m,
        _ => candle_core::bail!("attention: the mask was built for another execution path"),
    };
    // A packed projection split into views of its rows (their backward adds into the packed
    // weight's gradient).
    let parts;
    let [q, k, v] = match qkv {
        Qkv::Separate(ps) => ps,
        Qkv::Packed(p) => {
            let rows = |t: &Tensor, i: usize| t.narrow(0, i * h, h);
            let ws = [rows(p.w, 0)?, rows(p.w, 1)?, rows(p.w, 2)?];
            let bs =
                p.b.map(|b| -> Result<[Tensor; 3]> { Ok([rows(b, 0)?, rows(b, 1)?, rows(b, 2)?]) })
                    .transpose()?;
            parts = (ws, bs);
            let proj = |i: usize| Projection {
                w: &parts.0[i],
                b: parts.1.as_ref().map(|b| &b[i]),
            };
            [proj(0), proj(1), proj(2)]
        }
    };
    let (raw, v) = if exec.cuda_training(grad) {
        // Bias + heads layout in one node each; keys come out transposed for the product.
        let heads = |p: &Projection, kt: bool| -> Result<Tensor> {
            let y = dense::product(x, p.w)?;
            match p.b {
                Some(bias) => cuda::attention::bias_heads(&y, &bias.to_dtype(y.dtype())?, nh, kt),
                None => {
                    let t = y.reshape((b, s, nh, hd))?.transpose(1, 2)?;
                    if kt {
                        t.t()?.contiguous()
                    } else {
                        t.contiguous()
                    }
                }
            }
        };
        let (q, kt, v) = match a.rotary {
            None => (heads(&q, false)?, heads(&k, true)?, heads(&v, false)?),
            Some(r) => (
                rotary_heads(&heads(&q, false)?, r)?,
                rotary_heads(&heads(&k, false)?, r)?.t()?.contiguous()?,
                heads(&v, false)?,
            ),
        };
        (q.matmul(&kt)?, v)
    } else {
        let heads = |p: &Projection| -> Result<Tensor> {
            dense::linear(exec, x, p.w, p.b)?
                .reshape((b, s, nh, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (mut q, mut k, v) = (heads(&q)?, heads(&k)?, heads(&v)?);
        if let Some(r) = a.rotary {
            (q, k) = (rotary_heads(&q, r)?, rotary_heads(&k, r)?);
        }
        (q.matmul(&k.t()?.contiguous()?)?, v)
    };
    let window = a.window.map(Window::mask).transpose()?;
    let probs = if exec.cuda_training(grad) {
        // Scale, mask, softmax and dropout as one op (the mask `ops::dropout` would draw).
        let p = if a.bias.is_some() || window.is_some() {
            let mut z = (raw.to_dtype(DType::F32)? * scale)?;
            if let Some(bias) = a.bias {
                z = z.broadcast_add(&bias.to_dtype(DType::F32)?.unsqueeze(0)?)?;
            }
            if let Some(w) = window {
                z = z.broadcast_add(&w.to_dtype(DType::F32)?)?;
            }
            cuda::attention::attention_probs(&z, mask, 1.0, a.dropout)?
        } else {
            cuda::attention::attention_probs(&raw, mask, scale, a.dropout)?
        };
        p.to_dtype(raw.dtype())?
    } else {
        let mut scores = (&raw * scale)?;
        if let Some(bias) = a.bias {
            scores = scores.broadcast_add(&bias.to_dtype(scores.dtype())?.unsqueeze(0)?)?;
        }
        if let Some(w) = window {
            scores = scores.broadcast_add(&w.to_dtype(scores.dtype())?)?;
        }
        let probs = softmax(exec, &scores.broadcast_add(mask)?, grad)?;
        super::dropout(exec, &probs, a.dropout)?
    };
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, s, h))
}

/// The CUDA path over a packed batch (`x: [1, T, H]`): q|k|v in one product (three projections
/// joined by their rows, whose backward splits the gradient), rotary positions from each
/// sequence's start, then the variable-length attention op (`cuda::varlen`, f32) — no padded
/// `[B, heads, S, S]` scores at all.
fn packed_cuda_path(x: &Tensor, qkv: Qkv, p: &Arc<Packed>, a: &AttnArgs) -> Result<Tensor> {
    let exec = Exec::CudaFused;
    let joined = match qkv {
        Qkv::Packed(pr) => dense::linear(exec, x, pr.w, pr.b)?,
        Qkv::Separate(ps) => {
            let w = Tensor::cat(&[ps[0].w, ps[1].w, ps[2].w], 0)?;
            let b = match ps.iter().all(|pr| pr.b.is_none()) {
                true => None,
                false => {
                    let bs = [0, 1, 2].map(|i| ps[i].bias_or_zeros()?.to_dtype(DType::F32));
                    Some(Tensor::cat(
                        &bs.into_iter().collect::<Result<Vec<_>>>()?,
                        0,
                    )?)
                }
            };
            dense::linear(exec, x, &w, b.as_ref())?
        }
    };
    let joined = match a.rotary {
        Some(r) => super::rotary::rotary_packed_rows(&joined, r, a.heads, p.positions())?,
        None => joined,
    };
    let window = a.window.map(|w| w.w);
    let ctx = cuda::varlen::attention(
        &joined,
        p.clone(),
        a.heads,
        a.dropout.clone(),
        a.bias,
        window,
    )?;
    ctx.to_dtype(x.dtype())
}

/// Softmax over the last dim in f32 (half precision inputs are cast up and the result cast
/// back): candle's fused kernel where no graph is built on the GPU paths, else the composed
/// version, which has a backward.
fn softmax(exec: Exec, x: &Tensor, grad: bool) -> Result<Tensor> {
    let dt = x.dtype();
    let x32 = match dt {
        DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    };
    let y = if candle_inference_kernels(exec, x, grad) {
        candle_nn::ops::softmax_last_dim(&x32)?
    } else {
        composed::softmax_last_dim(&x32)?
    };
    y.to_dtype(dt)
}
