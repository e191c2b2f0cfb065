//! Process-wide runtime settings applied once by the binary (and benchmarks) before any work.

/// glibc returns every freed block above 128 KiB to the kernel, so each tensor op of a forward
/// pass page-faults its output in afresh (perf showed ~20 % of encode time in clear_page).
/// Keeping freed memory in the heap removes that churn; peak RSS is unchanged because the same
/// sizes are reused batch after batch.
/// `EMBTUNE_MALLOC=default` leaves glibc's settings alone (to compare speed and peak memory).
pub fn tune_allocator() {
    if std::env::var("EMBTUNE_MALLOC").is_ok_and(|v| v == "default") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        // M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1 (malloc.h).
        // 32 MiB is the largest mmap threshold glibc accepts on 64-bit (larger values are ignored).
        libc::mallopt(-3, 32 * 1024 * 1024);
        libc::mallopt(-1, 1024 * 1024 * 1024);
    }
}
