//! Dense CPU ops (f32): the gemm calls (`gemm_into`, used by `linear` too), bias + exact GELU, the
//! embedding gather whose backward writes only the used rows (into `grad_sink`'s buffer in a
//! training step; not at all for a constant table), and Σx² for the gradient norm. Depends on
//! candle, gemm, rayon, `kernels` and `grad_sink`.

use super::grad_sink::{self as sink, grad_to, GradTo};
use super::kernels as k;
use super::{last_dim, rows_per_task, slice, sum_in_order, with_data};
use candle_core::{bail, CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `gelu(x + bias)` (erf form) over the last dim; `bias_grad: false` when the bias is a constant.
struct GeluBias {
    bias_grad: bool,
}

impl CustomOp2 for GeluBias {
    fn name(&self) -> &'static str {
        "embtune-cpu-gelu-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (slice(s1, l1, "gelu")?, slice(s2, l2, "gelu")?);
        let h = b.len().max(1);
        if last_dim(l1) != h {
            bail!("gelu: bias of {h} for rows of {}", last_dim(l1));
        }
        Ok((CpuStorage::F32(gelu_bias_rows(x, b)), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, db) = with_data(&[x, bias, g], "gelu backward", |d| {
            let (x, b, g) = (d[0], d[1], d[2]);
            let h = b.len().max(1);
            let mut dx = vec![0f32; x.len()];
            let chunk = rows_per_task(x.len() / h) * h;
            let db = dx
                .par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
                .map(|(dc, (xc, gc))| {
                    k::gelu_bias_backward(xc, b, gc, dc);
                    let mut db = vec![0f32; if self.bias_grad { h } else { 0 }];
                    for row in dc.chunks(h) {
                        db.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                    }
                    db
                })
                .collect::<Vec<_>>();
            let db = sum_in_order(db, if self.bias_grad { h } else { 0 });
            Ok((dx, db))
        })?;
        let db = if self.bias_grad {
            Some(Tensor::from_vec(db, bias.shape(), &Device::Cpu)?)
        } else {
            None
        };
        Ok((Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?), db))
    }
}

/// `gelu(x + bias)` of rows of `bias.len()` values, in parallel row blocks.
fn gelu_bias_rows(x: &[f32], b: &[f32]) -> Vec<f32> {
    let h = b.len().max(1);
    let mut y = vec![0f32; x.len()];
    let chunk = rows_per_task(x.len() / h) * h;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(yc, xc)| k::gelu_bias(xc, b, yc));
    y
}

/// `gelu(x)` of rows of `h` values (the kernel of [`gelu`]: a zero bias).
pub(crate) fn gelu_rows(x: &[f32], h: usize) -> Vec<f32> {
    gelu_bias_rows(x, &vec![0f32; h])
}

/// `g · gelu′(x)` of rows of `h` values (the backward of [`gelu`]).
pub(crate) fn gelu_rows_backward(x: &[f32], g: &[f32], h: usize) -> Vec<f32> {
    let zero = vec![0f32; h];
    let mut dx = vec![0f32; x.len()];
    let chunk = rows_per_task(x.len() / h.max(1)) * h.max(1);
    dx.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
        .for_each(|(dc, (xc, gc))| k::gelu_bias_backward(xc, &zero, gc, dc));
    dx
}

/// A row-major view for `gemm`: data, row stride, column stride.
pub(crate) struct View<'a>(pub &'a [f32], pub usize, pub usize);

/// `c[m×n] = (c if accumulate, else 0) + a[m×k]·b[k×n]` by the `gemm` crate (the kernels
/// candle's CPU matmul uses), on rayon's pool. `c` is contiguous row-major.
pub(crate) fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    accumulate: bool,
    a: View,
    b: View,
) -> Result<()> {
    gemm_on(m, n, k, c, accumulate, a, b, rayon::current_num_threads())
}

/// `c += a[m×k]·b[k×n]` where `c`'s rows are `ldc` apart (`ldc ≥ n`: a column block of a wider
/// row-major output), on rayon's pool.
pub(crate) fn gemm_strided_into(
    m: usize,
    n: usize,
    k: usize,
    (c, ldc): (&mut [f32], usize),
    a: View,
    b: View,
) -> Result<()> {
    gemm_ld(m, n, k, (c, ldc), true, a, b, rayon::current_num_threads())
}

/// [`gemm_into`] on `threads` threads (1: on the calling thread, for products inside a parallel
/// job).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_on(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    accumulate: bool,
    a: View,
    b: View,
    threads: usize,
) -> Result<()> {
    gemm_ld(m, n, k, (c, n), accumulate, a, b, threads)
}

