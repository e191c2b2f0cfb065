//! Shared by the fuzz targets: a per-process scratch directory in memory (/dev/shm when there).

use std::path::PathBuf;

pub fn scratch() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("embtune-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).ok();
    d
}
