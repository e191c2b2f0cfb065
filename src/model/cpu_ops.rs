//! The encoder's CPU fast path in f32: linear layers (one `gemm` call seeded with the bias),
//! the attention core on packed q|k|v, GELU, residual sum + LayerNorm, and dropout as candle
//! custom ops over `cpu_kernels.rs`, each with a hand-written backward (which recomputes
//! what it needs — attention probabilities, dropout masks — instead of keeping it in the graph),
//! work spread over rayon's pool (the one candle's matrix products use). `bert.rs` uses them on
//! the CPU for f32 unless `EMBTUNE_CPU_FUSED=0`; tests check each against the composed ops of
//! `ops.rs` (values and gradients).

use super::cpu_kernels::{self as k, AttnShape, Dropout, HeadJob, Heads};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Storage,
    Tensor,
};
use rayon::prelude::*;
use std::sync::Arc;

/// Whether `bert.rs` takes this path (default on; `EMBTUNE_CPU_FUSED=0` switches to the composed
/// candle ops, for comparisons).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("EMBTUNE_CPU_FUSED").as_deref(),
            Ok("0") | Ok("false") | Ok("off")
        )
    })
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor");
    };
    Ok(&v[a..b])
}

/// Runs `f` on the f32 data of CPU tensors (made contiguous first).
fn with_data<R>(ts: &[&Tensor], what: &str, f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
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
fn rows_per_task(rows: usize) -> usize {
    (rows / (4 * rayon::current_num_threads().max(1))).clamp(8, 512)
}

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

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
        let mut y = vec![0f32; x.len()];
        let chunk = rows_per_task(x.len() / h) * h;
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(yc, xc)| k::gelu_bias(xc, b, yc));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
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
                .reduce(
                    Vec::new,
                    |a, b| if a.is_empty() { b } else { add_vec(a, b) },
                );
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

fn add_vec(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// `LayerNorm(a + r)` with `wb = [w; b]` (`[2H]`): the residual sum of BERT's sublayers fused
/// into the norm (the sum is recomputed in the backward, not stored).
struct AddLayerNorm {
    eps: f32,
}

/// `out = a + r` row block by row block into `tmp`, then `f(tmp)`.
fn sum_into<'t>(a: &[f32], r: &[f32], tmp: &'t mut Vec<f32>) -> &'t [f32] {
    tmp.clear();
    tmp.extend(a.iter().zip(r).map(|(x, y)| x + y));
    tmp
}

impl CustomOp3 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "embtune-cpu-add-layer-norm"
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
        let (a, r) = (
            slice(s1, l1, "add+layer norm")?,
            slice(s2, l2, "add+layer norm")?,
        );
        let wb = slice(s3, l3, "add+layer norm")?;
        let h = wb.len() / 2;
        if l1.dims() != l2.dims() || last_dim(l1) != h || wb.len() != 2 * h {
            bail!(
                "add+layer norm: [w; b] of {} for rows of {}",
                wb.len(),
                last_dim(l1)
            );
        }
        let (w, b) = wb.split_at(h);
        let mut y = vec![0f32; a.len()];
        let chunk = rows_per_task(a.len() / h.max(1)) * h.max(1);
        y.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk).zip(r.par_chunks(chunk)))
            .for_each(|(yc, (ac, rc))| {
                let mut tmp = Vec::new();
                k::layer_norm(sum_into(ac, rc, &mut tmp), w, b, self.eps, yc)
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        a: &Tensor,
        r: &Tensor,
        wb: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let eps = self.eps;
        let (dx, dwb) = with_data(&[a, r, wb, g], "add+layer norm backward", |d| {
            let (a, r, wb, g) = (d[0], d[1], d[2], d[3]);
            let h = (wb.len() / 2).max(1);
            let w = &wb[..h];
            let mut dx = vec![0f32; a.len()];
            let chunk = rows_per_task(a.len() / h) * h;
            let dwb = dx
                .par_chunks_mut(chunk)
                .zip(
                    a.par_chunks(chunk)
                        .zip(r.par_chunks(chunk).zip(g.par_chunks(chunk))),
                )
                .map(|(dc, (ac, (rc, gc)))| {
                    let mut dwb = vec![0f32; 2 * h];
                    let (dw, db) = dwb.split_at_mut(h);
                    let (mut tmp, mut xhat) = (Vec::new(), vec![0f32; h]);
                    let x = sum_into(ac, rc, &mut tmp);
                    k::layer_norm_backward(x, w, gc, eps, dc, dw, db, &mut xhat);
                    dwb
                })
                .reduce(|| vec![0f32; 2 * h], add_vec);
            Ok((dx, dwb))
        })?;
        let dx = Tensor::from_vec(dx, a.shape(), &Device::Cpu)?;
        Ok((
            Some(dx.clone()),
            Some(dx),
            Some(Tensor::from_vec(dwb, wb.shape(), &Device::Cpu)?),
        ))
    }
}

