//! The CPU fused path (`Exec::CpuFused`): candle custom ops over SIMD kernels (`kernels.rs`:
//! GELU, LayerNorm, dropout, AdamW and the shared SIMD helpers; `attention_kernels.rs`: the
//! attention core per (sentence, head)), each with a hand-written backward that recomputes what it
//! needs (attention probabilities, dropout masks) instead of keeping it in the graph, work spread
//! over rayon's pool (the one candle's matrix products use). f32 only. Ops: `linear` (one gemm call
//! seeded with the bias), `dense` (the gemm calls, bias + GELU, embedding gather, sum of squares), `norm`
//! (LayerNorm with or without a residual sum), `attention` (the attention core on packed q|k|v,
//! of padded sentences or of a packed batch's sequences, optionally in a sliding window;
//! `attention_long`: its blocked-product forward for long sentences; tests in `attention_tests`
//! and, against full attention, `attention_window_tests`), `rotary` (RoPE on packed
//! q|k|v), `gelu_linear` (GELU folded into the down projection), `glu` (gated linear units), `dropout` (counter-based masks), `grad_sink` (parameter
//! gradients written in place during a training step), `weight_layout` (how products read a
//! weight, and the transpose inference loads keep). Tests check each against
//! the composed candle ops (values and gradients). Depends on candle, gemm, rayon and
//! `ops::dropout::Dropout`.

pub mod attention;
pub mod attention_kernels;
pub mod attention_long;
#[cfg(test)]
mod attention_tests;
#[cfg(test)]
mod attention_window_tests;
pub mod dense;
pub mod dropout;
pub mod gelu_linear;
pub mod glu;
pub mod grad_sink;
pub mod kernels;
pub mod linear;
pub mod norm;
pub mod rotary;
pub mod weight_layout;

use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor};

pub use attention::attention;
pub use dense::{embedding, gelu, gelu_bias, sum_squares};
pub use dropout::apply as dropout;
pub use gelu_linear::gelu_linear;
pub use glu::glu;
pub use linear::{linear, linear_dropout, linear_joined};
pub use norm::{add_layer_norm, layer_norm};
pub use rotary::rotary;
pub use weight_layout::transpose;

pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor");
    };
    Ok(&v[a..b])
}

/// Runs `f` on the f32 data of CPU tensors (made contiguous first).
pub(crate) fn with_data<R>(
    ts: &[&Tensor],
    what: &str,
    f: impl FnOnce(&[&[f32]]) -> Result<R>,
) -> Result<R> {
    let ts: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut data = Vec::with_capacity(guards.len());
    for (g, l) in &guards {
        match &**g {
            Storage::Cpu(c) => data.push(slice(c, l, what)?),
            _ => bail!("{what}: expected a CPU tensor"),
        }
    }
    f(&data)
}

/// Rows per parallel task: enough tasks for load balance, none tiny.
pub(crate) fn rows_per_task(rows: usize) -> usize {
    (rows / (4 * rayon::current_num_threads().max(1))).clamp(8, 512)
}

pub(crate) fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

pub(crate) fn add_vec(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// The sum of per-task vectors (each `n` long, or empty) in task order. A parallel `reduce` or
/// `fold` would combine them in the order rayon's work stealing split the job, which changes from
/// run to run — and with it the float sums, so a run would not repeat bitwise.
pub(crate) fn sum_in_order(parts: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .fold(vec![0f32; n], add_vec)
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::ops::test_util::{max_abs, max_diff, randn};
    use candle_core::{Tensor, Var};

    /// Forward values and the gradient of every input of `fused` and `composed` agree, on a
    /// loss that weights each output differently; every gradient is non-zero.
    pub(crate) fn check(
        vars: &[(&str, &Var)],
        fused: &Tensor,
        composed: &Tensor,
        tol_fwd: f32,
        tol_grad: f32,
    ) {
        let d = max_diff(fused, composed);
        assert!(d < tol_fwd, "forward: max diff {d:e}");
        let r = randn(fused.dims(), 99, 1.0);
        let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in vars {
            let (a, c) = (
                gf.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            let d = max_diff(a, c);
            let scale = max_abs(c);
            assert!(
                d <= tol_grad * scale.max(1.0),
                "grad {name}: max diff {d:e} (|grad| {scale:e})"
            );
            assert!(scale > 1e-3, "grad {name} is zero");
        }
    }
}
