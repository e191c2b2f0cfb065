//! The attention core on the CPU fused path (f32): `softmax(q·kᵀ·scale + bias + mask) →
//! dropout → ·v` per (sentence, head) on the packed projections `[B, S, 3H]` = `[q | k | v]`
//! (padded sentences with their mask) or `[1, T, 3H]` (a packed batch: each sequence over its
//! own rows), with an optional additive score bias `[heads, S, S]` (MPNet's relative positions;
//! S = the longest sequence of a packed batch) and its gradient. The backward recomputes the
//! probabilities. Depends on candle, rayon, `kernels` and
//! `ops::Dropout`.

use super::attention_kernels::{self as k, AttnShape, HeadJob, Heads};
use super::{slice, with_data};
use crate::ops::{Dropout, Packed};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// The attention core of one layer on the packed projections `[B, S, 3H]` = `[q | k | v]`:
/// `softmax(q·kᵀ/√hd + bias + mask) → dropout → ·v` per head, giving the `[B, S, H]` context
/// (heads side by side, as BERT's reshape does). One op input (no bias) or two (`[heads, S, S]`
/// bias, which gets its gradient). On a packed batch (`layout`) the input is `[1, T, 3H]`, each
/// sequence attends over its own rows, and S is the layout's longest sequence.
struct Attention {
    layout: Layout2,
    heads: usize,
    scale: f32,
    drop: Option<Dropout>,
    /// Sliding window (|i − j| ≤ w), none for full attention.
    window: Option<usize>,
}

/// The rows of one attention call: padded sentences with their mask, or a packed batch.
enum Layout2 {
    /// `[B·S]`: 1 for tokens, 0 for padding.
    Padded(Arc<Vec<f32>>),
    /// Sequences back to back; `ones` holds S ones (every row of a packed sequence is a token).
    Packed { packed: Arc<Packed>, ones: Vec<f32> },
}