/// `LayerNorm(a + r)·w + b` over the last dim (the residual connection and the norm in one op).
pub fn add_layer_norm(a: &Tensor, r: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let wb = Tensor::cat(&[w, b], 0)?;
    a.contiguous()?
        .apply_op3(&r.contiguous()?, &wb, AddLayerNorm { eps: eps as f32 })
}

/// Inverted dropout with a counter-based mask (the backward recomputes it from the seed). Also
/// the CUDA path's dropout (`cuda_fwd`, same mask for the same seed), so it lives here, shared.
struct DropoutOp(Dropout);

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "embtune-cpu-dropout"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "dropout")?;
        let mut y = vec![0f32; x.len()];
        let chunk = 16 * 1024;
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .enumerate()
            .for_each(|(i, (yc, xc))| k::dropout_apply(xc, self.0, (i * chunk) as u64, yc));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    /// The same mask on the GPU (`cuda_ops::dropout_fwd`), any float dtype.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((
            crate::cuda_ops::dropout_fwd(s, l, self.0)?,
            l.shape().clone(),
        ))
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1(DropoutOp(self.0))?))
    }
}

/// The attention core of one layer on the packed projections `[B, S, 3H]` = `[q | k | v]`:
/// `softmax(q·kᵀ/√hd + mask) → dropout → ·v` per head, giving the `[B, S, H]` context (heads
/// side by side, as BERT's reshape does).
struct Attention {
    /// `[B·S]`: 1 for tokens, 0 for padding.
    keep: Arc<Vec<f32>>,
    heads: usize,
    scale: f32,
    drop: Option<Dropout>,
}

impl Attention {
    fn job<'a>(&'a self, qkv: &'a [f32], sh: AttnShape, b: usize, h: usize) -> HeadJob<'a> {
        let [q, k, v] = qkv_heads(qkv, sh);
        HeadJob {
            q,
            k,
            v,
            keep: &self.keep[b * sh.seq..(b + 1) * sh.seq],
            sh,
            scale: self.scale,
            drop: self.drop,
            b,
            h,
        }
    }

    fn shape(&self, dims: &[usize]) -> Result<AttnShape> {
        let &[b, s, h3] = dims else {
            bail!("attention: expected [B, S, 3H], got {dims:?}");
        };
        let h = h3 / 3;
        if self.heads == 0 || h3 % 3 != 0 || h % self.heads != 0 || self.keep.len() != b * s {
            bail!(
                "attention: [{b}, {s}, {h3}] with {} heads and a mask of {}",
                self.heads,
                self.keep.len()
            );
        }
        Ok(AttnShape {
            batch: b,
            seq: s,
            heads: self.heads,
            head_dim: h / self.heads,
        })
    }
}

/// q, k, v views of a packed `[B·S, 3H]` buffer.
fn qkv_heads(qkv: &[f32], sh: AttnShape) -> [Heads<'_>; 3] {
    let h = sh.hidden();
    [0, h, 2 * h].map(|offset| Heads {
        data: qkv,
        stride: 3 * h,
        offset,
    })
}

/// Copies a head's `[S, hd]` block into its columns (`offset + h·hd ..`) of a sentence's rows
/// of width `stride`.
fn scatter_head(
    block: &[f32],
    sh: AttnShape,
    h: usize,
    rows: &mut [f32],
    stride: usize,
    offset: usize,
) {
    let hd = sh.head_dim;
    for (i, src) in block.chunks(hd).enumerate() {
        rows[i * stride + offset + h * hd..][..hd].copy_from_slice(src);
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "embtune-cpu-attention"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let sh = self.shape(l1.dims())?;
        let qkv = slice(s1, l1, "attention")?;
        let hid = sh.hidden();
        let mut out = vec![0f32; sh.batch * sh.seq * hid];
        out.par_chunks_mut((sh.seq * hid).max(1))
            .enumerate()
            .for_each(|(b, rows)| {
                let mut block = vec![0f32; sh.seq * sh.head_dim];
                for h in 0..sh.heads {
                    k::attention_head(self.job(qkv, sh, b, h), &mut block);
                    scatter_head(&block, sh, h, rows, hid, 0);
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((sh.batch, sh.seq, hid))))
    }
    fn bwd(&self, qkv: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let sh = self.shape(qkv.dims())?;
        let hid = sh.hidden();
        let dqkv = with_data(&[qkv, g], "attention backward", |d| {
            let g = Heads {
                data: d[1],
                stride: hid,
                offset: 0,
            };
            let mut dqkv = vec![0f32; d[0].len()];
            dqkv.par_chunks_mut((sh.seq * 3 * hid).max(1))
                .enumerate()
                .for_each(|(b, rows)| {
                    let n = sh.seq * sh.head_dim;
                    let mut blocks = vec![0f32; 3 * n];
                    for h in 0..sh.heads {
                        let (bq, rest) = blocks.split_at_mut(n);
                        let (bk, bv) = rest.split_at_mut(n);
                        k::attention_head_backward(self.job(d[0], sh, b, h), g, bq, bk, bv);
                        scatter_head(bq, sh, h, rows, 3 * hid, 0);
                        scatter_head(bk, sh, h, rows, 3 * hid, hid);
                        scatter_head(bv, sh, h, rows, 3 * hid, 2 * hid);
                    }
                });
            Ok(dqkv)
        })?;
        Ok(Some(Tensor::from_vec(dqkv, qkv.shape(), &Device::Cpu)?))
    }
}

/// A row-major view for `gemm`: data, row stride, column stride.
struct View<'a>(&'a [f32], usize, usize);

