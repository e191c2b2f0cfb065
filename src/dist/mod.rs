//! Collective communication for data-parallel training (the multi-GPU issue): the
//! [`Collective`] trait — all-reduce (sum), all-gather, broadcast, barrier over the ranks of
//! one run — and what is built on it: [`gather::gather_rows`], an autograd op that gathers
//! every rank's embeddings so in-batch negatives span the global batch while each rank keeps
//! the gradient of its own rows. Backends: [`threads`], ranks as threads of one process (a test
//! double for checks on the CPU, not a product feature); NCCL through cudarc is the GPU backend
//! (docs/multi-gpu.md). Every backend reduces in rank order, so every rank gets bitwise the
//! same result. Depends on candle (for the gather op) and std.

pub mod gather;
pub mod threads;

use anyhow::Result;

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
