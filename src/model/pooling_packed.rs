//! Pooling a packed pass straight from its token stream (the packing issue's segment
//! reductions): a packed batch's hidden states are `[1, T, H]`, every sequence's rows back to
//! back (`ops::Packed`). Each pooling mode but max is a weighted sum over a sequence's own rows
//! (mask, position weights or one row), then divided as `pooling.rs` divides: [`SegmentSum`]
//! adds each sequence's rows in order, so a sequence's embedding does not depend on which
//! batch it was in (sharded and chunked exports stay bitwise one run's), and its backward hands
//! each row its weight times its sequence's gradient — no gather into padded `[B, S, H]`
//! first. Max pooling is no weighted sum: it keeps reading the gathered padded states
//! (`model::batches::unpacked`), as do non-CPU tensors. Depends on candle, `ops::Packed`,
//! `ops::cpu::kernels::axpy` and `pooling`.

use super::pooling::{Pooling, PoolingConfig};
use crate::ops::Packed;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use std::sync::Arc;

impl PoolingConfig {
    /// `[B, modes·H]` from a packed pass's `hidden: [1, T, H]`, as [`PoolingConfig::forward`]
    /// gives from the padded states; None when a mode is max or `hidden` is not f32 on the CPU.
    pub fn forward_packed(
        &self,
        hidden: &Tensor,
        p: &Packed,
        prompt_len: usize,
    ) -> candle_core::Result<Option<Tensor>> {
        if self.modes.contains(&Pooling::Max)
            || !hidden.device().is_cpu()
            || hidden.dtype() != DType::F32
        {
            return Ok(None);
        }
        let skip = if self.include_prompt { 0 } else { prompt_len };
        let (_, t, h) = hidden.dims3()?;
        if t != p.tokens() {
            candle_core::bail!("pooling: {t} rows for a packed batch of {}", p.tokens());
        }
        let rows = hidden.reshape((t, h))?.contiguous()?;
        let mut parts = Vec::with_capacity(self.modes.len());
        for &mode in &self.modes {
            let (weights, denom) = segment_weights(mode, p, skip);
            let sum = rows.apply_op1(SegmentSum {
                offsets: p.offsets().to_vec(),
                weights: Arc::new(weights),
            })?; // [B, H]
            parts.push(match denom {
                None => sum,
                Some(d) => {
                    let d = Tensor::from_vec(d, (p.batch(), 1), hidden.device())?;
                    sum.broadcast_div(&d)?
                }
            });
        }
        Ok(Some(if parts.len() == 1 {
            parts.swap_remove(0)
        } else {
            Tensor::cat(&parts, 1)?
        }))
    }
}

/// Each token's weight in `mode` (`[T]`) and, for the means, each sequence's denominator — the
/// mask, position weights and clamps of `pooling::pool_one`, placed at each sequence's rows.
fn segment_weights(mode: Pooling, p: &Packed, skip: usize) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut w = vec![0f32; p.tokens()];
    let mut denom = Vec::with_capacity(p.batch());
    for s in 0..p.batch() {
        let (o, l) = (p.start(s), p.len(s));
        // The positions the mask keeps: a prompt's are left out with include_prompt false.
        let kept = skip.min(l)..l;
        match mode {
            // The first kept position; all prompt → position 0 (torch's argmax of zeros).
            // (An empty sequence has no row: nothing, as its padded row is all padding.)
            Pooling::Cls if l > 0 => w[o + if skip < l { skip } else { 0 }] = 1.0,
            Pooling::LastToken if l > 0 => w[o + l - 1] = 1.0,
            Pooling::Cls | Pooling::LastToken => {}
            Pooling::Mean | Pooling::MeanSqrtLen => {
                kept.clone().for_each(|j| w[o + j] = 1.0);
                let n = (kept.len() as f32).max(1e-9);
                denom.push(if mode == Pooling::Mean { n } else { n.sqrt() });
            }
            Pooling::WeightedMean => {
                kept.clone().for_each(|j| w[o + j] = (j + 1) as f32);
                denom.push(kept.map(|j| (j + 1) as f32).sum::<f32>().max(1e-9));
            }
            Pooling::Max => {}
        }
    }
    let means = matches!(
        mode,
        Pooling::Mean | Pooling::MeanSqrtLen | Pooling::WeightedMean
    );
    (w, means.then_some(denom))
}

/// `out[b] = Σ_{j in sequence b, in order} weights[j] · rows[j]` over `[T, H]` rows (f32, CPU),
/// and its backward `d rows[j] = weights[j] · d out[b(j)]`.
struct SegmentSum {
    offsets: Vec<usize>,
    weights: Arc<Vec<f32>>,
}

