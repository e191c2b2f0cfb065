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

/// candle's element-wise CPU ops run on its own thread pool, whose workers spin ~25,000 times
/// before sleeping after every op. On the CPU fast path (`ops::cpu`) nearly all work runs
/// on rayon's pool (our kernels and the matrix products), so those spinning workers only steal
/// cores from it: perf showed 11–19 % of training samples in that spin loop. With the spin limit
/// at 0 the workers sleep at once and wake for the next op (CoSENT b16, padded batches: 24 → 29
/// pairs/s). With packed batches (one pass over a step's text columns) candle's pool is better
/// left with no workers at all (`CANDLE_NUM_THREADS=1`: its ops — mostly the gradient sums of
/// its backward — run on the calling thread, and nobody waits at its barrier): CoSENT b16 53.1
/// vs 50.4 pairs/s (three interleaved pairs of `bench train --steps 30`, 2 threads), MNRL b32
/// +7 %, encode +1 %. Each is applied only when the user has not set the variable, and only
/// before candle's pool starts (first element-wise op), i.e. first thing in `main`.
pub fn tune_threads() {
    for (var, value) in [
        ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0"),
        ("CANDLE_NUM_THREADS", "1"),
    ] {
        if std::env::var_os(var).is_none() {
            // SAFETY (edition 2021: set_var is safe): called at the top of main, before any
            // thread of ours or candle's exists.
            std::env::set_var(var, value);
        }
    }
}

/// Makes the calling thread (the binary's main thread) worker 0 of rayon's global pool, which
/// keeps its size (`RAYON_NUM_THREADS`, else one thread per CPU). Otherwise every parallel op
/// of the main thread — each kernel and matrix product of a step, hundreds per step — is handed
/// to the pool while the main thread sleeps, and each hand-over is a futex wake and sleep on both
/// sides; as a worker, the main thread runs its own share and the serial parts between ops run
/// where the data already is. CoSENT b16 on 2 cores: 3× fewer context switches, +9–11 % pairs/s
/// (three interleaved pairs of `bench train --steps 40`, BENCHMARKS.md). The main thread serves
/// the pool only while it is inside rayon (or yields to it, as `train::ddp::spawn_threads` does
/// while its ranks run), so other threads' parallel ops are served by the other workers: with a
/// one-thread pool there would be none, and the pool is left as rayon makes it. Call before
/// anything uses rayon; a pool that already exists is left as it is.
pub fn adopt_main_thread() {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    if threads < 2 {
        return;
    }
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .use_current_thread()
        .build_global();
}
