//! The execution path of a model's ops: one [`Exec`] value, resolved once per model from its
//! device, weight and compute dtypes and the `EMBTUNE_*` switches, then passed to every op. The
//! three paths share the same op boundaries (`ops::linear`, `ops::attention`, …), so model code
//! never asks which path it is on. Depends on candle only.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

/// How the ops of one model run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exec {
    /// candle's own ops composed (every device and dtype; on CUDA inference candle's fused
    /// LayerNorm and softmax): the reference the fused paths are tested against, and the
    /// fallback (`EMBTUNE_CPU_FUSED=0`, `EMBTUNE_CUDA_FUSED=0`, half precision on the CPU).
    Composed,
    /// CPU, f32: embtune's custom ops over SIMD kernels (`ops::cpu`).
    CpuFused,
    /// CUDA: embtune's kernels (`ops::cuda`). On a CPU device the same ops run their plain-loop
    /// CPU forwards, so tests check the CUDA path's wiring without a GPU.
    CudaFused,
}

impl Exec {
    /// The default path for a model on `device` with `weights` (stored) and `compute` dtypes.
    pub fn resolve(device: &Device, weights: DType, compute: DType) -> Exec {
        if device.is_cuda() {
            if cuda_kernels_enabled() {
                Exec::CudaFused
            } else {
                Exec::Composed
            }
        } else if device.is_cpu()
            && weights == DType::F32
            && compute == DType::F32
            && cpu_fused_enabled()
        {
            Exec::CpuFused
        } else {
            Exec::Composed
        }
    }

    /// The name recorded in `train_config.json` and bench JSON.
    pub fn name(self) -> &'static str {
        match self {
            Exec::Composed => "composed",
            Exec::CpuFused => "cpu-fused",
            Exec::CudaFused => "cuda-fused",
        }
    }

    /// Whether this path uses the CUDA path's fused training ops (and `grad` builds a graph).
    pub(crate) fn cuda_training(self, grad: bool) -> bool {
        grad && self == Exec::CudaFused
    }
}

impl std::fmt::Display for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The CPU fused path is on unless `EMBTUNE_CPU_FUSED=0` (composed candle ops, for comparisons).
pub fn cpu_fused_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| env_flag("EMBTUNE_CPU_FUSED"))
}

/// Whether CUDA runs use embtune's own kernels (fused LayerNorm/softmax/sublayer ops with
/// backwards, the embedding gather/scatter, dropout masks, AdamW and clipping on the device). On
/// by default; `EMBTUNE_CUDA_FUSED=0` falls back to candle's composed ops, which `check-device`
/// first verified on an H100 (scripts/gpu-check.sh checks both paths).
pub fn cuda_kernels_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| env_flag("EMBTUNE_CUDA_FUSED"))
}

/// An on-by-default switch: off when the variable is `0`, `false` or `off`.
pub fn env_flag(name: &str) -> bool {
    !matches!(
        std::env::var(name).as_deref(),
        Ok("0") | Ok("false") | Ok("off")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_fused_path_needs_f32_weights_and_compute() {
        let cpu = Device::Cpu;
        // (The switches are on in tests: nothing sets EMBTUNE_CPU_FUSED=0 here.)
        assert_eq!(Exec::resolve(&cpu, DType::F32, DType::F32), Exec::CpuFused);
        assert_eq!(Exec::resolve(&cpu, DType::F32, DType::BF16), Exec::Composed);
        assert_eq!(Exec::resolve(&cpu, DType::F64, DType::F64), Exec::Composed);
        assert_eq!(
            serde_json::to_string(&Exec::CudaFused).unwrap(),
            "\"cuda-fused\""
        );
        assert_eq!(Exec::CpuFused.to_string(), "cpu-fused");
    }
}
