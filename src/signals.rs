//! SIGINT/SIGTERM → a flag that long jobs check at safe points (training after each step: it
//! saves a checkpoint; chunked `embed` after each chunk: the finished chunks stay) and then stop
//! with [`Interrupted`] (exit 130/143). A second signal exits at once — except in a
//! [`set_patient`] process (a data-parallel worker: a batch system signals it and its launcher
//! forwards the same signal, which must not count twice; the launcher acts on a second one).
//! Async-signal-safe: the handler only touches atomics or calls `_exit`. Depends on libc.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);
static PATIENT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    COUNT.fetch_add(1, Ordering::SeqCst);
    // The second interrupt: the user does not want to wait for the safe point.
    if SIGNAL.swap(sig, Ordering::SeqCst) != 0 && !PATIENT.load(Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// From now on a repeated signal only asks again for the stop at the next safe point.
pub fn set_patient() {
    PATIENT.store(true, Ordering::SeqCst);
}

/// How many signals arrived.
pub fn count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

/// The error a job stops with after a signal: its message says how to continue; the binary
/// exits `128 + signal`.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
    pub message: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

/// Installs the handlers (idempotent).
pub fn install() {
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// The signal received, if any (2 = SIGINT, 15 = SIGTERM).
pub fn pending() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Requests a stop as if a signal arrived (tests).
pub fn request_stop(sig: i32) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

pub fn clear() {
    SIGNAL.store(0, Ordering::SeqCst);
}
