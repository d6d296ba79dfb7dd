//! Threads that serve people rather than the pipeline (the `/metrics` and live-view servers,
//! the view's snapshot ticker) run below the pipeline's priority, so that on a machine whose
//! cores the workers already use a viewer costs the workers as little as possible.

/// The nice value background threads take (0 is the default, 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`BACKGROUND_NICE`] (never raises it). Linux keeps a nice
/// value per thread, so the rest of the process is unaffected. A no-op elsewhere, and when the
/// system refuses (the thread then keeps the default priority; nothing depends on it).
pub fn lower_current_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; no memory is passed.
    unsafe {
        let nice = current_thread_nice().max(BACKGROUND_NICE);
        if libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) != 0 {
            tracing::debug!("could not lower the priority of a background thread");
        }
    }
}

/// The calling thread's nice value (Linux; 0 elsewhere).
pub fn current_thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: as above.
    unsafe {
        *libc::__errno_location() = 0;
        return libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
    }
    #[allow(unreachable_code)]
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_background_thread_runs_below_the_others_and_leaves_them_alone() {
        let before = super::current_thread_nice();
        let inside = std::thread::spawn(|| {
            super::lower_current_thread_priority();
            super::current_thread_nice()
        })
        .join()
        .unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(inside, super::BACKGROUND_NICE.max(before));
        }
        assert_eq!(super::current_thread_nice(), before);
    }
}
