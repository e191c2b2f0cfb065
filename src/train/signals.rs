//! SIGINT/SIGTERM → a flag the training loop checks after each step (it then saves a checkpoint
//! and exits 130/143). Async-signal-safe: the handler only stores an atomic.

use std::sync::atomic::{AtomicI32, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

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