/// `c[m×n] = (c if accumulate, else 0) + a[m×k]·b[k×n]` by the `gemm` crate (the kernels
/// candle's CPU matmul uses), on rayon's pool. `c` is contiguous row-major.
fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    accumulate: bool,
    a: View,
    b: View,
) -> Result<()> {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    if m == 0 || n == 0 {
        return Ok(());
    }
    if c.len() < m * n
        || (k > 0 && (a.0.len() <= last(m, k, a.1, a.2) || b.0.len() <= last(k, n, b.1, b.2)))
    {
        bail!("linear: operand sizes do not match {m}×{k}·{k}×{n}");
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|v| *v = 0.0);
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads();
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
            n as isize,
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

/// `y = x·Wᵀ + b` over the last dim of `x`, `W: [out, in]`, `b: [out]`; the bias seeds the
/// product's output (one pass), the backward is two products and a column sum.
struct Linear;

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
            let mut dw = vec![0f32; out * inp];
            gemm_into(
                out,
                inp,
                rows,
                &mut dw,
                false,
                View(g, 1, out),
                View(x, inp, 1),
            )?;
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
                .reduce(|| vec![0f32; out], add_vec);
            Ok((dx, dw, db))
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(dw, w.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(db, b.shape(), &Device::Cpu)?),
        ))
    }
}

/// `x·Wᵀ + b` over the last dim of `x` (`W: [out, in]`, `b: [out]`).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)
}

/// Σ x² of an f32 CPU tensor, in parallel chunks (for the global gradient norm).
pub fn sum_squares(t: &Tensor) -> Result<f64> {
    with_data(&[t], "sum of squares", |d| {
        Ok(d[0].par_chunks(1 << 16).map(k::sum_squares).sum::<f64>())
    })
}

/// Rows `ids` of a `[V, H]` table. The backward scatter-adds into a freshly allocated zero
/// table: a large zeroed allocation comes from the kernel as untouched zero pages, so only the
/// rows a batch used are written (candle's `index_select` backward zero-fills the whole table,
/// then copies it inside `index_add` — ~47 MB twice a step for BERT's word embeddings).
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
        let dt = with_data(&[g], "embedding backward", |d| {
            let mut dt = vec![0f32; v * h];
            for (row, &i) in d[0].chunks(h.max(1)).zip(&ids) {
                let dst = &mut dt[i as usize * h..(i as usize + 1) * h];
                dst.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
            Ok(dt)
        })?;
        Ok((Some(Tensor::from_vec(dt, (v, h), &Device::Cpu)?), None))
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

/// Inverted dropout at rate `p` with the mask of `seed` (identity when `p == 0`).
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    x.contiguous()?.apply_op1(DropoutOp(Dropout::new(p, seed)))
}

