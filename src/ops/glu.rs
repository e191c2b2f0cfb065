//! Gated linear units on every path: `x: [.., 2I]` = `[a | b]` → `act(a)·b` `[.., I]` — GeGLU
//! (ModernBERT, GTE), SwiGLU (NomicBERT) — or, with `act_first: false`, `[b | a]` (GTE's
//! `up_gate_proj` stores the gate second). CpuFused: one op (`cpu::glu`); the other paths: candle's ops (each has a
//! backward; on a GPU candle's own kernels). Depends on candle, `cpu` and `dense::Act`.

use super::{cpu, Act, Exec};
use candle_core::{Result, Tensor, D};

/// `act(x[.., :I]) · x[.., I:]` on `exec`'s path (`act_first: false`: `act(x[.., I:]) ·
/// x[.., :I]`).
pub fn glu(exec: Exec, x: &Tensor, act: Act, act_first: bool) -> Result<Tensor> {
    if exec == Exec::CpuFused {
        return cpu::glu(x, act, act_first);
    }
    glu_composed(x, act, act_first)
}

/// [`glu`] on candle's ops (the reference).
pub fn glu_composed(x: &Tensor, act: Act, act_first: bool) -> Result<Tensor> {
    let w = x.dim(D::Minus1)?;
    if w == 0 || w % 2 != 0 {
        candle_core::bail!("glu: the last dim {w} is not two equal halves");
    }
    let (first, second) = (
        x.narrow(D::Minus1, 0, w / 2)?,
        x.narrow(D::Minus1, w / 2, w / 2)?,
    );
    let (a, b) = if act_first {
        (first, second)
    } else {
        (second, first)
    };
    act.apply(&a)? * b
}
