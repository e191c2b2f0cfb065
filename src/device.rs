//! Device and precision selection: `--device cpu|cuda[:N]|auto`, `--dtype f32|bf16|f16`,
//! `--tf32`, resolved once into a candle `Device`, the CUDA allocator settings and the GPU
//! count (`--devices all`): device creation is the one place that asks whether the binary has
//! CUDA (the CUDA ops, the optimizer's device moments and the NCCL backend in `dist` have
//! their own `cfg(feature = "cuda")` code).

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where to run. `auto` (the default) picks the first CUDA GPU when this binary was built with
/// the `cuda` feature and a GPU is present, else the CPU — as sentence-transformers does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(Self::Cuda)
                    .map_err(|_| format!("expected cuda:<index>, got {s:?}")),
                None => Err(format!(
                    "expected cpu, cuda, cuda:<index> or auto, got {s:?}"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Compute precision of the encoder. Master weights, the loss and the optimizer stay f32
/// (mixed precision, as torch autocast); LayerNorm statistics and softmax run in f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl fmt::Display for Precision {
    /// The name as the flag takes it (`bf16`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

/// Device, precision and matmul settings of a run (part of `ModelSpec`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeSpec {
    pub device: DeviceChoice,
    pub dtype: Precision,
    /// Let f32 matrix products use TF32 tensor cores on CUDA (faster, ~1e-3 relative error).
    pub tf32: bool,
    /// Pad every batch instead of packing its texts back to back (`--no-packing`).
    #[serde(default)]
    pub no_packing: bool,
}

/// True when this binary was built with the `cuda` feature.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The CPU device.
pub fn cpu() -> Result<Device> {
    Ok(Device::Cpu)
}

/// Resolves the device of a run and applies the TF32 setting.
pub fn resolve(spec: &ComputeSpec) -> Result<Device> {
    let dev = match spec.device {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Auto => auto()?,
        DeviceChoice::Cuda(n) => cuda(n)?,
    };
    set_tf32(spec.tf32 && dev.is_cuda());
    Ok(dev)
}

#[cfg(feature = "cuda")]
fn auto() -> Result<Device> {
    if candle_core::utils::cuda_is_available() {
        // A driver without a usable GPU falls back to the CPU, as sentence-transformers does.
        if let Ok(d) = Device::new_cuda(0) {
            tune_cuda(&d);
            return Ok(d);
        }
    }
    Ok(Device::Cpu)
}

#[cfg(not(feature = "cuda"))]
fn auto() -> Result<Device> {
    Ok(Device::Cpu)
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> Result<Device> {
    let d = Device::new_cuda(n).map_err(|e| {
        anyhow::anyhow!("--device cuda:{n}: no usable CUDA GPU {n} ({e}); check the NVIDIA driver (nvidia-smi) and LD_LIBRARY_PATH for the CUDA 13 libraries")
    })?;
    tune_cuda(&d);
    Ok(d)
}

/// Allocator settings for a new CUDA device, unless `EMBTUNE_CUDA_ALLOC=0`:
/// - freed memory stays in the device's stream-ordered pool (release threshold = max). With the
///   default threshold (0) the driver may return all freed memory to the OS at every stream or
///   context synchronisation, and the next step's allocations map it again — PyTorch keeps freed
///   blocks in its caching allocator for the same reason;
/// - no CUDA events per allocation: cudarc creates two per buffer (and destroys them on free) to
///   order work across streams; embtune issues all its work on one stream.
#[cfg(feature = "cuda")]
fn tune_cuda(dev: &Device) {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    if !cuda_alloc_tuning() {
        return;
    }
    let Device::Cuda(c) = dev else { return };
    // SAFETY: candle's `Device::new_cuda` uses the per-thread default stream and never makes
    // another, so cudarc is not in multi-stream mode and never waits on these events; turning
    // them off only saves two event creations and destructions per buffer. (embtune issues its
    // CUDA work from one host thread.)
    unsafe { c.disable_event_tracking() };
    let ctx = c.cuda_stream().context().clone();
    // SAFETY: the device handle comes from a live context; the attribute takes a u64 (cuuint64_t).
    let r = unsafe {
        result::device::get_default_mem_pool(ctx.cu_device()).and_then(|pool| {
            let mut keep: u64 = u64::MAX;
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep as *mut u64).cast(),
            )
        })
    };
    match r {
        Ok(()) => tracing::debug!("cuda: memory pool keeps freed memory; no per-buffer events"),
        Err(e) => tracing::debug!("cuda: memory pool release threshold not set ({e:?})"),
    }
}

/// Whether new CUDA devices get [`tune_cuda`]'s allocator settings (`EMBTUNE_CUDA_ALLOC=0`: no,
/// as in GPU run 1, for comparison).
pub fn cuda_alloc_tuning() -> bool {
    crate::ops::exec::env_flag("EMBTUNE_CUDA_ALLOC")
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> Result<Device> {
    bail!("--device cuda:{n}: this embtune binary was built without CUDA support; build it with `cargo build --release --features cuda` (see scripts/build-cuda.sh)")
}

/// How many CUDA GPUs this process sees (`--devices all`).
#[cfg(feature = "cuda")]
pub fn cuda_count() -> Result<usize> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    let n = CudaContext::device_count().map_err(|e| {
        anyhow::anyhow!(
            "--devices all: the CUDA driver cannot count GPUs ({e:?}); check nvidia-smi"
        )
    })?;
    Ok(n.max(0) as usize)
}

#[cfg(not(feature = "cuda"))]
pub fn cuda_count() -> Result<usize> {
    bail!("--devices all: this embtune binary was built without CUDA support; build it with scripts/build-cuda.sh")
}

#[cfg(feature = "cuda")]
fn set_tf32(on: bool) {
    candle_core::cuda::set_gemm_reduced_precision_f32(on);
}

#[cfg(not(feature = "cuda"))]
fn set_tf32(_on: bool) {}

/// Refuses precisions a device cannot run well: f16/bf16 only on CUDA (candle's CPU half
/// precision matmul is slower than f32 and would only lose accuracy).
pub fn check_precision(spec: &ComputeSpec, dev: &Device) -> Result<()> {
    if spec.dtype != Precision::F32 && !dev.is_cuda() {
        bail!(
            "--dtype {:?} needs a CUDA device; on the CPU use --dtype f32",
            spec.dtype
        );
    }
    Ok(())
}

/// A short description of the device for logs and reports.
pub fn describe(dev: &Device) -> String {
    match dev.location() {
        candle_core::DeviceLocation::Cpu => {
            format!("cpu ({} threads)", rayon::current_num_threads())
        }
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_choices() {
        assert_eq!("cpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!("CUDA".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(3)));
        assert_eq!("auto".parse::<DeviceChoice>(), Ok(DeviceChoice::Auto));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let spec = ComputeSpec {
            device: DeviceChoice::Cuda(0),
            ..Default::default()
        };
        let e = resolve(&spec).unwrap_err().to_string();
        assert!(e.contains("built without CUDA support"), "{e}");
        let auto = resolve(&ComputeSpec::default()).unwrap();
        assert!(auto.is_cpu());
    }
}
