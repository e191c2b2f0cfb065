//! The attention core on the CPU fused path (f32): `softmax(q·kᵀ·scale + bias + mask) →
//! dropout → ·v` per (sentence, head) on the packed projections `[B, S, 3H]` = `[q | k | v]`,
//! with an optional additive score bias `[heads, S, S]` (MPNet's relative positions) and its
//! gradient. The backward recomputes the probabilities. Depends on candle, rayon, `kernels` and
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
        let dbias = self
            .split(&mut dqkv, sh, 3 * hid)
            .into_par_iter()
            .enumerate()
            .fold(
                || vec![0f32; nb],
                |mut db, (b, rows)| {
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
                    db
                },
            )
            .reduce(|| vec![0f32; nb], super::add_vec);
        (dqkv, dbias)
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
            if window.is_some() {
                bail!("attention: a sliding window on a packed batch is not supported");
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::composed;
    use crate::ops::cpu::testing::check;
    use crate::ops::test_util::randn;
    use candle_core::Var;

    /// The composed attention (reshape to heads, scores, bias, additive mask, softmax,
    /// dropout as a mask multiplication, weighted sum, heads back side by side), with the
    /// dropout factors of `drop` for element (b, h, i, j).
    fn composed_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        heads: usize,
        drop: Option<Dropout>,
        bias: Option<&Tensor>,
        window: Option<usize>,
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
        let scores = match bias {
            Some(bias) => scores.broadcast_add(&bias.unsqueeze(0).unwrap()).unwrap(),
            None => scores,
        };
        let scores = match window {
            Some(w) => {
                let m = composed::window_mask(s, w, candle_core::DType::F32, &Device::Cpu).unwrap();
                scores.broadcast_add(&m).unwrap()
            }
            None => scores,
        };
        let add = composed::additive_attention_mask(mask, candle_core::DType::F32).unwrap();
        let probs = composed::softmax_last_dim(&scores.broadcast_add(&add).unwrap()).unwrap();
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

    /// The fused op and the composed ops agree in value and in the gradients of q, k, v (and of
    /// the score bias when there is one), with padding, with and without dropout, with and
    /// without a sliding window (narrower than the sentences, so it masks).
    #[test]
    fn attention_matches_the_composed_reference_with_padding_dropout_bias_and_window() {
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
        let bias_var = Var::from_tensor(&randn(&[heads, s, s], 9, 1.5)).unwrap();
        for (drop, with_bias, window) in [
            (None, false, None),
            (Some(Dropout::new(0.2, 1234)), false, None),
            (None, true, None),
            (Some(Dropout::new(0.2, 77)), true, None),
            (None, false, Some(2)),
            (Some(Dropout::new(0.2, 5)), false, Some(3)),
        ] {
            let bias = with_bias.then_some(bias_var.as_tensor());
            let q = Var::from_tensor(&randn(&[b, s, h], 6, 2.0)).unwrap();
            let k = Var::from_tensor(&randn(&[b, s, h], 7, 2.0)).unwrap();
            let v = Var::from_tensor(&randn(&[b, s, h], 8, 1.0)).unwrap();
            let qkv = Tensor::cat(&[q.as_tensor(), k.as_tensor(), v.as_tensor()], 2).unwrap();
            let fused = attention(
                &qkv,
                Rows::Keep(keep.clone()),
                heads,
                drop.clone(),
                bias,
                window,
            )
            .unwrap();
            let composed = composed_attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &mask,
                heads,
                drop,
                bias,
                window,
            );
            // Padded queries are compared too, except where a window holds only padding:
            // there the fused kernel attends to nothing (zeros) and the additive mask to
            // everything — outputs nobody pools.
            let (fused, composed) = match window {
                None => (fused, composed),
                Some(_) => {
                    let q_keep = Tensor::from_vec(keep.to_vec(), (b, s, 1), &Device::Cpu).unwrap();
                    (
                        fused.broadcast_mul(&q_keep).unwrap(),
                        composed.broadcast_mul(&q_keep).unwrap(),
                    )
                }
            };
            let mut vars = vec![("q", &q), ("k", &k), ("v", &v)];
            if bias.is_some() {
                vars.push(("bias", &bias_var));
            }
            check(&vars, &fused, &composed, 1e-5, 1e-5);
        }
    }

    /// A packed batch (sequences back to back, `[1, T, 3H]`) gives the padded batch's context
    /// rows and gradients (q|k|v and the score bias), with and without dropout: the packed
    /// kernel draws the padded layout's dropout counters.
    #[test]
    fn packed_attention_equals_padded_attention_on_the_real_rows() {
        use crate::ops::test_util::max_diff;
        let (b, s, h, heads) = (3, 11, 24, 3);
        let lens = [9usize, 11, 1];
        let packed = Arc::new(Packed::new(&lens));
        let mut keep = vec![0f32; b * s];
        let mut real = Vec::new();
        for (i, &l) in lens.iter().enumerate() {
            keep[i * s..i * s + l].iter_mut().for_each(|x| *x = 1.0);
            real.extend((0..l).map(|j| (i * s + j) as u32));
        }
        let real = Tensor::new(real.as_slice(), &Device::Cpu).unwrap();
        let keep = Arc::new(keep);
        let weights = randn(&[packed.tokens(), h], 3, 1.0);
        for (drop, with_bias) in [
            (None, false),
            (Some(Dropout::new(0.2, 1234)), false),
            (Some(Dropout::new(0.1, 8)), true),
        ] {
            let qkv = Var::from_tensor(&randn(&[b, s, 3 * h], 6, 2.0)).unwrap();
            let bias = Var::from_tensor(&randn(&[heads, s, s], 9, 1.5)).unwrap();
            let bias_t = with_bias.then_some(bias.as_tensor());
            let gather = |t: &Tensor, w: usize| {
                t.reshape((b * s, w))
                    .unwrap()
                    .index_select(&real, 0)
                    .unwrap()
            };
            let padded = attention(
                qkv.as_tensor(),
                Rows::Keep(keep.clone()),
                heads,
                drop.clone(),
                bias_t,
                None,
            )
            .unwrap();
            let padded = gather(&padded, h);
            let packed_in = gather(qkv.as_tensor(), 3 * h).unsqueeze(0).unwrap();
            let packed_out = attention(
                &packed_in,
                Rows::Packed(packed.clone()),
                heads,
                drop.clone().map(|d| d.on_packed(Some(packed.clone()))),
                bias_t,
                None,
            )
            .unwrap();
            assert_eq!(packed_out.dims(), [1, packed.tokens(), h]);
            let packed_out = packed_out.squeeze(0).unwrap();
            assert!(
                max_diff(&padded, &packed_out) < 1e-6,
                "{drop:?} {with_bias}"
            );
            let grads = |y: &Tensor| {
                let g = (y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gq = gather(g.get(qkv.as_tensor()).unwrap(), 3 * h);
                (gq, g.get(bias.as_tensor()).cloned())
            };
            let (ga, ba) = grads(&padded);
            let (gb, bb) = grads(&packed_out);
            assert!(max_diff(&ga, &gb) < 1e-5, "{drop:?} {with_bias}");
            assert!(
                ga.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 1.0
            );
            if with_bias {
                let (ba, bb) = (ba.unwrap(), bb.unwrap());
                assert!(max_diff(&ba, &bb) < 1e-5);
            }
        }
    }
}