/// Multi-head attention core on the packed projections `qkv: [B, S, 3H]` (`[q | k | v]`) with
/// `heads` heads; `keep: [B·S]` is 1 for tokens, 0 for padding; `dropout` = (rate, seed) on
/// the probabilities. Returns the `[B, S, H]` context.
pub fn attention(
    qkv: &Tensor,
    keep: Arc<Vec<f32>>,
    heads: usize,
    dropout: Option<(f64, u64)>,
) -> Result<Tensor> {
    let hd = qkv.dim(2)? / 3 / heads.max(1);
    let op = Attention {
        keep,
        heads,
        scale: 1.0 / (hd as f32).sqrt(),
        drop: dropout
            .filter(|(p, _)| *p > 0.0)
            .map(|(p, seed)| Dropout::new(p, seed)),
    };
    qkv.contiguous()?.apply_op1(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops;
    use crate::model::test_util::{max_abs, max_diff, randn};
    use candle_core::{Var, D};

    /// Forward values and the gradient of every input of `fused` and `composed` agree, on a
    /// loss that weights each output differently; every gradient is non-zero.
    fn check(
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

    #[test]
    fn add_layer_norm_matches_the_composed_reference() {
        let a = Var::from_tensor(&randn(&[2, 9, 32], 13, 2.0)).unwrap();
        let r = Var::from_tensor(&(randn(&[2, 9, 32], 14, 2.0) + 0.5).unwrap()).unwrap();
        let w = Var::from_tensor(&(randn(&[32], 15, 0.5) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&randn(&[32], 16, 0.5)).unwrap();
        let fused = add_layer_norm(
            a.as_tensor(),
            r.as_tensor(),
            w.as_tensor(),
            b.as_tensor(),
            1e-12,
        )
        .unwrap();
        let sum = (a.as_tensor() + r.as_tensor()).unwrap();
        let composed = ops::layer_norm(&sum, w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        check(
            &[("a", &a), ("r", &r), ("w", &w), ("b", &b)],
            &fused,
            &composed,
            1e-5,
            1e-5,
        );
    }

    /// The composed attention of `bert.rs` (reshape to heads, scores, additive mask, softmax,
    /// dropout as a mask multiplication, weighted sum, heads back side by side), with the
    /// dropout factors of `drop` for element (b, h, i, j).
    fn composed_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        heads: usize,
        drop: Option<Dropout>,
    ) -> Tensor {
        let (b, s, h) = q.dims3().unwrap();
        let hd = h / heads;
        let split = |t: &Tensor| {
            t.reshape((b, s, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(q), split(k), split(v));
        let scores = (q.matmul(&k.t().unwrap().contiguous().unwrap()).unwrap()
            * (1.0 / (hd as f64).sqrt()))
        .unwrap();
        let add = ops::additive_attention_mask(mask, candle_core::DType::F32).unwrap();
        let probs = ops::softmax_last_dim(&scores.broadcast_add(&add).unwrap()).unwrap();
        let probs = match drop {
            Some(d) => {
                let n = b * heads * s * s;
                let f: Vec<f32> = (0..n as u64).map(|i| d.factor(i)).collect();
                let f = Tensor::from_vec(f, (b, heads, s, s), &Device::Cpu).unwrap();
                probs.mul(&f).unwrap()
            }
            None => probs,
        };
        probs
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, s, h))
            .unwrap()
    }

    #[test]
    fn attention_matches_the_composed_reference_with_padding_and_dropout() {
        let (b, s, h, heads) = (3, 11, 24, 3);
        let lens = [11usize, 6, 1];
        let mut keep = vec![0f32; b * s];
        for (i, &l) in lens.iter().enumerate() {
            keep[i * s..i * s + l].iter_mut().for_each(|x| *x = 1.0);
        }
        let mask = Tensor::from_vec(
            keep.iter().map(|&x| x as u32).collect::<Vec<_>>(),
            (b, s),
            &Device::Cpu,
        )
        .unwrap();
        let keep = Arc::new(keep);
        for drop in [None, Some((0.2, 1234u64))] {
            let q = Var::from_tensor(&randn(&[b, s, h], 6, 2.0)).unwrap();
            let k = Var::from_tensor(&randn(&[b, s, h], 7, 2.0)).unwrap();
            let v = Var::from_tensor(&randn(&[b, s, h], 8, 1.0)).unwrap();
            let qkv = Tensor::cat(&[q.as_tensor(), k.as_tensor(), v.as_tensor()], 2).unwrap();
            let fused = attention(&qkv, keep.clone(), heads, drop).unwrap();
            let composed = composed_attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &mask,
                heads,
                drop.map(|(p, seed)| Dropout::new(p, seed)),
            );
            check(
                &[("q", &q), ("k", &k), ("v", &v)],
                &fused,
                &composed,
                1e-5,
                1e-5,
            );
        }
    }

    #[test]
    fn dropout_keeps_the_expected_share_and_its_backward_uses_the_same_mask() {
        let x = Var::from_tensor(&(randn(&[64, 500], 9, 1.0) + 2.0).unwrap()).unwrap();
        let y = dropout(x.as_tensor(), 0.1, 77).unwrap();
        let kept = y
            .ne(0f32)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((kept - 0.9).abs() < 0.01, "kept {kept}");
        // Same seed, same mask; another seed, another mask.
        assert_eq!(max_diff(&y, &dropout(x.as_tensor(), 0.1, 77).unwrap()), 0.0);
        assert!(max_diff(&y, &dropout(x.as_tensor(), 0.1, 78).unwrap()) > 0.0);
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap();
        let expect = (y
            .ne(0f32)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            * (1.0 / 0.9))
            .unwrap();
        assert!(max_diff(gx, &expect) < 1e-6);
        assert!(
            (y.sum(D::Minus1)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                / x.as_tensor().sum_all().unwrap().to_scalar::<f32>().unwrap()
                - 1.0)
                .abs()
                < 0.02
        );
    }
}
