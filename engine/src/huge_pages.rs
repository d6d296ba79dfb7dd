//! Large read-mostly buffers (packed SAE weights, ~38 MB at 576 → 16384) backed by 2 MiB pages
//! where Linux allows it: a kernel that streams such a buffer once per token then misses the
//! TLB once per 2 MiB instead of once per 4 KiB. numpy does the same for its large arrays, and
//! on machines whose transparent huge pages are `madvise`-only that alone is a ~20 % difference
//! in read bandwidth.

/// Buffers smaller than this stay on ordinary pages (a huge page would be mostly empty).
pub const MIN_BYTES: usize = 4 << 20;

/// A vector of `len` values from `values`, its pages advised as huge before they are first
/// written (the kernel backs a region with huge pages only when it is faulted in after the
/// advice). Elsewhere than Linux, or when the system refuses, an ordinary vector.
pub fn collect<T>(len: usize, values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    advise(&v);
    v.extend(values);
    v
}

/// Advises the 2 MiB-aligned part of `v`'s allocation (its capacity) as huge pages.
fn advise<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let (first, end) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if end > first {
            // SAFETY: the range lies inside this vector's allocation; `MADV_HUGEPAGE` changes
            // how pages are backed, never their contents. Failure (THP disabled) is harmless.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn collected_values_are_the_values_given() {
        for len in [0, 10, super::MIN_BYTES / 4 + 12345] {
            let v = super::collect(len, (0..len).map(|i| i as u32));
            assert_eq!(v.len(), len);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        }
    }
}
