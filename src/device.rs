//! Device selection; the only `cfg(feature = "cuda")` site outside ops. CPU for now.

use anyhow::Result;
use candle_core::Device;

/// The compute device for this run.
pub fn cpu() -> Result<Device> {
    Ok(Device::Cpu)
}
