//! Embeddings gathered across ranks with a gradient (`--gather-across-devices`): the forward
//! concatenates every rank's `[b, D]` rows in rank order into `[N·b, D]`; the backward
//! all-reduces (sums) the gradient of that whole tensor over the ranks and returns this rank its
//! own rows' slice. So each rank's rows receive the gradient of every rank's loss (they are
//! in-batch negatives everywhere), and after the usual data-parallel mean of parameter
//! gradients (sum over ranks ÷ N) training equals one device with the global batch — the loss
//! scaling tested in `tests`, not assumed. The op runs on the host in f32 (a GPU rank's rows go
//! there and back; the communicator may move them through the GPU again, as NCCL does). Depends on candle and [`super::Collective`].

use super::Collective;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use std::sync::Arc;

struct Gather {
    comm: Arc<dyn Collective>,
}

fn err(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{e:#}"))
}

impl CustomOp1 for Gather {
    fn name(&self) -> &'static str {
        "embtune-gather-rows"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, d) = l.shape().dims2()?;
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("gather_rows: f32 only");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("gather_rows: a contiguous tensor");
        };
        let all = self.comm.all_gather(&v[start..end]).map_err(err)?;
        Ok((
            CpuStorage::F32(all),
            Shape::from((b * self.comm.world(), d)),
        ))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (b, d) = x.dims2()?;
        let mut full = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.comm.all_reduce_sum(&mut full).map_err(err)?;
        let r = self.comm.rank();
        let own = full[r * b * d..(r + 1) * b * d].to_vec();
        Ok(Some(Tensor::from_vec(own, (b, d), x.device())?))
    }
}

/// Every rank's rows of `x` (`[b, D]`, the same b on every rank), concatenated in rank order:
/// `[N·b, D]`, with the gradient described in the module header.
pub fn gather_rows(x: &Tensor, comm: Arc<dyn Collective>) -> Result<Tensor> {
    if comm.world() == 1 {
        return Ok(x.clone());
    }
    // Through the host (the op is a CPU op; `to_device` carries the gradient back): a batch's
    // embeddings are small next to a step's gradients.
    let dev = x.device().clone();
    x.to_dtype(DType::F32)?
        .to_device(&candle_core::Device::Cpu)?
        .contiguous()?
        .apply_op1(Gather { comm })?
        .to_device(&dev)
}

/// [`gather_rows`] rotated so this rank's rows come first: `[own, rank+1…, 0…rank-1]`. A
/// cross-entropy over candidates is unchanged by permuting them, and the rank's positive i
/// stays at column i.
pub fn gather_rows_own_first(x: &Tensor, comm: Arc<dyn Collective>) -> Result<Tensor> {
    let (r, b) = (comm.rank(), x.dim(0)?);
    let g = gather_rows(x, comm)?.to_dtype(x.dtype())?;
    let n = g.dim(0)?;
    if r == 0 {
        return Ok(g);
    }
    Tensor::cat(&[g.narrow(0, r * b, n - r * b)?, g.narrow(0, 0, r * b)?], 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::threads;
    use candle_core::{Device, Var, D};

    /// In-batch-negative cross-entropy of anchors `[n, D]` against candidates `[m, D]` (scale
    /// 20 cosine), anchor i's positive at `offset + i`: MNRL's form, mean over anchors.
    fn ce(a: &Tensor, c: &Tensor, offset: usize) -> Tensor {
        let s = (crate::loss::cosine_matrix(a, c).unwrap() * 20.0).unwrap();
        let logp = candle_nn::ops::log_softmax(&s, D::Minus1).unwrap();
        let n = a.dim(0).unwrap();
        let idx: Vec<u32> = (0..n as u32).map(|i| i + offset as u32).collect();
        let idx = Tensor::from_vec(idx, (n, 1), &Device::Cpu).unwrap();
        logp.gather(&idx, 1)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap()
    }

    fn rows(seed: u64, n: usize, d: usize) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n * d)
            .map(|_| r.next_f64() as f32 * 2.0 - 1.0)
            .collect()
    }

    /// Two ranks of 3 rows with gathered positives, gradients averaged over the ranks, equal one
    /// device with the 6 rows (≤ 1e-6); without the all-reduce in the backward they would not.
    #[test]
    fn gathered_in_batch_negatives_equal_one_device_with_the_global_batch() {
        let (world, b, d) = (2usize, 3usize, 5usize);
        let (anchors, positives) = (rows(1, world * b, d), rows(2, world * b, d));
        // One device, the whole batch.
        let a = Var::from_vec(anchors.clone(), (world * b, d), &Device::Cpu).unwrap();
        let p = Var::from_vec(positives.clone(), (world * b, d), &Device::Cpu).unwrap();
        let g = ce(a.as_tensor(), p.as_tensor(), 0).backward().unwrap();
        let want_a = g
            .get(a.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want_p = g
            .get(p.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Two ranks.
        let handles: Vec<_> = threads::group(world)
            .into_iter()
            .map(|c| {
                let (anchors, positives) = (anchors.clone(), positives.clone());
                std::thread::spawn(move || {
                    let r = c.rank();
                    let comm: Arc<dyn Collective> = Arc::new(c);
                    let mine = |v: &[f32]| v[r * b * d..(r + 1) * b * d].to_vec();
                    let a = Var::from_vec(mine(&anchors), (b, d), &Device::Cpu).unwrap();
                    let p = Var::from_vec(mine(&positives), (b, d), &Device::Cpu).unwrap();
                    let all_p = gather_rows(p.as_tensor(), comm.clone()).unwrap();
                    let g = ce(a.as_tensor(), &all_p, r * b).backward().unwrap();
                    // The data-parallel mean: each rank's rows are its own parameters here, so
                    // the sum over ranks of their gradients is this rank's alone; ÷ N.
                    let get = |v: &Var| -> Vec<f32> {
                        let t = g.get(v.as_tensor()).unwrap() / world as f64;
                        t.unwrap().flatten_all().unwrap().to_vec1().unwrap()
                    };
                    (get(&a), get(&p))
                })
            })
            .collect();
        let got: Vec<(Vec<f32>, Vec<f32>)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let (got_a, got_p): (Vec<f32>, Vec<f32>) = (
            got.iter().flat_map(|x| x.0.clone()).collect(),
            got.iter().flat_map(|x| x.1.clone()).collect(),
        );
        let worst = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        assert!(
            worst(&got_a, &want_a) <= 1e-6,
            "anchors {}",
            worst(&got_a, &want_a)
        );
        assert!(
            worst(&got_p, &want_p) <= 1e-6,
            "positives {}",
            worst(&got_p, &want_p)
        );
        assert!(
            want_p.iter().any(|x| x.abs() > 1e-3),
            "a gradient to compare"
        );
    }
}
