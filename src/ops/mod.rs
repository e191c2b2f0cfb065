//! Every differentiable op the encoders use, with its backward, on every execution path — a
//! LEAF module (candle, gemm, rayon; nothing else of the crate). One [`Exec`] value, resolved
//! once per model (`Exec::resolve`), is passed to each op; the paths share the op boundaries
//! below, so model code calls `ops::linear`, `ops::attention`, … and never asks which path it is
//! on:
//! - `dense` — `linear`, `linear_act` (a feed-forward up-projection with its activation),
//!   `embedding` (row gather);
//! - `norm` — `layer_norm`, `sum_layer_norm` (the embedding sum and its norm), `residual_norm`
//!   (a post-norm sublayer's end: `LayerNorm(dropout(x·Wᵀ + b) + residual)`);
//! - `attention` — multi-head self-attention from the input projections to the context, with an
//!   optional additive score bias (relative positions) and its gradient, rotary positions
//!   (`rotary`) and a sliding window;
//! - `glu` — gated linear units (GeGLU, SwiGLU);
//! - `dropout` — counter-based masks shared by all paths;
//! - `packed` — the layout of a packed batch (sequences back to back, no padding), which the
//!   CPU fused attention and dropout take.
//!
//! Paths: `composed` (candle's ops; the reference), `cpu` (SIMD custom ops, f32), `cuda` (fused
//! custom ops; CUDA kernels in `cuda::launch` with the `cuda` feature, plain-loop CPU forwards
//! otherwise). The optimizer's kernels (AdamW step, Σx², clipping) live in `cpu::kernels` and
//! `cuda::launch` too.

pub mod attention;
pub mod composed;
pub mod cpu;
pub mod cuda;
pub mod dense;
pub mod dropout;
pub mod exec;
pub mod glu;
pub mod norm;
pub mod packed;
pub mod rotary;
#[cfg(test)]
pub(crate) mod test_util;

pub use attention::{attention, AttnArgs, AttnMask, Projection, Qkv, Window};
pub use dense::{embedding, linear, linear_act, linear_rows, Act};
pub use dropout::{dropout, Dropout};
pub use exec::Exec;
pub use glu::glu;
pub use norm::{feed_forward_norm, layer_norm, residual_norm, sum_layer_norm};
pub use packed::Packed;
pub use rotary::Rotary;

use candle_core::Tensor;

/// Whether candle's fused inference kernels (LayerNorm, softmax; no backward) apply: no graph is
/// built, on a CUDA device or on the CUDA path run on the CPU.
pub(crate) fn candle_inference_kernels(exec: Exec, x: &Tensor, grad: bool) -> bool {
    !grad && (exec == Exec::CudaFused || x.device().is_cuda())
}
