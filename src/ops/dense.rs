//! Dense ops on every path: `linear` (`x·Wᵀ + b`), `linear_act` (the same with the feed-forward
//! activation) and `embedding` (rows of a table). Depends on candle and the path modules.

use super::{cpu, Exec};
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// A feed-forward activation, as config.json names it (`hidden_act`, DistilBERT's `activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Act {
    /// Exact GELU with erf (HF's "gelu").
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh approximation of GELU (HF's "gelu_new" / "gelu_pytorch_tanh").
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
    /// `x·sigmoid(x)` (HF's "silu" / "swish"; the gate of SwiGLU).
    #[serde(rename = "silu", alias = "swish")]
    Silu,
}

impl Act {
    /// The activation on the composed ops (each has a backward).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::Gelu => x.gelu_erf(),
            Act::GeluTanh => x.gelu(),
            Act::Relu => x.relu(),
            Act::Silu => x.silu(),
        }
    }
}

/// `x · Wᵀ` in `x`'s dtype over the last dim (`w: [out, in]`, cast to x's dtype).
pub(crate) fn product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let last = *dims.last().unwrap_or(&0);
    let rows = x.elem_count() / last.max(1);
    let y = x
        .reshape((rows, last))?
        .matmul(&w.to_dtype(x.dtype())?.t()?)?;
    let mut out = dims;
    if let Some(l) = out.last_mut() {
        *l = w.dim(0)?;
    }
    y.reshape(out)
}

/// A zero bias of `w`'s output size, for the CPU op (which always adds one).
pub(crate) fn zero_bias(w: &Tensor) -> Result<Tensor> {
    Tensor::zeros(w.dim(0)?, candle_core::DType::F32, w.device())
}

/// `y = x · Wᵀ + b` over the last dim; `w: [out, in]`, `b: [out]` (f32 master weights, cast to
/// x's dtype on the composed path). The result is in x's dtype.
pub fn linear(exec: Exec, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if exec == Exec::CpuFused {
        return match b {
            Some(b) => cpu::linear(x, w, b),
            None => cpu::linear(x, w, &zero_bias(w)?),
        };
    }
    let y = product(x, w)?;
    match b {
        Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?),
        None => Ok(y),
    }
}

/// [`linear`] with the weight and bias joined by rows from `parts` (`(W_i: [out_i, in], b_i)`):
/// the outputs side by side. CpuFused: one op over the parts (`cpu::linear_joined`; without
/// autograd, products into the output's column blocks, no join); elsewhere joined, then one
/// product. A part without a bias adds zeros.
pub fn linear_rows(exec: Exec, x: &Tensor, parts: &[(&Tensor, Option<&Tensor>)]) -> Result<Tensor> {
    let any_bias = parts.iter().any(|(_, b)| b.is_some());
    let biases = parts
        .iter()
        .map(|(w, b)| match b {
            Some(b) => Ok((*b).clone()),
            None => zero_bias(w),
        })
        .collect::<Result<Vec<_>>>()?;
    let ws: Vec<&Tensor> = parts.iter().map(|(w, _)| *w).collect();
    if exec == Exec::CpuFused {
        return cpu::linear_joined(x, &ws, &biases.iter().collect::<Vec<_>>());
    }
    let w = Tensor::cat(&ws, 0)?;
    let b = match any_bias {
        true => Some(Tensor::cat(&biases, 0)?),
        false => None,
    };
    linear(exec, x, &w, b.as_ref())
}

/// `act(x · Wᵀ + b)`: the feed-forward up-projection. On the CUDA training path bias + GELU are
/// one op with a one-kernel backward (candle's autograd of `gelu_erf` is ~12 kernels).
pub fn linear_act(
    exec: Exec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Act,
    grad: bool,
) -> Result<Tensor> {
    match (exec, act) {
        (Exec::CpuFused, Act::Gelu) => cpu::gelu(&linear(exec, x, w, b)?),
        (Exec::CudaFused, Act::Gelu) if grad => {
            let y = product(x, w)?;
            match b {
                Some(b) => super::cuda::sublayer::gelu_bias(&y, &b.to_dtype(y.dtype())?),
                None => y.gelu_erf(),
            }
        }
        (_, act) => act.apply(&linear(exec, x, w, b)?),
    }
}

/// Rows `ids` (any shape, flattened; u32) of `table: [V, H]` → `[N, H]`. CpuFused: a gather whose
/// backward writes only the used rows; CudaFused on a GPU: a gather whose backward scatter-adds in
/// parallel; else `index_select`.
pub fn embedding(exec: Exec, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    match exec {
        Exec::CpuFused => cpu::embedding(table, ids),
        #[cfg(feature = "cuda")]
        Exec::CudaFused if table.device().is_cuda() && table.dtype() == candle_core::DType::F32 => {
            super::cuda::launch::embedding(table, ids)
        }
        _ => table.index_select(&ids.flatten_all()?, 0),
    }
}
