//! The CPU linear op (f32): `x·Wᵀ + b` as one gemm call seeded with the bias; its backward is two
//! products and a column sum. A weight joined from separate parameters (q|k|v,
//! [`linear_joined`]) remembers its parts, whose gradients go to `grad_sink` in a training step;
//! a constant's gradient is not computed. Depends on candle, rayon, `dense` (the gemm calls) and
//! `grad_sink`.

use super::dense::{gemm_into, View};
use super::grad_sink::{self as sink, grad_to, GradTo};
use super::{last_dim, rows_per_task, slice, sum_in_order, with_data};
use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `y = x·Wᵀ + b` over the last dim of `x`, `W: [out, in]`, `b: [out]`; the bias seeds the
/// product's output (one pass), the backward is two products and a column sum. `w_parts` /
/// `b_parts`: the sink-registered parameters a detached `W` / `b` was joined from (rows in
/// order), whose gradients the backward writes.
struct Linear {
    w_parts: Option<Vec<Tensor>>,
    b_parts: Option<Vec<Tensor>>,
}

/// Writes `rows × cols` of a joined gradient into its parts' sink buffers: `f(buf, offset,
/// part_rows, fresh)` writes rows `offset..offset + part_rows` into `buf`.
fn sink_parts(
    parts: &[Tensor],
    mut f: impl FnMut(&mut [f32], usize, usize, bool) -> Result<()>,
) -> Result<()> {
    let mut offset = 0;
    for p in parts {
        let n = p.dim(0)?;
        sink::write_dense(p, |buf, fresh| f(buf, offset, n, fresh))?;
        offset += n;
    }
    Ok(())
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "embtune-cpu-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            slice(s1, l1, "linear")?,
            slice(s2, l2, "linear")?,
            slice(s3, l3, "linear")?,
        );
        let (out, inp) = l2.shape().dims2()?;
        if last_dim(l1) != inp || b.len() != out {
            bail!(
                "linear: weight [{out}, {inp}] for inputs of {}",
                last_dim(l1)
            );
        }
        let rows = x.len() / inp.max(1);
        let mut y = vec![0f32; rows * out];
        for r in y.chunks_mut(out.max(1)) {
            r.copy_from_slice(b);
        }
        gemm_into(
            rows,
            out,
            inp,
            &mut y,
            true,
            View(x, inp, 1),
            View(w, 1, inp),
        )?;
        let mut dims = l1.dims().to_vec();
        if let Some(d) = dims.last_mut() {
            *d = out;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out, inp) = w.dims2()?;
        let (to_w, to_b) = (
            grad_to(w, self.w_parts.as_deref())?,
            grad_to(b, self.b_parts.as_deref())?,
        );
        let own = |t: &Tensor, parts: &Option<Vec<Tensor>>| match parts {
            Some(p) => p.clone(),
            None => vec![t.clone()],
        };
        let (wp, bp) = (own(w, &self.w_parts), own(b, &self.b_parts));
        let (dx, dw, db) = with_data(&[x, w, g], "linear backward", |d| {
            let (x, w, g) = (d[0], d[1], d[2]);
            let rows = x.len() / inp.max(1);
            let mut dx = vec![0f32; rows * inp];
            gemm_into(
                rows,
                inp,
                out,
                &mut dx,
                false,
                View(g, out, 1),
                View(w, inp, 1),
            )?;
            // dW = gᵀ·x, row block by row block when it goes to the parts' buffers.
            let dw_rows = |c: &mut [f32], offset: usize, n: usize, add: bool| {
                if rows == 0 {
                    if !add {
                        c.fill(0.0);
                    }
                    return Ok(());
                }
                gemm_into(
                    n,
                    inp,
                    rows,
                    c,
                    add,
                    View(&g[offset..], 1, out),
                    View(x, inp, 1),
                )
            };
            let dw = match to_w {
                GradTo::Sink => {
                    // A later write of the step adds its own product (as candle would add a
                    // second gradient), so an accumulated step sums what it summed before.
                    sink_parts(&wp, |c, o, n, fresh| match fresh {
                        true => dw_rows(c, o, n, false),
                        false => {
                            let mut t = vec![0f32; c.len()];
                            dw_rows(&mut t, o, n, false)?;
                            c.iter_mut().zip(&t).for_each(|(a, v)| *a += v);
                            Ok(())
                        }
                    })?;
                    None
                }
                GradTo::Candle => {
                    let mut dw = vec![0f32; out * inp];
                    dw_rows(&mut dw, 0, out, false)?;
                    Some(dw)
                }
                GradTo::Nowhere => None,
            };
            if to_b == GradTo::Nowhere {
                return Ok((dx, dw, None));
            }
            let chunk = rows_per_task(rows) * out.max(1);
            let db = g
                .par_chunks(chunk)
                .map(|gc| {
                    let mut db = vec![0f32; out];
                    for row in gc.chunks(out.max(1)) {
                        db.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                    }
                    db
                })
                .collect::<Vec<_>>();
            let db = sum_in_order(db, out);
            if to_b == GradTo::Sink {
                sink_parts(&bp, |c, o, n, fresh| {
                    let src = &db[o..o + n];
                    if fresh {
                        c.copy_from_slice(src);
                    } else {
                        c.iter_mut().zip(src).for_each(|(a, v)| *a += v);
                    }
                    Ok(())
                })?;
                return Ok((dx, dw, None));
            }
            Ok((dx, dw, Some(db)))
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?),
            dw.map(|dw| Tensor::from_vec(dw, w.shape(), &Device::Cpu))
                .transpose()?,
            db.map(|db| Tensor::from_vec(db, b.shape(), &Device::Cpu))
                .transpose()?,
        ))
    }
}

