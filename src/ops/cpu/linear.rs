//! The CPU linear op (f32): `x·Wᵀ + b` as one gemm call seeded with the bias; its backward is two
//! products and a column sum. A weight joined from separate parameters (q|k|v,
//! [`linear_joined`]) remembers its parts, whose gradients go to `grad_sink` in a training step;
//! a constant's gradient is not computed. The weight may be row-major `[out, in]` or the
//! transpose of a contiguous `[in, out]` (how inference loads keep it: `weight_layout`), which
//! the product reads as it is; without autograd, joined parts are products into one output's
//! column blocks (no join). Dropout may be folded into the output ([`linear_dropout`]). Depends
//! on candle, rayon, `dense` (the gemm calls), `weight_layout`, `dropout` (its mask) and
//! `grad_sink`.

use super::dense::{gemm_into, View};
use super::dropout::masked;
use super::grad_sink::{self as sink, grad_to, GradTo};
#[cfg(test)]
use super::weight_layout::transpose;
use super::weight_layout::{weight_operand, weight_view};
use super::{last_dim, rows_per_task, slice, sum_in_order, with_data};
use crate::ops::Dropout;
use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `y = x·Wᵀ + b` over the last dim of `x`, `W: [out, in]`, `b: [out]`; the bias seeds the
/// product's output (one pass), the backward is two products and a column sum. `w_parts` /
/// `b_parts`: the sink-registered parameters a detached `W` / `b` was joined from (rows in
/// order), whose gradients the backward writes. `drop`: dropout folded into the output (the
/// mask of `ops::dropout`, applied to the gradient first in the backward), so the product's
/// undropped output is never a tensor a training step keeps.
pub(super) struct Linear {
    w_parts: Option<Vec<Tensor>>,
    b_parts: Option<Vec<Tensor>>,
    drop: Option<Dropout>,
}

impl Linear {
    /// The op on a weight and bias that are themselves the parameters (not joined from parts),
    /// with dropout `drop` on its output.
    pub(super) fn plain(drop: Option<Dropout>) -> Self {
        Linear {
            w_parts: None,
            b_parts: None,
            drop,
        }
    }
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
        let (x, b) = (slice(s1, l1, "linear")?, slice(s3, l3, "linear")?);
        let (out, inp) = l2.shape().dims2()?;
        let wv = weight_view(s2, l2)?;
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
        gemm_into(rows, out, inp, &mut y, true, View(x, inp, 1), wv)?;
        if let Some(d) = &self.drop {
            y = masked(&y, out, d)?;
        }
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
        let dropped;
        let g = match &self.drop {
            Some(d) => {
                let gm = with_data(&[g], "linear backward", |v| masked(v[0], out, d))?;
                dropped = Tensor::from_vec(gm, g.shape(), &Device::Cpu)?;
                &dropped
            }
            None => g,
        };
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

/// `x·Wᵀ + b` over the last dim of `x` (`W: [out, in]`, row-major or kept transposed; `b:
/// [out]`).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    linear_dropout(x, w, b, None)
}

/// `dropout(x·Wᵀ + b)` as one op (the mask of `ops::dropout` for `drop`): bitwise [`linear`]
/// then `cpu::dropout`, without the undropped output as a tensor of the graph.
pub fn linear_dropout(x: &Tensor, w: &Tensor, b: &Tensor, drop: Option<Dropout>) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&weight_operand(w)?, &b.contiguous()?, Linear::plain(drop))
}

/// [`linear_joined`] without autograd: each part's product written straight into its column
/// block of the joined output (row stride Σ out_i), seeded with its bias — no joined weight.
fn linear_parts(x: &Tensor, ws: &[&Tensor], bs: &[&Tensor]) -> Result<Tensor> {
    let x = x.contiguous()?;
    let inp = x.dim(candle_core::D::Minus1)?;
    let rows = x.elem_count() / inp.max(1);
    let ws = ws
        .iter()
        .map(|w| weight_operand(w))
        .collect::<Result<Vec<_>>>()?;
    let outs = ws.iter().map(|w| w.dim(0)).collect::<Result<Vec<_>>>()?;
    let total: usize = outs.iter().sum();
    let mut y = vec![0f32; rows * total];
    let (xs, xl) = x.storage_and_layout();
    let candle_core::Storage::Cpu(xs) = &*xs else {
        bail!("linear: expected a CPU tensor");
    };
    let xd = slice(xs, xl, "linear")?;
    let mut col = 0;
    for ((w, b), &out) in ws.iter().zip(bs).zip(&outs) {
        if w.dim(1)? != inp || b.elem_count() != out {
            bail!(
                "linear: weight {:?} and bias {:?} for inputs of {inp}",
                w.dims(),
                b.dims()
            );
        }
        let b = b.flatten_all()?.to_vec1::<f32>()?;
        for r in y.chunks_mut(total.max(1)) {
            r[col..col + out].copy_from_slice(&b);
        }
        let (ws_, wl) = w.storage_and_layout();
        let candle_core::Storage::Cpu(ws_) = &*ws_ else {
            bail!("linear: expected a CPU weight");
        };
        super::dense::gemm_strided_into(
            rows,
            out,
            inp,
            (&mut y[col..], total),
            View(xd, inp, 1),
            weight_view(ws_, wl)?,
        )?;
        col += out;
    }
    let mut dims = x.dims().to_vec();
    if let Some(d) = dims.last_mut() {
        *d = total;
    }
    Tensor::from_vec(y, dims, &Device::Cpu)
}

