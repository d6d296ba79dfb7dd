//! Allocator settings for the `neurostream` command.
//!
//! A bulk run allocates and frees buffers of tens of MB for every batch (a 16384-row group of
//! 576-wide activations is 38 MB). glibc serves allocations above its mmap threshold (at most
//! 32 MB by default, however it adapts) with fresh `mmap`s, so each such batch costs the kernel
//! a page fault and a zeroed page per 4 KiB: measured on a 2-core machine, a third of a
//! Parquet copy's wall time. Raising the threshold keeps such buffers in the heap, where the
//! next batch reuses them, and raising the trim threshold keeps a freed peak for the next one.
//!
//! Each heap arena keeps its own freed peak, and glibc opens up to 8 per core: a long run's
//! resident memory grew with the arenas its threads happened to use (a 12-hour monitoring soak
//! on 2 cores: 207 MB with glibc's default, 151 MB with 4 arenas, 120 MB with 2, at the same
//! throughput; bulk runs with 2 workers measured no slower). The arenas are capped at half the
//! cores (at least 2).
//!
//! Only the command line sets them (a library must not change its host process's allocator;
//! the Python package does not), before any thread starts, and only where the user has not set
//! glibc's own `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` / `MALLOC_ARENA_MAX`.

/// Allocations below this come from the heap (bytes).
pub const MMAP_THRESHOLD: usize = 256 << 20;

/// Free memory at the top of the heap above this goes back to the system (bytes): the most a
/// run keeps after a peak for reuse. Larger values measured no faster and doubled a long
/// monitoring run's resident memory.
pub const TRIM_THRESHOLD: usize = 64 << 20;

/// The most heap arenas for a machine of `cores` cores: half of them, at least 2.
pub fn arena_cap(cores: usize) -> usize {
    (cores / 2).max(2)
}

/// Applies [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`] with glibc's `mallopt`, unless the
/// environment sets glibc's own variables, and [`arena_cap`] unless it sets `MALLOC_ARENA_MAX`.
/// Returns whether the thresholds were applied (never outside glibc). Call from `main` before
/// any other thread starts.
pub fn tune_for_batches() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: as below; glibc takes any positive arena count.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arena_cap(cores) as libc::c_int) };
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called while the process
        // is single-threaded, and glibc accepts these values (below HEAP_MAX for the heap).
        let (mmap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int),
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int),
            )
        };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// glibc takes both settings (it refuses an mmap threshold above its heap limit, which a
    /// later glibc could lower), unless the environment already chose.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_thresholds() {
        let chosen = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some();
        assert_eq!(super::tune_for_batches(), !chosen);
    }

    #[test]
    fn arenas_are_half_the_cores_and_at_least_two() {
        assert_eq!([1, 2, 3, 4, 16, 64].map(super::arena_cap), [2, 2, 2, 2, 8, 32]);
    }
}