/// The gemm call: `c` row-major with rows `ldc` apart.
#[allow(clippy::too_many_arguments)]
fn gemm_ld(
    m: usize,
    n: usize,
    k: usize,
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
    a: View,
    b: View,
    threads: usize,
) -> Result<()> {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    if ldc < n
        || c.len() <= last(m, n, ldc, 1)
        || (k > 0 && (a.0.len() <= last(m, k, a.1, a.2) || b.0.len() <= last(k, n, b.1, b.2)))
    {
        bail!("linear: operand sizes do not match {m}×{k}·{k}×{n}");
    }
    if k == 0 {
        if !accumulate {
            for r in c.chunks_mut(ldc).take(m) {
                r[..n].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        return Ok(());
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the product touches was bounds-checked above; `c` is exclusively
    // borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.0.as_ptr(),
            a.2 as isize,
            a.1 as isize,
            b.0.as_ptr(),
            b.2 as isize,
            b.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// Σ x² of an f32 CPU tensor, in parallel chunks (for the global gradient norm).
pub fn sum_squares(t: &Tensor) -> Result<f64> {
    with_data(&[t], "sum of squares", |d| {
        // Chunk sums added in chunk order (a parallel sum's order follows work stealing).
        let parts: Vec<f64> = d[0].par_chunks(1 << 16).map(k::sum_squares).collect();
        Ok(parts.iter().sum::<f64>())
    })
}

/// Rows `ids` of a `[V, H]` table. The backward scatter-adds the used rows: into the table's sink
/// buffer in a training step (whose next step clears only those rows), else into a freshly
/// allocated zero table (a large zeroed allocation comes from the kernel as untouched zero pages;
/// candle's `index_select` backward zero-fills the whole table, then copies it inside
/// `index_add` — ~47 MB twice a step for BERT's word embeddings).
struct Embedding;

impl CustomOp2 for Embedding {
    fn name(&self) -> &'static str {
        "embtune-cpu-embedding"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let table = slice(s1, l1, "embedding")?;
        let (v, h) = l1.shape().dims2()?;
        let (CpuStorage::U32(ids), Some((a, b))) = (s2, l2.contiguous_offsets()) else {
            bail!("embedding: ids must be a contiguous u32 tensor");
        };
        let ids = &ids[a..b];
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
            bail!("embedding: id {bad} out of range for a table of {v} rows");
        }
        let mut out = vec![0f32; ids.len() * h];
        out.par_chunks_mut((64 * h).max(1))
            .zip(ids.par_chunks(64))
            .for_each(|(oc, ic)| {
                for (o, &i) in oc.chunks_mut(h.max(1)).zip(ic) {
                    o.copy_from_slice(&table[i as usize * h..(i as usize + 1) * h]);
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((ids.len(), h))))
    }
    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (v, h) = table.dims2()?;
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        let scatter = |dt: &mut [f32], d: &[f32]| {
            for (row, &i) in d.chunks(h.max(1)).zip(&ids) {
                let dst = &mut dt[i as usize * h..(i as usize + 1) * h];
                dst.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        };
        match grad_to(table, None)? {
            GradTo::Sink => {
                // Each used row's gradient summed first (from zero, in batch order), then added
                // to the buffer: the sums candle's zero table plus a step's sum gave.
                let (mut index, mut uniq) = (std::collections::HashMap::new(), Vec::new());
                for &i in &ids {
                    index.entry(i).or_insert_with(|| {
                        uniq.push(i);
                        uniq.len() - 1
                    });
                }
                let mut acc = vec![0f32; uniq.len() * h];
                with_data(&[g], "embedding backward", |d| {
                    for (row, i) in d[0].chunks(h.max(1)).zip(&ids) {
                        let u = index[i];
                        let dst = &mut acc[u * h..(u + 1) * h];
                        dst.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                    }
                    Ok(())
                })?;
                sink::write_rows(table, &uniq, h, |dt| {
                    for (u, &i) in uniq.iter().enumerate() {
                        let dst = &mut dt[i as usize * h..(i as usize + 1) * h];
                        dst.iter_mut()
                            .zip(&acc[u * h..(u + 1) * h])
                            .for_each(|(a, b)| *a += b);
                    }
                    Ok(())
                })?;
                Ok((None, None))
            }
            GradTo::Nowhere => Ok((None, None)),
            GradTo::Candle => {
                let dt = with_data(&[g], "embedding backward", |d| {
                    let mut dt = vec![0f32; v * h];
                    scatter(&mut dt, d[0]);
                    Ok(dt)
                })?;
                Ok((Some(Tensor::from_vec(dt, (v, h), &Device::Cpu)?), None))
            }
        }
    }
}

/// Rows `ids` (any shape, flattened; u32) of `table: [V, H]` → `[N, H]`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    table.contiguous()?.apply_op2(
        &ids.flatten_all()?.to_dtype(candle_core::DType::U32)?,
        Embedding,
    )
}

/// `gelu(x + bias)`, exact (erf) GELU, `bias: [H]` over the last dim of `x`.
pub fn gelu_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&bias.contiguous()?, GeluBias { bias_grad: true })
}

/// Exact (erf) GELU over `x`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let h = x.dim(candle_core::D::Minus1)?;
    let zero = Tensor::zeros(h, candle_core::DType::F32, &Device::Cpu)?;
    x.contiguous()?
        .apply_op2(&zero, GeluBias { bias_grad: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::testing::check;
    use crate::ops::test_util::randn;
    use candle_core::Var;

    #[test]
    fn gelu_bias_matches_candles_erf_gelu() {
        let x = Var::from_tensor(&randn(&[4, 7, 48], 1, 4.0)).unwrap();
        let b = Var::from_tensor(&randn(&[48], 2, 1.0)).unwrap();
        let fused = gelu_bias(x.as_tensor(), b.as_tensor()).unwrap();
        let composed = x
            .as_tensor()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .gelu_erf()
            .unwrap();
        check(&[("x", &x), ("bias", &b)], &fused, &composed, 1e-6, 1e-5);
    }

    #[test]
    fn embedding_matches_index_select_and_its_backward() {
        let t = Var::from_tensor(&randn(&[11, 8], 20, 1.0)).unwrap();
        let ids = Tensor::from_vec(vec![3u32, 0, 3, 10, 7, 3], (2, 3), &Device::Cpu).unwrap();
        let fused = embedding(t.as_tensor(), &ids).unwrap();
        let composed = t
            .as_tensor()
            .index_select(&ids.flatten_all().unwrap(), 0)
            .unwrap();
        check(&[("table", &t)], &fused, &composed, 0.0 + 1e-7, 1e-6);
        let bad = Tensor::from_vec(vec![11u32], 1, &Device::Cpu).unwrap();
        assert!(embedding(t.as_tensor(), &bad).is_err());
    }
}
