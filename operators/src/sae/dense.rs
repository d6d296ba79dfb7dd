//! Dense f32 products shared by the SAE's CPU kernels (f32 and half-precision weights): a
//! threaded `matmul`, the `gemm` crate on a column block, the multi-row AXPY of small batches,
//! and splitting a product's columns over threads.

use crate::parallel::SharedMut;

/// `z = x @ w` for `x` rows × k and `w` k × n, row-major, on up to `threads` threads.
///
/// Small batches (at most 8 rows) are memory-bound: each thread streams its share of `w`'s
/// columns once, accumulating every row (a multi-row AXPY that the compiler vectorizes).
/// Larger batches go to the `gemm` crate, rows split over the threads.
pub fn matmul(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, z: &mut [f32], threads: usize) {
    assert!(x.len() >= rows * k && w.len() >= k * n && z.len() >= rows * n);
    let threads = threads.max(1);
    if rows <= 8 {
        if threads == 1 || n < 64 {
            axpy_columns(x, w, rows, k, n, 0, n, z);
            return;
        }
        split_columns(rows, n, threads, 16, z, |c0, c1, part| {
            axpy_columns(x, w, rows, k, n, c0, c1, part)
        });
        return;
    }
    if threads == 1 || n < 64 {
        gemm_block(x, w, rows, k, n, 0, n, z.as_mut_ptr());
        return;
    }
    // Split the columns: each thread streams only its share of `w` and writes its own columns of `z`.
    let width = n.div_ceil(threads).next_multiple_of(16);
    let dst = SharedMut(z.as_mut_ptr());
    crate::parallel::map_shares(n.div_ceil(width), |i| {
        let c0 = i * width;
        gemm_block(x, w, rows, k, n, c0, (c0 + width).min(n), dst.get())
    });
}

/// Computes columns of a `rows × n` result on up to `threads` threads: `f(c0, c1, part)` fills
/// `part` (rows × (c1 − c0), row-major) for its range (widths a multiple of `align`), and the
/// parts are copied into `z`.
pub(crate) fn split_columns<F>(rows: usize, n: usize, threads: usize, align: usize, z: &mut [f32], f: F)
where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    let width = n.div_ceil(threads.max(1)).next_multiple_of(align);
    let f = &f;
    let parts = crate::parallel::map_shares(n.div_ceil(width), |i| {
        let (c0, c1) = (i * width, ((i + 1) * width).min(n));
        let mut part = vec![0f32; rows * (c1 - c0)];
        f(c0, c1, &mut part);
        (c0, part)
    });
    for (c0, part) in parts {
        let cw = part.len() / rows;
        for r in 0..rows {
            z[r * n + c0..r * n + c0 + cw].copy_from_slice(&part[r * cw..(r + 1) * cw]);
        }
    }
}

/// Columns `c0..c1` of `z = x @ w` (`z` row-major rows × n at `dst`) on this thread with the `gemm` crate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_block(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, c0: usize, c1: usize, dst: *mut f32) {
    // SAFETY: `x` is rows × k, `w` is k × n and `dst` points at rows × n values, all row-major
    // (asserted by `matmul`); columns c0..c1 lie inside every row.
    unsafe {
        gemm::gemm(
            rows,
            c1 - c0,
            k,
            dst.add(c0),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr().add(c0),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Columns `c0..c1` of `x @ w` for a few rows, into `out` (rows × (c1 − c0)).
#[allow(clippy::too_many_arguments)]
pub(crate) fn axpy_columns(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, c0: usize, c1: usize, out: &mut [f32]) {
    let cw = c1 - c0;
    out[..rows * cw].fill(0.0);
    for i in 0..k {
        let wr = &w[i * n + c0..i * n + c1];
        for r in 0..rows {
            let xv = x[r * k + i];
            if xv != 0.0 {
                for (o, wv) in out[r * cw..(r + 1) * cw].iter_mut().zip(wr) {
                    *o += xv * wv;
                }
            }
        }
    }
}