impl Attention {
    /// The job of sentence `b`, head `h`; `sh.seq` = the padded length (or the packed S).
    fn job<'a>(
        &'a self,
        qkv: &'a [f32],
        bias: Option<&'a [f32]>,
        sh: AttnShape,
        b: usize,
        h: usize,
    ) -> HeadJob<'a> {
        let [q, k, v] = qkv_heads(qkv, sh);
        let n = sh.seq * sh.seq;
        let (keep, seq, row0) = match &self.layout {
            Layout2::Padded(keep) => (&keep[b * sh.seq..(b + 1) * sh.seq], sh.seq, b * sh.seq),
            Layout2::Packed { packed, ones } => {
                (&ones[..packed.len(b)], packed.len(b), packed.start(b))
            }
        };
        HeadJob {
            q,
            k,
            v,
            keep,
            sh: AttnShape { seq, ..sh },
            scale: self.scale,
            bias: bias.map(|bb| &bb[h * n..(h + 1) * n]),
            bias_stride: sh.seq,
            drop: self.drop.as_ref(),
            drop_seq: sh.seq,
            window: self.window,
            row0,
            b,
            h,
        }
    }

    /// The call's shape: `B` sentences of `S` (packed: the layout's B and longest S).
    fn shape(&self, dims: &[usize], bias: Option<&[usize]>) -> Result<AttnShape> {
        let &[b, s, h3] = dims else {
            bail!("attention: expected [B, S, 3H], got {dims:?}");
        };
        let h = h3 / 3;
        let rows_ok = match &self.layout {
            Layout2::Padded(keep) => keep.len() == b * s,
            Layout2::Packed { packed, .. } => b == 1 && packed.tokens() == s,
        };
        if self.heads == 0 || h3 % 3 != 0 || h % self.heads != 0 || !rows_ok {
            bail!(
                "attention: [{b}, {s}, {h3}] with {} heads and {}",
                self.heads,
                match &self.layout {
                    Layout2::Padded(keep) => format!("a mask of {}", keep.len()),
                    Layout2::Packed { packed, .. } =>
                        format!("a packed layout of {} tokens", packed.tokens()),
                }
            );
        }
        let (batch, seq) = match &self.layout {
            Layout2::Padded(_) => (b, s),
            Layout2::Packed { packed, .. } => (packed.batch(), packed.seq()),
        };
        if let Some(bd) = bias {
            if bd != [self.heads, seq, seq] {
                bail!(
                    "attention: a score bias of {bd:?} for [{}, {seq}, {seq}]",
                    self.heads
                );
            }
        }
        Ok(AttnShape {
            batch,
            seq,
            heads: self.heads,
            head_dim: h / self.heads,
        })
    }

    /// Each sentence's rows of a `[rows, width]` buffer (padded: S rows each; packed: its own).
    fn split<'a>(&self, buf: &'a mut [f32], sh: AttnShape, width: usize) -> Vec<&'a mut [f32]> {
        match &self.layout {
            Layout2::Padded(_) => buf.chunks_mut((sh.seq * width).max(1)).collect(),
            Layout2::Packed { packed, .. } => packed.split_rows_mut(buf, width),
        }
    }

    /// Total rows of the call's buffers.
    fn rows(&self, sh: AttnShape) -> usize {
        match &self.layout {
            Layout2::Padded(_) => sh.batch * sh.seq,
            Layout2::Packed { packed, .. } => packed.tokens(),
        }
    }

    fn forward(&self, qkv: &[f32], bias: Option<&[f32]>, sh: AttnShape) -> Result<Vec<f32>> {
        if let (None, Layout2::Padded(keep)) = (bias, &self.layout) {
            if sh.seq >= super::attention_long::LONG {
                return super::attention_long::forward(super::attention_long::LongJob {
                    qkv,
                    keep,
                    sh,
                    scale: self.scale,
                    drop: self.drop.clone(),
                    window: self.window,
                });
            }
        }
        let hid = sh.hidden();
        let mut out = vec![0f32; self.rows(sh) * hid];
        self.split(&mut out, sh, hid)
            .into_par_iter()
            .enumerate()
            .for_each(|(b, rows)| {
                let mut block = vec![0f32; sh.seq * sh.head_dim];
                for h in 0..sh.heads {
                    let job = self.job(qkv, bias, sh, b, h);
                    k::attention_head(job, &mut block);
                    scatter_head(&block[..job.sh.seq * sh.head_dim], sh, h, rows, hid, 0);
                }
            });
        Ok(out)
    }

    /// The gradients of the packed projections and (with a bias) of the bias, summed over the
    /// batch (each worker accumulates its own copy; they are added at the end).
    fn backward(
        &self,
        qkv: &[f32],
        g: &[f32],
        bias: Option<&[f32]>,
        sh: AttnShape,
    ) -> (Vec<f32>, Vec<f32>) {
        let hid = sh.hidden();
        let g = Heads {
            data: g,
            stride: hid,
            offset: 0,
        };
        let nb = if bias.is_some() {
            sh.heads * sh.seq * sh.seq
        } else {
            0
        };
        let mut dqkv = vec![0f32; qkv.len()];
        // Sentences in fixed groups, each group's bias gradient summed in order, the groups' sums
        // added in order: the same sums whatever rayon's work stealing does.
        let mut parts: Vec<(usize, &mut [f32])> = self
            .split(&mut dqkv, sh, 3 * hid)
            .into_iter()
            .enumerate()
            .collect();
        // (Without a bias there is nothing to sum: one sentence per task.)
        let group = match nb {
            0 => 1,
            _ => (parts.len() / (4 * rayon::current_num_threads().max(1))).max(1),
        };
        let dbias = parts
            .par_chunks_mut(group)
            .map(|items| {
                let mut db = vec![0f32; nb];
                for (b, rows) in items.iter_mut() {
                    let (b, rows) = (*b, &mut **rows);
                    let n = sh.seq * sh.head_dim;
                    let mut blocks = vec![0f32; 3 * n];
                    for h in 0..sh.heads {
                        let job = self.job(qkv, bias, sh, b, h);
                        let m = job.sh.seq * sh.head_dim;
                        let (bq, rest) = blocks.split_at_mut(n);
                        let (bk, bv) = rest.split_at_mut(n);
                        let (bq, bk, bv) = (&mut bq[..m], &mut bk[..m], &mut bv[..m]);
                        let ss = sh.seq * sh.seq;
                        let dbh = (nb > 0).then(|| &mut db[h * ss..(h + 1) * ss]);
                        k::attention_head_backward(job, g, bq, bk, bv, dbh);
                        scatter_head(bq, sh, h, rows, 3 * hid, 0);
                        scatter_head(bk, sh, h, rows, 3 * hid, hid);
                        scatter_head(bv, sh, h, rows, 3 * hid, 2 * hid);
                    }
                }
                db
            })
            .collect::<Vec<_>>();
        let dbias = super::sum_in_order(dbias, nb);
        (dqkv, dbias)
    }
}

