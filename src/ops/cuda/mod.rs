//! The CUDA path's fused ops (`Exec::CudaFused`), as candle custom ops with hand-written
//! backwards: LayerNorm (`layer_norm`), bias + GELU and the post-norm sublayer end
//! `LayerNorm(dropout(x + bias) + residual)` (`sublayer`), q/k/v bias + heads layout and the
//! attention probabilities (`attention`), variable-length attention over packed batches
//! (`varlen`, with its kernels' CPU mirror and launches). Their CUDA forwards launch embtune's kernels
//! (`launch`, feature `cuda`; kernels/embtune.cu); their CPU forwards are plain loops, so the
//! whole path runs on a CPU device for checks. Depends on candle and `ops::Dropout`.

pub mod attention;
#[cfg(feature = "cuda")]
pub mod launch;
pub mod layer_norm;
pub mod sublayer;
pub mod varlen;
#[cfg(feature = "cuda")]
mod varlen_launch;
mod varlen_mirror;
mod varlen_tests;
