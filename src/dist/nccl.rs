//! The GPU backend of [`super::Collective`]: NCCL through cudarc (candle's `nccl` feature,
//! built with `--features cuda`; the binary links libnccl.so.2, which the PyPI wheel
//! nvidia-nccl-cu13 or a system NCCL provides at run time). One process
//! per GPU; rank 0 makes the unique id and the rendezvous (`rendezvous.rs`) hands it to the
//! others. The communicator runs on candle's stream of this rank's device, so its operations
//! are ordered with the kernels around them. [`Collective::all_reduce_tensor`] sums a tensor in
//! place on the device (the gradients of a step); the host-buffer operations copy to the
//! device and back (small: the step's flags, the gathered embeddings of `gather_rows`). NCCL
//! sums in its own order (ring or tree), so ranks agree with each other but not bitwise with the
//! CPU backends. NCCL waits for a dead peer without a timeout, so the rendezvous connections are
//! watched (`rendezvous::watch`): a rank that stops without [`Collective::finish`] stops the others. Depends on candle (cuda), cudarc (nccl).

use super::rendezvous::Joined;
use super::Collective;
use anyhow::{anyhow, Result};
use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, ReduceOp};
use candle_core::{CudaStorage, CustomOp1, Layout, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// A new NCCL unique id (rank 0), as the bytes the rendezvous carries.
pub fn unique_id() -> Result<Vec<u8>> {
    let id = Id::new().map_err(|e| anyhow!("NCCL: no unique id ({e:?}); see NCCL_DEBUG=INFO"))?;
    Ok(id.internal().iter().map(|&c| c as u8).collect())
}

/// cudarc's communicator holds a raw NCCL handle and is not Send; NCCL allows a communicator
/// to be used from any thread as long as calls are not concurrent, which the Mutex ensures.
struct Handle(Comm);
// SAFETY: see above; every use goes through `NcclComm::comm`'s Mutex.
unsafe impl Send for Handle {}

pub struct NcclComm {
    rank: usize,
    world: usize,
    comm: Mutex<Handle>,
    stream: Arc<CudaStream>,
    device: candle_core::CudaDevice,
    watch: super::rendezvous::Watch,
}

impl NcclComm {
    /// The communicator of `joined`'s rank on `device` (the id is rank 0's payload).
    pub fn new(joined: Joined, device: &candle_core::Device) -> Result<Self> {
        let device = device.as_cuda_device()?.clone();
        if joined.payload.len() != 128 {
            anyhow::bail!(
                "NCCL: rank 0 sent a {}-byte id (128 expected): are all ranks on GPUs?",
                joined.payload.len()
            );
        }
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, s) in internal.iter_mut().zip(&joined.payload) {
            *d = *s as std::ffi::c_char;
        }
        let stream = device.cuda_stream();
        let comm = Comm::from_rank(
            stream.clone(),
            joined.rank,
            joined.world,
            Id::uninit(internal),
        )
        .map_err(|e| anyhow!("NCCL: rank {} could not join ({e:?})", joined.rank))?;
        // NCCL has its own connections; the rendezvous ones tell when a rank dies.
        let watch = super::rendezvous::watch(&joined, super::rendezvous::exit_on_lost)?;
        Ok(NcclComm {
            rank: joined.rank,
            world: joined.world,
            comm: Mutex::new(Handle(comm)),
            stream,
            device,
            watch,
        })
    }

    fn comm(&self) -> Result<std::sync::MutexGuard<'_, Handle>> {
        self.comm
            .lock()
            .map_err(|_| anyhow!("NCCL: a previous operation failed"))
    }

    /// `f` on a device copy of `buf`, copied back.
    fn on_device(
        &self,
        buf: &[f32],
        out_len: usize,
        f: impl FnOnce(
            &Comm,
            &candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
            &mut candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
        ) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let src = self.stream.clone_htod(buf)?;
        let mut dst = self.stream.alloc_zeros::<f32>(out_len)?;
        f(&self.comm()?.0, &src, &mut dst)?;
        let out = self.stream.clone_dtoh(&dst)?;
        self.stream.synchronize()?;
        Ok(out)
    }
}

fn nccl_err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("NCCL: {e:?} (another rank may have stopped; its error says why)")
}

impl Collective for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let out = self.on_device(buf, buf.len(), |c, s, d| {
            c.all_reduce(s, d, &ReduceOp::Sum)
                .map(|_| ())
                .map_err(nccl_err)
        })?;
        buf.copy_from_slice(&out);
        Ok(())
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.on_device(local, local.len() * self.world, |c, s, d| {
            c.all_gather(s, d).map(|_| ()).map_err(nccl_err)
        })
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let out = self.on_device(buf, buf.len(), |c, s, d| {
            c.broadcast(Some(s), d, root as i32)
                .map(|_| ())
                .map_err(nccl_err)
        })?;
        buf.copy_from_slice(&out);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.all_reduce_sum(&mut [0.0])
    }
    fn finish(&self) {
        self.watch.goodbye();
    }
    fn all_reduce_tensor(&self, t: &Tensor) -> Result<Tensor> {
        if !t.device().is_cuda() {
            let mut v = t.flatten_all()?.to_vec1::<f32>()?;
            self.all_reduce_sum(&mut v)?;
            return Ok(Tensor::from_vec(v, t.shape(), t.device())?);
        }
        Ok(t.contiguous()?.apply_op1_no_bwd(&DeviceSum(self))?)
    }
}

/// The sum over the ranks of a device tensor, as a candle op (no gradient: it reduces
/// gradients).
struct DeviceSum<'a>(&'a NcclComm);

impl CustomOp1 for DeviceSum<'_> {
    fn name(&self) -> &'static str {
        "embtune-nccl-all-reduce"
    }
    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("nccl all-reduce: a CUDA tensor")
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("nccl all-reduce: a contiguous tensor");
        };
        let src = s.as_cuda_slice::<f32>()?.slice(a..b);
        let mut dst = self.0.device.alloc_zeros::<f32>(b - a)?;
        let comm = self
            .0
            .comm()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        comm.0
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(nccl_err(e).to_string()))?;
        Ok((
            CudaStorage::wrap_cuda_slice(dst, self.0.device.clone()),
            l.shape().clone(),
        ))
    }
}