impl CustomOp1 for SegmentSum {
    fn name(&self) -> &'static str {
        "embtune-segment-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (t, h) = l.shape().dims2()?;
        let (CpuStorage::F32(v), Some((a, e))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("segment sum: contiguous f32 rows");
        };
        let rows = &v[a..e];
        let b = self.offsets.len().saturating_sub(1);
        if self.weights.len() != t || self.offsets.last() != Some(&t) {
            candle_core::bail!("segment sum: {t} rows for {} weights", self.weights.len());
        }
        let mut out = vec![0f32; b * h];
        for (k, o) in out.chunks_mut(h.max(1)).enumerate() {
            for j in self.offsets[k]..self.offsets[k + 1] {
                let w = self.weights[j];
                if w != 0.0 {
                    crate::ops::cpu::kernels::axpy(w, &rows[j * h..(j + 1) * h], o);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h))))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (t, h) = x.dims2()?;
        let g = g.to_dtype(DType::F32)?.contiguous()?.to_vec2::<f32>()?;
        let mut dx = vec![0f32; t * h];
        for (k, gk) in g.iter().enumerate() {
            for j in self.offsets[k]..self.offsets[k + 1] {
                let w = self.weights[j];
                for (d, gi) in dx[j * h..(j + 1) * h].iter_mut().zip(gk) {
                    *d = w * gi;
                }
            }
        }
        Ok(Some(Tensor::from_vec(dx, (t, h), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Every mode but max, with and without a left-out prompt, on sequences of 5, 3, 2 and 1
    /// tokens: the packed pooling and its gradient equal padded pooling of the same rows.
    #[test]
    fn segment_pooling_equals_padded_pooling_and_its_gradient() {
        let dev = Device::Cpu;
        let lengths = [5usize, 3, 2, 1];
        let p = Packed::new(&lengths);
        let (t, s, h) = (p.tokens(), p.seq(), 4usize);
        let mut r = crate::rng::Rng::new(3);
        let vals: Vec<f32> = (0..t * h)
            .map(|_| r.next_f64() as f32 * 2.0 - 1.0)
            .collect();
        let mask: Vec<u32> = (0..lengths.len() * s)
            .map(|k| u32::from(k % s < lengths[k / s]))
            .collect();
        let mask = Tensor::from_vec(mask, (lengths.len(), s), &dev).unwrap();
        let up: Vec<f32> = (0..lengths.len() * 2 * h)
            .map(|_| r.next_f64() as f32 - 0.5)
            .collect();
        for modes in [
            vec![Pooling::Cls],
            vec![Pooling::Mean],
            vec![Pooling::MeanSqrtLen],
            vec![Pooling::WeightedMean],
            vec![Pooling::LastToken],
            vec![Pooling::Cls, Pooling::Mean],
        ] {
            for (include_prompt, prompt_len) in [(true, 0), (false, 2)] {
                let mut cfg = PoolingConfig::new(modes.clone(), h);
                cfg.include_prompt = include_prompt;
                let x = Var::from_vec(vals.clone(), (1, t, h), &dev).unwrap();
                let packed = cfg
                    .forward_packed(x.as_tensor(), &p, prompt_len)
                    .unwrap()
                    .unwrap();
                // Padded: the same rows in their padded places, zeros elsewhere.
                let y = Var::from_vec(vals.clone(), (t, h), &dev).unwrap();
                let zero = Tensor::zeros((1, h), DType::F32, &dev).unwrap();
                let table = Tensor::cat(&[y.as_tensor(), &zero], 0).unwrap();
                let idx: Vec<u32> = p
                    .padded_rows()
                    .iter()
                    .map(|r| r.unwrap_or(t) as u32)
                    .collect();
                let idx = Tensor::from_vec(idx, lengths.len() * s, &dev).unwrap();
                let padded_h = table
                    .index_select(&idx, 0)
                    .unwrap()
                    .reshape((lengths.len(), s, h))
                    .unwrap();
                let padded = cfg.forward(&padded_h, &mask, &lengths, prompt_len).unwrap();
                let what = format!("{modes:?} include_prompt {include_prompt}");
                let diff = (&packed - &padded)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff <= 1e-6, "{what}: outputs differ by {diff}");
                let k = modes.len() * h;
                let up =
                    Tensor::from_vec(up[..lengths.len() * k].to_vec(), (lengths.len(), k), &dev)
                        .unwrap();
                let grad = |out: &Tensor, v: &Var| {
                    let g = (out * &up).unwrap().sum_all().unwrap().backward().unwrap();
                    g.get(v.as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                };
                let (ga, gb) = (grad(&packed, &x), grad(&padded, &y));
                let worst = ga
                    .iter()
                    .zip(&gb)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= 1e-6, "{what}: gradients differ by {worst}");
                assert!(ga.iter().any(|g| g.abs() > 1e-3), "{what}: a gradient");
            }
        }
        let max = PoolingConfig::new(vec![Pooling::Max], h);
        let x = Tensor::zeros((1, t, h), DType::F32, &dev).unwrap();
        assert!(max.forward_packed(&x, &p, 0).unwrap().is_none());
    }
}
