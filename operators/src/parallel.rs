//! Splitting one kernel call over several threads.
//!
//! Every CPU kernel that splits a call (SAE products, TopK merges, IIR channel ranges, k-means
//! rows) runs its shares here: the calling thread takes share 0 and a persistent pool (rayon's
//! global pool, sized by `RAYON_NUM_THREADS` or the CPU count) the rest. A thread spawned per
//! call cost about 100 µs on a 2-core VM and started cold (a two-thread 16 MB read ran at
//! 45 GB/s with a spawn per pass, 95 GB/s on the pool), so kernels never spawn threads themselves.

/// Runs `share(0)`, …, `share(shares − 1)` at once, share 0 on the calling thread and the rest
/// on the pool, and returns their results in share order. A panic in any share is resumed on
/// the caller once every share has finished.
pub fn map_shares<T: Send>(shares: usize, share: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if shares <= 1 {
        return (0..shares).map(&share).collect();
    }
    let share = &share;
    let mut rest: Vec<Option<T>> = (1..shares).map(|_| None).collect();
    let first = rayon::in_place_scope(|s| {
        for (i, slot) in rest.iter_mut().enumerate() {
            s.spawn(move |_| *slot = Some(share(i + 1)));
        }
        share(0)
    });
    std::iter::once(first)
        .chain(rest.into_iter().map(|r| r.expect("every share ran")))
        .collect()
}

/// A buffer's base pointer, shared by the shares of one [`map_shares`] call that each write a
/// disjoint part of it (columns, rows or ranges; the user's `SAFETY` comment says which).
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);
// SAFETY: shares only touch disjoint elements through it, and `map_shares` returns after every
// share has finished, before the buffer is used again.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer. (Closures that call this capture the whole wrapper, which is `Sync`; one that
    /// named the field would capture the bare pointer, which is not.)
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::map_shares;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn results_come_back_in_share_order_and_every_share_runs_once() {
        for shares in [0, 1, 2, 3, 8, 33] {
            let runs = AtomicUsize::new(0);
            let got = map_shares(shares, |i| {
                runs.fetch_add(1, Ordering::Relaxed);
                i * i
            });
            assert_eq!(got, (0..shares).map(|i| i * i).collect::<Vec<_>>());
            assert_eq!(runs.load(Ordering::Relaxed), shares);
        }
    }

    #[test]
    fn a_panicking_share_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| map_shares(3, |i| assert_ne!(i, 2, "share 2 fails")));
        assert!(caught.is_err());
    }

    #[test]
    fn shares_run_on_other_threads_than_the_caller() {
        let caller = std::thread::current().id();
        let ids = map_shares(2, |_| {
            // Long enough that share 1 cannot wait for share 0 to finish on the caller.
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::thread::current().id()
        });
        assert_eq!(ids[0], caller);
        assert_ne!(ids[1], caller);
    }
}