/// [`linear`] with the weight and bias joined from parts (`ws[i]: [out_i, in]`, `bs[i]:
/// [out_i]`, the rows of each in order): one product. Parts the training step's sink takes are
/// joined detached (candle's backward needs a gradient for every tracked node, and the parts'
/// gradients go to the sink instead); others through a tracked `cat`.
pub fn linear_joined(x: &Tensor, ws: &[&Tensor], bs: &[&Tensor]) -> Result<Tensor> {
    if !x.track_op() && ws.iter().chain(bs).all(|t| !t.track_op()) {
        return linear_parts(x, ws, bs);
    }
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
    x.contiguous()?.apply_op3(
        &w,
        &b,
        Linear {
            w_parts,
            b_parts,
            drop: None,
        },
    )
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

    /// Dropout folded into the op is bitwise `linear` then `cpu::dropout` (values and
    /// gradients), on a padded and on a packed batch's rows.
    #[test]
    fn linear_dropout_is_bitwise_linear_then_dropout() {
        let packed = std::sync::Arc::new(crate::ops::Packed::new(&[3, 6, 2]));
        for (shape, layout) in [([2, 6, 40], None), ([1, 11, 40], Some(packed))] {
            let x = Var::from_tensor(&randn(&shape, 60, 1.0)).unwrap();
            let w = Var::from_tensor(&randn(&[24, 40], 61, 0.3)).unwrap();
            let b = Var::from_tensor(&randn(&[24], 62, 0.5)).unwrap();
            let mut d = Dropout::new(0.25, 9);
            d.packed = layout;
            let r = randn(&[shape[0], shape[1], 24], 63, 1.0);
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let run = |y: Tensor| {
                let gs = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g: Vec<Vec<f32>> = [&x, &w, &b]
                    .iter()
                    .map(|p| v(gs.get(p.as_tensor()).unwrap()))
                    .collect();
                (v(&y), g)
            };
            let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
            let fused = run(linear_dropout(xt, wt, bt, Some(d.clone())).unwrap());
            let apart = run(crate::ops::cpu::dropout(&linear(xt, wt, bt).unwrap(), d).unwrap());
            assert!(
                fused.0.iter().filter(|&&y| y == 0.0).count() > 20,
                "nothing dropped"
            );
            assert!(fused == apart, "differs from linear then dropout");
        }
    }

    /// A weight kept transposed (`[in, out]` storage, read as its `[out, in]` transpose) and
    /// q|k|v parts written into one output without a join give bitwise the row-major results.
    #[test]
    fn transposed_weights_and_unjoined_parts_give_the_same_products() {
        let x = randn(&[2, 9, 40], 20, 1.0);
        let ws: Vec<Tensor> = (0..3).map(|i| randn(&[24, 40], 21 + i, 0.3)).collect();
        let bs: Vec<Tensor> = (0..3).map(|i| randn(&[24], 31 + i, 0.5)).collect();
        let held = |w: &Tensor| {
            let (o, i) = w.dims2().unwrap();
            let d = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            Tensor::from_vec(transpose(&d, o, i), (i, o), &Device::Cpu)
                .unwrap()
                .t()
                .unwrap()
        };
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let plain = linear(&x, &ws[0], &bs[0]).unwrap();
        let tw = held(&ws[0]);
        assert!(
            tw.layout().stride() == [1, 24],
            "the test's weight is not transposed"
        );
        assert_eq!(v(&linear(&x, &tw, &bs[0]).unwrap()), v(&plain));
        // Joined through candle (a tracked part) and unjoined (nothing tracked).
        let wv = Var::from_tensor(&ws[0]).unwrap();
        let tracked = [wv.as_tensor(), &ws[1], &ws[2]];
        let b = [&bs[0], &bs[1], &bs[2]];
        let joined = linear_joined(&x, &tracked, &b).unwrap();
        let held_ws: Vec<Tensor> = ws.iter().map(held).collect();
        let parts = linear_joined(&x, &[&held_ws[0], &held_ws[1], &held_ws[2]], &b).unwrap();
        let rows = linear_joined(&x, &[&ws[0], &ws[1], &ws[2]], &b).unwrap();
        assert_eq!(parts.dims(), &[2, 9, 72]);
        assert_eq!(v(&parts), v(&joined));
        assert_eq!(v(&rows), v(&joined));
        let cols = |t: &Tensor, i: usize| v(&t.narrow(2, 24 * i, 24).unwrap());
        for i in 0..3 {
            assert_eq!(
                cols(&joined, i),
                v(&linear(&x, &ws[i], &bs[i]).unwrap()),
                "part {i}"
            );
        }
    }
}