/// q, k, v views of a `[rows, 3H]` q|k|v buffer (`B·S` padded rows or `T` packed ones).
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
        let sh = self.shape(l1.dims(), None)?;
        let out = self.forward(slice(s1, l1, "attention")?, None, sh)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((l1.dims()[0], l1.dims()[1], sh.hidden())),
        ))
    }
    fn bwd(&self, qkv: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let sh = self.shape(qkv.dims(), None)?;
        let (dqkv, _) = with_data(&[qkv, g], "attention backward", |d| {
            Ok(self.backward(d[0], d[1], None, sh))
        })?;
        Ok(Some(Tensor::from_vec(dqkv, qkv.shape(), &Device::Cpu)?))
    }
}

/// [`Attention`] with the score bias as a second input.
struct BiasedAttention(Attention);

impl CustomOp2 for BiasedAttention {
    fn name(&self) -> &'static str {
        "embtune-cpu-attention-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let sh = self.0.shape(l1.dims(), Some(l2.dims()))?;
        let bias = slice(s2, l2, "attention bias")?;
        let out = self
            .0
            .forward(slice(s1, l1, "attention")?, Some(bias), sh)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((l1.dims()[0], l1.dims()[1], sh.hidden())),
        ))
    }
    fn bwd(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let sh = self.0.shape(qkv.dims(), Some(bias.dims()))?;
        let (dqkv, dbias) = with_data(&[qkv, g, bias], "attention backward", |d| {
            Ok(self.0.backward(d[0], d[1], Some(d[2]), sh))
        })?;
        Ok((
            Some(Tensor::from_vec(dqkv, qkv.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(dbias, bias.shape(), &Device::Cpu)?),
        ))
    }
}

/// The rows of an attention call: `Keep` = `[B·S]` (1 for tokens, 0 for padding) of a padded
/// batch; `Packed` = the layout of a packed batch (its input is `[1, T, 3H]`).
pub enum Rows {
    Keep(Arc<Vec<f32>>),
    Packed(Arc<Packed>),
}

/// Multi-head attention core on the packed projections `qkv: [B, S, 3H]` (`[q | k | v]`) with
/// `heads` heads over `rows` (padded with its mask, or packed: `[1, T, 3H]`); `dropout` on the
/// probabilities; `bias: [heads, S, S]` added to the scaled scores; `window`: query i sees keys
/// with |i − j| ≤ w only. Returns the context `[B, S, H]` (packed: `[1, T, H]`).
pub fn attention(
    qkv: &Tensor,
    rows: Rows,
    heads: usize,
    dropout: Option<Dropout>,
    bias: Option<&Tensor>,
    window: Option<usize>,
) -> Result<Tensor> {
    let hd = qkv.dim(2)? / 3 / heads.max(1);
    let layout = match rows {
        Rows::Keep(keep) => Layout2::Padded(keep),
        Rows::Packed(packed) => {
            // A window is per sequence: query i of a sequence sees its keys j with |i − j| ≤ w.
            Layout2::Packed {
                ones: vec![1.0; packed.seq()],
                packed,
            }
        }
    };
    let op = Attention {
        layout,
        heads,
        scale: 1.0 / (hd as f32).sqrt(),
        drop: dropout,
        window,
    };
    match bias {
        None => qkv.contiguous()?.apply_op1(op),
        Some(b) => qkv.contiguous()?.apply_op2(
            &b.to_dtype(candle_core::DType::F32)?.contiguous()?,
            BiasedAttention(op),
        ),
    }
}
