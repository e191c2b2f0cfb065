//! Collective communication for data-parallel training (the multi-GPU issue): the
//! [`Collective`] trait — all-reduce (sum), all-gather, broadcast, barrier over the ranks of
//! one run — and what is built on it: [`gather::gather_rows`], an autograd op that gathers
//! every rank's embeddings so in-batch negatives span the global batch while each rank keeps
//! the gradient of its own rows. Backends: [`threads`], ranks as threads of one process (a test
//! double for checks on the CPU, not a product feature); [`tcp`], ranks as processes on CPUs
//! (`--devices cpu,cpu`, or CPU nodes); `nccl` (with `--features cuda`), one process per GPU.
//! [`launch`] starts the processes and [`rendezvous`] connects them. Every backend gives every
//! rank bitwise the same result; the CPU ones add in rank order, so they also agree with each
//! other. docs/multi-gpu.md has the whole picture. Depends on candle (the gather op, tensors)
//! and std.

pub mod gather;
pub mod launch;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod rendezvous;
pub mod tcp;
pub mod threads;

use anyhow::Result;
use candle_core::Tensor;

/// The communication one rank of a run can do with the others. Every rank must make the same
/// calls in the same order, with buffers of the same length (all-gather: the same local length).
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// `buf` ← the element-wise sum of every rank's `buf`, added in rank order.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Every rank's `local`, concatenated in rank order.
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// `buf` ← rank `root`'s `buf`.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// The element-wise sum over the ranks of `t` (f32), on `t`'s device. By default through
    /// the host with [`Collective::all_reduce_sum`]; NCCL sums on the GPU.
    fn all_reduce_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let mut v = t.flatten_all()?.to_vec1::<f32>()?;
        self.all_reduce_sum(&mut v)?;
        Ok(Tensor::from_vec(v, t.shape(), t.device())?)
    }
    /// This rank ends on purpose (training done or stopped on a signal), before it exits.
    fn finish(&self) {}
}

/// Every rank's buffer of `n` values summed in rank order from zero — the sum of the CPU
/// backends, so they give bitwise the same results.
pub(crate) fn sum_in_rank_order(slots: &[Vec<f32>], n: usize) -> Result<Vec<f32>> {
    if slots.iter().any(|s| s.len() != n) {
        anyhow::bail!("all_reduce: ranks gave buffers of different lengths");
    }
    let mut acc = vec![0f32; n];
    for s in slots {
        for (a, x) in acc.iter_mut().zip(s) {
            *a += x;
        }
    }
    Ok(acc)
}

/// Every rank's buffer of `n` values, concatenated in rank order.
pub(crate) fn concat_in_rank_order(slots: &[Vec<f32>], n: usize) -> Result<Vec<f32>> {
    if slots.iter().any(|s| s.len() != n) {
        anyhow::bail!("all_gather: ranks gave buffers of different lengths");
    }
    Ok(slots.concat())
}

/// A new NCCL unique id (rank 0 of a GPU run).
#[cfg(feature = "cuda")]
pub(crate) fn nccl_unique_id() -> Result<Vec<u8>> {
    nccl::unique_id()
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn nccl_unique_id() -> Result<Vec<u8>> {
    anyhow::bail!("GPU ranks need embtune built with --features cuda")
}

/// The NCCL communicator of a joined GPU rank.
#[cfg(feature = "cuda")]
pub(crate) fn nccl_comm(
    joined: rendezvous::Joined,
    device: &candle_core::Device,
) -> Result<std::sync::Arc<dyn Collective>> {
    Ok(std::sync::Arc::new(nccl::NcclComm::new(joined, device)?))
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn nccl_comm(
    _: rendezvous::Joined,
    _: &candle_core::Device,
) -> Result<std::sync::Arc<dyn Collective>> {
    anyhow::bail!("GPU ranks need embtune built with --features cuda")
}

/// A run of one rank: every operation is the identity (single-device training goes through the
/// same code).
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }
    fn broadcast(&self, _buf: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