/// `x·Wᵀ + b` over the last dim of `x` (`W: [out, in]`, `b: [out]`).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = Linear {
        w_parts: None,
        b_parts: None,
    };
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)
}

/// [`linear`] with the weight and bias joined from parts (`ws[i]: [out_i, in]`, `bs[i]:
/// [out_i]`, the rows of each in order): one product. Parts the training step's sink takes are
/// joined detached (candle's backward needs a gradient for every tracked node, and the parts'
/// gradients go to the sink instead); others through a tracked `cat`.
pub fn linear_joined(x: &Tensor, ws: &[&Tensor], bs: &[&Tensor]) -> Result<Tensor> {
    let join = |ts: &[&Tensor]| -> Result<(Tensor, Option<Vec<Tensor>>)> {
        if ts.iter().all(|t| sink::takes(t)) {
            let parts: Vec<Tensor> = ts.iter().map(|&t| t.clone()).collect();
            let detached: Vec<Tensor> = ts.iter().map(|t| t.detach()).collect();
            Ok((Tensor::cat(&detached, 0)?, Some(parts)))
        } else {
            Ok((Tensor::cat(ts, 0)?, None))
        }
    };
    let ((w, w_parts), (b, b_parts)) = (join(ws)?, join(bs)?);
    x.contiguous()?
        .apply_op3(&w, &b, Linear { w_parts, b_parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::testing::check;
    use crate::ops::test_util::randn;
    use candle_core::Var;

    #[test]
    fn linear_matches_candles_matmul() {
        let x = Var::from_tensor(&randn(&[3, 13, 40], 10, 1.0)).unwrap();
        let w = Var::from_tensor(&randn(&[24, 40], 11, 0.3)).unwrap();
        let b = Var::from_tensor(&randn(&[24], 12, 0.5)).unwrap();
        let fused = linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        let composed = x
            .as_tensor()
            .reshape((39, 40))
            .unwrap()
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .reshape((3, 13, 24))
            .unwrap();
        check(
            &[("x", &x), ("w", &w), ("b", &b)],
            &fused,
            &composed,
            1e-5,
            1e-5,
        );
    }
}
