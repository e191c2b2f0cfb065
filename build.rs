//! With the `cuda` feature, compiles kernels/embtune.cu to PTX with nvcc (found through
//! NVCC, CUDA_ROOT/CUDA_HOME/CUDA_PATH, or PATH) for the architecture in CUDA_COMPUTE_CAP
//! (default 80; PTX is compiled again by the driver for newer GPUs). Nothing without the feature.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels/embtune.cu");
    println!("cargo:rerun-if-changed=kernels/varlen_attention.cuh");
    for v in [
        "NVCC",
        "CUDA_ROOT",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_COMPUTE_CAP",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| {
            ["CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"]
                .iter()
                .find_map(|v| {
                    let p = PathBuf::from(std::env::var_os(v)?).join("bin/nvcc");
                    p.exists().then_some(p)
                })
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .map(|c| c.trim().trim_end_matches('a').replace('.', ""))
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()))
        .unwrap_or_else(|| "80".into());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("embtune.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", &format!("-arch=compute_{cap}"), "-o"])
        .arg(&out)
        .arg("kernels/embtune.cu")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{} failed ({s}) compiling kernels/embtune.cu", nvcc.display()),
        Err(e) => panic!(
            "cannot run {} ({e}): the cuda feature needs nvcc; run scripts/setup-cuda.sh or set CUDA_ROOT",
            nvcc.display()
        ),
    }
}
