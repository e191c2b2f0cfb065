//! Gated linear units on every path: `x: [.., 2I]` = `[a | b]` → `act(a)·b` `[.., I]` — GeGLU
//! (ModernBERT, GTE), SwiGLU (NomicBERT). The family arranges its up-projection so the activated
//! half comes first. CpuFused: one op (`cpu::glu`); the other paths: candle's ops (each has a
//! backward; on a GPU candle's own kernels). Depends on candle, `cpu` and `dense::Act`.

use super::{cpu, Act, Exec};
use candle_core::{Result, Tensor, D};

/// `act(x[.., :I]) · x[.., I:]` on `exec`'s path.
pub fn glu(exec: Exec, x: &Tensor, act: Act) -> Result<Tensor> {
    if exec == Exec::CpuFused {
        return cpu::glu(x, act);
    }
    glu_composed(x, act)
}

/// [`glu`] on candle's ops (the reference).
pub fn glu_composed(x: &Tensor, act: Act) -> Result<Tensor> {
    let w = x.dim(D::Minus1)?;
    if w == 0 || w % 2 != 0 {
        candle_core::bail!("glu: the last dim {w} is not two equal halves");
    }
    let a = x.narrow(D::Minus1, 0, w / 2)?;
    let b = x.narrow(D::Minus1, w / 2, w / 2)?;
    act.apply(&a)? * b
}
